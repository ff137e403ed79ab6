"""homography_from_points against known homographies, scikit-image and kornia."""
import kornia
import numpy as np
import pytest
import torch
from skimage.transform import ProjectiveTransform

from pydeform.geometry import homography_from_points


def project(h, points):
    uvw = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ h.transpose(1, 2)
    return uvw[..., :2] / uvw[..., 2:]


def known_homography(batch):
    """Random pixel homographies with h[2, 2] = 1 and mild perspective over a 100 px image."""
    h = torch.eye(3, dtype=torch.float64) + 0.1 * torch.randn(batch, 3, 3, dtype=torch.float64)
    h[:, :2, 2] = 10 * torch.randn(batch, 2, dtype=torch.float64)
    h[:, 2, :2] = 1e-3 * torch.randn(batch, 2, dtype=torch.float64)
    h[:, 2, 2] = 1.0
    return h


def test_exact_from_four_points():
    h = known_homography(3)
    src = torch.rand(3, 4, 2, dtype=torch.float64) * 100
    got = homography_from_points(src, project(h, src))
    torch.testing.assert_close(got, h, rtol=1e-8, atol=1e-8)


def test_four_points_match_kornia():
    # kornia's get_perspective_transform also returns h with h @ src ~ dst (src -> dst), h[2, 2] = 1.
    src = torch.tensor([[[0.0, 0.0], [99.0, 0.0], [99.0, 49.0], [0.0, 49.0]]], dtype=torch.float64)
    dst = src + torch.tensor([[[3.0, 2.0], [-4.0, 5.0], [1.0, -6.0], [2.5, 1.5]]], dtype=torch.float64)
    want = kornia.geometry.transform.get_perspective_transform(src, dst)
    torch.testing.assert_close(homography_from_points(src, dst), want, rtol=1e-8, atol=1e-8)


def test_least_squares_from_twenty_noisy_points():
    h = known_homography(2)
    src = torch.rand(2, 20, 2, dtype=torch.float64) * 100
    dst = project(h, src) + 0.01 * torch.randn(2, 20, 2, dtype=torch.float64)
    got = homography_from_points(src, dst)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got[:, 2, 2], torch.ones(2, dtype=torch.float64))
    # Recovers the true map to about the noise level, over the image.
    grid = torch.rand(2, 50, 2, dtype=torch.float64) * 100
    assert (project(got, grid) - project(h, grid)).norm(dim=-1).max() < 0.05
    # The same normalised DLT in scikit-image (centroid 0, mean distance sqrt(2), SVD).
    for b in range(2):
        want = ProjectiveTransform.from_estimate(src[b].numpy(), dst[b].numpy()).params
        np.testing.assert_allclose(got[b].numpy(), want / want[2, 2], rtol=1e-7, atol=1e-9)


def test_float32():
    h = known_homography(2)
    src = torch.rand(2, 8, 2, dtype=torch.float64) * 100
    dst = project(h, src)
    got = homography_from_points(src.float(), dst.float())
    assert got.dtype == torch.float32
    assert (project(got.double(), src) - dst).abs().max() < 1e-3


def test_degenerate_point_sets_raise():
    square = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]]])
    with pytest.raises(ValueError, match="^src and dst need at least 4 points, got 3"):
        homography_from_points(square[:, :3], square[:, :3])
    collinear = torch.tensor([[[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0], [5.0, 6.0]]])
    with pytest.raises(ValueError, match="^src: the points of batch element 0 are degenerate"):
        homography_from_points(collinear, torch.rand(1, 5, 2))
    three_collinear = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [10.0, 10.0], [0.0, 10.0]]])
    with pytest.raises(ValueError, match="^dst: the points of batch element 0 are degenerate"):
        homography_from_points(square, three_collinear)
    repeated = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [10.0, 0.0], [0.0, 10.0]]], dtype=torch.float64)
    with pytest.raises(ValueError, match="^src: the points of batch element 0"):
        homography_from_points(repeated, square.double())
    batch = torch.cat([square, three_collinear])
    with pytest.raises(ValueError, match="^src: the points of batch element 1"):
        homography_from_points(batch, torch.cat([square, square]))


def test_validation():
    pts = torch.rand(1, 5, 2)
    with pytest.raises(ValueError, match=r"^src must have shape \(B, N, 2\)"):
        homography_from_points(torch.rand(5, 2), torch.rand(5, 2))
    with pytest.raises(ValueError, match="^dst must have shape"):
        homography_from_points(pts, torch.rand(1, 6, 2))
    with pytest.raises(TypeError, match="^dst has dtype"):
        homography_from_points(pts, pts.double())
    with pytest.raises(TypeError, match="^src must have a floating dtype"):
        homography_from_points(torch.ones(1, 5, 2, dtype=torch.int64), pts)
    bad = pts.clone()
    bad[0, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="^dst must hold finite coordinates"):
        homography_from_points(pts, bad)
