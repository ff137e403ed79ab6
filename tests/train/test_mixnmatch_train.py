"""MixNMatch through the `pydeform` command: both stages, the test command, `pydeform mix` and
its error paths."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pydeform.cli import main
from pydeform.data.synth_factors import write_factors
from pydeform.train.mixnmatch import load_image, load_mixer

TINY = ["--z-dim", "8", "--backgrounds", "4", "--children", "4", "--parents", "2", "--gf-dim", "4", "--df-dim", "4",
        "--encoder-dim", "4", "--bd-dim", "2", "--bd-hidden", "8", "--fx-dim", "2", "--batch-size", "2", "--workers",
        "0", "--no-progress", "--log-every", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mx")
    write_factors(root / "factors", count=15, size=64, seed=0, progress=False)
    both, first = root / "both", root / "first"
    assert main(["train", "mixnmatch", "--data", str(root / "factors"), "--out", str(both), "--steps", "2",
                 "--feature-steps", "1", *TINY]) == 0  # fmt: skip
    assert main(["train", "mixnmatch", "--data", str(root / "factors"), "--out", str(first), "--steps", "1", *TINY]) == 0
    return {"data": root / "factors", "both": both, "first": first}


def test_log_stages(runs):
    log = [json.loads(line) for line in (runs["both"] / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == [1, 1, 2]
    first = log[0]
    parts = first["info"] + first["background"] + first["child_adv"] + first["fool_bd"] + first["pred_total"]
    assert first["eg"] == pytest.approx(parts, rel=1e-5)
    assert set(log[2]) >= {"fd", "ex_adv", "ex_l1"}


def test_mix_command_matches_the_mixer(runs, tmp_path, capsys):
    images = sorted((runs["data"] / "images").glob("*.png"))[:4]
    out = tmp_path / "mix.png"
    argv = ["mix", "--checkpoint", str(runs["both"] / "checkpoint.pt"), "--background", str(images[0]), "--shape",
            str(images[1]), "--texture", str(images[2]), "--out", str(out)]  # fmt: skip
    for mode, extra in (("code", ["--pose", str(images[3])]), ("feature", [])):
        assert main([*argv, "--mode", mode, *extra]) == 0
        mixer, _ = load_mixer(runs["both"] / "checkpoint.pt")
        loaded = [load_image(p) for p in images]
        pose = loaded[3] if mode == "code" else None
        expected = mixer(loaded[0], loaded[1], loaded[2], pose, mode=mode).child[0]
        expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(np.asarray(Image.open(out)), expected)
    # feature mode takes the pose from the shape image
    assert main([*argv, "--mode", "feature", "--pose", str(images[3])]) == 1
    assert "drop --pose" in capsys.readouterr().err
    # a stage-1 checkpoint has no feature extractor
    argv_first = [a if a != str(runs["both"] / "checkpoint.pt") else str(runs["first"] / "checkpoint.pt") for a in argv]
    assert main([*argv_first, "--mode", "feature"]) == 1
    assert "--feature-steps" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main([*argv[:4], str(bad), *argv[5:]]) == 1
    assert "cannot read the image" in capsys.readouterr().err


def test_test_command(runs, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["test", "mixnmatch", "--checkpoint", str(runs["both"] / "checkpoint.pt"), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["modes"] == ["code", "feature"] and metrics["triples"] == 3
    for mode in ("code", "feature"):
        assert 0 <= metrics[mode]["shape_iou"] <= 1
    assert (out / "samples.png").is_file()
    assert "feature mode: shape_iou" in capsys.readouterr().out
    assert main(["test", "mixnmatch", "--checkpoint", str(runs["first"] / "checkpoint.pt"), "--out", str(tmp_path / "e2"),
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["modes"] == ["code"]


def test_wrong_checkpoint_kind(runs, tmp_path, capsys):
    finegan = tmp_path / "fg"
    assert main(["train", "finegan", "--data", str(runs["data"]), "--out", str(finegan), "--steps", "1", "--hard-steps",
                 "0", *TINY[:12], "--batch-size", "2", "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    assert main(["mix", "--checkpoint", str(finegan / "checkpoint.pt"), "--background", "a", "--shape", "b", "--texture",
                 "c", "--out", str(tmp_path / "o.png")]) == 1  # fmt: skip
    assert "not a MixNMatch checkpoint" in capsys.readouterr().err


def test_refused_settings(capsys):
    for argv, message in ((["train", "mixnmatch", "--out", "x", "--steps", "1", "--amp", "--device", "cuda"], "amp"),
                          (["train", "mixnmatch", "--out", "x", "--steps", "1", "--batch-size", "1"], "BatchNorm"),
                          (["test", "mixnmatch", "--checkpoint", "c.pt", "--out", "x", "--count", "0"], "count must")):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2 and message in capsys.readouterr().err


def test_default_batch_is_mixnmatchs():
    from pydeform.train.finegan import TrainConfig as FineGANTrain
    from pydeform.train.mixnmatch import TrainConfig

    assert TrainConfig(out="x").batch_size == 12  # MixNMatch's code/config.py
    assert FineGANTrain(out="x").batch_size == 16  # FineGAN's
