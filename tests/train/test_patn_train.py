"""The PATN recipe: schedule, losses, image pool, data views, CLI runs of both variants,
resume, and the test command's images, metrics and attention figure."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pydeform.cli import main
from pydeform.data.pose_pairs import PosePairs
from pydeform.data.synth_pose import write_pose_pairs
from pydeform.losses import gan_criterion
from pydeform.models.patn import PATNConfig
from pydeform.train.common import DistInfo, ImagePool, load_checkpoint
from pydeform.train.engine import Run
from pydeform.train.patn import PATNPairs, PATNRecipe, TrainConfig, attention_regions, attention_sums, lr_factor

SIZE = (64, 32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_pose_pairs(root, SIZE, identities=4, seed=0, name="market", max_pairs_per_identity=4, progress=False)
    return root


def argv(data_root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "patn", "--data", str(data_root), "--name", "market", "--size", "64x32", "--ngf", "4", "--ndf",
            "4", "--batch-size", "3", "--random-vgg", "--workers", "0", "--no-progress", "--log-every", "1",
            "--sample-every", "0", "--out", str(out), *extra]  # fmt: skip


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- the schedule


def published_schedule(niter: int, niter_decay: int, epochs: int) -> list[float]:
    """The multiplier of each epoch from torch's LambdaLR stepped once per epoch, as
    Pose-Transfer's train.py does (update_learning_rate at each epoch's end)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    rule = lambda epoch: 1.0 - max(0, epoch + 1 + 1 - niter) / float(niter_decay + 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=rule)
    factors = []
    for _ in range(epochs):
        factors.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return factors


def test_lr_schedule_corners():
    spe = 125  # 4000 pairs at batch 32
    niter, decay = 500, 200
    assert lr_factor(0, spe, niter, decay) == 1
    assert lr_factor(499 * spe - 1, spe, niter, decay) == 1  # the last step of epoch 498 (0-based): still constant
    assert lr_factor(499 * spe, spe, niter, decay) == pytest.approx(1 - 1 / 201)  # the code's off-by-one
    assert lr_factor(600 * spe, spe, niter, decay) == pytest.approx(1 - 102 / 201)
    assert lr_factor(699 * spe, spe, niter, decay) == 0  # the last epoch runs at 0
    assert lr_factor(800 * spe, spe, niter, decay) == 0  # clamped beyond
    expected = published_schedule(5, 3, 8)  # the 5 + 3 epochs of a run
    assert [lr_factor(e * 7 + 3, 7, 5, 3) for e in range(8)] == pytest.approx(expected)
    assert expected[-1] == 0 and expected[3] == 1 and expected[4] < 1


def test_recipe_schedule_scales_with_steps(tmp_path):
    config = TrainConfig(out=str(tmp_path), random_vgg=True, model=PATNConfig(preset="fashion"))
    recipe = PATNRecipe(config)
    assert config.batch_size == 7 and recipe.steps_per_epoch() == math.ceil(4000 / 7) == 572
    assert recipe.total_steps() == 700 * 572
    market = PATNRecipe(TrainConfig(out=str(tmp_path), random_vgg=True, epoch_pairs=400, niter=2, niter_decay=2))
    assert market.config.batch_size == 32 and market.steps_per_epoch() == 13 and market.total_steps() == 52
    assert market.lr_at(12) == pytest.approx(2e-4) and market.lr_at(13) == pytest.approx(2e-4 * (1 - 1 / 3))
    assert market.lr_at(51) == 0
    assert PATNRecipe(TrainConfig(out=str(tmp_path), random_vgg=True, steps=17)).total_steps() == 17


