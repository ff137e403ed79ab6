"""patch_nn_distance: per pixel, the distance from x to the nearest y vector in an n x n
neighbourhood (the nearest-neighbour loss of the Deformable GAN). docs/contracts.md."""
from __future__ import annotations

import torch
from torch import Tensor

from pydeform.ops._backend import DTYPE_CODES, launch, ptr
from pydeform.ops._validate import check_image, check_int, check_same_kind, first_derivatives_only


def _check_p(p) -> int:
    """1 or 2, given as an int (Python or NumPy) or as an integral float such as 1.0."""
    if isinstance(p, float) and p in (1.0, 2.0):
        return int(p)
    try:
        p = check_int("p", p)
    except TypeError:
        raise ValueError(f"p must be 1 (L1) or 2 (squared L2), got {p!r}") from None
    if p not in (1, 2):
        raise ValueError(f"p must be 1 (L1) or 2 (squared L2), got {p!r}")
    return p


def _check_arguments(x, y, kernel_size, p) -> None:
    """Run by the public function (early, clear errors) and by the op itself (a direct
    torch.ops call must not reach the kernel with sizes that do not fit)."""
    check_image("x", x)
    check_image("y", y)
    check_same_kind("x", x, y=y)
    if y.shape != x.shape:
        raise ValueError(f"y must have the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")
    check_int("kernel_size", kernel_size, minimum=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    if kernel_size >= 2**31:
        raise ValueError(f"kernel_size must be below 2**31, got {kernel_size}")
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 (L1) or 2 (squared L2), got {p!r}")


@torch.library.custom_op("pydeform::patch_nn_distance", mutates_args=())
def _forward(x: Tensor, y: Tensor, kernel_size: int, p: int) -> tuple[Tensor, Tensor]:
    _check_arguments(x, y, kernel_size, p)
    # The kernels read raw pointers: keep contiguous copies alive in locals until they return.
    x, y = x.contiguous(), y.contiguous()
    B, C, H, W = x.shape
    dist = x.new_empty((B, H, W))
    index = torch.empty((B, H, W), dtype=torch.int64, device=x.device)
    if B == 0:
        return dist, index
    launch("patch_nn_forward", x.device, ptr(x), ptr(y), ptr(dist), ptr(index), B, C, H, W, kernel_size, p, DTYPE_CODES[x.dtype])
    return dist, index


@_forward.register_fake
def _(x, y, kernel_size, p):
    B, _, H, W = x.shape
    return x.new_empty((B, H, W)), x.new_empty((B, H, W), dtype=torch.int64)


@torch.library.custom_op("pydeform::patch_nn_distance_backward", mutates_args=())
def _backward(
    grad_dist: Tensor, x: Tensor, y: Tensor, index: Tensor, kernel_size: int, p: int, need_x: bool, need_y: bool
) -> tuple[Tensor, Tensor]:
    _check_arguments(x, y, kernel_size, p)
    B, C, H, W = x.shape
    check_same_kind("x", x, grad_dist=grad_dist)
    if grad_dist.shape != (B, H, W) or index.shape != (B, H, W) or index.dtype != torch.int64:
        raise ValueError(f"grad_dist and index must be ({B}, {H}, {W}), index int64")
    grad_dist, x, y, index = grad_dist.contiguous(), x.contiguous(), y.contiguous(), index.contiguous()
    grad_x = torch.empty_like(x) if need_x else x.new_empty(0)
    grad_y = torch.empty_like(y) if need_y else y.new_empty(0)
    if B == 0:
        return grad_x, grad_y
    launch(
        "patch_nn_backward", x.device, ptr(grad_dist), ptr(x), ptr(y), ptr(index),
        ptr(grad_x) if need_x else 0, ptr(grad_y) if need_y else 0,
        B, C, H, W, kernel_size, p, DTYPE_CODES[x.dtype],
    )  # fmt: skip
    return grad_x, grad_y


@_backward.register_fake
def _(grad_dist, x, y, index, kernel_size, p, need_x, need_y):
    return (torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(y) if need_y else y.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, y, kernel_size, p = inputs
    ctx.save_for_backward(x, y, output[1])
    ctx.kernel_size, ctx.p = kernel_size, p
    ctx.mark_non_differentiable(output[1])


def _autograd_backward(ctx, grad_dist, _grad_index):
    x, y, index = ctx.saved_tensors
    need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_x, grad_y = torch.ops.pydeform.patch_nn_distance_backward(
        grad_dist, x, y, index, ctx.kernel_size, ctx.p, need_x, need_y
    )
    return (grad_x if need_x else None), (grad_y if need_y else None), None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)
_backward.register_autograd(first_derivatives_only("patch_nn_distance"))


def patch_nn_distance(x: Tensor, y: Tensor, kernel_size: int = 3, p: int = 1) -> tuple[Tensor, Tensor]:
    """Nearest-neighbour distance between x and the n x n neighbourhood of each pixel in y.

    Args:
        x, y: (B, C, H, W) tensors of the same shape, dtype and device.
        kernel_size: n, odd and >= 1; neighbours outside the image are skipped.
        p: 1 for the L1 cost, 2 for the squared L2 cost, summed over channels (1.0 and 2.0
            are accepted too).

    Returns:
        dist (B, H, W) in x's dtype: the minimal cost over the neighbourhood.
        index (B, H, W) int64: (di + r) * n + (dj + r) of the minimiser, r = n // 2;
        ties go to the smallest index.

    Differentiable in x (through the minimiser) and in y (scattered to the minimiser); first
    derivatives only (a double backward raises). An empty batch gives empty outputs.
    The Deformable GAN's nearest-neighbour loss is `dist.mean()` on VGG19 conv1_2 features.
    Exact contract: docs/contracts.md.
    """
    p = _check_p(p)
    kernel_size = check_int("kernel_size", kernel_size, minimum=1)
    _check_arguments(x, y, kernel_size, p)
    return torch.ops.pydeform.patch_nn_distance(x, y, kernel_size, p)
