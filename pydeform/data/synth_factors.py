"""A synthetic CUB-layout dataset that knows its factors (for FineGAN and MixNMatch).

Each image is a background scene with one object on it. Factors:

- background: 20 scene classes (two colours and a pattern: gradients, bands, waves, grids,
  blobs), with a random phase and a small colour jitter per image;
- shape: 10 silhouettes in 3 families (0-3 bird-like, 4-6 fish-like, 7-9 leaf-like), built
  from ellipses and polygons, at a random pose: centre, scale, rotation and flip;
- texture: 20 fills (two colours and a pattern: solid, stripes, spots, checks, rings);
  textures 0-7 belong to the birds, 8-13 to the fish and 14-19 to the leaves, and an image's
  texture is drawn among its shape family's (each texture tied to one shape family);
- background loosely tied to texture: with probability `bg_tie` (0.6) the background class
  equals the texture class, otherwise it is uniform.

Written by `write_factors(out)` in the CUB layout (`pydeform.data.cub`):

    images/NNNNN.png   RGB, size x size (default 128)
    masks/NNNNN.png    the object's mask (L, 0/255)
    images.txt, bounding_boxes.txt (`id x y w h`, the mask's extent), train_test_split.txt
    factors.csv        id,name,split,background,shape,family,texture,cx,cy,scale,rotation,flip
    info.json          size, seed, counts, class counts, the texture -> family table

Deterministic for a seed.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

__all__ = ["write_factors", "read_factors", "BACKGROUNDS", "SHAPES", "TEXTURES", "FAMILIES", "SHAPE_FAMILY",
           "TEXTURE_FAMILY", "FACTORS"]  # fmt: skip

BACKGROUNDS, SHAPES, TEXTURES = 20, 10, 20
FAMILIES = ("bird", "fish", "leaf")
SHAPE_FAMILY = (0, 0, 0, 0, 1, 1, 1, 2, 2, 2)
TEXTURE_FAMILY = (0,) * 8 + (1,) * 6 + (2,) * 6
FACTORS = ("background", "shape", "texture")
HEADER = ("id", "name", "split", "background", "shape", "family", "texture", "cx", "cy", "scale", "rotation", "flip")


# ----------------------------------------------------------------------------- shapes


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=np.float64)


# Silhouettes in a canonical frame (x right, y down, roughly within [-1, 1]^2), facing right.
_SHAPE_PARTS: tuple[tuple[np.ndarray, ...], ...] = (
    # birds: body, head, beak, tail, and a variant feature each
    (_ellipse(-0.1, 0.1, 0.55, 0.32), _ellipse(0.45, -0.25, 0.2, 0.2), _poly((0.6, -0.3), (0.9, -0.22), (0.6, -0.16)),
     _poly((-0.6, 0.0), (-1.0, -0.25), (-0.95, 0.2))),  # songbird
    (_ellipse(-0.05, 0.15, 0.45, 0.4), _ellipse(0.4, -0.35, 0.18, 0.18), _poly((0.55, -0.38), (0.75, -0.33), (0.55, -0.28)),
     _poly((-0.45, 0.1), (-0.75, -0.05), (-0.7, 0.35)), _poly((0.3, -0.5), (0.35, -0.8), (0.45, -0.5))),  # round, crested
    (_ellipse(-0.2, 0.2, 0.45, 0.22, 0.2), _poly((0.1, 0.1), (0.35, -0.55), (0.45, -0.5), (0.25, 0.2)),
     _ellipse(0.42, -0.6, 0.14, 0.12), _poly((0.52, -0.62), (0.95, -0.55), (0.52, -0.55)),
     _poly((-0.6, 0.25), (-0.95, 0.55), (-0.55, 0.4))),  # long-necked wader
    (_ellipse(0.0, 0.0, 0.5, 0.25), _ellipse(0.5, -0.12, 0.17, 0.15), _poly((0.64, -0.14), (0.85, -0.1), (0.64, -0.06)),
     _poly((-0.45, -0.05), (-0.25, -0.7), (0.15, -0.1)), _poly((-0.45, 0.0), (-1.0, 0.1), (-0.5, 0.15))),  # wings up
    # fish: body and tail, fins
    (_ellipse(0.0, 0.0, 0.6, 0.28), _poly((-0.5, 0.0), (-0.95, -0.35), (-0.95, 0.35))),  # plain fish
    (_ellipse(0.05, 0.0, 0.45, 0.45), _poly((-0.35, 0.0), (-0.8, -0.4), (-0.8, 0.4)), _poly((0.0, -0.4), (-0.2, -0.8), (0.25, -0.42)),
     _poly((0.0, 0.4), (-0.2, 0.8), (0.25, 0.42))),  # round fish with fins
    (_ellipse(0.0, 0.0, 0.9, 0.13), _poly((-0.8, 0.0), (-1.0, -0.2), (-1.0, 0.2)), _poly((-0.4, -0.1), (0.3, -0.25), (0.5, -0.1))),  # eel
    # leaves: blade shapes with a stem
    (_ellipse(0.1, 0.0, 0.75, 0.32), _poly((-0.6, -0.03), (-0.98, -0.03), (-0.98, 0.03), (-0.6, 0.03))),  # lanceolate
    (_poly(*[((0.75 if k % 2 == 0 else 0.35) * math.cos(k * math.pi / 5), (0.75 if k % 2 == 0 else 0.35) * math.sin(k * math.pi / 5))
             for k in range(10)]), _poly((-0.1, 0.3), (-0.05, 0.95), (0.05, 0.95), (0.1, 0.3))),  # star (maple)
    (_ellipse(-0.22, -0.15, 0.38, 0.38), _ellipse(0.22, -0.15, 0.38, 0.38), _poly((-0.58, 0.0), (0.58, 0.0), (0.0, 0.75))),  # heart
)  # fmt: skip


def _shape_mask(shape: int, size: int, cx: float, cy: float, scale: float, rotation: float, flip: bool) -> np.ndarray:
    """The silhouette as a (size, size) bool mask: canonical point q -> centre + scale R(flip q)."""
    canvas = Image.new("L", (size * 2, size * 2), 0)  # drawn at 2x, then reduced (smoother edges)
    draw = ImageDraw.Draw(canvas)
    c, s = math.cos(rotation), math.sin(rotation)
    for part in _SHAPE_PARTS[shape]:
        q = part.copy()
        if flip:
            q[:, 0] = -q[:, 0]
        x = cx + scale * (c * q[:, 0] - s * q[:, 1])
        y = cy + scale * (s * q[:, 0] + c * q[:, 1])
        draw.polygon([(2 * a, 2 * b) for a, b in zip(x, y)], fill=255)
    return np.asarray(canvas.resize((size, size), Image.BILINEAR)) >= 128


# ----------------------------------------------------------------------------- fills


def _palette(seed: int, count: int, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    import colorsys

    rng = np.random.default_rng(seed)
    hues = (np.arange(count) / count + rng.uniform(0, 1 / count, count)) % 1
    rng.shuffle(hues)
    out = []
    for h in hues:
        a = colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value))
        b = colorsys.hsv_to_rgb((h + rng.uniform(0.08, 0.5)) % 1, rng.uniform(*saturation), rng.uniform(*value))
        out.append([a, b])
    return np.array(out)  # (count, 2, 3)


_BG_COLOURS = _palette(11, BACKGROUNDS, (0.15, 0.45), (0.35, 0.8))  # muted scenes
_TEX_COLOURS = _palette(23, TEXTURES, (0.7, 1.0), (0.6, 1.0))  # vivid objects


def _background(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * math.pi)
    kind, freq = cls % 5, 2 + (cls // 5)
    if kind == 0:  # vertical gradient with a soft wave
        t = yy + 0.08 * np.sin(2 * math.pi * freq * xx + phase)
    elif kind == 1:  # horizontal bands
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * yy + phase)
    elif kind == 2:  # diagonal waves
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx + yy) / 1.4 + phase)
    elif kind == 3:  # grid
        t = ((np.sin(2 * math.pi * 2 * freq * xx + phase) > 0.8) | (np.sin(2 * math.pi * 2 * freq * yy + phase) > 0.8)) * 1.0
    else:  # blobs
        t = 0.5 + 0.25 * (np.sin(2 * math.pi * freq * xx + phase) + np.sin(2 * math.pi * (freq + 1) * yy - phase))
    a, b = _BG_COLOURS[cls] + rng.normal(0, 0.03, (2, 3))
    image = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    return np.clip(image + rng.normal(0, 0.015, image.shape), 0, 1)


def _texture(cls: int, size: int, cx: float, cy: float, scale: float, rotation: float, rng: np.random.Generator) -> np.ndarray:
    """The fill, in the object's frame (it moves, scales and turns with the object)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c, s = math.cos(rotation), math.sin(rotation)
    u = (c * (xx - cx) + s * (yy - cy)) / scale
    v = (-s * (xx - cx) + c * (yy - cy)) / scale
    kind = cls % 5
    period = 0.35 + 0.1 * ((cls // 5) % 3)
    if kind == 0:
        t = np.zeros_like(u) + 0.15 * (v > 0.15)  # solid with a darker belly
    elif kind == 1:
        t = (np.sin(2 * math.pi * u / period) > 0) * 1.0  # stripes across
    elif kind == 2:
        t = (((u / period) % 1 - 0.5) ** 2 + ((v / period) % 1 - 0.5) ** 2 < 0.09) * 1.0  # spots
    elif kind == 3:
        t = ((np.floor(u / period) + np.floor(v / period)) % 2) * 1.0  # checks
    else:
        t = (np.sin(2 * math.pi * np.hypot(u, v) / period) > 0) * 1.0  # rings
    a, b = _TEX_COLOURS[cls] + rng.normal(0, 0.02, (2, 3))
    return np.clip(a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None], 0, 1)


# ----------------------------------------------------------------------------- the set


def _draw_factors(rng: np.random.Generator, bg_tie: float) -> dict[str, Any]:
    shape = int(rng.integers(SHAPES))
    family = SHAPE_FAMILY[shape]
    textures = [t for t in range(TEXTURES) if TEXTURE_FAMILY[t] == family]
    texture = int(textures[rng.integers(len(textures))])
    background = texture if rng.random() < bg_tie else int(rng.integers(BACKGROUNDS))
    return {"background": background, "shape": shape, "family": family, "texture": texture}


def write_factors(
    out: str | os.PathLike, count: int = 2000, size: int = 128, test_fraction: float = 0.2, seed: int = 0,
    bg_tie: float = 0.6, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Write the factor set (see the module docstring) into `out`; returns info.json's dict.
    The last round(test_fraction * count) images form the test split."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise ValueError(f"count must be an int >= 2, got {count!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0 <= bg_tie <= 1:
        raise ValueError(f"bg_tie must be in [0, 1], got {bg_tie}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: choose a new folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    tests = max(1, round(test_fraction * count))
    rows = []
    for i in tqdm(range(count), desc="synth factors", unit="image", disable=not progress):
        f = _draw_factors(rng, bg_tie)
        scale = size * rng.uniform(0.2, 0.3)  # canonical unit -> pixels
        cx, cy = size * rng.uniform(0.38, 0.62), size * rng.uniform(0.38, 0.62)
        rotation, flip = rng.uniform(-0.6, 0.6), bool(rng.integers(2))
        mask = _shape_mask(f["shape"], size, cx, cy, scale, rotation, flip)
        image = _background(f["background"], size, rng)
        tex = _texture(f["texture"], size, cx, cy, scale, rotation, rng)
        image = np.where(mask[..., None], tex, image)
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        name = f"{i:05d}.png"
        Image.fromarray((image * 255).round().astype(np.uint8)).save(out / "images" / name)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / name)
        split = "test" if i >= count - tests else "train"
        rows.append({"id": i + 1, "name": name, "split": split, **f, "cx": round(cx, 3), "cy": round(cy, 3),
                     "scale": round(scale, 3), "rotation": round(rotation, 4), "flip": int(flip), "box": box})  # fmt: skip
    (out / "images.txt").write_text("".join(f"{r['id']} {r['name']}\n" for r in rows))
    (out / "bounding_boxes.txt").write_text("".join(f"{r['id']} {' '.join(str(float(v)) for v in r['box'])}\n" for r in rows))
    (out / "train_test_split.txt").write_text("".join(f"{r['id']} {int(r['split'] == 'train')}\n" for r in rows))
    with open(out / "factors.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    info = {"size": size, "seed": seed, "count": count, "counts": {"train": count - tests, "test": tests},
            "classes": {"background": BACKGROUNDS, "shape": SHAPES, "texture": TEXTURES}, "bg_tie": bg_tie,
            "shape_family": list(SHAPE_FAMILY), "texture_family": list(TEXTURE_FAMILY), "families": list(FAMILIES)}  # fmt: skip
    (out / "info.json").write_text(json.dumps(info, indent=2))
    return info


def read_factors(root: str | os.PathLike) -> list[dict[str, Any]]:
    """factors.csv as dicts with int factors, in id order; errors name the file and line."""
    path = Path(root) / "factors.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (written by `pydeform synth factors`)")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != HEADER:
            raise ValueError(f"{path}, line 1: expected the header {','.join(HEADER)}")
        for number, row in enumerate(reader, 2):
            try:
                rows.append({**row, **{k: int(row[k]) for k in ("id", "background", "shape", "family", "texture", "flip")}})
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {number}: a factor is not an integer") from None
    return rows
