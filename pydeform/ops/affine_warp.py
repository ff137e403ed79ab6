"""multi_affine_warp: the max over K masked affine warps of a feature map (the deformable
skip connections of the Deformable GAN), fused so the K warped copies never exist.
docs/contracts.md."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from pydeform.ops._backend import DTYPE_CODES, _C, launch, ptr
from pydeform.ops._validate import check_image, check_int, check_same_kind, first_derivatives_only

MAX_PARTS = 255  # the argmax is uint8 and code 255 stands for the identity candidate
IDENTITY_CODE = 255
_THREADS_PER_TILE = 256  # CUDA: threads of a theta/mask-gradient block (kThreads), so pixels per tile


def _output_size(x, mask, size) -> tuple[int, int]:
    """(Ho, Wo): mask's, else `size`, else x's; `size` given with a mask must agree with it."""
    check_image("x", x)
    if size is not None:
        if isinstance(size, (str, bytes)) or not isinstance(size, (Sequence, np.ndarray)) or len(size) != 2:
            raise TypeError(f"size must be a pair of ints (height, width), got {size!r}")
        height, width = (check_int(f"size[{n}]", s) for n, s in enumerate(size))
        if height < 1 or width < 1:
            raise ValueError(f"size must be positive, got {tuple(size)}")
    if mask is not None:
        check_image("mask", mask, may_be_zero=(0, 1))
        mask_size = tuple(mask.shape[-2:])
        if size is not None and (height, width) != mask_size:
            raise ValueError(f"size {(height, width)} differs from the output size of mask {mask_size}")
        return mask_size
    return (height, width) if size is not None else tuple(x.shape[-2:])


def _check_arguments(x, theta, mask, include_identity, height, width) -> None:
    """Run by the public function (early, clear errors) and by the ops themselves (a direct
    torch.ops call must not reach the kernel with sizes that do not fit)."""
    check_image("x", x)
    check_image("theta", theta, may_be_zero=(0, 1))  # an empty batch; K = 0 with the identity
    if mask is not None:
        check_image("mask", mask, may_be_zero=(0, 1))
    check_same_kind("x", x, theta=theta, mask=mask)
    B, _, H, W = x.shape
    if theta.shape[0] != B or theta.shape[2:] != (2, 3):
        raise ValueError(f"theta must have shape (B, K, 2, 3) with B = {B} (x's batch), got {tuple(theta.shape)}")
    K = theta.shape[1]
    if K > MAX_PARTS:
        raise ValueError(f"theta has K = {K} parts; at most {MAX_PARTS} are supported (the argmax is uint8)")
    if K == 0 and not include_identity:
        raise ValueError("theta has K = 0 parts: that needs include_identity=True (the output is then x)")
    check_int("height", height, minimum=1)
    check_int("width", width, minimum=1)
    if mask is not None and mask.shape != (B, K, height, width):
        raise ValueError(
            f"mask must have shape (B, K, Ho, Wo) = ({B}, {K}, {height}, {width}) (x's batch, theta's parts, "
            f"the output size), got {tuple(mask.shape)}"
        )
    if not isinstance(include_identity, bool):
        raise TypeError(f"include_identity must be a bool, got {type(include_identity).__name__}")
    if include_identity and (height, width) != (H, W):
        raise ValueError(
            f"include_identity needs the output size {(height, width)} to equal the size of x {(H, W)}"
        )


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("pydeform::multi_affine_warp", mutates_args=())
def _forward(
    x: Tensor, theta: Tensor, mask: Optional[Tensor], include_identity: bool, height: int, width: int
) -> tuple[Tensor, Tensor]:
    _check_arguments(x, theta, mask, include_identity, height, width)
    # The kernels read raw pointers: keep contiguous copies alive in locals until they return.
    x, theta = x.contiguous(), theta.contiguous()
    mask = mask.contiguous() if mask is not None else None
    B, C, H, W = x.shape
    K = theta.shape[1]
    out = x.new_empty((B, C, height, width))
    argmax = torch.empty((B, C, height, width), dtype=torch.uint8, device=x.device)
    if B == 0:
        return out, argmax
    if K == 0:  # only the identity candidate (the size check made Ho, Wo == H, W)
        return out.copy_(x), argmax.fill_(IDENTITY_CODE)
    packed = _packed_workspace(x)
    launch(
        "affine_warp_forward", x.device, ptr(x), ptr(theta), ptr(mask), ptr(out), ptr(argmax), ptr(packed),
        B, C, H, W, K, height, width, include_identity, DTYPE_CODES[x.dtype],
    )  # fmt: skip
    return out, argmax


@_forward.register_fake
def _(x, theta, mask, include_identity, height, width):
    B, C = x.shape[:2]
    return x.new_empty((B, C, height, width)), x.new_empty((B, C, height, width), dtype=torch.uint8)


def _packed_workspace(x: Tensor) -> Tensor | None:
    """The CPU kernels' workspace: x (or grad_x) in 8-channel blocks with a zero border, about
    x's size; None on CUDA."""
    if x.device.type != "cpu":
        return None
    return x.new_empty(_C.affine_warp_cpu_packed_numel(*x.shape))


def _theta_partitions(device: torch.device, height: int, width: int) -> int:
    """How many partial sums of grad_theta per (b, k) the kernels write: one per tile of output
    pixels on the CPU, one per block of pixels on CUDA. Fixed by the shape, so the sum is
    deterministic."""
    if device.type == "cpu":
        return _C.affine_warp_cpu_tiles(height, width)
    return min(math.ceil(height * width / _THREADS_PER_TILE), 1024)


