"""Synthetic placement task for ST-GAN with a known answer (DESIGN.md, ST-GAN row).

A cartoon face (head, ears, hair, eyebrows, two eyes, nose, mouth) is placed on a cluttered
background by a similarity transform, and a pair of glasses drawn in the face's canonical
frame must be warped onto it. The correct warp is known exactly, as ST-GAN parameters
``p_true`` (Lin et al., "ST-GAN", CVPR 2018): ``params_to_matrix(p_true)`` maps a background
point (normalized coordinates, docs/contracts.md) to the canonical point drawn there, so
the correctly placed glasses are ``homography_sample(fg, params_to_matrix(p_true),
coords="normalized")``. The training input starts from ``p_init = p_true + 0.1 N(0, 1)`` on
all 8 parameters, ST-GAN's initial perturbation.

Layout written by :func:`write_placement` under ``out_dir``::

    placement-{train,test}.csv   background,foreground,real,p_true,p_init (paths relative to
                                 out_dir; p_* JSON lists of 8 floats, exact float32 values)
    backgrounds/{split}/NNNNNN.png   RGB, the face on clutter
    foregrounds/{split}/NNNN.png     RGBA glasses in the canonical frame (test has its own)
    real/{split}/NNNNNN.png          RGB, the glasses composited at p_true
    info.json                        size, seed, corners, eyes, counts

Colours: every colour but the pupils has all channels >= 0.25 (channel sum >= 0.75) and the
pupils are near black (sum <= 0.2), so the eyes are the darkest spots of the image: the
face's position, scale and rotation can be read from it.
"""
from __future__ import annotations

import colorsys
import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from pydeform.data._images import size_at_least
from pydeform.geometry import composite, params_to_matrix
from pydeform.geometry._checks import check_float_tensor, check_size
from pydeform.ops.homography import homography_sample

__all__ = [
    "CORNERS",
    "EYES",
    "PERTURBATION_STD",
    "CSV_HEADER",
    "parse_size",
    "similarity_params",
    "corner_error",
    "write_placement",
]

# Canonical frame, normalized coordinates of the H x W image (x right, y down).
EYES = ((-0.22, -0.05), (0.22, -0.05))
# The box holding every glasses object (lenses, rims, bridge, temples), clockwise from
# top-left; corner_error measures the placement of these 4 points.
CORNERS = ((-0.52, -0.23), (0.52, -0.23), (0.52, 0.13), (-0.52, 0.13))
PERTURBATION_STD = 0.1  # ST-GAN's initial warp perturbation: 0.1 N(0, 1) on every parameter
CSV_HEADER = ("background", "foreground", "real", "p_true", "p_init")

# Similarity prior of the face placement (the face in the background relative to the
# canonical one): moderate, so the glasses stay mostly inside a 64 x 64 image.
_SCALE = (0.8, 1.2)
_ROTATION = math.radians(15.0)
_TRANSLATION = 0.2  # |p0|, |p4| (normalized units, ~ the face centre's offset)

_SUPERSAMPLE = 3  # samples per pixel side: anti-aliased edges
_MIN_SIZE = (16, 16)
_MIN_CHANNEL = 0.25  # every non-pupil colour; see the module docstring
_FOREGROUNDS = 32  # glasses objects per split

# Canonical face geometry (normalized units): everything the eyes' legibility depends on.
_HEAD_CENTRE = (0.0, 0.05)
_SCLERA = (0.13, 0.085)  # half axes
_PUPIL = 0.06  # radius
_EAR_X = 0.5
_FACE_BOX = ((-0.6, 0.6), (-0.7, 0.72))  # (x range, y range) holding every face feature

# Glasses geometry ranges; CORNERS bound the extreme values (see _render_glasses).
_LENS_RX = (0.12, 0.16)
_LENS_RY = (0.09, 0.13)
# Bold frames and tinted lenses (full rim thickness 2-3 px at 64 x 64): a misplaced pair
# still overlaps its true place, so a critic's gradient through the bilinear warp sees
# which way to move it (thin 1 px rims give no such basin at ST-GAN's 0.1 perturbation).
_RIM = (0.06, 0.10)  # full thickness
_TEMPLE_END = 0.49


