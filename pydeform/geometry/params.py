"""ST-GAN's warp parameterisation (Lin et al., "ST-GAN: Spatial Transformer Generative
Adversarial Networks for Image Compositing", CVPR 2018) and the composition of warps.

A warp is p in the Lie algebra: 8 numbers -> a traceless 3x3 generator A (sl(3)) ->
exp(A), a homography with det 1; or 6 numbers -> an affine generator (zero bottom row)
-> exp(A), an affine matrix. ST-GAN's generator predicts updates dp and accumulates them
as p + dp. The matrices map OUTPUT to INPUT points in normalized coordinates (ST-GAN warps
np.linspace(-1, 1, W) grids, i.e. coords="normalized" of homography_sample).
"""
from __future__ import annotations

import torch
from torch import Tensor

from pydeform.geometry._checks import check_float_tensor, check_matrices, check_same_kind, check_shape

__all__ = ["params_to_generator", "params_to_matrix", "compose_params", "compose_homographies"]


def params_to_generator(p: Tensor) -> Tensor:
    """The Lie-algebra generator of ST-GAN warp parameters.

    p: (B, 8) homography parameters or (B, 6) affine parameters. Returns (B, 3, 3):

        8: [[p2, p1,       p0],        6: [[p0, p1, p2],
            [p5, -p2 - p6, p4],            [p3, p4, p5],
            [p3, p7,       p6]]            [0,  0,  0 ]]

    The 8-parameter layout is ST-GAN's own sl(3) basis: vec2mtrx in glasses/warp.py and
    indoor/warp.py of github.com/chenhsuanlin/spatial-transformer-GAN writes
    [[p3, p2, p1], [p6, -p3-p7, p5], [p4, p8, p7]] with 1-based p1..p8, transcribed here
    0-based. So p0, p4 translate in x, y; p3, p7 are the perspective terms; the trace is 0.
    """
    check_float_tensor("p", p)
    check_shape("p", p, "(B, 8) or (B, 6)", p.dim() == 2 and p.shape[0] >= 1 and p.shape[1] in (6, 8))
    if p.shape[1] == 8:
        p0, p1, p2, p3, p4, p5, p6, p7 = p.unbind(1)
        rows = [[p2, p1, p0], [p5, -p2 - p6, p4], [p3, p7, p6]]
    else:
        p0, p1, p2, p3, p4, p5 = p.unbind(1)
        zero = torch.zeros_like(p0)
        rows = [[p0, p1, p2], [p3, p4, p5], [zero, zero, zero]]
    return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)


def params_to_matrix(p: Tensor) -> Tensor:
    """Warp matrices exp(A) of ST-GAN warp parameters (differentiable).

    p: (B, 8) or (B, 6), see params_to_generator. Returns (B, 3, 3), output -> input in
    normalized coordinates. det = exp(trace A): 1 for the 8-parameter homographies,
    exp(p0 + p4) for the affine variant, whose bottom row is exactly [0, 0, 1].
    ST-GAN truncates the exponential's Taylor series; this is the exact exponential.
    The inverse of params_to_matrix(p) is params_to_matrix(-p).
    """
    return torch.linalg.matrix_exp(params_to_generator(p))


def compose_params(p: Tensor, dp: Tensor) -> Tensor:
    """ST-GAN's composition of a warp p with an update dp: p + dp, in the Lie algebra.

    p, dp: (B, 8) or (B, 6), the same shape. Returns p + dp. This is how ST-GAN's
    generators accumulate warps (compose() in its warp.py); it equals the matrix
    composition only when the generators commute (exp(A + B) = exp(A) exp(B) then), and
    agrees with it to first order for small warps.
    """
    check_float_tensor("p", p)
    check_float_tensor("dp", dp)
    check_shape("p", p, "(B, 8) or (B, 6)", p.dim() == 2 and p.shape[0] >= 1 and p.shape[1] in (6, 8))
    check_same_kind("p", p, dp=dp)
    check_shape("dp", dp, f"{tuple(p.shape)} (that of p)", dp.shape == p.shape)
    return p + dp


def compose_homographies(h_first: Tensor, h_second: Tensor) -> Tensor:
    """The output -> input matrix of warping with h_first, then warping that result with h_second.

    h_first, h_second: (B|1, 3, 3), output -> input maps (either batch may be 1). Returns
    (B, 3, 3) = h_first @ h_second, so that
    homography_sample(homography_sample(x, h_first), h_second) == homography_sample(x, result)
    (up to resampling). Why this order: the second warp's output point q samples its input
    at h_second q, which is an output point of the first warp, sampled at h_first h_second q.
    (For input -> output matrices, e.g. kornia's or OpenCV's, the order is the reverse.)
    Both matrices must use the same coordinates, and the first warp's output size must be
    the second warp's input size.
    """
    check_matrices("h_first", h_first)
    check_matrices("h_second", h_second)
    check_same_kind("h_first", h_first, h_second=h_second)
    if 1 not in (h_first.shape[0], h_second.shape[0]) and h_first.shape[0] != h_second.shape[0]:
        raise ValueError(
            f"h_second has batch {h_second.shape[0]} but h_first has batch {h_first.shape[0]}; "
            "they must be equal or one of them 1"
        )
    return h_first @ h_second
