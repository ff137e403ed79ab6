import math

import numpy as np
import pytest
import torch
from skimage.measure import points_in_poly

from pydeform.pose import JOINT, Keypoints, heatmaps, stickman, stickman_thickness


def test_heatmap_peak_and_width(standing):
    maps = heatmaps(standing, (128, 96), sigma=6)
    assert maps.shape == (18, 128, 96) and maps.dtype == torch.float32
    for j, (x, y) in enumerate(standing.astype(int)):
        assert maps[j, y, x] == 1.0  # the peak, at the joint
        assert maps[j].max() == 1.0
    x, y = standing[JOINT["Relb"]].astype(int)
    # exp(-d^2 / (2 sigma^2)) at a few offsets: d = sigma gives e^-1/2, d = 5 gives e^(-25/72).
    for dx, dy in [(6, 0), (0, -6), (3, 4), (-4, 3), (12, 5)]:
        want = math.exp(-(dx * dx + dy * dy) / 72)
        assert maps[JOINT["Relb"], y + dy, x + dx].item() == pytest.approx(want, rel=1e-6)


def test_heatmap_subpixel_joint_and_sigma():
    xy = np.full((18, 2), -1.0)
    xy[0] = [10.25, 7.5]
    maps = heatmaps(xy, (20, 30), sigma=2.5, dtype=torch.float64)
    ys, xs = np.mgrid[0:20, 0:30]
    want = np.exp(-((xs - 10.25) ** 2 + (ys - 7.5) ** 2) / (2 * 2.5**2))
    np.testing.assert_allclose(maps[0].numpy(), want, rtol=1e-12)
    assert maps[1:].abs().max() == 0  # missing joints: zero channels


def test_heatmap_missing_and_batch(standing, striding):
    a = standing.copy()
    a[JOINT["Lwri"]] = -1
    batch = heatmaps(torch.tensor(np.stack([a, striding])), (128, 100), dtype=torch.float64)
    assert batch.shape == (2, 18, 128, 100)
    assert batch[0, JOINT["Lwri"]].abs().max() == 0 and batch[1, JOINT["Lwri"]].max() > 0.9
    torch.testing.assert_close(batch[1], heatmaps(Keypoints(striding), (128, 100), dtype=torch.float64))
    torch.testing.assert_close(heatmaps([Keypoints(a), Keypoints(striding)], (128, 100), dtype=torch.float64), batch)


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), "6"])
def test_heatmap_rejects_bad_sigma(standing, sigma):
    with pytest.raises(ValueError, match="sigma"):
        heatmaps(standing, (8, 8), sigma=sigma)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of (..., 2) points to the segment ab."""
    d = b - a
    t = np.clip(((points - a) @ d) / max(d @ d, 1e-12), 0, 1)
    return np.linalg.norm(points - (a + t[..., None] * d), axis=-1)


def _check_channel(channel: np.ndarray, xy: np.ndarray, lines, thickness: int):
    """lines: {value: [(joint, joint), ...]}. Pixels within t/2 - 1 of a line of value v
    (and clear of lines of other values) are v; pixels farther than t/2 + 1.5 from every
    line are 0: one pixel of slack for the rasteriser at each edge."""
    ys, xs = np.mgrid[0 : channel.shape[0], 0 : channel.shape[1]]
    points = np.stack([xs, ys], axis=-1).astype(np.float64)
    distance = {
        value: np.min([_segment_distance(points, xy[JOINT[a]], xy[JOINT[b]]) for a, b in segments], axis=0)
        for value, segments in lines.items()
    }
    clear = thickness / 2 + 1.5
    for value, d in distance.items():
        others = np.min([o for v, o in distance.items() if v != value] + [np.full_like(d, np.inf)], axis=0)
        near = (d <= max(thickness / 2 - 1, 0.25)) & (others > clear)
        assert near.sum() >= 5
        np.testing.assert_array_equal(channel[near], value)
    np.testing.assert_array_equal(channel[np.min(list(distance.values()), axis=0) > clear], 0)


RIGHT = [("Rank", "Rkne"), ("Rkne", "Rhip"), ("Rhip", "Rsho"), ("Rsho", "Relb"), ("Relb", "Rwri"), ("nose", "Reye")]
LEFT = [(a.replace("R", "L"), b.replace("R", "L")) for a, b in RIGHT]
NECK = [("neck", "nose")]


@pytest.mark.parametrize("scale", [1, 2])
def test_stickman_lines_and_torso(striding, scale):
    xy = striding * scale
    size = (128 * scale, 128 * scale)
    image = stickman(xy, size).numpy()
    thickness = stickman_thickness(size[1])
    assert thickness == 3 * scale and image.shape == (3, *size)
    for channel, lines in ((0, RIGHT), (1, LEFT)):
        _check_channel(image[channel], xy, {1.0: lines, 0.5: NECK}, thickness)
    # Torso: pixel centres a pixel or more inside the polygon are set, a pixel or more outside are not.
    polygon = xy[[JOINT[n] for n in ("Lhip", "Lsho", "Rsho", "Rhip")]]
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    edges = [(polygon[i], polygon[(i + 1) % 4]) for i in range(4)]
    border = np.min([_segment_distance(points, a, b) for a, b in edges], axis=0) <= 1
    inside = points_in_poly(points, polygon)
    torso = image[2].ravel()
    assert (torso[inside & ~border] == 1).all() and (torso[~inside & ~border] == 0).all()
    assert set(np.unique(image)) <= {0.0, 0.5, 1.0}


def test_stickman_skips_missing_joints(striding):
    xy = striding.copy()
    xy[JOINT["Relb"]] = -1
    xy[JOINT["Lhip"]] = -1
    image = stickman(xy, (128, 128)).numpy()
    for a, b in [("Rsho", "Relb"), ("Relb", "Rwri")]:  # both of the elbow's limbs are gone
        mid = ((striding[JOINT[a]] + striding[JOINT[b]]) / 2).round().astype(int)
        assert image[0, mid[1], mid[0]] == 0
    right = [("Rank", "Rkne"), ("Rkne", "Rhip"), ("Rhip", "Rsho"), ("nose", "Reye")]
    left = [("Lank", "Lkne"), ("Lsho", "Lelb"), ("Lelb", "Lwri"), ("nose", "Leye")]  # no Lkne-Lhip
    _check_channel(image[0], xy, {1.0: right, 0.5: NECK}, 3)
    _check_channel(image[1], xy, {1.0: left, 0.5: NECK}, 3)
    assert image[2].max() == 0  # a torso corner is missing


def test_stickman_batch_and_device(standing, striding):
    batch = stickman(torch.tensor(np.stack([standing, striding])), (64, 48), dtype=torch.float64)
    assert batch.shape == (2, 3, 64, 48) and batch.dtype == torch.float64
    torch.testing.assert_close(batch[0], stickman(standing, (64, 48), dtype=torch.float64))
    assert stickman_thickness(64) == 2 and stickman_thickness(20) == 1
