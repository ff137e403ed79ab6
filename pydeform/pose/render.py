"""Pose images a generator is conditioned on: Gaussian joint heatmaps (Deformable GAN) and
the three-channel stickman (Variational U-Net)."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from pydeform.pose.keypoints import JOINT, MIRROR, KeypointsLike, _as_keypoint_array, _check_size, _missing

__all__ = ["heatmaps", "stickman", "stickman_thickness", "vunet_stickman", "vunet_thickness"]


def heatmaps(
    keypoints: KeypointsLike, size: tuple[int, int], sigma: float = 6.0, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """One Gaussian per joint: exp(-d^2 / (2 sigma^2)), d the pixel's distance to the joint.

    keypoints: (18, 2) or (B, 18, 2) (x, y) pixels (see `pydeform.pose.keypoints`).
    size: (H, W). Returns (18, H, W) or (B, 18, H, W) of `dtype` on the keypoints' device
    (cpu unless a tensor was given); a missing joint's channel is all zeros.
    """
    xy, batched, device = _as_keypoint_array(keypoints, "keypoints")
    height, width = _check_size(size)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    present = torch.from_numpy(~_missing(xy)).to(device)  # (B, 18)
    kp = torch.from_numpy(xy).to(device=device, dtype=dtype)
    ys = torch.arange(height, device=device, dtype=dtype).view(1, 1, height, 1)
    xs = torch.arange(width, device=device, dtype=dtype).view(1, 1, 1, width)
    d2 = (xs - kp[..., 0, None, None]).square() + (ys - kp[..., 1, None, None]).square()
    maps = torch.exp(d2 / (-2.0 * sigma * sigma)) * present[..., None, None].to(dtype)
    return maps if batched else maps[0]


def _pair(a: str, b: str) -> tuple[int, int]:
    return JOINT[a], JOINT[b]


# The Variational U-Net's stickman: right limbs in channel 0, left limbs in channel 1 (the
# mirrored lines), the torso polygon filled in channel 2, the neck-nose line at half value
# in both limb channels, nose-eye lines on their side.
_RIGHT_LINES = tuple(_pair(a, b) for a, b in (("Rank", "Rkne"), ("Rkne", "Rhip"), ("Rhip", "Rsho"),
                                               ("Rsho", "Relb"), ("Relb", "Rwri"), ("nose", "Reye")))  # fmt: skip
_LEFT_LINES = tuple((MIRROR[a], MIRROR[b]) for a, b in _RIGHT_LINES)
_NECK_LINE = _pair("neck", "nose")
_TORSO_POLYGON = tuple(JOINT[n] for n in ("Lhip", "Lsho", "Rsho", "Rhip"))


def stickman_thickness(width: int) -> int:
    """Line width in pixels for an image `width` wide: 3 px per 128 columns, at least 1."""
    return max(1, round(3 * width / 128))


def _draw_lines(draw: ImageDraw.ImageDraw, xy: np.ndarray, lines, value: float, thickness: int) -> None:
    radius = (thickness - 1) / 2
    for a, b in lines:
        if _missing(xy[[a, b]]).any():
            continue
        ends = [tuple(xy[a]), tuple(xy[b])]
        draw.line(ends, fill=value, width=thickness)
        if thickness > 2:  # round caps, so that limbs meeting at a joint join up
            for x, y in ends:
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=value)


def _stickman_one(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    thickness = stickman_thickness(width)
    channels = []
    for lines in (_RIGHT_LINES, _LEFT_LINES):
        image = Image.new("F", (width, height), 0.0)
        draw = ImageDraw.Draw(image)
        # Half-value neck first, so that full-value limbs drawn after it win where they overlap.
        _draw_lines(draw, xy, (_NECK_LINE,), 0.5, thickness)
        _draw_lines(draw, xy, lines, 1.0, thickness)
        channels.append(np.asarray(image))
    image = Image.new("F", (width, height), 0.0)
    torso = xy[list(_TORSO_POLYGON)]
    if not _missing(torso).any():
        ImageDraw.Draw(image).polygon([tuple(p) for p in torso], fill=1.0)
    channels.append(np.asarray(image))
    return np.stack(channels)


def stickman(keypoints: KeypointsLike, size: tuple[int, int], *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Render the Variational U-Net stickman.

    keypoints: (18, 2) or (B, 18, 2) (x, y) pixels. size: (H, W).
    Returns (3, H, W) or (B, 3, H, W) in [0, 1] of `dtype` on the keypoints' device:
    channel 0 the right limbs (ankle-knee-hip-shoulder-elbow-wrist chain, nose-right eye),
    channel 1 the same on the left, both with the neck-nose line at 0.5; channel 2 the
    filled torso polygon (Lhip, Lsho, Rsho, Rhip). Lines are `stickman_thickness(W)` pixels
    wide with round ends; a line with a missing end, or the torso with a missing corner, is
    not drawn.
    """
    xy, batched, device = _as_keypoint_array(keypoints, "keypoints")
    height, width = _check_size(size)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    images = np.stack([_stickman_one(pose, height, width) for pose in xy])
    out = torch.from_numpy(images).to(device=device, dtype=dtype)
    return out if batched else out[0]



