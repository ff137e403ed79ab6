"""homography_sample: warp images by 3x3 homographies (the warps of ST-GAN) with bilinear
sampling, computing each pixel's sample point from h on the fly. docs/contracts.md."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pydeform import _C
from pydeform.ops._backend import DTYPE_CODES, launch, ptr
from pydeform.ops._validate import check_image, check_int, check_same_kind, first_derivatives_only

PADDING_MODES = ("zeros", "border")
COORDS = ("pixel", "normalized")


def _check_size(size, x: Tensor) -> tuple[int, int]:
    if size is None:
        return x.shape[2], x.shape[3]
    if not isinstance(size, (tuple, list, torch.Size, np.ndarray)) or len(size) != 2:
        raise ValueError(f"size must be a pair (height, width) of positive ints or None, got {size!r}")
    height = check_int("size[0] (height)", size[0], minimum=1)
    width = check_int("size[1] (width)", size[1], minimum=1)
    return height, width


def _check_arguments(x, h, size, padding_mode, coords) -> tuple[int, int]:
    """Run by the public function (early, clear errors) and by the ops themselves (a direct
    torch.ops call must not reach the kernel with sizes that do not fit). Returns (Ho, Wo)."""
    check_image("x", x)
    check_image("h", h, ndim=3)
    check_same_kind("x", x, h=h)
    if h.shape[1:] != (3, 3):
        raise ValueError(f"h must have shape (B, 3, 3), got {tuple(h.shape)}")
    if h.shape[0] != x.shape[0] and 1 not in (h.shape[0], x.shape[0]):
        raise ValueError(
            f"h has batch size {h.shape[0]} but x has {x.shape[0]}: they must be equal or one of them 1"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if coords not in COORDS:
        raise ValueError(f"coords must be one of {COORDS}, got {coords!r}")
    return _check_size(size, x)


def _batch(Bx: int, Bh: int) -> int:
    """The output batch: Bx and Bh broadcast (equal, or one of them 1; 0 if either is 0)."""
    return Bx if Bh == 1 else Bh


def _launch_arguments(x: Tensor, h: Tensor, height: int, width: int, padding_mode: str, coords: str) -> tuple:
    """Sizes and flags every launcher takes after its pointers."""
    Bx, C, H, W = x.shape
    return Bx, h.shape[0], C, H, W, height, width, padding_mode == "border", coords == "normalized"


@torch.library.custom_op("pydeform::homography_sample", mutates_args=())
def _forward(x: Tensor, h: Tensor, height: int, width: int, padding_mode: str, coords: str) -> Tensor:
    _check_arguments(x, h, (height, width), padding_mode, coords)
    # The kernels read raw pointers: keep contiguous copies alive in locals until they return.
    x, h = x.contiguous(), h.contiguous()
    out = x.new_empty((_batch(x.shape[0], h.shape[0]), x.shape[1], height, width))
    if out.shape[0] == 0:
        return out
    sizes = _launch_arguments(x, h, height, width, padding_mode, coords)
    launch("homography_forward", x.device, ptr(x), ptr(h), ptr(out), *sizes, DTYPE_CODES[x.dtype])
    return out


@_forward.register_fake
def _(x, h, height, width, padding_mode, coords):
    return x.new_empty((x.shape[0] if h.shape[0] == 1 else h.shape[0], x.shape[1], height, width))


@torch.library.custom_op("pydeform::homography_sample_backward", mutates_args=())
def _backward(
    grad_out: Tensor, x: Tensor, h: Tensor, height: int, width: int, padding_mode: str, coords: str,
    need_x: bool, need_h: bool, deterministic: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    _check_arguments(x, h, (height, width), padding_mode, coords)
    check_same_kind("x", x, grad_out=grad_out)
    expected = (_batch(x.shape[0], h.shape[0]), x.shape[1], height, width)
    if grad_out.shape != expected:
        raise ValueError(f"grad_out must have shape {expected}, got {tuple(grad_out.shape)}")
    # grad_out is read through its strides: an expanded gradient (from out.sum()) is not copied.
    x, h = x.contiguous(), h.contiguous()
    sizes = _launch_arguments(x, h, height, width, padding_mode, coords)
    # The kernels accumulate in float (double for double); half/bf16 are converted at the end.
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    # The CPU kernel zero-fills grad_x itself (each task its own planes, just before adding to
    # them); the CUDA kernels add to a zero-filled one.
    new_grad_x = torch.zeros if x.device.type == "cuda" else torch.empty
    grad_x = new_grad_x(x.shape, dtype=acc, device=x.device) if need_x else None
    grad_h = torch.empty(h.shape, dtype=acc, device=x.device) if need_h else None
    if expected[0] == 0:  # an empty batch: the gradients are zero (or empty)
        return (torch.zeros_like(x, memory_format=torch.contiguous_format) if need_x else x.new_empty(0)), (
            torch.zeros_like(h, memory_format=torch.contiguous_format) if need_h else h.new_empty(0)
        )
    partials = None
    if need_h:
        count = getattr(_C, f"homography_grad_h_partials_{x.device.type}")(*sizes[:3], height, width)
        partials = torch.empty(count, dtype=acc, device=x.device)
    launch(
        "homography_backward", x.device, ptr(grad_out), *grad_out.stride(), ptr(x), ptr(h), ptr(grad_x),
        ptr(grad_h), ptr(partials), 0 if partials is None else partials.numel(), *sizes, deterministic,
        DTYPE_CODES[x.dtype],
    )  # fmt: skip
    grad_x = grad_x.to(x.dtype) if need_x else x.new_empty(0)
    grad_h = grad_h.to(h.dtype) if need_h else h.new_empty(0)
    return grad_x, grad_h


@_backward.register_fake
def _(grad_out, x, h, height, width, padding_mode, coords, need_x, need_h, deterministic):
    # Contiguous, as the kernels return them (x and h may not be).
    return (x.new_empty(x.shape) if need_x else x.new_empty(0)), (h.new_empty(h.shape) if need_h else h.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, h, height, width, padding_mode, coords = inputs
    ctx.save_for_backward(x, h)
    ctx.arguments = (height, width, padding_mode, coords)


def _autograd_backward(ctx, grad_out):
    x, h = ctx.saved_tensors
    need_x, need_h = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    # torch.use_deterministic_algorithms(True) selects the CUDA scatter without atomics; the
    # CPU backward is deterministic either way.
    grad_x, grad_h = torch.ops.pydeform.homography_sample_backward(
        grad_out, x, h, *ctx.arguments, need_x, need_h, torch.are_deterministic_algorithms_enabled()
    )
    return (grad_x if need_x else None), (grad_h if need_h else None), None, None, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)
_backward.register_autograd(first_derivatives_only("homography_sample"))


def homography_sample(
    x: Tensor,
    h: Tensor,
    size: tuple[int, int] | None = None,
    padding_mode: str = "zeros",
    coords: str = "pixel",
) -> Tensor:
    """Warp x by the homographies h with bilinear sampling (the warps of ST-GAN).

    Args:
        x: (Bx, C, H, W) images.
        h: (Bh, 3, 3) homographies mapping an OUTPUT point to an INPUT point (the sampling
            direction). Bx and Bh are equal, or one of them is 1 and broadcasts: one image
            under N homographies, or N images under one.
        size: (Ho, Wo) of the output; None keeps (H, W).
        padding_mode: "zeros" (taps outside the image read 0) or "border" (the sample point is
            clamped into the image first).
        coords: the coordinates h works in: "pixel" (x is the column, pixel centres at
            integers) or "normalized" (x -> 2x / (W - 1) - 1, with the output size for the
            output grid and the input size for the sample point; a side of 1 maps to 0).

    Returns:
        (max(Bx, Bh), C, Ho, Wo) in x's dtype. For output pixel (j, i), (u, v, w) =
        h @ (j, i, 1) in the chosen coordinates and the output samples x at (u / w, v / w);
        where |w| < 1e-8 or the point is not finite the output is 0 and no gradient flows.

    Differentiable in x and in all 9 entries of h; a broadcast input gets the gradient summed
    over the batch. First derivatives only (a double backward raises). An empty batch (x or h
    with batch 0) gives an empty output. Exact contract: docs/contracts.md. The gradients are bit-identical from run to run on the CPU, and on CUDA
    under torch.use_deterministic_algorithms(True), where grad_x then avoids atomics at a large
    cost in speed (each thread scans every output pixel of its image).
    """
    height, width = _check_arguments(x, h, size, padding_mode, coords)
    return torch.ops.pydeform.homography_sample(x, h, height, width, padding_mode, coords)
