"""Argument checks shared by the ops. Each error names the argument and what was expected."""
from __future__ import annotations

import numbers

import numpy as np
import torch

from pydeform.ops._backend import CPU_DTYPES, CUDA_DTYPES


def check_image(name: str, t, ndim: int = 4, may_be_zero: tuple[int, ...] = (0,)) -> torch.Tensor:
    """A floating tensor of rank `ndim` on a device and dtype the kernels support, whose sizes
    are positive except those in `may_be_zero` (the batch: an empty batch is allowed)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout} (use .to_dense())")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if any(size == 0 for d, size in enumerate(t.shape) if d not in may_be_zero):
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
    """A Python or NumPy integer (not a bool), as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def first_derivatives_only(op_name: str):
    """The autograd formula of an op's backward op: differentiating a gradient again is not
    supported, and says so instead of torch's generic message."""

    def backward(ctx, *grads):
        raise RuntimeError(
            f"pydeform.ops.{op_name} supports first derivatives only: differentiating its gradient again "
            "(create_graph=True, then a backward through that gradient, e.g. a double backward) is not "
            "supported."
        )

    return backward