# ----------------------------------------------------------------------------- validation


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"64x64"``) into ``(H, W)``, both sides >= 16."""
    return size_at_least(text, _MIN_SIZE)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- geometry


def similarity_params(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    """ST-GAN parameters (8,) float64 of a similarity warp.

    The generator [[a, -w, tx], [w, a, ty], [0, 0, -2a]] (p2 = a, p1 = -w, p5 = w,
    p6 = -2a, p0 = tx, p4 = ty, p3 = p7 = 0) is traceless; its exponential is
    [[e^a R(w), v], [0, e^-2a]], i.e. up to the projective scale the similarity
    x -> e^(3a) R(w) x + e^(2a) v with a rotation by w. Here a = -ln(scale) / 3, w = -angle:
    the background shows the canonical frame magnified by ``scale`` and rotated by ``angle``
    (radians, clockwise on screen since y points down), the matrix mapping back.
    """
    for name, value in (("scale", scale), ("angle", angle), ("tx", tx), ("ty", ty)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    a, w = -math.log(scale) / 3.0, -angle
    return np.array([tx, -w, a, 0.0, ty, w, -2.0 * a, 0.0])


def _matrices(name: str, h: object) -> Tensor:
    """(B, 8) ST-GAN parameters -> matrices; (B, 3, 3) matrices as they are."""
    check_float_tensor(name, h)
    if h.dim() == 2 and h.shape[0] >= 1 and h.shape[1] == 8:
        return params_to_matrix(h)
    if h.dim() == 3 and h.shape[0] >= 1 and h.shape[1:] == (3, 3):
        return h
    raise ValueError(f"{name} must have shape (B, 8) (ST-GAN parameters) or (B, 3, 3), got {tuple(h.shape)}")


def corner_error(p_pred_or_h_pred: Tensor, h_true: Tensor, corners, size: tuple[int, int]) -> Tensor:
    """Mean pixel distance between where two warps put the foreground box's corners.

    Args:
        p_pred_or_h_pred: (B, 8) ST-GAN parameters or (B, 3, 3) matrices, the predicted warp.
        h_true: (B, 3, 3) matrices (or (B, 8) parameters), the true warp. Both map a
            background point to a canonical point in normalized coordinates.
        corners: (N, 2) canonical points (x, y), normalized coordinates, e.g. :data:`CORNERS`.
        size: (H, W) of the images, for the normalized -> pixel conversion
            x_pix = (x + 1) (W - 1) / 2, y_pix = (y + 1) (H - 1) / 2.

    Returns:
        (B,) in the dtype of the prediction: the mean over the corners c of
        |invert(h_pred) c - invert(h_true) c| in pixels of the background.
    """
    h_pred = _matrices("p_pred_or_h_pred", p_pred_or_h_pred)
    h_true = _matrices("h_true", h_true)
    if h_true.device != h_pred.device:
        raise ValueError(f"h_true is on {h_true.device} but p_pred_or_h_pred is on {h_pred.device}")
    if h_true.shape[0] != h_pred.shape[0]:
        raise ValueError(f"h_true has batch {h_true.shape[0]} but p_pred_or_h_pred has {h_pred.shape[0]}")
    height, width = check_size("size", size)
    c = torch.as_tensor(corners, dtype=h_pred.dtype, device=h_pred.device)
    if c.dim() != 2 or c.shape[0] < 1 or c.shape[1] != 2:
        raise ValueError(f"corners must have shape (N, 2), got {tuple(c.shape)}")
    c = torch.cat([c, torch.ones_like(c[:, :1])], dim=1)  # (N, 3)
    pixel_scale = c.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])

    def placed(h: Tensor) -> Tensor:  # (B, N, 2) pixel positions in the background
        q = c @ torch.linalg.inv(h.to(c.dtype)).transpose(1, 2)
        return (q[..., :2] / q[..., 2:] + 1.0) * pixel_scale

    return (placed(h_pred) - placed(h_true)).norm(dim=-1).mean(dim=-1)


# ----------------------------------------------------------------------------- rendering


def _sample_grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalized (x, y) of _SUPERSAMPLE^2 points per pixel, each (H*s, W*s) float32."""
    h, w = size
    s = _SUPERSAMPLE
    offsets = (np.arange(s) + 0.5) / s - 0.5
    rows = (np.arange(h)[:, None] + offsets).ravel()
    cols = (np.arange(w)[:, None] + offsets).ravel()
    y, x = np.meshgrid(2.0 * rows / (h - 1) - 1.0, 2.0 * cols / (w - 1) - 1.0, indexing="ij")
    return x.astype(np.float32), y.astype(np.float32)


