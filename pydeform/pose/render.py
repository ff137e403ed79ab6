"""Pose images a generator is conditioned on: Gaussian joint heatmaps (Deformable GAN) and
the three-channel stickman (Variational U-Net)."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from pydeform.pose.keypoints import JOINT, MIRROR, KeypointsLike, _as_keypoint_array, _check_size, _missing

__all__ = ["heatmaps", "stickman", "stickman_thickness"]


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