@torch.library.custom_op("pydeform::multi_affine_warp_backward", mutates_args=())
def _backward(
    grad_out: Tensor,
    x: Tensor,
    theta: Tensor,
    mask: Optional[Tensor],
    argmax: Tensor,
    include_identity: bool,
    need_x: bool,
    need_theta: bool,
    need_mask: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    if grad_out.dim() != 4:
        raise ValueError(f"grad_out must have 4 dimensions, got shape {tuple(grad_out.shape)}")
    height, width = grad_out.shape[-2:]
    _check_arguments(x, theta, mask, include_identity, height, width)
    check_same_kind("x", x, grad_out=grad_out)
    B, C, H, W = x.shape
    K = theta.shape[1]
    if grad_out.shape != (B, C, height, width) or argmax.shape != grad_out.shape or argmax.dtype != torch.uint8:
        raise ValueError(f"grad_out and argmax must be ({B}, {C}, Ho, Wo), argmax uint8")
    if argmax.device != x.device:
        raise ValueError(f"argmax is on {argmax.device} but x is on {x.device}")
    if need_mask and mask is None:
        raise ValueError("need_mask needs a mask")
    grad_out, x, theta, argmax = grad_out.contiguous(), x.contiguous(), theta.contiguous(), argmax.contiguous()
    mask = mask.contiguous() if mask is not None else None
    grad_theta = torch.empty_like(theta) if need_theta else theta.new_empty(0)
    grad_mask = torch.empty_like(mask) if need_mask else x.new_empty(0)
    grad_x = x.new_empty(0)
    if need_x:
        # CUDA scatters grad_x with atomics into zeros (float32 for float16/bfloat16); the CPU
        # writes every element.
        grad_x = (torch.zeros if x.is_cuda else torch.empty)(x.shape, dtype=_acc_dtype(x.dtype), device=x.device)
    if B == 0 or K == 0:  # nothing to launch; with K = 0 the identity passed everything through
        if need_x:
            grad_x = grad_x.copy_(grad_out) if B else grad_x
        return grad_x.to(x.dtype), grad_theta, grad_mask
    P = _theta_partitions(x.device, height, width)
    partials = torch.empty((B, K, P, 6), dtype=_acc_dtype(x.dtype), device=x.device) if need_theta else None
    packed = _packed_workspace(x)
    launch(
        "affine_warp_backward", x.device, ptr(grad_out), ptr(x), ptr(theta), ptr(mask), ptr(argmax),
        ptr(grad_x) if need_x else 0, ptr(grad_theta) if need_theta else 0, ptr(grad_mask) if need_mask else 0,
        ptr(partials), ptr(packed), B, C, H, W, K, height, width, include_identity, P, DTYPE_CODES[x.dtype],
    )  # fmt: skip
    return grad_x.to(x.dtype), grad_theta, grad_mask


@_backward.register_fake
def _(grad_out, x, theta, mask, argmax, include_identity, need_x, need_theta, need_mask):
    return (
        torch.empty_like(x) if need_x else x.new_empty(0),
        torch.empty_like(theta) if need_theta else theta.new_empty(0),
        torch.empty_like(mask) if need_mask else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    x, theta, mask, include_identity, _, _ = inputs
    ctx.save_for_backward(x, theta, mask, output[1])
    ctx.include_identity = include_identity
    ctx.mark_non_differentiable(output[1])


def _autograd_backward(ctx, grad_out, _grad_argmax):
    x, theta, mask, argmax = ctx.saved_tensors
    need_x, need_theta, need_mask = ctx.needs_input_grad[:3]
    grad_x, grad_theta, grad_mask = torch.ops.pydeform.multi_affine_warp_backward(
        grad_out, x, theta, mask, argmax, ctx.include_identity, need_x, need_theta, need_mask
    )
    return (
        grad_x if need_x else None,
        grad_theta if need_theta else None,
        grad_mask if need_mask else None,
        None,
        None,
        None,
    )


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)
_backward.register_autograd(first_derivatives_only("multi_affine_warp"))


def multi_affine_warp(
    x: Tensor,
    theta: Tensor,
    mask: Tensor | None = None,
    include_identity: bool = False,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """Max over K masked affine warps of x (and optionally x itself), per element.

    Args:
        x: (B, C, H, W) feature map.
        theta: (B, K, 2, 3), K <= 255: part k's affine map from an OUTPUT pixel (j, i, 1) to
            the INPUT pixel it samples (pixel coordinates: x the column, y the row).
        mask: (B, K, Ho, Wo) part weights in the output frame, or None for all ones.
        include_identity: also let x itself compete (first in order); needs Ho, Wo == H, W.
        size: (Ho, Wo) when there is no mask; with a mask it must equal the mask's size.

    Returns:
        (B, C, Ho, Wo): out[b,c,i,j] = max over [x[b,c,i,j]], mask[b,k,i,j] *
        bilinear_zeros(x[b,c], theta[b,k] @ (j, i, 1)) for k = 0..K-1; ties go to the first.
        A part whose sample point is not finite contributes 0 (times its mask).

    Differentiable in x, theta and mask through the winning candidate; first derivatives only
    (a double backward raises). The output size is the mask's, else `size`, else (H, W). An
    empty batch gives an empty output; K = 0 needs include_identity (the output is then x).
    Exact contract: docs/contracts.md. Deterministic on the CPU, for any number of threads. On
    CUDA the forward, grad_theta (a block reduction per (b, k) and pixel tile, then a second
    pass over the tiles in order) and grad_mask are deterministic; grad_x is scattered with
    atomicAdd, so its last bits may vary from run to run.
    """
    height, width = _output_size(x, mask, size)
    _check_arguments(x, theta, mask, include_identity, height, width)
    return torch.ops.pydeform.multi_affine_warp(x, theta, mask, include_identity, height, width)[0]