def test_presets_fill_the_training_settings(tmp_path):
    market = TrainConfig(out=str(tmp_path), random_vgg=True)
    assert (market.lambda_l1, market.lambda_perceptual, market.lambda_gan, market.gan_loss, market.pool_size) == (
        10, 10, 5, "bce", 50)
    fashion = TrainConfig(out=str(tmp_path), random_vgg=True, model=PATNConfig(preset="fashion"), lambda_gan=2.0)
    assert (fashion.lambda_l1, fashion.lambda_perceptual, fashion.lambda_gan, fashion.gan_loss, fashion.pool_size) == (
        1, 1, 2, "lsgan", 0)
    assert TrainConfig(out=str(tmp_path), random_vgg=True, model=PATNConfig(block="nested")).vgg_layers == (
        "relu1_2", "relu2_2", "relu3_4", "relu4_4")
    assert TrainConfig(out=str(tmp_path), lambda_perceptual=0).vgg_layers == ()


@pytest.mark.parametrize("kwargs, message", [
    ({}, "--vgg19 PATH"),
    ({"model": PATNConfig(block="nested"), "lambda_perceptual": 0}, "--lambda-style 0"),
    ({"random_vgg": True, "heatmaps": "png"}, "heatmaps"),
    ({"random_vgg": True, "crop_columns": (50, 40)}, "crop_columns"),
    ({"random_vgg": True, "style_layers": "relu9_9"}, "style_layers"),
    ({"random_vgg": True, "style_layers": ""}, "style_layers"),
    ({"random_vgg": True, "niter": 0}, "niter"),
    ({"random_vgg": True, "pool_size": -1}, "pool_size"),
    ({"random_vgg": True, "steps": 0}, "steps"),
    ({"random_vgg": True, "lr": 0.0}, "lr"),
    ({"random_vgg": True, "gan_loss": "wgan"}, "gan_loss"),
])  # fmt: skip
def test_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(out=str(tmp_path), **kwargs)


# ----------------------------------------------------------------------------- the image pool


def test_image_pool_fills_then_swaps_half_the_time():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(3.0).view(3, 1)
    assert torch.equal(pool.query(first), first) and pool.count == 3
    second = torch.tensor([[3.0], [4.0]])
    out = pool.query(second)
    assert torch.equal(out[0], second[0]) and pool.count == 4  # the 4th fills the pool
    assert torch.equal(pool.images.flatten(), torch.tensor([0.0, 1, 2, 3]))
    # Once full, each output is the new image or an old one it replaced: the multiset of
    # (pool + outputs) equals (old pool + inputs).
    returned_old = 0
    for step in range(400):
        before = pool.images.flatten().tolist()
        new = torch.tensor([[100.0 + 2 * step], [101.0 + 2 * step]])
        out = pool.query(new)
        assert sorted(before + new.flatten().tolist()) == sorted(pool.images.flatten().tolist() + out.flatten().tolist())
        returned_old += sum(v < 100 + 2 * step for v in out.flatten().tolist())
    assert 0.42 < returned_old / 800 < 0.58  # probability 1/2 per image


def test_image_pool_state_and_errors():
    pool = ImagePool(2)
    assert torch.equal(ImagePool(0).query(torch.ones(2, 3)), torch.ones(2, 3))
    pool.query(torch.rand(3, 2, 2))
    other = ImagePool(2)
    other.load_state_dict(pool.state_dict())
    torch.manual_seed(1)
    a = pool.query(torch.rand(4, 2, 2))
    torch.manual_seed(1)
    b = other.query(a.clone())  # same draws, same stored images
    assert other.count == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="capacity"):
            ImagePool(bad)
    with pytest.raises(ValueError, match="fakes"):
        pool.query(torch.zeros(0, 2, 2))
    with pytest.raises(ValueError, match="do not match"):
        pool.query(torch.rand(1, 3, 3))
    assert b.shape == (4, 2, 2)


def test_restored_stores_follow_the_fakes_device():
    # A resumed run restores the stores on the CPU while its fakes live on the GPU ("meta"
    # stands in for another device here): the stored images move to the fakes' device.
    from pydeform.train.common import FakeHistory

    for store, call in ((ImagePool(2), "query"), (FakeHistory(4), "mix")):
        getattr(store, call)(torch.rand(2, 3, 8, 8))
        restored = type(store)(store.capacity)
        restored.load_state_dict(store.state_dict())
        out = getattr(restored, call)(torch.empty(2, 3, 8, 8, device="meta"))
        assert out.device.type == "meta" and restored.images.device.type == "meta"


