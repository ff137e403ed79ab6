"""Alpha compositing of a warped RGBA foreground over a background (ST-GAN's output)."""
from __future__ import annotations

from torch import Tensor

from pydeform.geometry._checks import check_float_tensor, check_same_kind, check_shape

__all__ = ["composite"]


def composite(fg_rgba: Tensor, bg: Tensor) -> Tensor:
    """rgb * a + bg * (1 - a).

    fg_rgba: (B, 4, H, W), colour channels then alpha (expected in [0, 1]).
    bg: (B, 3, H, W) or (1, 3, H, W) (broadcast over the batch). Returns (B, 3, H, W).
    """
    check_float_tensor("fg_rgba", fg_rgba)
    check_float_tensor("bg", bg)
    check_shape("fg_rgba", fg_rgba, "(B, 4, H, W)", fg_rgba.dim() == 4 and fg_rgba.shape[1] == 4)
    check_same_kind("fg_rgba", fg_rgba, bg=bg)
    B, _, H, W = fg_rgba.shape
    bg_ok = bg.dim() == 4 and bg.shape[0] in (1, B) and bg.shape[1:] == (3, H, W)
    check_shape("bg", bg, f"({B} or 1, 3, {H}, {W})", bg_ok)
    rgb, alpha = fg_rgba[:, :3], fg_rgba[:, 3:]
    return rgb * alpha + bg * (1 - alpha)
