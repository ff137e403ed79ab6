"""The Variational U-Net recipe: schedules, perceptual loss, settings and the command line."""
import json
import pickle

import numpy as np
import pytest
import torch

from pydeform.cli import main
from pydeform.losses.vunet import VUNetPerceptualLoss, gram
from pydeform.nets.vgg import CAFFE_MEAN_BGR, VGG19Features
from pydeform.train.vunet import TrainConfig, kl_weight, learning_rate

# ----------------------------------------------------------------------------- schedules


def test_learning_rate_corners():
    # the original: 1e-3 constant to step 1,000, linear to 0 at 100,000
    assert learning_rate(0, 100000, 1e-3, 1000) == 1e-3
    assert learning_rate(1000, 100000, 1e-3, 1000) == 1e-3
    assert learning_rate(50500, 100000, 1e-3, 1000) == pytest.approx(5e-4)
    assert learning_rate(99999, 100000, 1e-3, 1000) == pytest.approx(1e-3 / 99000)
    assert learning_rate(100000, 100000, 1e-3, 1000) == 0.0
    # scaled with --steps: the same shape at 1,000 steps (decay from step 10)
    config = TrainConfig(out="x", steps=1000, random_vgg=True)
    assert config.lr_decay_begin == 10
    assert learning_rate(505, 1000, 1e-3, config.lr_decay_begin) == pytest.approx(5e-4)


def test_kl_weight_corners():
    assert kl_weight(0, 100000) == 1e-6
    assert kl_weight(50000, 100000) == 1e-6
    assert kl_weight(62500, 100000) == pytest.approx(1e-6 + (1 - 1e-6) / 2)
    assert kl_weight(75000, 100000) == 1.0 and kl_weight(99999, 100000) == 1.0
    assert kl_weight(500, 1000) == 1e-6 and kl_weight(625, 1000) == pytest.approx(0.5, abs=1e-5)
    assert kl_weight(750, 1000) == pytest.approx(1.0)
    assert kl_weight(0, 2) == 1e-6 and kl_weight(1, 2) == 1.0  # degenerate: a step, no division by zero


def test_train_config_defaults_and_errors():
    assert TrainConfig(out="x", random_vgg=True).batch_size == 16
    fashion = TrainConfig(out="x", random_vgg=True, model={"preset": "deepfashion"})
    assert fashion.batch_size == 8 and fashion.model.size == 256 and fashion.betas == (0.5, 0.9)
    with pytest.raises(ValueError, match="vgg19"):
        TrainConfig(out="x")
    with pytest.raises(ValueError, match="gram_weights"):
        TrainConfig(out="x", random_vgg=True, gram_weights=(0.1,))
    with pytest.raises(ValueError, match="lr_decay_begin"):
        TrainConfig(out="x", random_vgg=True, steps=10, lr_decay_begin=11)
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(out="x", random_vgg=True, data="a", index="b")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(out="x", random_vgg=True, lr=0.0)


# ----------------------------------------------------------------------------- perceptual loss


def test_caffe_preprocessing():
    vgg = VGG19Features(layers=("relu1_1",), random_weights=True, preprocessing="caffe")
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    rgb255 = (x.numpy() + 1) / 2 * 255
    expected = rgb255[:, ::-1] - np.array(CAFFE_MEAN_BGR).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(vgg.preprocess(x).numpy(), expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="preprocessing"):
        VGG19Features(random_weights=True, preprocessing="keras")


def test_perceptual_loss_against_a_direct_computation():
    torch.manual_seed(0)
    loss_fn = VUNetPerceptualLoss(random_weights=True, gram_weights=(0, 0.05, 0.05, 0, 0, 0))
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    loss, terms = loss_fn(x, y)
    features = loss_fn.vgg.features

    def run(images):  # the network by hand: layers 0..3 relu1_2, 8 relu2_2, 13 relu3_2, 22 relu4_2, 31 relu5_2
        h = loss_fn.vgg.preprocess(images)
        outs = [h]
        for index, module in enumerate(features):
            h = module(h)
            if index in (3, 8, 13, 22, 31):
                outs.append(h)
        return outs

    fx, fy = run(x), run(y)
    assert [f.shape[1] for f in fx] == [3, 64, 128, 256, 512, 512]
    expected = []
    for k, (a, b) in enumerate(zip(fx, fy)):
        term = (a - b).abs().mean()
        if k in (1, 2):
            ga = torch.einsum("bchw,bdhw->bcd", a, a) / (4 * a.shape[2] * a.shape[3])
            gb = torch.einsum("bchw,bdhw->bcd", b, b) / (4 * b.shape[2] * b.shape[3])
            term = term + 0.05 * (ga - gb).abs().mean()
        expected.append(term)
    torch.testing.assert_close(terms, torch.stack(expected), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss, 5.0 * torch.stack(expected).sum(), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gram(fx[1]), torch.einsum("bchw,bdhw->bcd", fx[1], fx[1]) / (4 * 32 * 32))
    x.requires_grad_(True)
    loss_fn(x, y)[0].backward()
    assert x.grad is not None and loss_fn.vgg.features[0].weight.grad is None
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(x, y[:1])
    with pytest.raises(ValueError, match="6 values"):
        VUNetPerceptualLoss(random_weights=True, feature_weights=(1.0,))


# ----------------------------------------------------------------------------- the command line