# ----------------------------------------------------------------------------- data


def test_crop_and_uint8_heatmaps_match_the_published_preparation(data_root):
    plain = PosePairs(data_root, "market", "train", skip_levels=0)
    view = PATNPairs(data_root, "market", "train", heatmaps="uint8", crop_columns=(4, 28))
    assert view.image_size == (64, 24) and len(view) == len(plain)
    item, full = view[0], plain[0]
    torch.testing.assert_close(item["source"], full["source"][..., 4:28])
    torch.testing.assert_close(item["target_mask"], full["target_mask"][..., 4:28])
    kp = full["target_kp"].numpy()
    shifted = kp.copy()
    shifted[:, 0] -= 4
    shifted[(kp < 0).any(1) | (shifted[:, 0] < 0) | (shifted[:, 0] > 23)] = -1
    torch.testing.assert_close(item["target_kp"], torch.from_numpy(shifted))
    # The published cords_to_map: exp(...) assigned into a uint8 array, (y, x) order, sigma 6.
    yy, xx = np.meshgrid(np.arange(64), np.arange(24), indexing="ij")
    published = np.zeros((64, 24, 18), dtype="uint8")
    for j, (x, y) in enumerate(shifted):
        if x >= 0:
            published[..., j] = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 6.0**2))
    torch.testing.assert_close(item["target_pose"], torch.from_numpy(published).permute(2, 0, 1).float())
    # Gaussian maps: those of the shifted joints (a joint just outside the crop keeps its tail inside).
    gaussian = PATNPairs(data_root, "market", "train", crop_columns=(4, 28))[0]["target_pose"]
    want = np.zeros((18, 64, 24))
    for j, (x, y) in enumerate(kp):
        if x >= 0 and y >= 0:
            want[j] = np.exp(-((yy - y) ** 2 + (xx - (x - 4)) ** 2) / (2 * 6.0**2))
    torch.testing.assert_close(gaussian, torch.from_numpy(want).float(), atol=1e-6, rtol=1e-5)
    assert (shifted[:, 0] < 0).any() or (kp[:, 0] < 0).any() or True
    with pytest.raises(ValueError, match="do not fit"):
        PATNPairs(data_root, "market", "train", crop_columns=(10, 40))
    with pytest.raises(ValueError, match="heatmaps"):
        PATNPairs(data_root, "market", "train", heatmaps="png")


# ----------------------------------------------------------------------------- losses of a step


