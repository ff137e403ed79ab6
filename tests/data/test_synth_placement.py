"""Tests for pydeform.data.synth_placement.

The written files are read back with csv/json/PIL (not the loader); the placement is
checked against independent computations: the pupils found in the rendered backgrounds by
thresholding must map onto the canonical eyes under params_to_matrix(p_true), the real image
must be the composite at p_true, the parameters must be the similarity scipy's expm gives,
and corner_error must match hand computations.
"""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from scipy.linalg import expm

from pydeform.data import synth_placement as sp
from pydeform.geometry import composite, params_to_matrix
from pydeform.ops import homography_sample

SIZE = (64, 64)
SEED = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("placement")
    info = sp.write_placement(root, SIZE, train=40, test=10, seed=SEED, progress=False, foregrounds=6)
    return root, info


def read_rows(root: Path, split: str) -> list[dict]:
    with open(root / f"placement-{split}.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["background", "foreground", "real", "p_true", "p_init"]
    out = []
    for row in rows[1:]:
        assert len(row) == 5, row
        out.append({"background": row[0], "foreground": row[1], "real": row[2],
                    "p_true": np.array(json.loads(row[3])), "p_init": np.array(json.loads(row[4]))})
    return out


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


def to_pixels(points: np.ndarray, size) -> np.ndarray:
    """Normalized (x, y) -> pixel (x, y), align_corners=True."""
    h, w = size
    return (points + 1.0) * np.array([(w - 1) / 2, (h - 1) / 2])


def test_layout_info_and_csv(dataset):
    root, info = dataset
    on_disk = json.loads((root / "info.json").read_text())
    assert on_disk == info
    assert info["size"] == [64, 64] and info["seed"] == SEED
    assert info["counts"] == {"train": 40, "test": 10}
    assert info["corners"] == [list(c) for c in sp.CORNERS] and len(info["corners"]) == 4
    for split, count in (("train", 40), ("test", 10)):
        rows = read_rows(root, split)
        assert len(rows) == count
        assert [r["background"] for r in rows] == [f"backgrounds/{split}/{i:06d}.png" for i in range(count)]
        assert [r["real"] for r in rows] == [f"real/{split}/{i:06d}.png" for i in range(count)]
        assert sorted(p.name for p in (root / "foregrounds" / split).iterdir()) == [f"{k:04d}.png" for k in range(6)]
        for r in rows:
            assert r["foreground"].startswith(f"foregrounds/{split}/")
            assert r["p_true"].shape == (8,) and r["p_init"].shape == (8,)
            # The stored decimals are float32 values written with the 9 digits that identify them.
            for p in (r["p_true"], r["p_init"]):
                assert [float(f"{v:.9g}") for v in p.astype(np.float32)] == p.tolist()
        for kind, mode in (("background", "RGB"), ("foreground", "RGBA"), ("real", "RGB")):
            with Image.open(root / rows[0][kind]) as image:
                assert image.mode == mode and image.size == (64, 64)
    # Samples use more than one of the glasses.
    assert len({r["foreground"] for r in read_rows(root, "train")}) > 2


def test_p_true_is_a_similarity_from_the_prior(dataset):
    root, _ = dataset
    for r in read_rows(root, "train") + read_rows(root, "test"):
        p = r["p_true"]
        # Similarity generator [[a, -w, tx], [w, a, ty], [0, 0, -2a]].
        assert p[3] == 0 and p[7] == 0
        assert p[1] == pytest.approx(-p[5], abs=1e-7) and p[6] == pytest.approx(-2 * p[2], abs=1e-7)
        scale, angle = math.exp(-3 * p[2]), -p[5]
        assert 0.8 - 1e-5 <= scale <= 1.2 + 1e-5 and abs(angle) <= math.radians(15) + 1e-6
        assert abs(p[0]) <= 0.2 + 1e-7 and abs(p[4]) <= 0.2 + 1e-7


@pytest.mark.parametrize("scale, angle", [(1.0, 0.0), (1.15, 0.2), (0.85, -0.25)])
def test_similarity_params_against_scipy_expm(scale, angle):
    p = sp.similarity_params(scale, angle, 0.1, -0.15)
    m = expm(np.array([[p[2], p[1], p[0]], [p[5], -p[2] - p[6], p[4]], [p[3], p[7], p[6]]]))
    m = m / m[2, 2]
    # Background -> canonical: the background shows the canonical frame magnified by `scale`
    # and turned by `angle`, so the matrix shrinks by 1/scale and turns by -angle.
    c, s = math.cos(angle), math.sin(angle)
    np.testing.assert_allclose(m[:2, :2], np.array([[c, s], [-s, c]]) / scale, atol=1e-12)
    np.testing.assert_allclose(m[2], [0, 0, 1], atol=1e-12)
    torch.testing.assert_close(params_to_matrix(torch.tensor(p)[None])[0] / params_to_matrix(torch.tensor(p)[None])[0, 2, 2],
                               torch.tensor(m), atol=1e-12, rtol=0)


def test_similarity_params_rejects_bad_arguments():
    for kwargs, name in (({"scale": 0.0}, "scale"), ({"scale": -1.0}, "scale"), ({"angle": math.nan}, "angle"),
                         ({"tx": "0"}, "tx"), ({"ty": math.inf}, "ty")):  # fmt: skip
        with pytest.raises(ValueError, match=name):
            sp.similarity_params(**{"scale": 1.0, "angle": 0.0, "tx": 0.0, "ty": 0.0, **kwargs})


def test_perturbation_is_0_1_standard_normal(dataset):
    root, _ = dataset
    rows = read_rows(root, "train") + read_rows(root, "test")
    delta = np.stack([r["p_init"] - r["p_true"] for r in rows])  # (50, 8)
    # 400 draws of 0.1 N(0, 1): the sample std is within 0.02 of 0.1 and the mean within
    # 0.02 of 0 with overwhelming probability (standard errors 0.0035 and 0.005).
    assert abs(delta.std() - 0.1) < 0.02 and abs(delta.mean()) < 0.02
    # Every parameter is perturbed, each about as much (50 draws each, standard error 0.01).
    assert np.all(np.abs(delta.std(axis=0) - 0.1) < 0.045)


def test_real_is_the_composite_at_p_true(dataset):
    root, _ = dataset
    rows = read_rows(root, "train")
    bg = torch.tensor(np.stack([pixels(root / r["background"]) for r in rows]), dtype=torch.float32).permute(0, 3, 1, 2)
    fg = torch.tensor(np.stack([pixels(root / r["foreground"]) for r in rows]), dtype=torch.float32).permute(0, 3, 1, 2)
    real = np.stack([pixels(root / r["real"]) for r in rows])
    p_true = torch.tensor(np.stack([r["p_true"] for r in rows]), dtype=torch.float32)
    want = composite(homography_sample(fg, params_to_matrix(p_true), coords="normalized"), bg)
    want = want.permute(0, 2, 3, 1).numpy()
    assert np.abs(real - want).max() <= 0.5 / 255 + 1e-5  # 8-bit quantisation
    # The glasses are there, and a wrong warp (p_init) puts them elsewhere.
    changed = np.abs(real - bg.permute(0, 2, 3, 1).numpy()).max(axis=-1) > 0.1
    assert changed.reshape(len(rows), -1).sum(axis=1).min() > 20
    p_init = torch.tensor(np.stack([r["p_init"] for r in rows]), dtype=torch.float32)
    wrong = composite(homography_sample(fg, params_to_matrix(p_init), coords="normalized"), bg)
    wrong_error = np.abs(real - wrong.permute(0, 2, 3, 1).numpy()).reshape(len(rows), -1).max(axis=1)
    assert np.median(wrong_error) > 0.2


def pupils(background: np.ndarray) -> np.ndarray:
    """Centres (x, y) in pixels of the image's dark blobs (channel sum < 0.45: only the pupils
    are that dark), weighted by darkness; sorted left to right."""
    total = background.sum(axis=-1)
    labels, count = ndimage.label(total < 0.45)
    weights = np.clip(0.75 - total, 0, None)
    centres = ndimage.center_of_mass(weights, labels, list(range(1, count + 1)))
    return np.array(sorted((x, y) for y, x in centres))


def check_eyes(root: Path, split: str, size) -> float:
    """Largest distance (pixels) between a detected pupil and the canonical eye mapped into
    the background by the inverse of params_to_matrix(p_true)."""
    worst = 0.0
    for r in read_rows(root, split):
        found = pupils(pixels(root / r["background"]))
        assert found.shape == (2, 2), f"{r['background']}: expected 2 pupils, found {len(found)}"
        h = params_to_matrix(torch.tensor(r["p_true"])[None])[0].numpy()
        eyes = np.c_[np.array(sp.EYES), np.ones(2)] @ np.linalg.inv(h).T
        expected = to_pixels(eyes[:, :2] / eyes[:, 2:], size)
        expected = expected[np.argsort(expected[:, 0])]
        worst = max(worst, float(np.linalg.norm(found - expected, axis=1).max()))
        # And the other way: the pupils land on the canonical eyes under h.
        mapped = np.c_[(found / np.array([(size[1] - 1) / 2, (size[0] - 1) / 2]) - 1), np.ones(2)] @ h.T
        canonical_px = to_pixels(mapped[:, :2] / mapped[:, 2:], size)
        np.testing.assert_allclose(canonical_px, to_pixels(np.array(sp.EYES), size), atol=1.0 / 0.8)
    return worst


def test_eyes_map_to_the_canonical_eyes(dataset, tmp_path):
    root, _ = dataset
    assert check_eyes(root, "train", SIZE) < 1.0
    assert check_eyes(root, "test", SIZE) < 1.0
    big = tmp_path / "big"
    sp.write_placement(big, (144, 144), train=4, test=1, seed=1, progress=False, foregrounds=1)
    assert check_eyes(big, "train", (144, 144)) < 1.0


def test_glasses_lie_in_the_corner_box_and_are_symmetric(dataset):
    root, _ = dataset
    (x0, y0), _, (x1, y1), _ = to_pixels(np.array(sp.CORNERS), SIZE)
    cols, rows = np.meshgrid(np.arange(64), np.arange(64))
    outside = (cols < x0 - 1) | (cols > x1 + 1) | (rows < y0 - 1) | (rows > y1 + 1)
    eyes = to_pixels(np.array(sp.EYES), SIZE)
    for path in sorted((root / "foregrounds").rglob("*.png")):
        rgba = np.asarray(Image.open(path), dtype=np.int64)
        alpha = rgba[..., 3]
        assert alpha[outside].max() == 0, path
        # Frames around both eyes: opaque pixels on each eye's row, left and right of it.
        for ex, ey in eyes:
            row = alpha[int(round(ey)) - 3:int(round(ey)) + 4]
            assert row[:, :int(ex)].max() == 255 and row[:, int(ex) + 1:].max() == 255
        # Mirror symmetric about the vertical axis (the sample grid is).
        assert np.abs(alpha - alpha[:, ::-1]).max() <= 1, path


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    kwargs = dict(size=(32, 48), train=3, test=2, progress=False, foregrounds=2)
    sp.write_placement(tmp_path / "a", seed=7, **kwargs)
    sp.write_placement(tmp_path / "b", seed=7, **kwargs)
    sp.write_placement(tmp_path / "c", seed=8, **kwargs)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 + 2 + 2 * 2 + 3 + 2 + 2 + 1  # backgrounds, foregrounds, real, CSVs, info
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name in ("backgrounds/train/000000.png", "foregrounds/test/0001.png", "placement-train.csv"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name
    assert np.asarray(Image.open(tmp_path / "a" / "real/train/000002.png")).shape == (32, 48, 3)


def test_torch_threads_are_restored(tmp_path):
    before = torch.get_num_threads()
    sp.write_placement(tmp_path, (16, 16), train=1, test=1, progress=False, foregrounds=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kwargs, message", [
    ({"size": (8, 64)}, "size"), ({"size": "64"}, "HxW"), ({"size": (64.0, 64)}, "size"), ({"size": (64,)}, "size"),
    ({"train": 0}, "train"), ({"test": -1}, "test"), ({"train": True}, "train"), ({"seed": -1}, "seed"),
    ({"foregrounds": 0}, "foregrounds"),
])  # fmt: skip
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sp.write_placement(tmp_path / "x", **{"progress": False, **kwargs})
    assert not (tmp_path / "x").exists()


def test_parse_size():
    assert sp.parse_size("144x144") == (144, 144) and sp.parse_size(" 32 X 48 ") == (32, 48)
    for bad in ("64", "64x", "axb", "8x8"):
        with pytest.raises(ValueError, match="size"):
            sp.parse_size(bad)


# ----------------------------------------------------------------------------- corner_error


def translation(dx: float, dy: float) -> torch.Tensor:
    return torch.tensor([[[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]]], dtype=torch.float64)


def test_corner_error_identical_warps_is_zero():
    p = torch.randn(5, 8, dtype=torch.float64) * 0.2
    h = params_to_matrix(p)
    torch.testing.assert_close(sp.corner_error(h, h, sp.CORNERS, (64, 64)), torch.zeros(5, dtype=torch.float64))
    # Parameters or matrices, and a matrix times any non-zero number, are the same warp.
    torch.testing.assert_close(sp.corner_error(p, 3.0 * h, sp.CORNERS, (64, 64)), torch.zeros(5, dtype=torch.float64),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [1.0, 2.5, 7.0])
def test_corner_error_of_a_translation_is_its_length_in_pixels(k):
    size = (48, 80)  # H != W: x and y scale differently
    identity = translation(0, 0)
    # k pixels along x is 2k / (W - 1) normalized units; along y 2k / (H - 1).
    along_x = sp.corner_error(translation(2 * k / 79, 0), identity, sp.CORNERS, size)
    along_y = sp.corner_error(identity, translation(0, 2 * k / 47), sp.CORNERS, size)
    diagonal = sp.corner_error(translation(2 * 3 * k / 79, 2 * 4 * k / 47), identity, sp.CORNERS, size)
    torch.testing.assert_close(along_x, torch.tensor([k], dtype=torch.float64))
    torch.testing.assert_close(along_y, torch.tensor([k], dtype=torch.float64))
    torch.testing.assert_close(diagonal, torch.tensor([5 * k], dtype=torch.float64))


def test_corner_error_of_a_scaling_about_the_centre():
    s, size = 1.25, (64, 96)
    # h = diag(1/s, 1/s, 1) puts canonical c at s c: each corner moves by (s - 1) |c| in pixels.
    h = torch.diag(torch.tensor([1 / s, 1 / s, 1.0], dtype=torch.float64))[None]
    corners = np.array(sp.CORNERS)
    want = np.mean([(s - 1) * math.hypot(cx * 95 / 2, cy * 63 / 2) for cx, cy in corners])
    got = sp.corner_error(h, translation(0, 0), sp.CORNERS, size)
    assert got.item() == pytest.approx(want, rel=1e-12)
    # The batch is per element, and float32 parameters work.
    p = torch.zeros(2, 8)
    p[1, 2], p[1, 6] = -math.log(s) / 3, 2 * math.log(s) / 3  # scale s about the centre, as parameters
    both = sp.corner_error(p, params_to_matrix(torch.zeros(2, 8)), sp.CORNERS, size)
    assert both.dtype == torch.float32 and both[0] == 0 and both[1].item() == pytest.approx(want, rel=1e-5)


def test_corner_error_rejects_bad_arguments():
    h = translation(0, 0)
    with pytest.raises(ValueError, match="p_pred_or_h_pred"):
        sp.corner_error(torch.zeros(1, 6, dtype=torch.float64), h, sp.CORNERS, (8, 8))
    with pytest.raises(TypeError, match="h_true"):
        sp.corner_error(h, np.eye(3)[None], sp.CORNERS, (8, 8))
    with pytest.raises(ValueError, match="batch"):
        sp.corner_error(h.expand(2, 3, 3), h, sp.CORNERS, (8, 8))
    with pytest.raises(ValueError, match="corners"):
        sp.corner_error(h, h, [1.0, 2.0], (8, 8))
    with pytest.raises(TypeError, match="size"):
        sp.corner_error(h, h, sp.CORNERS, 64)
    with pytest.raises(ValueError, match="h_true is on meta"):
        sp.corner_error(h, h.to("meta"), sp.CORNERS, (8, 8))
