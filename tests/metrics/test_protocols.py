"""The pose-transfer protocols, folder statistics and their cache, generation_metrics and the
`pydeform metrics` commands, checked against independent computations (scikit-image SSIM,
numpy statistics, the networks run directly)."""
import json
import re

import numpy as np
import pytest
import torch
from metric_weights import write_inception_weights
from PIL import Image
from skimage.metrics import structural_similarity

import pydeform.metrics.folders as folders
from pydeform.cli import main
from pydeform.metrics import (LPIPS, FeatureStats, feature_stats, folder_stats, generation_metrics,
                              inception_score, kid)
from pydeform.metrics.protocols import pad_deepfashion, pair_folders, pose_transfer_metrics
from pydeform.nets import InceptionV3FID


def _write(folder, images, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:03d}{suffix}")
    return folder


def _pairs(rng, n, size):
    targets = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]
    generated = [np.clip(t.astype(int) + rng.integers(-40, 41, t.shape), 0, 255).astype(np.uint8) for t in targets]
    return generated, targets


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    write_inception_weights(root / "inception.pth")
    torch.manual_seed(0)
    lpips = LPIPS("alex", random_weights=True)
    torch.save(lpips.backbone.state_dict(), root / "alexnet.pth")  # features.N.weight/bias, torchvision's keys
    torch.save(lpips.heads.state_dict(), root / "alex.pth")
    return root


@pytest.fixture
def fid_calls(monkeypatch):
    """fid() is tested in test_distribution.py; here its arguments are checked instead (a
    2048 x 2048 matrix square root takes 10-40 s on two CPU cores). Returns the recorded
    (a, b) pairs; the patched fid returns the squared mean difference."""
    import pydeform.metrics.distribution as distribution
    import pydeform.metrics.protocols as protocols

    calls = []

    def recording_fid(a, b, eps=1e-6):
        calls.append((a, b))
        return float(np.sum((a.mu - b.mu) ** 2))

    monkeypatch.setattr(protocols, "fid", recording_fid)
    monkeypatch.setattr(distribution, "fid", recording_fid)
    return calls


