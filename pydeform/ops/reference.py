"""Pure-PyTorch implementations of the three ops, written the way a user would without
pydeform (unfold + broadcast, affine_grid/grid_sample per part, a sampling grid from h).

They define the same contracts as the fused ops (docs/contracts.md) and serve as the
independent computation the tests compare against and the baseline the benchmarks time.
No input validation: call the public ops for that.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pydeform.geometry.coords import normalized_to_pixel_matrix as _normalized_to_pixel_matrix
from pydeform.geometry.coords import pixel_to_normalized_matrix

__all__ = ["patch_nn_distance", "multi_affine_warp", "homography_sample", "pixel_to_normalized_matrix"]


def patch_nn_distance(x: Tensor, y: Tensor, kernel_size: int = 3, p: int = 1) -> tuple[Tensor, Tensor]:
    """(B, C, H, W) x2 -> dist (B, H, W), index (B, H, W) int64. See docs/contracts.md."""
    B, C, H, W = x.shape
    n, r = kernel_size, kernel_size // 2
    # (B, C*n*n, H*W): channel-major, then the kernel offsets in row-major order, so that
    # the offset axis below is exactly index = (di + r) * n + (dj + r).
    patches = F.unfold(y, n, padding=r).view(B, C, n * n, H * W)
    diff = x.reshape(B, C, 1, H * W) - patches
    cost = (diff.abs() if p == 1 else diff.square()).sum(dim=1)  # (B, n*n, H*W)
    # Neighbours outside the image are skipped: unfold a ones image to find them.
    inside = F.unfold(torch.ones(1, 1, H, W, dtype=x.dtype, device=x.device), n, padding=r) > 0
    cost = torch.where(inside, cost, torch.full_like(cost, float("inf")))
    dist, index = cost.min(dim=1)
    return dist.view(B, H, W), index.view(B, H, W)


def multi_affine_warp(
    x: Tensor,
    theta: Tensor,
    mask: Tensor | None = None,
    include_identity: bool = False,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """x (B, C, H, W), theta (B, K, 2, 3) output pixel -> input pixel, mask (B, K, Ho, Wo).

    Returns (B, C, Ho, Wo): the max over [x if include_identity] + [mask_k * warp_k(x)].
    """
    B, C, H, W = x.shape
    K = theta.shape[1]
    if mask is not None:
        Ho, Wo = mask.shape[-2:]
    else:
        Ho, Wo = size if size is not None else (H, W)
    if K == 0 and not include_identity:  # the same contract as the fused op
        raise ValueError("theta has K = 0 parts: that needs include_identity=True (the output is then x)")
    if B == 0:  # affine_grid refuses an empty batch
        return x.new_empty((0, C, Ho, Wo))
    # affine_grid wants a normalised output -> normalised input matrix.
    to_norm = pixel_to_normalized_matrix(H, W, theta.dtype, theta.device)
    from_norm = _normalized_to_pixel_matrix(Ho, Wo, theta.dtype, theta.device)
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=theta.dtype, device=theta.device).expand(B, K, 1, 3)
    theta3 = torch.cat([theta, bottom], dim=2)
    theta_norm = (to_norm @ theta3 @ from_norm)[:, :, :2, :]
    candidates = [x] if include_identity else []
    for k in range(K):
        grid = F.affine_grid(theta_norm[:, k], [B, C, Ho, Wo], align_corners=True)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        if mask is not None:
            warped = warped * mask[:, k : k + 1]
        candidates.append(warped)
    return torch.stack(candidates, dim=0).max(dim=0).values


def homography_sample(
    x: Tensor,
    h: Tensor,
    size: tuple[int, int] | None = None,
    padding_mode: str = "zeros",
    coords: str = "pixel",
) -> Tensor:
    """x (B|1, C, H, W), h (B|1, 3, 3) output point -> input point. Returns (B, C, Ho, Wo)."""
    C, H, W = x.shape[1:]
    Ho, Wo = size if size is not None else (H, W)
    B = x.shape[0] if h.shape[0] == 1 else h.shape[0]  # broadcast; an empty batch stays empty
    ys, xs = torch.meshgrid(
        torch.arange(Ho, dtype=h.dtype, device=h.device),
        torch.arange(Wo, dtype=h.dtype, device=h.device),
        indexing="ij",
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # (Ho*Wo, 3)
    if coords == "normalized":
        points = points @ pixel_to_normalized_matrix(Ho, Wo, h.dtype, h.device).T
    uvw = points @ h.expand(B, 3, 3).transpose(1, 2)  # (B, Ho*Wo, 3)
    w = uvw[..., 2:]
    # Undefined points (w ~ 0, non-finite) give 0 and no gradient: divide by a safe value there.
    defined = (w.abs() >= 1e-8) & torch.isfinite(uvw).all(dim=-1, keepdim=True)
    uv = uvw[..., :2] / torch.where(defined, w, torch.ones_like(w))
    defined = defined & torch.isfinite(uv).all(dim=-1, keepdim=True)
    uv = torch.where(defined, uv, torch.zeros_like(uv))
    if coords == "pixel":
        uv = uv @ pixel_to_normalized_matrix(H, W, h.dtype, h.device)[:2, :2].T + pixel_to_normalized_matrix(
            H, W, h.dtype, h.device
        )[:2, 2]
    grid = uv.reshape(B, Ho, Wo, 2).to(x.dtype)
    out = F.grid_sample(x.expand(B, C, H, W), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out * defined.reshape(B, 1, Ho, Wo).to(x.dtype)
