"""Image reading for the datasets (every failure names the file), and image sizes.

A truncated or corrupt image otherwise fails inside a DataLoader worker with PIL's bare
"OSError: image file is truncated", and on a 30k-image set nobody can find the file.
"""
from __future__ import annotations

import re
from os import PathLike

import numpy as np
from PIL import Image

__all__ = ["read_image", "read_rgb", "to_rgb", "image_size", "has_alpha", "size_at_least"]

# What PIL raises for unreadable data: OSError (truncated, unidentified), SyntaxError (some
# broken headers), ValueError / struct errors (bad fields), DecompressionBombError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _error(path: str | PathLike, exc: BaseException) -> OSError:
    return OSError(f"{path}: cannot read the image ({type(exc).__name__}: {exc})")


def read_image(path: str | PathLike) -> Image.Image:
    """Open and fully decode the image at `path` (pixels in memory, file closed).

    Raises FileNotFoundError for a missing file and OSError naming the file for one that
    cannot be decoded (truncated, corrupt, not an image), the PIL error chained.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except _DECODE_ERRORS as exc:
        raise _error(path, exc) from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. A 16-bit greyscale image (PIL modes "I;16*", or "I" as 16-bit PNGs open) is
    scaled to 8 bits first: PIL's convert("RGB") clips it at 255, so a mid-grey 16-bit pixel
    would come out white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64) / 257.0  # 0..65535 -> 0..255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def read_rgb(path: str | PathLike) -> Image.Image:
    """`read_image` as 8-bit RGB (`to_rgb`)."""
    return to_rgb(read_image(path))


def image_size(path: str | PathLike) -> tuple[int, int]:
    """(height, width) of the image at `path`, from its header; errors as `read_image`."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except _DECODE_ERRORS as exc:
        raise _error(path, exc) from exc


def has_alpha(image: Image.Image) -> bool:
    """Whether the image carries transparency: an alpha band or a transparency key."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def size_at_least(size: object, minimum: tuple[int, int]) -> tuple[int, int]:
    """(height, width) from a pair of ints or from "HxW" text (a CLI's --size), each side at
    least `minimum`'s; ValueError otherwise."""
    if isinstance(size, str):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", size)
        if match is None:
            raise ValueError(f"size must look like HxW (e.g. 128x64), got {size!r}")
        size = (int(match.group(1)), int(match.group(2)))
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    ints = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in (h, w))
    if not ints or h < minimum[0] or w < minimum[1]:
        raise ValueError(f"size must be two ints (height, width) of at least {minimum[0]}x{minimum[1]}, got {size!r}")
    return int(h), int(w)
