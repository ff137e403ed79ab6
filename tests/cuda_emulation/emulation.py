"""Drives the CUDA launchers of the emulation build (cmake/cuda_emulation.cmake) the way
pydeform.ops drives them on a GPU, with CPU tensors, and compares them with the CPU kernels.

The modules are found in the directory PYDEFORM_EMULATION_DIR names (a CMake build directory
configured with -DPYDEFORM_CUDA_EMULATION=ON); without it these tests skip."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import pydeform.ops  # noqa: F401  (registers torch.ops.pydeform: the CPU kernels compared against)

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Per dtype (rtol, atol) of the emulated CUDA kernel against the CPU kernel on the same inputs.
# float32/float64: the CPU kernels use AVX2/FMA and other summation orders, so the last bits
# differ. float16/bfloat16: the CPU kernel runs in float32 on the rounded inputs; the CUDA one
# accumulates in float32 too and rounds its output, so the bound is about one rounding step.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float64: (1e-12, 1e-12),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
# Per dtype and quantity, the largest |emulated - CPU| seen and the largest share of the
# tolerance (atol + rtol * |CPU|) any element used: printed at the end of the run.
LARGEST_DIFFERENCE: dict[tuple[str, str], tuple[float, float]] = {}


def load(name: str = "_cuda_emulation"):
    """The emulation module `name`, or skip with the reason."""
    directory = os.environ.get("PYDEFORM_EMULATION_DIR")
    if not directory:
        pytest.skip("PYDEFORM_EMULATION_DIR is not set: build the CUDA emulation first (README, Developer notes)")
    files = sorted(Path(directory).glob(f"{name}.*.so")) + sorted(Path(directory).glob(f"{name}.so"))
    if not files:
        pytest.skip(f"no {name} module in PYDEFORM_EMULATION_DIR={directory}")
    spec = importlib.util.spec_from_file_location(name, files[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def cpu_dtype(dtype: torch.dtype) -> torch.dtype:
    """The CPU kernels run float32 and float64; float16/bfloat16 are compared in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def unwritten(shape, dtype) -> torch.Tensor:
    """An output buffer whose every element a kernel must overwrite (NaN, or a bogus code)."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype)
    return torch.full(shape, 77, dtype=dtype)


def assert_close(what: str, emulated: torch.Tensor, cpu: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    """Values within the dtype's tolerance (atol scaled by `scale`, for sums over many terms)."""
    rtol, atol = TOLERANCES[dtype]
    emulated, cpu = emulated.double(), cpu.double()
    assert emulated.shape == cpu.shape, what
    both_nan = emulated.isnan() & cpu.isnan()
    diff = torch.where(both_nan, torch.zeros_like(emulated), (emulated - cpu).abs())
    key = (str(dtype).replace("torch.", ""), what)
    share = diff / (atol * scale + rtol * cpu.abs().nan_to_num(posinf=0.0))
    finite = lambda t: float(t.nan_to_num(nan=0.0).max()) if t.numel() else 0.0  # noqa: E731
    old_diff, old_share = LARGEST_DIFFERENCE.get(key, (0.0, 0.0))
    LARGEST_DIFFERENCE[key] = (max(old_diff, finite(diff)), max(old_share, finite(share)))
    torch.testing.assert_close(emulated, cpu, rtol=rtol, atol=atol * scale, equal_nan=True, msg=lambda m: f"{what}: {m}")


# ---- the launchers, called as pydeform.ops calls them on CUDA -------------------------------


def patch_nn_forward(mod, x, y, n, p):
    B, C, H, W = x.shape
    dist, index = unwritten((B, H, W), x.dtype), unwritten((B, H, W), torch.int64)
    mod.patch_nn_forward_cuda(ptr(x), ptr(y), ptr(dist), ptr(index), B, C, H, W, n, p, DTYPE_CODES[x.dtype], 0, 0)
    return dist, index


def patch_nn_backward(mod, grad_dist, x, y, index, n, p, need_x=True, need_y=True):
    B, C, H, W = x.shape
    grad_x = unwritten(x.shape, x.dtype) if need_x else None
    grad_y = unwritten(y.shape, y.dtype) if need_y else None
    mod.patch_nn_backward_cuda(
        ptr(grad_dist), ptr(x), ptr(y), ptr(index), ptr(grad_x), ptr(grad_y), B, C, H, W, n, p,
        DTYPE_CODES[x.dtype], 0, 0,
    )  # fmt: skip
    return grad_x, grad_y


def affine_cuda_partitions(Ho, Wo) -> int:
    """pydeform.ops.affine_warp._theta_partitions on CUDA."""
    return min(-(-Ho * Wo // 256), 1024)


def affine_forward(mod, x, theta, mask, identity, Ho, Wo):
    B, C, H, W = x.shape
    K = theta.shape[1]
    out, argmax = unwritten((B, C, Ho, Wo), x.dtype), unwritten((B, C, Ho, Wo), torch.uint8)
    mod.affine_warp_forward_cuda(
        ptr(x), ptr(theta), ptr(mask), ptr(out), ptr(argmax), 0, B, C, H, W, K, Ho, Wo, identity,
        DTYPE_CODES[x.dtype], 0, 0,
    )  # fmt: skip
    return out, argmax


def affine_backward(mod, grad_out, x, theta, mask, argmax, identity, P=None):
    B, C, H, W = x.shape
    K, (Ho, Wo) = theta.shape[1], grad_out.shape[-2:]
    P = affine_cuda_partitions(Ho, Wo) if P is None else P
    acc = cpu_dtype(x.dtype)
    grad_x = torch.zeros(x.shape, dtype=acc)  # the CUDA kernel adds into zeros
    grad_theta = unwritten(theta.shape, theta.dtype)
    grad_mask = unwritten(mask.shape, mask.dtype) if mask is not None else None
    partials = unwritten((B, K, P, 6), acc)
    mod.affine_warp_backward_cuda(
        ptr(grad_out), ptr(x), ptr(theta), ptr(mask), ptr(argmax), ptr(grad_x), ptr(grad_theta), ptr(grad_mask),
        ptr(partials), 0, B, C, H, W, K, Ho, Wo, identity, P, DTYPE_CODES[x.dtype], 0, 0,
    )  # fmt: skip
    return grad_x, grad_theta, grad_mask


def homography_forward(mod, x, h, Ho, Wo, border, normalized):
    Bx, C, H, W = x.shape
    Bh = h.shape[0]
    out = unwritten((max(Bx, Bh), C, Ho, Wo), x.dtype)
    mod.homography_forward_cuda(ptr(x), ptr(h), ptr(out), Bx, Bh, C, H, W, Ho, Wo, border, normalized,
                                DTYPE_CODES[x.dtype], 0, 0)  # fmt: skip
    return out


def homography_backward(mod, grad_out, x, h, border, normalized, deterministic):
    Bx, C, H, W = x.shape
    Bh, (Ho, Wo) = h.shape[0], grad_out.shape[-2:]
    acc = cpu_dtype(x.dtype)
    grad_x = torch.zeros(x.shape, dtype=acc)
    grad_h = unwritten(h.shape, acc)
    partials = unwritten((mod.homography_grad_h_partials_cuda(Bx, Bh, C, Ho, Wo),), acc)
    mod.homography_backward_cuda(
        ptr(grad_out), *grad_out.stride(), ptr(x), ptr(h), ptr(grad_x), ptr(grad_h), ptr(partials), partials.numel(),
        Bx, Bh, C, H, W, Ho, Wo, border, normalized, deterministic, DTYPE_CODES[x.dtype], 0, 0,
    )  # fmt: skip
    return grad_x, grad_h