def _same_stats(got, expected, rtol=1e-4):
    assert got.count == expected.count
    np.testing.assert_allclose(got.mu, expected.mu, rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(got.sigma, expected.sigma, rtol=rtol, atol=1e-8)


def _skimage_ssim(gen, target):
    return structural_similarity(target, gen, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=2, data_range=float(gen.max()) - float(gen.min()))


def _pad(image, value=255):
    return np.pad(image, ((0, 0), (40, 40), (0, 0)), constant_values=value)


def test_pad_deepfashion_and_pairing(tmp_path):
    x = torch.zeros(2, 3, 256, 176, dtype=torch.uint8)
    padded = pad_deepfashion(x)
    assert padded.shape == (2, 3, 256, 256)
    assert bool((padded[..., :40] == 255).all() and (padded[..., -40:] == 255).all() and (padded[..., 40:216] == 0).all())
    assert pad_deepfashion(torch.zeros(1, 3, 128, 64)).shape == (1, 3, 128, 64)
    image = np.zeros((4, 4, 3), np.uint8)
    _write(tmp_path / "g", [image, image])
    _write(tmp_path / "t", [image, image], suffix=".jpg")
    assert [(g.name, t.name) for g, t in pair_folders(tmp_path / "g", tmp_path / "t")] == [("000.png", "000.jpg"), ("001.png", "001.jpg")]
    (tmp_path / "src").mkdir()  # pydeform test's names, <source>___<target>, pair with <target>
    for name in ("x1___000.png", "x2___001.png"):
        Image.fromarray(image).save(tmp_path / "src" / name)
    assert [t.name for _, t in pair_folders(tmp_path / "src", tmp_path / "t")] == ["000.jpg", "001.jpg"]
    _write(tmp_path / "t1", [image])
    with pytest.raises(ValueError, match="1 generated image.*no target.*001.png"):
        pair_folders(tmp_path / "g", tmp_path / "t1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        pair_folders(tmp_path / "empty", tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        pair_folders(tmp_path / "nowhere", tmp_path / "t")


def test_patn_protocol_pads_deepfashion_and_matches_skimage(files, tmp_path, capsys, monkeypatch):
    import pydeform.metrics.protocols as protocols

    seen = []  # what the protocol feeds the Inception network, and what comes back
    real_outputs = protocols.inception_outputs

    def spy(net, batches, *args, **kwargs):
        batches = [list(b) for b in batches]
        out = real_outputs(net, batches, *args, **kwargs)
        seen.append((torch.stack([image for b in batches for image in b]), out[1]))
        return out

    monkeypatch.setattr(protocols, "inception_outputs", spy)
    rng = np.random.default_rng(0)
    generated, targets = _pairs(rng, 10, (256, 176))
    masks = [(rng.random((256, 176)) > 0.5).astype(np.uint8) * 255 for _ in range(10)]
    _write(tmp_path / "gen", generated), _write(tmp_path / "tgt", targets), _write(tmp_path / "mask", masks)
    out = tmp_path / "report.json"
    assert main(["metrics", "pose-transfer", "--generated", str(tmp_path / "gen"), "--targets", str(tmp_path / "tgt"),
                 "--masks", str(tmp_path / "mask"), "--protocol", "patn", "--inception", str(files / "inception.pth"),
                 "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert report["protocol"] == "patn" and report["count"] == 10 and report["padded_176_to_256"] is True
    assert report["inception"]["resize"] == "torch-fidelity" and len(report["inception"]["weights"]["sha256"]) == 64
    m = report["metrics"]
    padded = [(_pad(g), _pad(t)) for g, t in zip(generated, targets)]
    assert m["ssim"] == pytest.approx(np.mean([_skimage_ssim(g, t) for g, t in padded]), abs=1e-6)
    keep = [_pad((k > 127)[..., None].astype(np.uint8), 0) for k in masks]
    assert m["mask_ssim"] == pytest.approx(np.mean([_skimage_ssim(g * k, t * k) for (g, t), k in zip(padded, keep)]), abs=1e-6)
    # The network saw the padded generated images and the padded masked ones, in order (4 + 4 + 2,
    # generated then masked per batch); IS and mask-IS are computed from what it returned.
    as_batch = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    fed = [images for images, _ in seen]
    assert torch.equal(torch.cat(fed[0::2]), as_batch([g for g, _ in padded]))
    assert torch.equal(torch.cat(fed[1::2]), as_batch([g * k for (g, _), k in zip(padded, keep)]))
    logits = np.concatenate([z for _, z in seen[0::2]])
    masked_logits = np.concatenate([z for _, z in seen[1::2]])
    assert (m["is_mean"], m["is_std"]) == pytest.approx(inception_score(logits), rel=1e-9)
    assert (m["mask_is_mean"], m["mask_is_std"]) == pytest.approx(inception_score(masked_logits), rel=1e-9)
    with torch.inference_mode():  # and what it returned is the network's output for them
        direct = InceptionV3FID(files / "inception.pth")(fed[-2])[1].double().numpy()
    np.testing.assert_allclose(seen[-2][1], direct, rtol=1e-5, atol=1e-5)
    assert m["ssim"] != pytest.approx(np.mean([_skimage_ssim(g, t) for g, t in zip(generated, targets)]), abs=1e-3)


def test_gfla_protocol_and_the_statistics_cache(files, tmp_path, monkeypatch, fid_calls):
    rng = np.random.default_rng(1)
    generated, targets = _pairs(rng, 3, (64, 48))
    real = [rng.integers(0, 256, (64, 48, 3), dtype=np.uint8) for _ in range(4)]
    _write(tmp_path / "gen", generated), _write(tmp_path / "tgt", targets), _write(tmp_path / "real", real)
    args = ["metrics", "pose-transfer", "--generated", str(tmp_path / "gen"), "--targets", str(tmp_path / "tgt"),
            "--protocol", "gfla", "--real-stats", str(tmp_path / "real"), "--inception", str(files / "inception.pth"),
            "--lpips-backbone", str(files / "alexnet.pth"), "--lpips-linear", str(files / "alex.pth"),
            "--cache", str(tmp_path / "cache"), "--batch-size", "2", "--no-progress", "--out", str(tmp_path / "r.json")]
    assert main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inception"]["resize"] == "pytorch-fid" and report["real_stats_count"] == 4 and report["count"] == 3
    assert report["lpips"]["net"] == "alex" and len(report["lpips"]["linear"]["sha256"]) == 64
    net = InceptionV3FID(files / "inception.pth", resize="pytorch-fid")
    batch = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        gen_features, real_features = net(batch(generated))[0].double().numpy(), net(batch(real))[0].double().numpy()
    expected = FeatureStats(gen_features.mean(0), np.cov(gen_features, rowvar=False), 3)
    real_stats = FeatureStats(real_features.mean(0), np.cov(real_features, rowvar=False), 4)
    (got_gen, got_real), = fid_calls
    _same_stats(got_gen, expected), _same_stats(got_real, real_stats)
    assert report["metrics"]["fid"] == np.sum((got_gen.mu - got_real.mu) ** 2)
    lpips = LPIPS("alex", files / "alexnet.pth", files / "alex.pth")
    to_unit = lambda images: batch(images).float() / 127.5 - 1
    assert report["metrics"]["lpips"] == pytest.approx(lpips(to_unit(generated), to_unit(targets)).mean().item(), rel=1e-5)

    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    np.testing.assert_allclose(FeatureStats.load(cached[0]).sigma, real_stats.sigma, rtol=1e-4, atol=1e-9)
    calls = []
    real_outputs = folders.folder_outputs
    monkeypatch.setattr(folders, "folder_outputs", lambda *a, **k: calls.append(1) or real_outputs(*a, **k))
    net = InceptionV3FID(files / "inception.pth", resize="pytorch-fid")
    folder_stats(tmp_path / "real", net, tmp_path / "cache", progress=False)
    assert calls == []  # same content and settings: read from the cache
    Image.fromarray(np.full_like(real[0], 255)).save(tmp_path / "real" / "000.png")  # same names, changed content
    changed = folder_stats(tmp_path / "real", net, tmp_path / "cache", progress=False)
    assert calls == [1] and len(list((tmp_path / "cache").glob("*.npz"))) == 2
    assert np.abs(changed.mu - real_stats.mu).max() > 1e-3
    paths = folders.list_images(tmp_path / "real")  # another resize mode or weight file: another key
    assert folders.folder_key(paths, InceptionV3FID(files / "inception.pth")) != folders.folder_key(paths, net)
    write_inception_weights(tmp_path / "other.pth", seed=1)
    other = InceptionV3FID(tmp_path / "other.pth", resize="pytorch-fid")
    assert folders.folder_key(paths, other) != folders.folder_key(paths, net)


def test_batches_keep_their_remainder(files, tmp_path):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (32, 24, 3), dtype=np.uint8) for _ in range(5)]
    images[4] = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)  # a folder may mix sizes
    paths = folders.list_images(_write(tmp_path / "imgs", images))
    net = InceptionV3FID(files / "inception.pth")
    features, logits = folders.folder_outputs(net, paths, batch_size=2, progress=False)
    assert features.shape == (5, 2048) and logits.shape == (5, 1008)
    with torch.inference_mode():
        direct = torch.cat([net(torch.from_numpy(np.stack(images[:4])).permute(0, 3, 1, 2))[0],
                            net(torch.from_numpy(images[4]).permute(2, 0, 1)[None])[0]])
    np.testing.assert_allclose(features, direct.double().numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        folders.folder_outputs(net, paths, batch_size=0)
    with pytest.raises(ValueError, match="random Inception weights are not cached"):
        folders.folder_key(paths, InceptionV3FID(random_weights=True))


def test_fid_and_is_commands(files, tmp_path, fid_calls, capsys):
    rng = np.random.default_rng(3)
    a = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    b = [rng.integers(0, 128, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    _write(tmp_path / "a", a), _write(tmp_path / "b", b)
    weights = ["--inception", str(files / "inception.pth"), "--no-progress"]
    assert main(["metrics", "fid", str(tmp_path / "a"), str(tmp_path / "b"), "--kid", "--kid-subset-size", "3",
                 "--save-stats", str(tmp_path / "a.npz"), "--out", str(tmp_path / "fid.json"), *weights]) == 0
    report = json.loads((tmp_path / "fid.json").read_text())
    net = InceptionV3FID(files / "inception.pth")
    with torch.inference_mode():
        fa, la = (t.double().numpy() for t in net(torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2)))
        fb = net(torch.from_numpy(np.stack(b)).permute(0, 3, 1, 2))[0].double().numpy()
    _same_stats(fid_calls[0][0], feature_stats(fa)), _same_stats(fid_calls[0][1], feature_stats(fb))
    assert report["kid_mean"] == pytest.approx(kid(fa, fb, subset_size=3)[0], rel=1e-3)
    assert [s["count"] for s in report["sets"]] == [4, 3]
    assert main(["metrics", "fid", str(tmp_path / "a.npz"), str(tmp_path / "b"), "--out", str(tmp_path / "f2.json"),
                 *weights]) == 0
    _same_stats(fid_calls[1][0], fid_calls[0][0], rtol=0), _same_stats(fid_calls[1][1], fid_calls[0][1], rtol=0)
    assert json.loads((tmp_path / "f2.json").read_text())["fid"] == report["fid"]
    feature_stats(fb).save(tmp_path / "b.npz")
    assert main(["metrics", "fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--out", str(tmp_path / "f3.json"),
                 "--no-progress"]) == 0  # statistics files only: no Inception weights needed
    assert json.loads((tmp_path / "f3.json").read_text())["fid"] == pytest.approx(report["fid"], rel=1e-6)
    for argv, message in (([str(tmp_path / "a.npz"), str(tmp_path / "b")], "--kid needs the features of both sets"),
                          ([str(tmp_path / "a"), str(tmp_path / "b")], "need at least 1000 images per set, got 4 and 3")):
        assert main(["metrics", "fid", *argv, "--kid", *weights]) == 1  # one line, as every user error
        assert message in capsys.readouterr().err

    assert main(["metrics", "is", str(tmp_path / "a"), "--splits", "2", "--out", str(tmp_path / "is.json"), *weights]) == 0
    report = json.loads((tmp_path / "is.json").read_text())
    expected = inception_score(la, splits=2)
    assert (report["is_mean"], report["is_std"]) == pytest.approx(expected, rel=1e-4) and report["count"] == 4


def test_command_errors(files, tmp_path, capsys):
    def fails(argv, pattern):  # a user's mistake: one line, exit 1
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and re.search(pattern, err.strip().splitlines()[-1]), err

    rng = np.random.default_rng(4)
    generated, targets = _pairs(rng, 2, (32, 32))
    gen, tgt = _write(tmp_path / "gen", generated), _write(tmp_path / "tgt", targets)
    base = ["metrics", "pose-transfer", "--generated", str(gen), "--targets", str(tgt), "--no-progress"]
    weights = ["--inception", str(files / "inception.pth")]
    fails(base + ["--protocol", "patn"], "--inception PATH is required")
    fails(base + ["--protocol", "gfla", *weights], "needs --real-stats")
    fails(base + ["--protocol", "gfla", "--real-stats", str(tgt), *weights], "needs --lpips-backbone")
    fails(base + ["--protocol", "patn", "--real-stats", str(tgt), *weights], "--real-stats is used by --protocol gfla only")
    fails(base + ["--protocol", "patn", "--batch-size", "0", *weights], "--batch-size")
    if not torch.cuda.is_available():
        fails(base + ["--protocol", "patn", "--device", "cuda", *weights], "no CUDA device")
    fails(base + ["--protocol", "gfla", "--real-stats", str(tmp_path / "none"), "--random-weights"], "neither a .npz file nor an image folder")
    fails(base + ["--protocol", "patn", *weights], "needs at least 10 images, got 2")
    generated, targets = _pairs(rng, 10, (32, 32))
    gen, tgt = _write(tmp_path / "gen10", generated), _write(tmp_path / "tgt10", targets)
    base = ["metrics", "pose-transfer", "--generated", str(gen), "--targets", str(tgt), "--no-progress"]
    _write(tmp_path / "masks", [np.zeros((32, 32), np.uint8)])
    fails(base + ["--protocol", "patn", "--masks", str(tmp_path / "masks"), *weights], "9 generated image.*no mask of the same name.*001.png")
    _write(tmp_path / "small_masks", [np.zeros((16, 32), np.uint8)] * 10)
    fails(base + ["--protocol", "patn", "--masks", str(tmp_path / "small_masks"), *weights], r"mask size \(16, 32\) differs from the image's \(32, 32\)")
    _write(tmp_path / "small", [t[:16] for t in targets])
    fails(["metrics", "pose-transfer", "--generated", str(gen), "--targets", str(tmp_path / "small"),
              "--protocol", "patn", "--no-progress", *weights], "differ in size")
    net = InceptionV3FID(files / "inception.pth")
    with pytest.raises(ValueError, match="protocol must be one of"):
        pose_transfer_metrics(gen, tgt, "dptn", inception=net)
    with pytest.raises(ValueError, match="patn needs the Inception network"):
        pose_transfer_metrics(gen, tgt, "patn")
    with pytest.raises(ValueError, match="gfla needs the Inception network, real statistics"):
        pose_transfer_metrics(gen, tgt, "gfla", inception=net)
    stats = FeatureStats(np.zeros(2048), np.eye(2048), 0)
    with pytest.raises(ValueError, match="LPIPS with AlexNet"):
        pose_transfer_metrics(gen, tgt, "gfla", inception=net, real_stats=stats, lpips=LPIPS("vgg", random_weights=True))
    with pytest.raises(ValueError, match="batch_size"):
        pose_transfer_metrics(gen, tgt, "patn", inception=net, batch_size=0)
    fails(base + ["--protocol", "patn", "--inception", str(tmp_path / "none.pth")], "Inception weights")
    with pytest.raises(SystemExit):
        main(base + ["--protocol", "dptn", *weights])


def test_generation_metrics(files, fid_calls, monkeypatch):
    import pydeform.metrics.protocols as protocols

    g = torch.Generator().manual_seed(5)
    generated = torch.rand(10, 3, 32, 32, generator=g) * 2 - 1
    targets = torch.rand(10, 3, 32, 32, generator=g) * 2 - 1
    out = generation_metrics(generated, targets)
    assert set(out["skipped"]) == {"is", "fid", "lpips"} and "Inception" in out["skipped"]["is"]
    assert "fid" not in out and "is_mean" not in out
    seen = []
    real_outputs = protocols.inception_outputs

    def spy(net, batches, *args, **kwargs):
        batches = [list(b) for b in batches]
        out = real_outputs(net, batches, *args, **kwargs)
        seen.append((torch.stack([image for b in batches for image in b]), out))
        return out

    monkeypatch.setattr(protocols, "inception_outputs", spy)
    real = FeatureStats(np.zeros(2048), np.eye(2048) * 1e-2, 100)
    out = generation_metrics(generated, targets, inception_weights=files / "inception.pth", real_stats=real,
                             lpips_backbone=files / "alexnet.pth", lpips_linear=files / "alex.pth", batch_size=4,
                             truncate=True)
    assert out["skipped"] == {} and set(out["weights"]) == {"inception", "lpips_backbone", "lpips_linear"}
    (images, (features, logits)), = seen
    assert torch.equal(images, ((generated + 1) * 127.5).floor().to(torch.uint8))  # truncated, as saved
    with torch.inference_mode():
        direct = InceptionV3FID(files / "inception.pth")(images[:3])
    np.testing.assert_allclose(features[:3], direct[0].double().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[:3], direct[1].double().numpy(), rtol=1e-5, atol=1e-5)
    assert (out["is_mean"], out["is_std"]) == pytest.approx(inception_score(logits), rel=1e-9)
    _same_stats(fid_calls[0][0], feature_stats(features), rtol=1e-9), _same_stats(fid_calls[0][1], real, rtol=0)
    lpips = LPIPS("alex", files / "alexnet.pth", files / "alex.pth")
    to_unit = lambda x: ((x + 1) * 127.5).floor() / 127.5 - 1
    assert out["lpips"] == pytest.approx(lpips(to_unit(generated), to_unit(targets)).mean().item(), rel=1e-5)
    out = generation_metrics(generated[:4], None, inception_weights=files / "inception.pth",
                             lpips_backbone=files / "alexnet.pth", lpips_linear=files / "alex.pth")
    assert set(out["skipped"]) == {"is", "fid", "lpips"} and "at least 10" in out["skipped"]["is"]
    assert torch.equal(seen[-1][0], ((generated[:4] + 1) * 127.5).round().to(torch.uint8))  # rounded by default
    with pytest.raises(ValueError, match="targets must have the shape"):
        generation_metrics(generated, targets[:3], lpips_backbone=files / "alexnet.pth", lpips_linear=files / "alex.pth")
    with pytest.raises(ValueError, match=r"generated must be a \(B, 3, H, W\)"):
        generation_metrics(generated[:, :1])
    with pytest.raises(ValueError, match=r"generated must be in \[-1, 1\] \(or uint8\), got values in \[0, 255\]"):
        generation_metrics(torch.cat([generated.clamp(0, 1), torch.full((1, 3, 32, 32), 255.0)]))
    overshoot = generated * 1.5  # a generator's small overshoot is clamped, as when saved
    clamped = protocols._to_uint8(overshoot.clamp(-1, 1), "generated", False)
    assert torch.equal(protocols._to_uint8(overshoot, "generated", False), clamped)
