"""The `pydeform` command (pydeform.cli)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pydeform.cli import main
from pydeform.data import Placement
from pydeform.data.pose_pairs import PosePairs
from pydeform.geometry import composite, params_to_matrix
from pydeform.ops import homography_sample


def run_cli(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "deformgan", "--help"])
    text = capsys.readouterr().out
    for flag in ("--data", "--preset", "--variant", "--steps", "--out", "--batch-size", "--vgg19", "--random-vgg",
                 "--resume", "--device", "--amp", "--sample-every", "--seed", "--workers"):  # fmt: skip
        assert flag in text
    with pytest.raises(SystemExit):
        main(["test", "deformgan", "--help"])
    assert "--checkpoint" in capsys.readouterr().out


def test_full_variant_refuses_without_vgg(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "deformgan", "--out", str(tmp_path / "run"), "--steps", "1"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--vgg19 PATH" in err and "--random-vgg" in err and "not the paper's" in err
    assert not (tmp_path / "run").exists()


def test_vgg_flags_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "deformgan", "--out", str(tmp_path), "--steps", "1", "--vgg19", "x.pth", "--random-vgg"])
    assert "not allowed with" in capsys.readouterr().err


def test_bad_settings_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "deformgan", "--out", str(tmp_path), "--steps", "1", "--variant", "dsc", "--size", "100x64"])
    assert exit.value.code == 2 and "divisible" in capsys.readouterr().err


def test_bare_checkout_trains_on_synthetic_data_then_tests(tmp_path, monkeypatch, capsys):
    # No --data: the synthetic set is written into $PYDEFORM_CACHE first.
    monkeypatch.setenv("PYDEFORM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code, printed = run_cli([
        "train", "deformgan", "--random-vgg", "--size", "64x32", "--ngf", "4", "--ndf", "4", "--steps", "2",
        "--batch-size", "2", "--workers", "0", "--synth-identities", "3", "--out", str(run), "--no-progress",
    ], capsys)  # fmt: skip
    assert code == 0
    assert "--random-vgg: the NN loss compares" in printed.out and "final step=2" in printed.out
    (cache,) = (tmp_path / "cache").glob("synth-pose-64x32-seed0-n3-*")  # -{digest of the generator}
    assert (cache / "synth-pairs-train.csv").is_file()
    assert (run / "checkpoint.pt").is_file() and len(list((run / "samples").glob("*.png"))) == 1

    evaluation = tmp_path / "eval"
    code, printed = run_cli(["test", "deformgan", "--checkpoint", str(run / "checkpoint.pt"), "--out",
                             str(evaluation), "--no-progress"], capsys)  # fmt: skip
    assert code == 0 and "copy_source" in printed.out and "mask_ssim" in printed.out
    metrics = json.loads((evaluation / "metrics.json").read_text())
    test_set = PosePairs(cache, "synth", "test")
    assert metrics["pairs"] == len(test_set) and metrics["step"] == 2
    images = sorted((evaluation / "images").glob("*.png"))
    assert len(images) == len(test_set)
    source, target = test_set.pairs[0]
    assert (evaluation / "images" / f"{source[:-4]}___{target[:-4]}.png").is_file()
    assert np.asarray(Image.open(images[0])).shape == (64, 32, 3)
    for key in ("generated", "copy_source"):
        assert set(metrics[key]) == {"ssim", "mask_ssim", "l1", "psnr"}
    # Copy-the-source L1, computed independently: mean |source - target| over the test pairs, in [-1, 1].
    want = np.mean([(item["source"] - item["target"]).abs().mean().item() for item in test_set])
    assert metrics["copy_source"]["l1"] == pytest.approx(want, abs=1e-4)
    assert 0 < metrics["copy_source"]["ssim"] < 1

    # Pose kept, by a keypoint detector the user names: the PCKh and keypoint error of
    # detecting the written images directly against the target keypoints.
    from pydeform.metrics.detector import detect, load_detector, train_detector
    from pydeform.metrics.keypoints import keypoint_error, pckh

    train_detector(cache, "synth", tmp_path / "det.pt", steps=2, batch_size=2, width=8, progress=False)
    code, printed = run_cli(["test", "deformgan", "--checkpoint", str(run / "checkpoint.pt"), "--out",
                             str(tmp_path / "eval-pose"), "--no-progress", "--detector", str(tmp_path / "det.pt")],
                            capsys)  # fmt: skip
    assert code == 0 and "PCKh@0.5" in printed.out
    pose = json.loads((tmp_path / "eval-pose" / "metrics.json").read_text())["pose"]
    detector = load_detector(tmp_path / "det.pt")
    written = torch.stack([torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 127.5 - 1
                           for path in images])  # fmt: skip
    names = [f"{s[:-4]}___{t[:-4]}.png" for s, t in test_set.pairs]
    order = [names.index(path.name) for path in images]
    with torch.no_grad():
        detected = detect(detector, written).numpy()
    target = np.stack([test_set[i]["target_kp"].numpy() for i in order])
    correct, counted = pckh(detected, target)
    total, joints = keypoint_error(detected, target)
    assert pose["joints"] == counted > 0
    assert pose["pckh"] == pytest.approx(correct / counted)
    assert pose["keypoint_error"] == pytest.approx(total / joints, rel=1e-5)
    copied = json.loads((tmp_path / "eval-pose" / "metrics.json").read_text())["copy_source_pose"]
    with torch.no_grad():
        detected = detect(detector, torch.stack([test_set[i]["source"] for i in order])).numpy()
    assert copied["pckh"] == pytest.approx(pckh(detected, target)[0] / counted)

    # Resuming a finished run has nothing to do.
    code, printed = run_cli(["train", "deformgan", "--random-vgg", "--size", "64x32", "--ngf", "4", "--ndf", "4",
                             "--steps", "2", "--synth-identities", "3", "--out", str(run), "--resume",
                             "--no-progress"], capsys)  # fmt: skip
    assert code == 0 and "nothing to do" in printed.out
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2


def test_synth_pose_pairs_writes_a_loadable_market_set(tmp_path, capsys):
    out = tmp_path / "synth"
    code, printed = run_cli(
        ["synth", "pose-pairs", "--out", str(out), "--size", "64x32", "--identities", "5", "--images-per-identity", "3",
         "--seed", "3", "--no-progress"], capsys)  # fmt: skip
    assert code == 0 and "pairs" in printed.out
    # 5 identities, 20% test: 4 train identities, each 3 images = 6 ordered pairs.
    train = PosePairs(out, "market", "train")
    assert len(train) == 4 * 6 and train[0]["source"].shape == (3, 64, 32)
    again = tmp_path / "again"
    run_cli(["synth", "pose-pairs", "--out", str(again), "--size", "64x32", "--identities", "5",
             "--images-per-identity", "3", "--seed", "3", "--no-progress"], capsys)  # fmt: skip
    for path in sorted(out.rglob("*.*")):
        assert path.read_bytes() == (again / path.relative_to(out)).read_bytes(), path


def test_synth_pose_pairs_rejects_bad_arguments(tmp_path, capsys):
    for argv, message in ((["--identities", "1"], "identities"), (["--size", "64"], "HxW")):
        with pytest.raises(SystemExit) as exit:
            main(["synth", "pose-pairs", "--out", str(tmp_path / "x"), *argv])
        assert exit.value.code == 2 and message in capsys.readouterr().err


def test_synth_placement_writes_a_loadable_set(tmp_path, capsys):
    argv = ["synth", "placement", "--size", "32x40", "--train", "3", "--test", "2", "--foregrounds", "2", "--seed", "4",
            "--no-progress"]  # fmt: skip
    out = tmp_path / "synth"
    code, printed = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 0 and "3 + 2 placement samples" in printed.out and "32x40" in printed.out
    info = json.loads((out / "info.json").read_text())
    assert info["size"] == [32, 40] and info["seed"] == 4 and info["counts"] == {"train": 3, "test": 2}
    test = Placement(out, "test")
    assert len(Placement(out, "train")) == 3 and len(test) == 2
    item = test[1]
    assert item["background"].shape == (3, 32, 40) and item["foreground"].shape == (4, 32, 40)
    real = composite(homography_sample(item["foreground"][None], params_to_matrix(item["p_true"][None]),
                                       coords="normalized"), item["background"][None])[0]  # fmt: skip
    assert (real - item["real"]).abs().max() <= 0.5 / 255 + 1e-5
    again = tmp_path / "again"
    run_cli([*argv, "--out", str(again)], capsys)
    files = sorted(path for path in out.rglob("*") if path.is_file())
    assert len(files) == 3 + 2 + 2 * 2 + 3 + 2 + 2 + 1
    for path in files:
        assert path.read_bytes() == (again / path.relative_to(out)).read_bytes(), path


def test_synth_placement_rejects_bad_arguments(tmp_path, capsys):
    for argv, message in ((["--train", "0"], "train"), (["--test", "-2"], "test"), (["--size", "64"], "HxW"),
                          (["--size", "8x8"], "size"), (["--seed", "-1"], "seed")):  # fmt: skip
        with pytest.raises(SystemExit) as exit:
            main(["synth", "placement", "--out", str(tmp_path / "x"), *argv])
        assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["synth", "placement", "--help"])
    text = capsys.readouterr().out
    for flag in ("--out", "--size", "--train", "--test", "--seed", "--no-progress"):
        assert flag in text
