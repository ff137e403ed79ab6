"""Argument checks for pydeform.geometry. Each error names the argument and what was expected.

Kept apart from pydeform.ops._validate on purpose: geometry is pure torch and must import
without the compiled module (pydeform.ops.reference imports from here).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_float_tensor(name: str, t: object) -> Tensor:
    """A torch.Tensor of a floating dtype."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    return t


def check_shape(name: str, t: Tensor, expected: str, ok: bool) -> None:
    """Raise unless `ok`; `expected` describes the wanted shape, e.g. "(B, 3, 3)"."""
    if not ok:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")


def check_matrices(name: str, h: object) -> Tensor:
    """A batch of 3x3 matrices: floating, shape (B, 3, 3) with B >= 1."""
    check_float_tensor(name, h)
    check_shape(name, h, "(B, 3, 3)", h.dim() == 3 and h.shape[0] >= 1 and h.shape[1:] == (3, 3))
    return h


def check_same_kind(reference_name: str, reference: Tensor, **others: Tensor) -> None:
    """Every tensor in `others` shares dtype and device with `reference`."""
    for name, t in others.items():
        if t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but {reference_name} is on {reference.device}")
        if t.dtype != reference.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {reference_name} has dtype {reference.dtype}")


def check_side(name: str, value: object) -> int:
    """An image side length: an int >= 1 (bool refused; a SymInt passes, for torch.compile)."""
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_size(name: str, size: object) -> tuple[int, int]:
    """An image size (height, width) of two ints >= 1."""
    if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
        raise TypeError(f"{name} must be a (height, width) pair of ints, got {size!r}")
    return check_side(f"{name}[0] (height)", size[0]), check_side(f"{name}[1] (width)", size[1])