def write_tiny_index(root) -> None:
    """An index.p over 10 synthetic 64x32 images (8 train, 2 test), joints in [0, 1]."""
    from PIL import Image

    from pydeform.data.synth_pose import write_pose_pairs
    from pydeform.pose import JOINT, read_annotations

    write_pose_pairs(root / "src", (64, 32), identities=3, seed=0, name="s", max_pairs_per_identity=2,
                     progress=False)  # fmt: skip
    annotations = read_annotations(root / "src" / "s-annotation-train.csv")
    names = ["rankle", "rknee", "rhip", "lhip", "lknee", "lankle", "rwrist", "relbow", "rshoulder", "lshoulder",
             "lelbow", "lwrist", "cnose", "reye", "leye"]  # fmt: skip
    coco = ["Rank", "Rkne", "Rhip", "Lhip", "Lkne", "Lank", "Rwri", "Relb", "Rsho", "Lsho", "Lelb", "Lwri", "nose",
            "Reye", "Leye"]  # fmt: skip
    imgs, joints = [], []
    usable = [(n, kp) for n, kp in sorted(annotations.items())
              if (kp.xy[[JOINT[j] for j in ("Lsho", "Rsho", "Lhip", "Rhip")]] >= 0).all()]  # fmt: skip
    for image_name, keypoints in usable[:10]:
        imgs.append(f"src/s-dataset/train/{image_name}")
        xy = keypoints.xy[[JOINT[c] for c in coco]] / np.array([32.0, 64.0])
        xy[(keypoints.xy[[JOINT[c] for c in coco]] < 0).any(1)] = -1
        joints.append(xy)
        assert Image.open(root / imgs[-1]).size == (32, 64)
    assert len(imgs) == 10
    index = {"joint_order": names, "imgs": imgs, "train": [i < 8 for i in range(len(imgs))],
             "joints": np.array(joints, dtype=np.float32)}  # fmt: skip
    (root / "index.p").write_bytes(pickle.dumps(index))


def test_cli_trains_on_index_then_tests_every_mode(tmp_path, capsys):
    write_tiny_index(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "vunet", "--index", str(tmp_path / "index.p"), "--size", "32", "--n-filters", "4",
                 "--max-filters", "8", "--steps", "3", "--batch-size", "2", "--init-batches", "2", "--random-vgg",
                 "--workers", "0", "--no-progress", "--out", str(run)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "--random-vgg" in printed and "final step=3" in printed
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and {"loss", "likelihood", "kl", "lr", "kl_weight"} <= set(log[-1])
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    gains = [v for k, v in state["model"].items() if k.endswith(".g")]
    assert gains and not all(torch.equal(g, torch.ones_like(g)) for g in gains)  # data-dependent init ran
    from PIL import Image

    grid = np.asarray(Image.open(sorted((run / "samples").glob("*.png"))[-1]))
    assert grid.shape == (2 + 2 * 34, 2 + 7 * 34, 3)  # 2 test pairs: source | pose | transfer | 4 samples
    from pydeform.metrics.detector import train_detector

    train_detector(tmp_path / "src", "s", tmp_path / "det.pt", steps=1, batch_size=2, width=8, progress=False)
    for mode in ("transfer", "reconstruct", "sample"):
        out = tmp_path / mode
        assert main(["test", "vunet", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out), "--mode", mode,
                     "--no-progress", "--detector", str(tmp_path / "det.pt")]) == 0  # fmt: skip
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["mode"] == mode and metrics["images"] == 2 and len(list((out / "images").glob("*.png"))) == 2
        assert (out / "samples.png").is_file()
    assert set(json.loads((tmp_path / "transfer" / "metrics.json").read_text())["generated"]) == {"ssim", "l1", "psnr"}
    assert "copy_source" not in json.loads((tmp_path / "reconstruct" / "metrics.json").read_text())
    sample = json.loads((tmp_path / "sample" / "metrics.json").read_text())
    assert sample["sample_std"] > 0 and 0 <= sample["pose"]["pckh"] <= 1
    transfer = json.loads((tmp_path / "transfer" / "metrics.json").read_text())
    assert sample["pose"]["joints"] == 4 * transfer["pose"]["joints"] > 0  # every prior sample is scored
    assert "pose" not in json.loads((tmp_path / "reconstruct" / "metrics.json").read_text())


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # no VGG19 weights: a usage error naming --vgg19
        main(["train", "vunet", "--out", str(tmp_path / "r"), "--steps", "1"])
    assert exc.value.code == 2 and "--vgg19" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "vunet", "--out", str(tmp_path / "r"), "--steps", "1", "--random-vgg", "--data", "a",
              "--index", "b"])  # fmt: skip
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["test", "vunet", "--checkpoint", "x", "--out", str(tmp_path / "e"), "--mode", "bogus"])
    assert exc.value.code == 2
    capsys.readouterr()
    torch.save({"kind": "pydeform.deformgan", "version": 2}, tmp_path / "other.pt")
    assert main(["test", "vunet", "--checkpoint", str(tmp_path / "other.pt"), "--out", str(tmp_path / "e")]) == 1
    assert "not a Variational U-Net checkpoint" in capsys.readouterr().err
    (tmp_path / "bad.p").write_bytes(b"junk")
    assert main(["train", "vunet", "--index", str(tmp_path / "bad.p"), "--random-vgg", "--steps", "1", "--out",
                 str(tmp_path / "r2"), "--no-progress"]) == 1  # fmt: skip
    assert "not a readable index pickle" in capsys.readouterr().err