def _downsample(img: np.ndarray) -> np.ndarray:
    """(H*s, W*s, C) supersamples -> (H, W, C) pixel means (box filter). A sum of strided
    slices: several times faster than a mean over reshaped axes."""
    s = _SUPERSAMPLE
    return sum(img[i::s, j::s] for i in range(s) for j in range(s)) * np.float32(1.0 / (s * s))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _ellipse(x, y, cx, cy, ax, ay, angle=0.0) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    u, v = (c * dx + s * dy) / ax, (-s * dx + c * dy) / ay
    return u * u + v * v <= 1.0


def _superellipse(x, y, cx, cy, ax, ay, power) -> np.ndarray:
    return np.abs((x - cx) / ax) ** power + np.abs((y - cy) / ay) ** power <= 1.0


def _colour(rng: np.random.Generator, sat, val) -> np.ndarray:
    """A random HSV colour, (3,) float32, every channel raised to >= _MIN_CHANNEL."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.maximum(np.asarray(rgb, np.float32), _MIN_CHANNEL)


def _window(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> tuple[slice, slice]:
    """(rows, cols) slices of the sample grid (x, y) covering the bounding box of points
    (N, 2): shapes are only evaluated there, a large saving for small ones."""
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    cols, rows = x[0], y[:, 0]
    return (slice(np.searchsorted(rows, y0), np.searchsorted(rows, y1, side="right")),
            slice(np.searchsorted(cols, x0), np.searchsorted(cols, x1, side="right")))


def _clutter(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Background clutter at the sample points (H*s, W*s): random shapes on a plain colour,
    then shading (a linear ramp and low-frequency waves) and grain over all of it."""
    img = np.empty((*x.shape, 3), np.float32)
    img[:] = _colour(rng, (0.0, 0.5), (0.4, 0.95))
    for _ in range(int(rng.integers(4, 11))):
        cx, cy = rng.uniform(-1.1, 1.1, 2)
        ax, ay = rng.uniform(0.08, 0.5, 2)
        angle = rng.uniform(0, np.pi)
        colour = _colour(rng, (0.0, 0.8), (0.3, 1.0))
        kind = rng.integers(3)
        reach = math.hypot(ax, ay)
        win = _window(x, y, np.array([[cx - reach, cy - reach], [cx + reach, cy + reach]]))
        xw, yw = x[win], y[win]
        if kind == 0:
            mask = _ellipse(xw, yw, cx, cy, ax, ay, angle)
        else:
            c, s = math.cos(angle), math.sin(angle)
            along, across = c * (xw - cx) + s * (yw - cy), -s * (xw - cx) + c * (yw - cy)
            mask = (np.abs(along) <= ax) & (np.abs(across) <= ay)
            if kind == 2:  # a band of stripes
                mask &= np.sin(along * (np.pi / (0.03 + 0.1 * ay))) > 0
        img[win][mask] = colour
    # Shading and grain are smooth or per pixel: computed once per pixel (at its centre) and
    # added to all its samples, several times cheaper than per sample.
    s = _SUPERSAMPLE
    h, w = x.shape[0] // s, x.shape[1] // s
    px, py = x[s // 2::s, s // 2::s], y[s // 2::s, s // 2::s]
    theta = rng.uniform(0, 2 * np.pi)
    shade = rng.uniform(-0.12, 0.12) * (px * math.cos(theta) + py * math.sin(theta))
    for _ in range(3):
        fx, fy = rng.uniform(-6.0, 6.0, 2)
        shade += rng.uniform(0.01, 0.03) * np.sin(fx * px + fy * py + rng.uniform(0, 2 * np.pi))
    shade = shade[..., None] + rng.normal(0.0, rng.uniform(0.01, 0.04), (h, w, 3))
    img = img.reshape(h, s, w, s, 3) + shade.astype(np.float32)[:, None, :, None]
    return np.clip(img.reshape(x.shape[0], x.shape[1], 3), _MIN_CHANNEL, 1.0)


def _face(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Paint a random cartoon face onto img at canonical coordinates (u, v) of its samples.

    The pupils sit exactly on EYES, near black; every other face colour keeps channels
    >= _MIN_CHANNEL.
    """
    skin = _colour(rng, (0.15, 0.55), (0.55, 0.98))
    skin[0], skin[2] = max(skin[0], skin[1]), min(skin[2], skin[1])  # warm: red >= green >= blue
    skin = np.maximum(skin, _MIN_CHANNEL)
    hair = _colour(rng, (0.2, 0.8), (0.25, 0.9))
    hx, hy = _HEAD_CENTRE
    head_ax, head_ay = rng.uniform(0.44, 0.5), rng.uniform(0.56, 0.62)
    for side in (-1, 1):  # ears behind the head
        img[_ellipse(u, v, side * _EAR_X, 0.0, 0.07, 0.12)] = skin * 0.9 + 0.05
    img[_ellipse(u, v, hx, hy, head_ax, head_ay)] = skin
    # Hair: a cap above a wavy hairline, slightly wider than the head.
    hairline = rng.uniform(-0.42, -0.3) + 0.04 * np.sin(u * rng.uniform(8, 20) + rng.uniform(0, 2 * np.pi))
    img[_ellipse(u, v, hx, hy - 0.03, head_ax + 0.03, head_ay + 0.04) & (v < hairline)] = hair
    brow = np.maximum(hair * 0.8, _MIN_CHANNEL)
    brow_tilt = rng.uniform(-0.25, 0.25)
    for (ex, ey), side in zip(EYES, (-1, 1)):
        img[_ellipse(u, v, ex, ey - 0.15, 0.12, 0.025, side * brow_tilt)] = brow
        img[_ellipse(u, v, ex, ey, *_SCLERA)] = rng.uniform(0.93, 1.0, 3).astype(np.float32)
        img[_ellipse(u, v, ex, ey, _PUPIL, _PUPIL)] = rng.uniform(0.0, 0.06, 3).astype(np.float32)
    img[_ellipse(u, v, 0.0, 0.13, 0.05, rng.uniform(0.08, 0.11))] = np.maximum(skin * 0.85, _MIN_CHANNEL)
    lips = np.array([rng.uniform(0.6, 0.9), rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.4)], np.float32)
    img[_ellipse(u, v, 0.0, rng.uniform(0.32, 0.36), rng.uniform(0.1, 0.17), rng.uniform(0.025, 0.05))] = lips


def _render_background(rng: np.random.Generator, size: tuple[int, int], h_true: np.ndarray) -> np.ndarray:
    """Clutter plus a face whose canonical point h_true q is drawn at each background point q.

    h_true: (3, 3) float64, background -> canonical in normalized coordinates. Returns
    (H, W, 3) uint8.
    """
    x, y = _sample_grid(size)
    img = _clutter(rng, x, y)
    corners = np.array([[x0, y0, 1.0] for x0 in _FACE_BOX[0] for y0 in _FACE_BOX[1]])
    placed = corners @ np.linalg.inv(h_true).T
    win = _window(x, y, placed[:, :2] / placed[:, 2:])
    xw, yw = x[win], y[win]
    q = h_true @ np.stack([xw.ravel(), yw.ravel(), np.ones(xw.size)])
    u, v = (q[:2] / q[2]).astype(np.float32).reshape(2, *xw.shape)
    _face(rng, img[win], u, v)
    return _to_uint8(_downsample(img))


def _render_glasses(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A random pair of glasses in the canonical frame, (H, W, 4) uint8 RGBA (straight alpha).

    Lenses (superellipses from round to rectangular) centred on EYES with an opaque rim,
    a bridge and two temples, all inside CORNERS; the lenses are tinted glass
    (alpha 0.25..0.5, or 0.6..0.9 for sunglasses).
    """
    u, v = _sample_grid(size)
    rx, ry = rng.uniform(*_LENS_RX), rng.uniform(*_LENS_RY)
    power = rng.uniform(2.0, 6.0)
    half = rng.uniform(*_RIM) / 2.0
    frame_rgb = np.asarray(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.9), rng.uniform(0.05, 0.9)),
                           np.float32)
    sunglasses = rng.random() < 0.3
    tint = np.asarray(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.6),
                                          rng.uniform(0.05, 0.3) if sunglasses else rng.uniform(0.6, 1.0)),
                      np.float32)
    lens_alpha = rng.uniform(0.6, 0.9) if sunglasses else rng.uniform(0.25, 0.5)

    lens = np.zeros(u.shape, bool)
    frame = np.zeros(u.shape, bool)
    ey = EYES[0][1]
    for ex, _ in EYES:
        outer = _superellipse(u, v, ex, ey, rx + half, ry + half, power)
        inner = _superellipse(u, v, ex, ey, rx - half, ry - half, power)
        lens |= inner
        frame |= outer & ~inner
    # Bridge and temples run from the lens centres outwards; the glass hides their inner part.
    eye_x = EYES[1][0]
    bridge_y = ey - ry * rng.uniform(0.2, 0.6) - 0.05 * (1.0 - (u / eye_x) ** 2)  # arched up
    frame |= (np.abs(u) <= eye_x) & (np.abs(v - bridge_y) <= half) & ~lens
    temple_y = ey - ry * rng.uniform(0.3, 0.7)
    frame |= (np.abs(u) >= eye_x) & (np.abs(u) <= _TEMPLE_END) & (np.abs(v - temple_y) <= half) & ~lens

    alpha = np.where(frame, 1.0, np.where(lens, lens_alpha, 0.0)).astype(np.float32)
    premultiplied = np.where(frame[..., None], frame_rgb, tint * alpha[..., None])
    alpha = _downsample(alpha[..., None])
    premultiplied = _downsample(premultiplied)
    # Straight colour; fully transparent pixels take the frame colour, so that bilinear
    # sampling next to the rim does not pull in black.
    rgb = np.where(alpha > 0, premultiplied / np.maximum(alpha, 1e-12), frame_rgb)
    return _to_uint8(np.concatenate([rgb, alpha], axis=-1))


