"""Coordinate conversions and the kornia/OpenCV conventions, checked by warping with
pydeform.ops.reference.homography_sample (and kornia's own warp_perspective)."""
import kornia
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pydeform.geometry import (
    from_kornia,
    from_opencv,
    invert_homography,
    normalized_to_pixel,
    normalized_to_pixel_matrix,
    pixel_to_normalized,
    pixel_to_normalized_matrix,
    to_kornia,
    to_opencv,
)
from pydeform.ops import reference


def random_homography(batch, height, width, scale=0.05, generator=None):
    """Output -> input pixel homographies near the identity, about the image's size."""
    h = torch.eye(3, dtype=torch.float64) + scale * torch.randn(batch, 3, 3, dtype=torch.float64, generator=generator)
    h[:, :2, 2] += 2 * torch.randn(batch, 2, dtype=torch.float64, generator=generator)
    h[:, 2, :2] /= max(height, width)  # mild perspective over the image
    return h


def project(h, points):
    """(B, 3, 3) applied to (B, N, 2) points, with the perspective divide."""
    uvw = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ h.transpose(1, 2)
    return uvw[..., :2] / uvw[..., 2:]


def test_coordinate_matrices_closed_form():
    n = pixel_to_normalized_matrix(4, 6, torch.float64)
    corners = torch.tensor([[0.0, 0.0, 1.0], [5.0, 3.0, 1.0], [2.5, 1.5, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(corners @ n.T, torch.tensor([[-1.0, -1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.float64))
    torch.testing.assert_close(normalized_to_pixel_matrix(4, 6, torch.float64) @ n, torch.eye(3, dtype=torch.float64))
    # A side of 1 maps to 0 both ways (grid_sample's convention).
    assert pixel_to_normalized_matrix(1, 6)[1].tolist() == [0.0, 0.0, 0.0]
    assert normalized_to_pixel_matrix(1, 6)[1].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("height,width", [(1, 1), (1, 5), (4, 1), (7, 3)])
def test_coordinate_matrix_matches_reference(height, width):
    # The reference op's own helper: one convention throughout.
    want = reference.pixel_to_normalized_matrix(height, width)
    torch.testing.assert_close(pixel_to_normalized_matrix(height, width), want)


def test_translation_closed_form():
    # +2 pixels in x on a 5-wide image is +1 in normalized units; y (height 9) +2 pixels is +0.5.
    h = torch.tensor([[[1.0, 0, 2], [0, 1, 2], [0, 0, 1]]], dtype=torch.float64)
    want = torch.tensor([[[1.0, 0, 1], [0, 1, 0.5], [0, 0, 1]]], dtype=torch.float64)
    torch.testing.assert_close(pixel_to_normalized(h, (9, 5)), want)
    # The identity in pixels between different sizes is a scale in normalized units.
    eye = torch.eye(3, dtype=torch.float64)[None]
    got = pixel_to_normalized(eye, in_size=(9, 5), out_size=(3, 3))
    # x_in = 2 * x_pix / 4 - 1 with x_pix = (x_n + 1) * 2 / 2: x_in = (x_n + 1) / 2 - 1.
    torch.testing.assert_close(got, torch.tensor([[[0.5, 0, -0.5], [0, 0.25, -0.75], [0, 0, 1]]], dtype=torch.float64))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    in_h=st.integers(1, 9), in_w=st.integers(1, 9), out_h=st.integers(1, 9), out_w=st.integers(1, 9),
    padding=st.sampled_from(["zeros", "border"]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_pixel_and_normalized_warps_agree(in_h, in_w, out_h, out_w, padding, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, in_h, in_w, dtype=torch.float64, generator=g)
    h_pix = random_homography(2, in_h, in_w, generator=g)
    size = (out_h, out_w)
    want = reference.homography_sample(x, h_pix, size=size, padding_mode=padding, coords="pixel")
    h_norm = pixel_to_normalized(h_pix, (in_h, in_w), size)
    got = reference.homography_sample(x, h_norm, size=size, padding_mode=padding, coords="normalized")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    back = normalized_to_pixel(h_norm, (in_h, in_w), size)
    got = reference.homography_sample(x, back, size=size, padding_mode=padding, coords="pixel")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_round_trip_and_default_out_size():
    h = random_homography(3, 12, 20)
    torch.testing.assert_close(normalized_to_pixel(pixel_to_normalized(h, (12, 20), (7, 9)), (12, 20), (7, 9)), h)
    torch.testing.assert_close(pixel_to_normalized(h, (12, 20)), pixel_to_normalized(h, (12, 20), (12, 20)))


def test_invert_homography_swaps_directions():
    h = random_homography(3, 16, 16)
    out_points = torch.rand(3, 10, 2, dtype=torch.float64) * 15
    in_points = project(h, out_points)
    torch.testing.assert_close(project(invert_homography(h), in_points), out_points)


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_kornia_warp_perspective_matches_reference(padding, align_corners):
    # kornia takes the input -> output (src -> dst) pixel matrix and dsize = (height, width).
    x = torch.randn(2, 3, 13, 21, dtype=torch.float64)
    h = random_homography(2, 13, 21)
    want = reference.homography_sample(x, h, size=(10, 17), padding_mode=padding)
    got = kornia.geometry.transform.warp_perspective(
        x, to_kornia(h), dsize=(10, 17), mode="bilinear", padding_mode=padding, align_corners=align_corners
    )
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(from_kornia(to_kornia(h)), h)


def test_opencv_matrix_maps_input_to_output():
    # cv2.warpPerspective (default flags) computes dst(q) = src(M^-1 q): M maps input pixels to output pixels.
    h = random_homography(2, 16, 16)
    m = to_opencv(h)
    torch.testing.assert_close(m[:, 2, 2], torch.ones(2, dtype=torch.float64))
    out_points = torch.rand(2, 10, 2, dtype=torch.float64) * 15
    torch.testing.assert_close(project(m, project(h, out_points)), out_points)
    torch.testing.assert_close(from_opencv(m), h / h[:, 2:, 2:])


def test_validation():
    h = torch.eye(3)[None]
    with pytest.raises(ValueError, match=r"^h must have shape \(B, 3, 3\)"):
        pixel_to_normalized(torch.eye(3), (4, 4))
    with pytest.raises(TypeError, match="^h must have a floating dtype"):
        normalized_to_pixel(torch.eye(3, dtype=torch.int64)[None], (4, 4))
    with pytest.raises(TypeError, match="^in_size must be a"):
        pixel_to_normalized(h, 4)
    with pytest.raises(ValueError, match=r"^out_size\[1\] \(width\) must be >= 1"):
        pixel_to_normalized(h, (4, 4), (3, 0))
    with pytest.raises(TypeError, match=r"^in_size\[0\] \(height\) must be an int"):
        normalized_to_pixel(h, (4.0, 4))
    with pytest.raises(ValueError, match="^width must be >= 1"):
        pixel_to_normalized_matrix(3, 0)
    with pytest.raises(ValueError, match="^m must have shape"):
        from_kornia(torch.eye(3))
    with pytest.raises(TypeError, match="^h must be a torch.Tensor"):
        to_opencv([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])