# ----------------------------------------------------------------------------- the original's stickman

# The Variational U-Net's own stickman (CompVis/vunet batches.py `make_joint_img`), drawn by
# its rules rather than `stickman`'s: channel 0 the right lines, channel 1 the left, channel 2
# the filled torso (Lhip, Lsho, Rsho, Rhip), all at 255 on 0; the neck line goes from the
# MIDPOINT of the shoulders (not the neck joint) to the nose at 127 in channels 0 and 1 and is
# drawn AFTER the limbs (so it overwrites them where they cross); the nose-eye lines (255,
# right eye in channel 0, left eye in channel 1) come last and only when the nose and both
# eyes are present. Coordinates are truncated to integers (np.int_) first; a joint with a
# negative coordinate is missing (the original tests `np.min(...) >= 0`).
_VUNET_RIGHT = tuple(_pair(a, b) for a, b in (("Rank", "Rkne"), ("Rkne", "Rhip"), ("Rhip", "Rsho"),
                                               ("Rsho", "Relb"), ("Relb", "Rwri")))  # fmt: skip
_VUNET_LEFT = tuple(_pair(a, b) for a, b in (("Lank", "Lkne"), ("Lkne", "Lhip"), ("Lhip", "Lsho"),
                                              ("Lsho", "Lelb"), ("Lelb", "Lwri")))  # fmt: skip


def vunet_thickness(width: int) -> int:
    """`int(3 * W / 128)` as in make_joint_img, but at least 1 (OpenCV refuses a thickness
    of 0, which the original would hit below 43 pixels)."""
    return max(1, int(3 * width / 128))


def _segment_distance(xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    length2 = float(d @ d)
    t = np.zeros_like(xs) if length2 == 0 else np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / length2, 0, 1)
    return np.hypot(xs - (a[0] + t * d[0]), ys - (a[1] + t * d[1]))


def _line_pixels(canvas: np.ndarray, p: np.ndarray, q: np.ndarray, value: int) -> None:
    """A 1-pixel 8-connected line: one pixel per step along the major axis, the minor
    coordinate rounded (Bresenham's pixels up to ties)."""
    height, width = canvas.shape
    d = q - p
    major = 0 if abs(d[0]) >= abs(d[1]) else 1
    lo, hi = sorted((int(np.floor(p[major] + 0.5)), int(np.floor(q[major] + 0.5))))
    steps = np.arange(lo, hi + 1, dtype=np.float64)
    minor = p[1 - major] + (steps - p[major]) * (d[1 - major] / d[major]) if d[major] != 0 else np.full_like(steps, p[1 - major])
    minor = np.floor(minor + 0.5)
    xs, ys = (steps, minor) if major == 0 else (minor, steps)
    keep = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    canvas[ys[keep].astype(np.int64), xs[keep].astype(np.int64)] = value


def _scanline_fill(canvas: np.ndarray, corners: np.ndarray, value: int) -> None:
    """Fill a convex polygon row by row as OpenCV's FillConvexPoly does: on row y, from the
    rounded left edge to the rounded right edge, inclusive."""
    height, width = canvas.shape
    y0 = max(int(np.floor(corners[:, 1].min() + 0.5)), 0)
    y1 = min(int(np.floor(corners[:, 1].max() + 0.5)), height - 1)
    n = len(corners)
    for y in range(y0, y1 + 1):
        crossings = []
        for k in range(n):
            (xa, ya), (xb, yb) = corners[k], corners[(k + 1) % n]
            if ya == yb:
                if ya == y:
                    crossings += [xa, xb]
                continue
            t = (y - ya) / (yb - ya)
            if 0.0 <= t <= 1.0:
                crossings.append(xa + t * (xb - xa))
        if crossings:
            left, right = int(np.floor(min(crossings) + 0.5)), int(np.floor(max(crossings) + 0.5))
            canvas[y, max(left, 0) : min(right, width - 1) + 1] = value