# ----------------------------------------------------------------------------- writer


def _float32_list(p: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32."""
    return [float(f"{value:.9g}") for value in np.asarray(p, np.float32)]


def _real(fg: np.ndarray, bg: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    """composite(homography_sample(fg, params_to_matrix(p_true)), bg) of the 8-bit images, uint8.

    Run under torch.set_num_threads(1) by the writer: on one small image, waking a thread
    pool costs far more than the work (0.2 ms single-threaded vs several ms on a busy machine).
    """
    fg_t = torch.from_numpy(fg).permute(2, 0, 1)[None].float() / 255.0
    bg_t = torch.from_numpy(bg).permute(2, 0, 1)[None].float() / 255.0
    h = params_to_matrix(torch.from_numpy(np.asarray(p_true, np.float32))[None])
    out = composite(homography_sample(fg_t, h, coords="normalized"), bg_t)
    return _to_uint8(out[0].permute(1, 2, 0).numpy())


def _save(pixels: np.ndarray, path: Path) -> None:
    # compress_level 1: several times faster than the default, files stay small.
    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)


def _write_splits(root: Path, size: tuple[int, int], counts: dict[str, int], seed: int, foregrounds: int,
                  progress: bool) -> None:
    """The images and CSV files of write_placement."""
    bar = tqdm(total=sum(counts.values()), desc="synth placement", unit="img", disable=not progress)
    for split_index, (split, count) in enumerate(counts.items()):
        fg_pixels = []
        for k in range(foregrounds):
            fg = _render_glasses(np.random.default_rng([seed, split_index, 0, k]), size)
            _save(fg, root / "foregrounds" / split / f"{k:04d}.png")
            fg_pixels.append(fg)
        rows = []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, 1, i])
            p_true = np.asarray(similarity_params(
                scale=math.exp(rng.uniform(math.log(_SCALE[0]), math.log(_SCALE[1]))),
                angle=rng.uniform(-_ROTATION, _ROTATION),
                tx=rng.uniform(-_TRANSLATION, _TRANSLATION),
                ty=rng.uniform(-_TRANSLATION, _TRANSLATION),
            ), np.float32)  # fmt: skip
            p_init = (p_true + PERTURBATION_STD * rng.standard_normal(8)).astype(np.float32)
            k = int(rng.integers(foregrounds))
            h_true = params_to_matrix(torch.from_numpy(p_true.astype(np.float64))[None])[0].numpy()
            bg = _render_background(rng, size, h_true)
            names = [f"backgrounds/{split}/{i:06d}.png", f"foregrounds/{split}/{k:04d}.png",
                     f"real/{split}/{i:06d}.png"]  # fmt: skip
            _save(bg, root / names[0])
            _save(_real(fg_pixels[k], bg, p_true), root / names[2])
            rows.append([*names, json.dumps(_float32_list(p_true)), json.dumps(_float32_list(p_init))])
            bar.update(1)
        with open(root / f"placement-{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(CSV_HEADER)
            writer.writerows(rows)
    bar.close()


def write_placement(
    out_dir: str | Path,
    size: tuple[int, int] = (64, 64),
    train: int = 2000,
    test: int = 500,
    seed: int = 0,
    progress: bool = True,
    *,
    foregrounds: int = _FOREGROUNDS,
) -> dict:
    """Write the synthetic placement dataset (layout in the module docstring).

    Args:
        out_dir: folder to write into (created if missing; files of the same names are
            overwritten).
        size: (H, W) of every image, each >= 16 (``"HxW"`` strings accepted), e.g. (64, 64)
            or (144, 144) (ST-GAN's glasses size).
        train, test: number of samples per split (>= 1).
        seed: non-negative int; the same arguments give byte-identical files. Sample i of a
            split depends only on (seed, split, i).
        progress: show a tqdm progress bar.
        foregrounds: glasses objects per split (>= 1); the test split has its own. Each
            sample draws one at random.

    Per sample: the face placement p_true = similarity_params(scale, angle, tx, ty) with
    scale log-uniform in [0.8, 1.2], angle uniform in +-15 degrees, tx, ty uniform in
    +-0.2 (float32 values); p_init = p_true + 0.1 N(0, 1) (float32).

    Returns:
        The dict written to info.json.
    """
    h, w = size_at_least(size, _MIN_SIZE)
    counts = {"train": _check_int("train", train, 1), "test": _check_int("test", test, 1)}
    seed = _check_int("seed", seed, 0)
    foregrounds = _check_int("foregrounds", foregrounds, 1)
    root = Path(out_dir)
    for folder in ("backgrounds", "foregrounds", "real"):
        for split in counts:
            (root / folder / split).mkdir(parents=True, exist_ok=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see _real
    try:
        _write_splits(root, (h, w), counts, seed, foregrounds, progress)
    finally:
        torch.set_num_threads(threads)

    info = {
        "format": "pydeform synth placement 1",
        "size": [h, w],
        "seed": seed,
        "corners": [list(c) for c in CORNERS],
        "eyes": [list(e) for e in EYES],
        "counts": counts,
        "foregrounds": {split: foregrounds for split in counts},
        "perturbation_std": PERTURBATION_STD,
    }
    (root / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