def test_generator_and_discriminator_losses_are_the_published_sums(data_root, tmp_path):
    config = TrainConfig(out=str(tmp_path), data=str(data_root), name="market", random_vgg=True, batch_size=2,
                         model=PATNConfig(block="nested", size=SIZE, ngf=4, ndf=4, dropout=False, d_dropout=False),
                         lambda_l1=2.0, lambda_perceptual=3.0, lambda_gan=5.0, lambda_style=7.0, pool_size=0)  # fmt: skip
    recipe = PATNRecipe(config)
    torch.manual_seed(0)
    recipe.build(Run(config, DistInfo(0, 1, 0, torch.device("cpu"))), None)
    data = recipe.open_data(recipe.run)
    batch = torch.utils.data.default_collate([data.streams["train"][0][i] for i in range(2)])
    g = recipe.generator.eval()
    fake = g(batch["source"], torch.cat([batch["source_pose"], batch["target_pose"]], 1))
    d_shape, d_app = recipe.d_shape.eval(), recipe.d_appearance.eval()
    parts = recipe.generator_losses(fake, batch)
    bce = lambda x, real: F.binary_cross_entropy(torch.sigmoid(x), torch.full_like(x, float(real)))
    gan_shape = bce(d_shape(torch.cat([fake, batch["target_pose"]], 1)), True)
    gan_app = bce(d_app(torch.cat([fake, batch["source"]], 1)), True)
    features = recipe.vgg.features
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    perceptual = F.l1_loss(features[:4](((fake + 1) / 2 - mean) / std), features[:4](((batch["target"] + 1) / 2 - mean) / std))
    l1 = F.l1_loss(fake, batch["target"])
    torch.testing.assert_close(parts["gan_shape"], gan_shape, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(parts["gan_appearance"], gan_app, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(parts["perceptual"], perceptual, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(parts["l1"], l1)
    assert parts["style"] > 0
    expected = 2 * l1 + 3 * perceptual + 5 * (gan_shape + gan_app) / 2 + 7 * parts["style"]
    torch.testing.assert_close(parts["total"], expected, rtol=1e-4, atol=1e-6)
    real, fakes = torch.cat([batch["target"], batch["source"]], 1), torch.cat([fake, batch["source"]], 1)
    d_loss = recipe._discriminator_loss(d_app, real, fakes)
    torch.testing.assert_close(d_loss, 5 * (bce(d_app(real), True) + bce(d_app(fakes), False)) / 2, rtol=1e-4, atol=1e-6)
    assert gan_criterion("lsgan", torch.ones(2), True) == 0


# ----------------------------------------------------------------------------- runs through the CLI


@pytest.mark.parametrize("block", ["patb", "nested"])
def test_cli_steps_of_both_variants_then_test(block, data_root, tmp_path, capsys):
    out = tmp_path / block
    assert main(argv(data_root, out, "--block", block, "--steps", "3", "--checkpoint-every", "2")) == 0
    log = read_log(out / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3]
    names = {"d_appearance", "d_shape", "g_total", "g_l1", "g_perceptual", "g_gan_shape", "g_gan_appearance", "lr"}
    assert names <= set(log[0]) and ("g_style" in log[0]) == (block == "nested")
    for r in log:
        style = 10 * r["g_style"] if block == "nested" else 0
        assert r["g_total"] == pytest.approx(10 * r["g_l1"] + 10 * r["g_perceptual"]
                                             + 5 * (r["g_gan_shape"] + r["g_gan_appearance"]) / 2 + style, rel=1e-5)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["kind"] == "pydeform.patn" and state["step"] == 3 and state["config"]["block"] == block
    assert {"generator", "d_shape", "d_appearance", "opt_g", "opt_d_shape", "opt_d_appearance", "pool_shape",
            "pool_appearance"} <= set(state)  # fmt: skip
    assert state["pool_shape"]["images"].shape == (9, 21, 64, 32)  # 3 steps x 3 fakes, pool of 50

    evaluation = tmp_path / f"{block}-test"
    capsys.readouterr()
    assert main(["test", "patn", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(evaluation),
                 "--no-progress", "--batch-size", "3", "--attention-pairs", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "copy_source" in printed and "attention of the last block" in printed
    metrics = json.loads((evaluation / "metrics.json").read_text())
    test_set = PATNPairs(data_root, "market", "test")
    assert metrics["pairs"] == len(test_set) and metrics["step"] == 3
    images = sorted((evaluation / "images").glob("*.png"))
    assert len(images) == len(test_set)
    # The generated L1, recomputed from the written 8-bit images and the targets.
    by_name = {f"{Path(s).stem}___{Path(t).stem}.png": i for i, (s, t) in enumerate(test_set.pairs.pairs)}
    l1 = [np.abs(np.asarray(Image.open(p), np.float64) / 127.5 - 1
                 - test_set[by_name[p.name]]["target"].permute(1, 2, 0).double().numpy()).mean() for p in images]
    assert metrics["generated"]["l1"] == pytest.approx(np.mean(l1), abs=1e-4)
    # The attention numbers, recomputed from the generator's masks.
    from pydeform.models.patn import build_generator

    generator = build_generator(PATNConfig.from_dict(state["config"]))
    generator.load_state_dict(state["generator"])
    generator.eval()
    batch = torch.utils.data.default_collate([test_set[i] for i in range(len(test_set))])
    with torch.no_grad():
        _, masks = generator(batch["source"], torch.cat([batch["source_pose"], batch["target_pose"]], 1), True)
    last = F.interpolate(masks[-1].mean(1, keepdim=True), scale_factor=4, mode="nearest")
    body = batch["target_mask"] > 0.5
    assert metrics["attention"]["inside"] == pytest.approx(last[body].mean().item(), rel=1e-4)
    assert metrics["attention"]["outside"] == pytest.approx(last[~body].mean().item(), rel=1e-4)
    from pydeform.metrics.image import body_mask

    source = body_mask(batch["source_kp"], (64, 32)).unsqueeze(1) > 0.5
    assert metrics["attention"]["source_only"] == pytest.approx(last[source & ~body].mean().item(), rel=1e-4)
    assert metrics["attention"]["background"] == pytest.approx(last[~source & ~body].mean().item(), rel=1e-4)
    assert len(metrics["attention"]["blocks"]) == 9
    figure = np.asarray(Image.open(evaluation / "attention.png"))
    assert figure.shape == (2 * (64 + 2) + 2, 13 * (32 + 2) + 2, 3)  # 2 pairs: source, pose, 9 maps, generated, real
    assert (evaluation / "samples.png").is_file()


def test_resume_continues_from_the_checkpoint_before_it(data_root, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(argv(data_root, straight, "--steps", "4")) == 0
    assert main(argv(data_root, split, "--steps", "2")) == 0
    before = load_checkpoint(split / "checkpoint.pt")
    assert before["step"] == 2
    assert main([*argv(data_root, split, "--steps", "4"), "--resume"]) == 0
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    for key in ("generator", "d_shape", "d_appearance"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert torch.equal(a["pool_appearance"]["images"], b["pool_appearance"]["images"])
    changes = json.loads((split / "config.json").read_text())["changes"]
    assert changes == [{"step": 2, "field": "steps", "checkpoint": 2, "now": 4}]


def test_attention_sums_by_hand():
    mask = torch.tensor([[[[0.2, 0.8]], [[0.4, 1.0]]]])  # (1, 2, 1, 2): channel means 0.3, 0.9
    body = torch.tensor([[[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]]]]) > 0.5  # (1, 1, 2, 4): cells 2x2 pixels
    ((sums),) = attention_sums([mask], {"inside": body, "outside": ~body})
    assert sums["inside"] == (pytest.approx(3 * 0.9), 3) and sums["outside"] == (pytest.approx(4 * 0.3 + 0.9), 5)


def test_attention_regions_split_the_outside_into_source_body_and_background():
    from pydeform.metrics.image import body_mask

    size = (32, 16)
    target_kp, source_kp = torch.full((1, 18, 2), -1.0), torch.full((1, 18, 2), -1.0)
    target_kp[0, 1], target_kp[0, 8] = torch.tensor([4.0, 4.0]), torch.tensor([4.0, 20.0])  # neck, right hip
    source_kp[0, 1], source_kp[0, 8] = torch.tensor([11.0, 4.0]), torch.tensor([11.0, 20.0])
    batch = {"target_mask": body_mask(target_kp, size).unsqueeze(1), "source_kp": source_kp}
    regions = attention_regions(batch)
    target, source = batch["target_mask"] > 0.5, body_mask(source_kp, size).unsqueeze(1) > 0.5
    assert torch.equal(regions["inside"], target) and torch.equal(regions["outside"], ~target)
    assert torch.equal(regions["source_only"], source & ~target) and regions["source_only"].any()
    assert torch.equal(regions["background"], ~source & ~target) and regions["background"].any()
    total = sum(regions[name].long() for name in ("inside", "source_only", "background"))
    assert torch.equal(total, torch.ones_like(total))  # a partition of the pixels


def test_test_command_errors(data_root, tmp_path, capsys):
    assert main(["test", "patn", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "e")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(argv(data_root, out, "--steps", "1")) == 0
    other = tmp_path / "other"
    write_pose_pairs(other, (32, 16), identities=3, seed=0, name="market", max_pairs_per_identity=2, progress=False)
    assert main(["test", "patn", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "e"), "--data",
                 str(other)]) == 1  # fmt: skip
    assert "holds 32x16 images but the model expects 64x32" in capsys.readouterr().err


def test_bare_checkout_trains_on_the_synthetic_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYDEFORM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "patn", "--size", "64x32", "--ngf", "4", "--ndf", "4", "--steps", "1", "--batch-size", "2",
                 "--random-vgg", "--workers", "0", "--synth-identities", "3", "--no-progress", "--out", str(out)]) == 0
    assert "--random-vgg: the perceptual" in capsys.readouterr().out
    (cache,) = (tmp_path / "cache").glob("synth-pose-64x32-seed0-n3-*")  # -{digest of the generator}
    assert (cache / "synth-pairs-train.csv").is_file()
    assert main(["test", "patn", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "t"),
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["data"] == str(cache)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("block", ["patb", "nested"])
def test_cuda_amp_steps(block, data_root, tmp_path):
    out = tmp_path / block
    assert main(argv(data_root, out, "--block", block, "--steps", "2", "--device", "cuda", "--amp")) == 0
    log = read_log(out / "log.jsonl")
    assert all(math.isfinite(r["g_total"]) for r in log)
    assert main(["test", "patn", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "t"),
                 "--device", "cuda", "--no-progress"]) == 0  # fmt: skip


def test_deepfashion_256x256_files_need_the_published_crop(tmp_path):
    from pydeform.train.patn import _open_pairs

    write_pose_pairs(tmp_path, (256, 256), identities=3, seed=0, name="fasion", images_per_identity=2,
                     max_pairs_per_identity=1, progress=False)  # fmt: skip
    model = PATNConfig(preset="fashion", ngf=4, ndf=4)
    assert model.image_size == (256, 176)
    with pytest.raises(ValueError, match="--crop-columns 40,216 gives PATN's 256x176"):
        _open_pairs(tmp_path, "fasion", "train", "gaussian", None, model)
    pairs = _open_pairs(tmp_path, "fasion", "train", "uint8", (40, 216), model)
    item = pairs[0]
    assert item["source"].shape == (3, 256, 176) and item["target_pose"].shape == (18, 256, 176)
    assert set(item["target_pose"].unique().tolist()) <= {0.0, 1.0}


def test_deepfashion_ssim_pads_as_patns_script():
    # tool/getMetrics_fashion.py: both images padded with 40 white columns each side before SSIM
    # (addBounding); checked with skimage on padded arrays, mask-SSIM with the mask padded by 0.
    from skimage.metrics import structural_similarity

    from pydeform.train.pose_transfer import metric_sums

    rng = np.random.default_rng(0)
    generated = torch.from_numpy(rng.integers(0, 256, (2, 3, 256, 176))).double()
    target = torch.from_numpy(rng.integers(0, 256, (2, 3, 256, 176))).double()
    mask = torch.from_numpy(rng.random((2, 1, 256, 176)) > 0.5).double()
    sums = metric_sums(generated, target, mask, pad_fashion=True)

    def padded(image, value):  # (C, H, W) tensor -> (H, W + 80, C) array
        return np.pad(image.permute(1, 2, 0).numpy(), ((0, 0), (40, 40), (0, 0)), constant_values=value)

    def skimage_ssim(g, t):
        return structural_similarity(t, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     channel_axis=2, data_range=float(g.max() - g.min()))  # fmt: skip

    g, t, k = ([padded(x[b], v) for b in range(2)] for x, v in ((generated, 255), (target, 255), (mask, 0)))
    assert sums["ssim"] == pytest.approx(sum(skimage_ssim(g[b], t[b]) for b in range(2)), abs=1e-6)
    assert sums["mask_ssim"] == pytest.approx(sum(skimage_ssim(g[b] * k[b], t[b] * k[b]) for b in range(2)), abs=1e-6)
    unpadded = metric_sums(generated, target, mask)
    assert sums["ssim"] != pytest.approx(unpadded["ssim"], abs=1e-3)
    assert (sums["l1"], sums["psnr"]) == pytest.approx((unpadded["l1"], unpadded["psnr"]))  # only the SSIMs change
