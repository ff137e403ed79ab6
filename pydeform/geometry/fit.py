"""Homographies from point correspondences: the normalised DLT (Hartley & Zisserman,
"Multiple View Geometry", 2nd ed., algorithm 4.2)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pydeform.geometry._checks import check_float_tensor, check_same_kind, check_shape
from pydeform.geometry.coords import _unit_h22

__all__ = ["homography_from_points"]


def _hartley_normalization(points: Tensor) -> Tensor:
    # (B, N, 2) -> (B, 3, 3) similarity moving the centroid to 0 and the mean distance from it
    # to sqrt(2), so that the DLT matrix's entries are O(1) and its SVD well conditioned.
    centroid = points.mean(dim=1)
    spread = (points - centroid[:, None]).norm(dim=-1).mean(dim=1)
    scale = math.sqrt(2) / torch.where(spread > 0, spread, torch.ones_like(spread))  # all equal: degenerate anyway
    t = torch.zeros(points.shape[0], 3, 3, dtype=points.dtype, device=points.device)
    t[:, 0, 0] = t[:, 1, 1] = scale
    t[:, :2, 2] = -scale[:, None] * centroid
    t[:, 2, 2] = 1.0
    return t


def _apply(t: Tensor, points: Tensor) -> Tensor:
    # (B, 3, 3) affine t applied to (B, N, 2) points.
    return points @ t[:, :2, :2].transpose(1, 2) + t[:, None, :2, 2]


def _dlt_svd(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """Singular values (B, 9), descending, and right singular vectors (B, 9, 9) of the DLT
    system A h = 0 whose least-squares solution maps the (normalised) src to dst."""
    x, y = src.unbind(-1)
    u, v = dst.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    # Each correspondence gives two rows: h0 x + h1 y + h2 - u (h6 x + h7 y + h8) = 0, and the same for v.
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y, -u], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y, -v], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (B, 2N, 9)
    # A zero row keeps >= 9 rows (4 points give 8), so the reduced SVD returns all 9 right
    # singular vectors, the null vector included; it changes no other singular value.
    a = F.pad(a, (0, 0, 0, 1))
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    return s, vh


def _check_determines_homography(name: str, s: Tensor, tol: float) -> None:
    # A unique solution (up to scale) needs rank 8: a second-smallest singular value ~0 means a
    # whole family of homographies fits equally well.
    bad = (s[:, -2] <= tol * s[:, 0]).nonzero().flatten()
    if len(bad):
        raise ValueError(
            f"{name}: the points of batch element {bad[0].item()} are degenerate (repeated or collinear "
            "points); a homography needs 4 points among them with no 3 collinear"
        )


def homography_from_points(src: Tensor, dst: Tensor) -> Tensor:
    """Least-squares homography h with h @ (src, 1) ~ (dst, 1), by the normalised DLT.

    src, dst: (B, N, 2) corresponding points (x, y), N >= 4, in any one coordinate frame.
    Returns h: (B, 3, 3) in src's dtype, scaled to h[2, 2] = 1 where h[2, 2] is not ~0.
    With N = 4 the fit is exact; with more points it minimises the algebraic error after
    Hartley normalisation (each point set moved to centroid 0, mean distance sqrt(2)),
    computed in float64 with an SVD. For a pydeform output -> input homography, pass output
    points as src and input points as dst.

    Raises ValueError naming the argument when N < 4, or when src or dst alone (or the
    pair) does not determine a unique homography: repeated points, all points collinear,
    3 of 4 points collinear. Detected by a second-smallest DLT singular value below
    sqrt(eps) of the input dtype times the largest.
    """
    check_float_tensor("src", src)
    check_float_tensor("dst", dst)
    check_shape("src", src, "(B, N, 2)", src.dim() == 3 and src.shape[0] >= 1 and src.shape[2] == 2)
    check_same_kind("src", src, dst=dst)
    check_shape("dst", dst, f"{tuple(src.shape)} (that of src)", dst.shape == src.shape)
    if src.shape[1] < 4:
        raise ValueError(f"src and dst need at least 4 points, got {src.shape[1]}")
    for name, t in (("src", src), ("dst", dst)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} must hold finite coordinates")

    tol = torch.finfo(src.dtype).eps ** 0.5
    src64, dst64 = src.double(), dst.double()
    t_src, t_dst = _hartley_normalization(src64), _hartley_normalization(dst64)
    src_n, dst_n = _apply(t_src, src64), _apply(t_dst, dst64)
    # A point set determines a homography iff only the identity maps it to itself, i.e. iff
    # its DLT system with itself has rank 8: this names the argument at fault.
    for name, points in (("src", src_n), ("dst", dst_n)):
        _check_determines_homography(name, _dlt_svd(points, points)[0], tol)
    s, vh = _dlt_svd(src_n, dst_n)
    _check_determines_homography("src, dst", s, tol)
    h_n = vh[:, -1].reshape(-1, 3, 3)  # the right singular vector of the smallest singular value
    h = torch.linalg.solve(t_dst, h_n @ t_src)  # undo the normalisations: t_dst^-1 h_n t_src
    return _unit_h22(h).to(src.dtype)
