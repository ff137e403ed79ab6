"""Argument checks shared by the ops. Each error names the argument and what was expected."""
from __future__ import annotations

import torch

from pydeform.ops._backend import CPU_DTYPES, CUDA_DTYPES


def check_image(name: str, t, ndim: int = 4) -> torch.Tensor:
    """A non-empty floating tensor of rank `ndim` on a device and dtype the kernels support."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if t.device.type == "cpu":
        allowed = CPU_DTYPES
    elif t.device.type == "cuda":
        allowed = CUDA_DTYPES
    else:
        raise ValueError(f"{name} is on device {t.device}; pydeform supports cpu and cuda")
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} has dtype {t.dtype}; on {t.device.type} pydeform supports {names}")
    return t


def check_same_kind(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Every tensor in `others` shares dtype and device with `reference`."""
    for name, t in others.items():
        if t is None:
            continue
        if t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but {reference_name} is on {reference.device}")
        if t.dtype != reference.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {reference_name} has dtype {reference.dtype}")


def check_int(name: str, value, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
