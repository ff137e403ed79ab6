"""Coordinate frames and conventions for 3x3 homographies (docs/contracts.md).

pydeform's convention: h maps an OUTPUT point (x, y, 1) to an INPUT point (the sampling
direction), x the column and y the row.

- "pixel" coordinates: pixel centres at integers 0..W-1 and 0..H-1.
- "normalized" coordinates: x -> 2x/(W-1) - 1 (a side of length 1 maps to 0), i.e.
  F.grid_sample(..., align_corners=True). ST-GAN's matrices live in this frame.

Other libraries take the opposite direction (input -> output, "src -> dst"), in pixels:

- kornia.geometry.transform.warp_perspective(src, M, dsize): M = to_kornia(h), dsize =
  (height, width). Either align_corners works: in kornia 0.9 both the matrix
  normalisation and grid_sample follow the flag, so a pixel-space M means the same warp
  (pixel centres at integers) under both; padding "zeros"/"border" match ours.
- cv2.warpPerspective(src, M, dsize): M = to_opencv(h) with the default flags, dsize =
  (width, height); or pass h itself with flags=cv2.WARP_INVERSE_MAP, which takes the
  dst -> src map. OpenCV also puts pixel centres at integers. BORDER_CONSTANT (value 0)
  is our "zeros", BORDER_REPLICATE our "border" (up to OpenCV's quantisation of the
  sample position to 1/32 pixel).
"""
from __future__ import annotations

import torch
from torch import Tensor

from pydeform.geometry._checks import check_matrices, check_side, check_size

__all__ = [
    "pixel_to_normalized_matrix",
    "normalized_to_pixel_matrix",
    "pixel_to_normalized",
    "normalized_to_pixel",
    "invert_homography",
    "to_kornia",
    "from_kornia",
    "to_opencv",
    "from_opencv",
]


def pixel_to_normalized_matrix(
    height: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """(3, 3) matrix taking pixel (x, y, 1) to grid_sample's align_corners=True coordinates.

    x -> 2x/(width-1) - 1, y -> 2y/(height-1) - 1. A side of length 1 maps to 0 (as
    grid_sample's own unnormalisation does), which makes the matrix singular there.
    """
    check_side("height", height)
    check_side("width", width)
    sx = 2.0 / (width - 1) if width > 1 else 0.0
    sy = 2.0 / (height - 1) if height > 1 else 0.0
    return torch.tensor(
        [[sx, 0.0, -1.0 if width > 1 else 0.0], [0.0, sy, -1.0 if height > 1 else 0.0], [0.0, 0.0, 1.0]],
        dtype=dtype,
        device=device,
    )


def normalized_to_pixel_matrix(
    height: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """(3, 3) matrix taking align_corners=True coordinates (x, y, 1) to pixel coordinates.

    The inverse of pixel_to_normalized_matrix for sides > 1; a side of length 1 maps every
    coordinate to pixel 0 (what grid_sample does with it).
    """
    check_side("height", height)
    check_side("width", width)
    return torch.tensor(
        [[(width - 1) / 2, 0.0, (width - 1) / 2], [0.0, (height - 1) / 2, (height - 1) / 2], [0.0, 0.0, 1.0]],
        dtype=dtype,
        device=device,
    )


def pixel_to_normalized(h: Tensor, in_size: tuple[int, int], out_size: tuple[int, int] | None = None) -> Tensor:
    """Re-express output->input homographies from pixel to normalized coordinates.

    h: (B, 3, 3), output pixel -> input pixel. in_size, out_size: (height, width) of the
    input and output images (out_size defaults to in_size). Returns (B, 3, 3), output
    normalized -> input normalized, such that
    homography_sample(x, h, size=out_size) == homography_sample(x, result, size=out_size, coords="normalized").
    """
    check_matrices("h", h)
    in_h, in_w = check_size("in_size", in_size)
    out_h, out_w = check_size("out_size", out_size if out_size is not None else in_size)
    # normalized out -> pixel out -> (h) pixel in -> normalized in
    to_norm_in = pixel_to_normalized_matrix(in_h, in_w, h.dtype, h.device)
    from_norm_out = normalized_to_pixel_matrix(out_h, out_w, h.dtype, h.device)
    return to_norm_in @ h @ from_norm_out


def normalized_to_pixel(h: Tensor, in_size: tuple[int, int], out_size: tuple[int, int] | None = None) -> Tensor:
    """Re-express output->input homographies from normalized to pixel coordinates.

    h: (B, 3, 3), output normalized -> input normalized. in_size, out_size: (height, width)
    of the input and output images (out_size defaults to in_size). Returns (B, 3, 3),
    output pixel -> input pixel. The inverse of pixel_to_normalized for sides > 1.
    """
    check_matrices("h", h)
    in_h, in_w = check_size("in_size", in_size)
    out_h, out_w = check_size("out_size", out_size if out_size is not None else in_size)
    # pixel out -> normalized out -> (h) normalized in -> pixel in
    to_norm_out = pixel_to_normalized_matrix(out_h, out_w, h.dtype, h.device)
    from_norm_in = normalized_to_pixel_matrix(in_h, in_w, h.dtype, h.device)
    return from_norm_in @ h @ to_norm_out


def invert_homography(h: Tensor) -> Tensor:
    """Switch between the output->input and input->output conventions: the matrix inverse.

    h: (B, 3, 3), invertible. Returns (B, 3, 3) in the same coordinate frame(s), with the
    roles of input and output swapped. Differentiable.
    """
    check_matrices("h", h)
    return torch.linalg.inv(h)


def _unit_h22(h: Tensor) -> Tensor:
    """Scale each (3, 3) matrix of h (B, 3, 3) to h[2, 2] = 1 (homographies are defined up
    to scale). Where |h[2, 2]| < 1e-12 |h| the origin maps to infinity; those stay as they are."""
    h22 = h[:, 2:3, 2:3]
    ok = h22.abs() > 1e-12 * torch.linalg.matrix_norm(h)[:, None, None]
    return torch.where(ok, h / torch.where(ok, h22, torch.ones_like(h22)), h)


def to_kornia(h: Tensor) -> Tensor:
    """pydeform pixel homography (B, 3, 3), output -> input, to kornia's M (B, 3, 3) for
    kornia.geometry.transform.warp_perspective(x, M, dsize=(Ho, Wo)): input -> output pixels."""
    return invert_homography(h)


def from_kornia(m: Tensor) -> Tensor:
    """kornia's warp_perspective M (B, 3, 3), input -> output pixels, to pydeform's
    output -> input pixel homography (B, 3, 3)."""
    check_matrices("m", m)
    return torch.linalg.inv(m)


def to_opencv(h: Tensor) -> Tensor:
    """pydeform pixel homography (B, 3, 3), output -> input, to the M (B, 3, 3) that
    cv2.warpPerspective takes with default flags (input -> output pixels), scaled to
    M[2, 2] = 1 where M[2, 2] is not ~0. Use M[b].numpy() per image; dsize is (width, height) there."""
    return _unit_h22(invert_homography(h))


def from_opencv(m: Tensor) -> Tensor:
    """cv2.warpPerspective's M (B, 3, 3), input -> output pixels (default flags), to
    pydeform's output -> input pixel homography (B, 3, 3), scaled to h[2, 2] = 1 where
    h[2, 2] is not ~0."""
    check_matrices("m", m)
    return _unit_h22(torch.linalg.inv(m))