def _thick_line(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, value: int, thickness: int) -> None:
    """cv2.line(..., thickness) on integer end points, after OpenCV's ThickLine: a width-1
    line is 8-connected; a thicker one is the rectangle of half width thickness / 2 (+ 1/2
    when odd) filled row by row with its edges drawn, plus filled discs of radius
    (thickness + 1) // 2 (x^2 + y^2 <= r^2) at both ends. OpenCV's fixed-point edge walking
    differs on a few boundary pixels (measured in tests/pose/test_vunet_inputs.py)."""
    if thickness <= 1:
        _line_pixels(canvas, a, b, value)
        return
    ys, xs = np.mgrid[0 : canvas.shape[0], 0 : canvas.shape[1]]
    radius = (thickness + 1) // 2
    for centre in (a, b):
        canvas[(xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius * radius] = value
    d = b - a
    length = float(np.hypot(d[0], d[1]))
    if length == 0:
        return
    half = thickness / 2 + (thickness & 1) * 0.5
    offset = np.array([d[1], -d[0]]) * (half / length)
    corners = np.array([a + offset, a - offset, b - offset, b + offset])
    _scanline_fill(canvas, corners, value)
    for k in range(4):
        _line_pixels(canvas, corners[k], corners[(k + 1) % 4], value)


def _fill_polygon(canvas: np.ndarray, corners: np.ndarray, value: int) -> None:
    """cv2.fillPoly: the pixels inside the polygon (even-odd rule) and on its edges."""
    ys, xs = np.mgrid[0 : canvas.shape[0], 0 : canvas.shape[1]].astype(np.float64)
    inside = np.zeros(canvas.shape, dtype=bool)
    n = len(corners)
    for k in range(n):
        (x0, y0), (x1, y1) = corners[k], corners[(k + 1) % n]
        crosses = (y0 > ys) != (y1 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < x_cross)
        inside |= _segment_distance(xs, ys, np.array([x0, y0]), np.array([x1, y1])) <= 0.5
    canvas[inside] = value


def _vunet_stickman_one(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    thickness = vunet_thickness(width)
    present = np.isfinite(xy).all(axis=1) & (xy >= 0).all(axis=1)
    ixy = np.where(np.isfinite(xy), xy, -1).astype(np.int64)  # np.int_ truncates toward zero
    channels = np.zeros((3, height, width), dtype=np.uint8)
    torso = [JOINT[n] for n in ("Lhip", "Lsho", "Rsho", "Rhip")]
    if present[torso].all():
        _fill_polygon(channels[2], ixy[torso].astype(np.float64), 255)
    for channel, lines in ((0, _VUNET_RIGHT), (1, _VUNET_LEFT)):
        for a, b in lines:
            if present[a] and present[b]:
                _thick_line(channels[channel], ixy[a].astype(np.float64), ixy[b].astype(np.float64), 255, thickness)
    # The neck: the shoulders' midpoint to the nose, tested after truncation as the original did.
    neck = np.trunc(0.5 * (xy[JOINT["Rsho"]] + xy[JOINT["Lsho"]]))
    nose = ixy[JOINT["nose"]].astype(np.float64)
    # Both shoulders must be present: with -1 for a missing joint the midpoint of one present
    # shoulder and a missing one is still >= 0 (the original's missing joints were far negative).
    shoulders = present[JOINT["Rsho"]] and present[JOINT["Lsho"]]
    if shoulders and np.isfinite(neck).all() and neck.min() >= 0 and nose.min() >= 0:
        for channel in (0, 1):
            _thick_line(channels[channel], neck, nose, 127, thickness)
    if present[JOINT["nose"]] and present[JOINT["Reye"]] and present[JOINT["Leye"]]:
        _thick_line(channels[0], nose, ixy[JOINT["Reye"]].astype(np.float64), 255, thickness)
        _thick_line(channels[1], nose, ixy[JOINT["Leye"]].astype(np.float64), 255, thickness)
    return channels


def vunet_stickman(keypoints: KeypointsLike, size: tuple[int, int], *, dtype: torch.dtype = torch.float32) -> Tensor:
    """The Variational U-Net's 3-channel stickman, as its input: 8-bit values v in
    {0, 127, 255} mapped to v / 127.5 - 1 (batches.py `preprocess`), so the background is -1.

    keypoints: (18, 2) or (B, 18, 2) (x, y) pixels, COCO-18 order (a joint with a negative
    or non-finite coordinate is missing). size: (H, W); the line width is
    `vunet_thickness(W)`. Returns (3, H, W) or (B, 3, H, W) of `dtype` on the keypoints'
    device. Lines are drawn as OpenCV draws a thick line (a capsule around the integer
    end points); OpenCV's own rasterisation differs on a few edge pixels
    (tests/pose/test_vunet_inputs.py measures it when OpenCV is installed).
    """
    if isinstance(keypoints, torch.Tensor):
        device = keypoints.device
        xy = keypoints.detach().cpu().double().numpy()
    else:
        device = torch.device("cpu")
        xy = np.array(keypoints.xy if hasattr(keypoints, "xy") else keypoints, dtype=np.float64)
    if xy.ndim not in (2, 3) or xy.shape[-2:] != (18, 2):
        raise ValueError(f"keypoints must have shape (18, 2) or (B, 18, 2), got {tuple(xy.shape)}")
    height, width = _check_size(size)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    batched = xy.ndim == 3
    images = np.stack([_vunet_stickman_one(pose, height, width) for pose in (xy if batched else xy[None])])
    out = torch.from_numpy(images.astype(np.float64) / 127.5 - 1.0).to(device=device, dtype=dtype)
    return out if batched else out[0]
