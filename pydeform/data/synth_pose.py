"""Synthetic pose-pair dataset in the Market-1501 format of the Deformable GAN authors.

Lets a user train the Deformable GAN with no real dataset (DESIGN.md sections 5 and 6).
Each identity is an articulated figure made of the 10 Deformable GAN body parts (torso,
head, upper/lower arms, upper/lower legs) with its own clothes: a shirt pattern on the torso
and sleeves, a trousers pattern on the legs, a skin-coloured head with hair. Every texture is
defined in its part's local frame and sampled through the part's affine transform, so it
moves with the limb. Poses come from a joint-angle prior for a person facing the camera
(the person's right side is on the image left).

Layout written by :func:`write_pose_pairs` (``name`` defaults to ``"market"``)::

    <name>-annotation-{train,test}.csv   name:keypoints_y:keypoints_x  (18 ints each, -1 missing)
    <name>-pairs-{train,test}.csv        from,to
    <name>-dataset/{train,test}/*.png    H x W images, e.g. 0001_c3s1_000002_00.png

Coordinates: a pixel (row r, column c) has its centre at x = c, y = r. Keypoint arrays are
(18, 2) in (y, x) order like the original code; keypoints use the COCO-18 OpenPose order of
:data:`KEYPOINT_NAMES`.
"""
from __future__ import annotations

import colorsys
import itertools
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from pydeform.data._images import size_at_least

__all__ = [
    "KEYPOINT_NAMES",
    "PART_NAMES",
    "Pattern",
    "Identity",
    "Pose",
    "PosePairsDataset",
    "parse_size",
    "sample_identity",
    "sample_pose",
    "sample_background",
    "pose_joints",
    "pose_keypoints",
    "render_person",
    "write_pose_pairs",
]

KEYPOINT_NAMES = (
    "nose", "neck", "Rsho", "Relb", "Rwri", "Lsho", "Lelb", "Lwri", "Rhip",
    "Rkne", "Rank", "Lhip", "Lkne", "Lank", "Leye", "Reye", "Lear", "Rear",
)
# Label values of the part map returned by render_person (-1 = background); same order
# as the Deformable GAN's 10 parts.
PART_NAMES = (
    "torso", "head", "Rhip-Rkne", "Lhip-Lkne", "Rkne-Rank", "Lkne-Lank",
    "Rsho-Relb", "Lsho-Lelb", "Relb-Rwri", "Lelb-Lwri",
)

# Body proportions in torso lengths (neck to mid-hip); Pose.scale turns them into pixels.
_SHOULDER = 0.40  # half shoulder width
_HIP = 0.20  # half hip width
_UPPER_ARM, _FOREARM, _HAND = 0.62, 0.55, 0.16
_THIGH, _SHIN, _FOOT = 0.80, 0.78, 0.08
_NECK_TO_HEAD = 0.26  # neck joint to head centre
_HEAD_A, _HEAD_B = 0.17, 0.21  # head ellipse half width / half height
_R_UPPER_ARM, _R_FOREARM, _R_THIGH, _R_SHIN, _R_NECK = 0.10, 0.085, 0.15, 0.115, 0.075
_ABOVE_PELVIS = 1.0 + _NECK_TO_HEAD + _HEAD_B  # head top above the mid-hip
_BELOW_PELVIS = _THIGH + _SHIN + _FOOT + _R_SHIN  # soles below the mid-hip
_FIGURE_HEIGHT = _ABOVE_PELVIS + _BELOW_PELVIS

_MIN_SIZE = (32, 16)
_MAX_SIZE = (4096, 4096)  # write_pose_pairs: larger images would run out of memory mid-way
_EYE_DARK = np.array([0.08, 0.06, 0.06], np.float32)


# ----------------------------------------------------------------------------- dataclasses


def _soft_square(x: np.ndarray) -> np.ndarray:
    """Square wave of period 1 in [0, 1] with short linear ramps (cheap anti-aliasing)."""
    return np.clip(0.5 + 1.5 * np.sin(2.0 * np.pi * x), 0.0, 1.0)


@dataclass(frozen=True)
class Pattern:
    """A two-colour texture in a part's local frame (units: torso lengths).

    kind: "solid", "stripes", "checks" or "block". The pattern varies along the direction
    ``angle`` (radians) of the local (u, v) frame, u along the part (down the torso, from
    the joint towards the next one), v across it; angle 0 gives bands across a limb.
    ``period`` is the stripe/check period; for "block", ``phase`` is where colour 1 gives
    way to colour 2 along that direction, otherwise it shifts the stripes (in periods).
    """

    kind: str
    color1: tuple[float, float, float]
    color2: tuple[float, float, float]
    angle: float = 0.0
    period: float = 0.2
    phase: float = 0.0

    def __post_init__(self):
        if self.kind not in ("solid", "stripes", "checks", "block"):
            raise ValueError(f"kind must be solid/stripes/checks/block, got {self.kind!r}")
        if not self.period > 0:
            raise ValueError(f"period must be > 0, got {self.period!r}")

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Colours (..., 3) float32 in [0, 1] at local coordinates u, v (same shape)."""
        c1 = np.asarray(self.color1, np.float32)
        c2 = np.asarray(self.color2, np.float32)
        if self.kind == "solid":
            return np.broadcast_to(c1, u.shape + (3,))
        w = u * math.cos(self.angle) + v * math.sin(self.angle)
        if self.kind == "block":
            m = np.clip(0.5 + (w - self.phase) * 30.0, 0.0, 1.0)  # soft edge, ~1 px
        else:
            m = _soft_square(w / self.period + self.phase)
            if self.kind == "checks":
                w2 = -u * math.sin(self.angle) + v * math.cos(self.angle)
                m2 = _soft_square(w2 / self.period)
                m = m + m2 - 2.0 * m * m2  # soft XOR
        return (c1 + m[..., None].astype(np.float32) * (c2 - c1)).astype(np.float32)


@dataclass(frozen=True)
class Identity:
    """Appearance of one person: colours, clothes and build (factors around 1)."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hairline: float  # head-frame height (units of head half-height, -1 = top) where hair ends
    long_hair: bool
    shirt: Pattern
    trousers: Pattern
    shoes: tuple[float, float, float]
    long_sleeves: bool
    shorts: bool
    waist: float  # fraction of the torso length where the shirt meets the trousers
    shoulders: float = 1.0
    hips: float = 1.0
    girth: float = 1.0
    head: float = 1.0


@dataclass(frozen=True)
class Pose:
    """Joint angles (radians) and placement of a figure facing the camera.

    Angles are measured from straight down, positive towards the image right for
    ``lean``/``head_tilt``; per-side angles are (right, left) pairs, positive = away from
    the body's midline. ``foreshorten`` scales the drawn length of (R upper arm, R forearm,
    L upper arm, L forearm, R thigh, R shin, L thigh, L shin) to fake out-of-plane motion.
    """

    x: float  # mid-hip column, pixels
    y: float  # mid-hip row, pixels
    scale: float  # pixels per torso length
    lean: float = 0.0  # angle of the neck -> mid-hip direction
    turn: float = 1.0  # body width factor (1 = square to the camera)
    head_tilt: float = 0.0
    head_yaw: float = 0.0  # -1..1, + = face turned towards the image right
    shoulder: tuple[float, float] = (0.15, 0.15)
    elbow: tuple[float, float] = (0.0, 0.0)
    hip: tuple[float, float] = (0.08, 0.08)
    knee: tuple[float, float] = (0.0, 0.0)
    foreshorten: tuple[float, ...] = (1.0,) * 8


@dataclass(frozen=True)
class PosePairsDataset:
    """What :func:`write_pose_pairs` wrote; counts are per split ("train", "test")."""

    root: Path
    name: str
    num_identities: dict[str, int]
    num_images: dict[str, int]
    num_pairs: dict[str, int]

    def annotation_file(self, split: str) -> Path:
        return self.root / f"{self.name}-annotation-{split}.csv"

    def pairs_file(self, split: str) -> Path:
        return self.root / f"{self.name}-pairs-{split}.csv"

    def image_dir(self, split: str) -> Path:
        return self.root / f"{self.name}-dataset" / split


# ----------------------------------------------------------------------------- validation


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"128x64"``) into ``(H, W)``; for the CLI's ``--size``."""
    return size_at_least(text, _MIN_SIZE)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- sampling


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return (round(r, 4), round(g, 4), round(b, 4))


def _pick(rng: np.random.Generator, colours, jitter: float):
    c = np.asarray(colours[rng.integers(len(colours))]) + rng.uniform(-jitter, jitter, 3)
    return tuple(round(float(x), 4) for x in np.clip(c, 0.0, 1.0))


_SKINS = ((0.96, 0.80, 0.69), (0.90, 0.68, 0.54), (0.78, 0.57, 0.44), (0.56, 0.38, 0.26), (0.36, 0.24, 0.16))
_HAIRS = ((0.07, 0.05, 0.04), (0.24, 0.15, 0.08), (0.45, 0.30, 0.15), (0.80, 0.67, 0.42), (0.62, 0.62, 0.62))


def _sample_pattern(rng: np.random.Generator, dark: bool) -> Pattern:
    val = (0.08, 0.6) if dark else (0.25, 0.98)
    c1, c2 = _hsv(rng, (0.1, 0.9), val), _hsv(rng, (0.0, 0.9), (0.1, 0.98))
    if dark:  # trousers: mostly plain, some pinstripes/checks/two-tone
        kind = ("solid", "stripes", "checks", "block")[rng.choice(4, p=[0.6, 0.15, 0.1, 0.15])]
        angle = math.pi / 2 if kind == "stripes" else float(rng.choice([0.0, math.pi / 2]))
    else:
        kind = ("solid", "stripes", "checks", "block")[rng.choice(4, p=[0.25, 0.35, 0.2, 0.2])]
        angle = float(rng.choice([0.0, 0.0, math.pi / 2, rng.uniform(0.3, 1.2)]))
    period = rng.uniform(0.1, 0.28) if kind != "checks" else rng.uniform(0.12, 0.3)
    phase = rng.uniform(0.3, 0.6) if kind == "block" else rng.random()
    if kind == "block" and angle > 0:  # split across the part: left/right halves
        phase = rng.uniform(-0.1, 0.1)
    return Pattern(kind, c1, c2, angle, float(period), float(phase))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a random person: skin/hair colour, shirt and trousers patterns, build."""
    rng = _check_rng(rng)
    return Identity(
        skin=_pick(rng, _SKINS, 0.03),
        hair=_pick(rng, _HAIRS, 0.04),
        hairline=float(rng.uniform(-0.6, -0.2)),
        long_hair=bool(rng.random() < 0.3),
        shirt=_sample_pattern(rng, dark=False),
        trousers=_sample_pattern(rng, dark=True),
        shoes=_pick(rng, ((0.1, 0.1, 0.1), (0.9, 0.9, 0.88), (0.35, 0.22, 0.12)), 0.05),
        long_sleeves=bool(rng.random() < 0.5),
        shorts=bool(rng.random() < 0.2),
        waist=float(rng.uniform(0.78, 0.9)),
        shoulders=float(rng.uniform(0.9, 1.1)),
        hips=float(rng.uniform(0.9, 1.15)),
        girth=float(rng.uniform(0.85, 1.2)),
        head=float(rng.uniform(0.92, 1.08)),
    )


def sample_pose(rng: np.random.Generator, size: tuple[int, int] = (128, 64)) -> Pose:
    """Draw a pose from a standing/walking joint-angle prior, placed in an H x W image.

    About 15% of poses are zoomed or shifted so the figure is partly out of frame.
    """
    rng = _check_rng(rng)
    h, w = size_at_least(size, _MIN_SIZE)
    height = rng.uniform(0.8, 0.93) * h
    scale = height / _FIGURE_HEIGHT
    x = w / 2 + rng.normal(0.0, 0.05 * w)
    y = (h - height) * rng.uniform(0.25, 0.75) + _ABOVE_PELVIS * scale
    crop = rng.random() < 0.15
    if crop:  # one way of leaving the frame: zoom in (feet cut), or shift sideways/vertically
        mode = rng.integers(3)
        if mode == 0:
            scale *= rng.uniform(1.15, 1.5)
            y = rng.uniform(0.02, 0.08) * h + _ABOVE_PELVIS * scale
        elif mode == 1:
            x += rng.choice([-1, 1]) * rng.uniform(0.3, 0.55) * w
        else:
            y += rng.choice([-1, 1]) * rng.uniform(0.15, 0.3) * h

    def side_pair(fn):
        return (float(fn()), float(fn()))

    def shoulder():  # mostly hanging arms, sometimes raised
        return rng.uniform(0.9, 2.6) if rng.random() < 0.1 else rng.uniform(0.03, 0.45)

    def elbow():  # negative bends the forearm across the body
        return rng.uniform(-1.7, 0.6) if rng.random() < 0.4 else rng.normal(-0.1, 0.2)

    def shorten(p):
        return rng.uniform(0.75, 1.0) if rng.random() < p else 1.0

    return Pose(
        x=float(x),
        y=float(y),
        scale=float(scale),
        lean=float(np.clip(rng.normal(0.0, 0.06), -0.15, 0.15)),
        turn=float(rng.uniform(0.55, 1.0)),
        head_tilt=float(np.clip(rng.normal(0.0, 0.1), -0.3, 0.3)),
        head_yaw=float(np.clip(rng.normal(0.0, 0.25), -0.6, 0.6)),
        shoulder=side_pair(shoulder),
        elbow=side_pair(elbow),
        hip=side_pair(lambda: rng.uniform(0.0, 0.25)),
        knee=side_pair(lambda: np.clip(rng.normal(-0.05, 0.12), -0.4, 0.4)),
        foreshorten=tuple(float(shorten(0.5 if i < 4 else 0.3)) for i in range(8)),
    )


def sample_background(rng: np.random.Generator, size: tuple[int, int] = (128, 64)) -> np.ndarray:
    """A plain or mildly textured background, (H, W, 3) uint8.

    Muted base colour with a vertical gradient, optionally a floor/wall split, optionally
    low-frequency blotches and fine grain.
    """
    rng = _check_rng(rng)
    h, w = size_at_least(size, _MIN_SIZE)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn = yy / h
    base = np.asarray(_hsv(rng, (0.0, 0.3), (0.35, 0.9)), np.float32)
    img = base * (1.0 + rng.uniform(-0.2, 0.2) * (yn - 0.5))[..., None]
    if rng.random() < 0.4:  # floor below a horizon line
        floor = np.asarray(_hsv(rng, (0.0, 0.25), (0.3, 0.85)), np.float32)
        img = np.where((yn > rng.uniform(0.55, 0.85))[..., None], floor, img)
    if rng.random() < 0.5:  # low-frequency blotches: a few random plane waves
        tex = np.zeros((h, w), np.float32)
        for _ in range(3):
            fx, fy = rng.uniform(-4, 4, 2) * 2 * np.pi
            tex += np.sin(fx * xx / w + fy * yn + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        img = img + (rng.uniform(0.01, 0.04) * tex)[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    if rng.random() < 0.5:  # fine grain
        img = img + rng.normal(0.0, rng.uniform(0.005, 0.02), (h, w, 1)).astype(np.float32)
    return _to_uint8(img)


# ----------------------------------------------------------------------------- geometry


def _down(a: float) -> np.ndarray:
    """Unit (x, y) vector at angle a from straight down, + towards the image right."""
    return np.array([math.sin(a), math.cos(a)])


def _right_of(down: np.ndarray) -> np.ndarray:
    return np.array([down[1], -down[0]])


def _skeleton(identity: Identity, pose: Pose) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Float joints (18, 2) in (x, y) and the frames the renderer needs."""
    s = pose.scale
    down = _down(pose.lean)
    right = _right_of(down)
    j = np.zeros((18, 2))
    pelvis = np.array([pose.x, pose.y], float)
    j[1] = pelvis - s * down
    sho = _SHOULDER * identity.shoulders * pose.turn * s
    hip = _HIP * identity.hips * pose.turn * s
    j[2], j[5] = j[1] - sho * right, j[1] + sho * right
    j[8], j[11] = pelvis - hip * right, pelvis + hip * right
    f = pose.foreshorten
    for side, sign, (a0, a1, a2), (l0, l1) in (
        (0, -1, (2, 3, 4), (0, 1)), (1, 1, (5, 6, 7), (2, 3)),
    ):
        arm = pose.lean + sign * pose.shoulder[side]
        j[a1] = j[a0] + _UPPER_ARM * f[l0] * s * _down(arm)
        j[a2] = j[a1] + _FOREARM * f[l1] * s * _down(arm + sign * pose.elbow[side])
    for side, sign, (a0, a1, a2), (l0, l1) in (
        (0, -1, (8, 9, 10), (4, 5)), (1, 1, (11, 12, 13), (6, 7)),
    ):
        leg = sign * pose.hip[side]  # legs hang from the hips regardless of lean
        j[a1] = j[a0] + _THIGH * f[l0] * s * _down(leg)
        j[a2] = j[a1] + _SHIN * f[l1] * s * _down(leg + sign * pose.knee[side])
    # Head frame: hd points from the head's top to its chin, hr to the image right.
    hd = _down(pose.lean + pose.head_tilt)
    hr = _right_of(hd)
    hs = identity.head * s
    centre = j[1] - _NECK_TO_HEAD * hs * hd
    yaw = pose.head_yaw

    def face(u: float, v: float) -> np.ndarray:
        return centre + hs * (u * hr + v * hd)

    j[0] = face(0.12 * yaw, 0.05)
    j[15], j[14] = face(-0.075 + 0.1 * yaw, -0.025), face(0.075 + 0.1 * yaw, -0.025)
    j[17], j[16] = face(-0.11 + 0.05 * yaw, 0.0), face(0.11 + 0.05 * yaw, 0.0)
    return j, {"down": down, "right": right, "pelvis": pelvis, "hd": hd, "hr": hr, "centre": centre}


def pose_joints(identity: Identity, pose: Pose) -> np.ndarray:
    """Exact joint positions, (18, 2) float64 in (y, x) pixel coordinates, none missing."""
    return _skeleton(identity, pose)[0][:, ::-1].copy()


def pose_keypoints(identity: Identity, pose: Pose, size: tuple[int, int] = (128, 64)) -> np.ndarray:
    """Integer keypoints (18, 2) int64 in (y, x) = (row, column); -1 marks a missing joint.

    A joint is missing when its nearest pixel is outside the image, or for the ear on the
    far side of a head turned by more than 0.3 (|head_yaw|).
    """
    h, w = size_at_least(size, _MIN_SIZE)
    kp = np.floor(pose_joints(identity, pose) + 0.5).astype(np.int64)
    out = (kp[:, 0] < 0) | (kp[:, 0] >= h) | (kp[:, 1] < 0) | (kp[:, 1] >= w)
    kp[out] = -1
    if pose.head_yaw > 0.3:  # face turned to the image right hides the left ear
        kp[16] = -1
    elif pose.head_yaw < -0.3:
        kp[17] = -1
    return kp


# ----------------------------------------------------------------------------- rendering


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class _Canvas:
    """Float RGB image plus a part-label map; parts are painted back to front."""

    def __init__(self, background: np.ndarray):
        self.img = background.astype(np.float32) / 255.0
        self.labels = np.full(background.shape[:2], -1, np.int8)

    def grid(self, lo: np.ndarray, hi: np.ndarray):
        """Pixel-centre coordinates X, Y of the clipped box [lo, hi] (x, y), or None."""
        h, w = self.labels.shape
        x0, y0 = max(int(math.floor(lo[0])), 0), max(int(math.floor(lo[1])), 0)
        x1, y1 = min(int(math.ceil(hi[0])) + 1, w), min(int(math.ceil(hi[1])) + 1, h)
        if x0 >= x1 or y0 >= y1:
            return None
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        return (slice(y0, y1), slice(x0, x1)), xx, yy

    def paint(self, box, sdf: np.ndarray, rgb: np.ndarray, label: int) -> None:
        # Coverage from the signed distance (pixels) gives ~1 px anti-aliased edges.
        alpha = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]
        region = self.img[box]
        region += alpha * (rgb - region)
        self.labels[box][alpha[..., 0] >= 0.5] = label


def _capsule(canvas: _Canvas, label: int, p0, p1, radius: float, scale: float, length: float,
             extend: float, colour: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Paint a limb: a capsule from p0 past p1 by ``extend`` (fraction of p0->p1).

    The texture sees t (0 at p0, 1 at p1), u = t * length (torso lengths, so a shortened
    limb squeezes its texture: the map stays affine) and v (torso lengths across).
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    n2 = float(d @ d)
    if n2 < 1e-9:
        return
    pe = p0 + (1.0 + extend) * d
    g = canvas.grid(np.minimum(p0, pe) - radius - 1, np.maximum(p0, pe) + radius + 1)
    if g is None:
        return
    box, xx, yy = g
    dx, dy = xx - p0[0], yy - p0[1]
    t = (dx * d[0] + dy * d[1]) / n2
    v = (dy * d[0] - dx * d[1]) / math.sqrt(n2)  # pixels across, + to the left of p0->p1
    h = np.clip(t / (1.0 + extend), 0.0, 1.0)
    dist = np.hypot(dx - h * (pe[0] - p0[0]), dy - h * (pe[1] - p0[1]))
    rgb = colour(t, t * length, v / scale)
    shade = 1.0 - 0.3 * np.clip(v / radius, -1.0, 1.0) ** 2  # rounded-limb shading
    canvas.paint(box, dist - radius, rgb * shade[..., None], label)


def _pick_colour(mask: np.ndarray, a: np.ndarray, b) -> np.ndarray:
    """a where mask else b (b may be a colour triple)."""
    return np.where(mask[..., None], a, np.asarray(b, np.float32)).astype(np.float32)


def render_person(identity: Identity, pose: Pose, size: tuple[int, int] = (128, 64),
                  background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render one figure.

    Returns ``(image, labels)``: image (H, W, 3) uint8; labels (H, W) int8 holding the
    index into :data:`PART_NAMES` of the part covering each pixel (coverage >= 1/2), -1
    for background. ``background`` is (H, W, 3) uint8 (default: mid grey).
    """
    h, w = size_at_least(size, _MIN_SIZE)
    if not isinstance(identity, Identity):
        raise ValueError(f"identity must be an Identity, got {type(identity).__name__}")
    if not isinstance(pose, Pose):
        raise ValueError(f"pose must be a Pose, got {type(pose).__name__}")
    if not (pose.scale > 0):
        raise ValueError(f"pose.scale must be > 0, got {pose.scale}")
    if background is None:
        background = np.full((h, w, 3), 128, np.uint8)
    background = np.asarray(background)
    if background.shape != (h, w, 3) or background.dtype != np.uint8:
        raise ValueError(f"background must be uint8 of shape {(h, w, 3)}, got "
                         f"{background.dtype} {background.shape}")
    ident = identity
    j, fr = _skeleton(ident, pose)
    s, g = pose.scale, ident.girth
    cv = _Canvas(background)
    skin = np.asarray(ident.skin, np.float32)
    f = pose.foreshorten

    # Legs first (the torso's trousers overlap the hips), each thigh over its shin.
    def shin(t, u, v):
        rgb = ident.trousers(u, v) if not ident.shorts else np.broadcast_to(skin, t.shape + (3,))
        return _pick_colour(t > 0.97, np.broadcast_to(np.asarray(ident.shoes, np.float32), rgb.shape), rgb)

    def thigh(t, u, v):
        rgb = ident.trousers(u, v)
        return _pick_colour(ident.shorts & (t > 0.55), np.broadcast_to(skin, rgb.shape), rgb)

    # (shin label, thigh label, hip/knee/ankle joints, index of the shin in pose.foreshorten)
    for lab_shin, lab_thigh, (a0, a1, a2), fs in ((4, 2, (8, 9, 10), 5), (5, 3, (11, 12, 13), 7)):
        _capsule(cv, lab_shin, j[a1], j[a2], _R_SHIN * g * s, s, _SHIN, _FOOT / (_SHIN * f[fs]), shin)
        _capsule(cv, lab_thigh, j[a0], j[a1], _R_THIGH * g * s, s, _THIGH, 0.0, thigh)

    # Torso: convex quad from the shoulders to just below the hips, textured in the frame
    # (u down from the neck, v across in body-width units) so it follows lean and turn.
    down, right = fr["down"], fr["right"]
    half_top = _SHOULDER * ident.shoulders * pose.turn * s
    half_bot = (_HIP * ident.hips + 0.9 * _R_THIGH * g) * pose.turn * s
    bottom = fr["pelvis"] + 0.08 * s * down
    quad = np.array([j[1] - half_top * right, j[1] + half_top * right,
                     bottom + half_bot * right, bottom - half_bot * right])
    grid = cv.grid(quad.min(0) - 1, quad.max(0) + 1)
    if grid is not None:
        box, xx, yy = grid
        sdf = np.full(xx.shape, -np.inf, np.float32)
        centroid = quad.mean(0)
        for a, b in zip(quad, np.roll(quad, -1, axis=0)):
            nrm = np.array([b[1] - a[1], a[0] - b[0]]) / np.hypot(*(b - a))
            if nrm @ (centroid - a) > 0:
                nrm = -nrm  # outward normal
            sdf = np.maximum(sdf, (xx - a[0]) * nrm[0] + (yy - a[1]) * nrm[1])
        u = ((xx - j[1][0]) * down[0] + (yy - j[1][1]) * down[1]) / s
        v = ((xx - j[1][0]) * right[0] + (yy - j[1][1]) * right[1]) / (s * pose.turn)
        rgb = _pick_colour(u < ident.waist, ident.shirt(u, v), ident.trousers(u, v))
        shade = 1.0 - 0.2 * np.clip(v / (_SHOULDER * ident.shoulders), -1, 1) ** 2
        cv.paint(box, sdf, rgb * shade[..., None], 0)

    # Neck and head (label 1). Head texture in the head frame, normalised by its half axes.
    hd, hr, centre = fr["hd"], fr["hr"], fr["centre"]
    hs = ident.head * s
    _capsule(cv, 1, j[1] + 0.1 * s * down, centre, _R_NECK * g * s, s, 1.0, 0.0,
             lambda t, u, v: np.broadcast_to(skin, t.shape + (3,)))
    a, b = _HEAD_A * hs, _HEAD_B * hs
    grid = cv.grid(centre - b - 1, centre + b + 1)
    if grid is not None:
        box, xx, yy = grid
        dx, dy = xx - centre[0], yy - centre[1]
        un = (dx * hr[0] + dy * hr[1]) / a
        vn = (dx * hd[0] + dy * hd[1]) / b
        rn = np.sqrt(un * un + vn * vn)
        hair = vn < ident.hairline + 0.5 * un * un
        if ident.long_hair:
            hair |= (np.abs(un) > 0.72) & (vn < 0.8)
        rgb = _pick_colour(hair, np.broadcast_to(np.asarray(ident.hair, np.float32), un.shape + (3,)),
                           skin)
        for eye in (j[14], j[15]):  # dark dots where the eye keypoints are
            near = np.hypot(xx - eye[0], yy - eye[1]) < max(0.03 * hs, 0.6)
            rgb = _pick_colour(near & ~hair, np.broadcast_to(_EYE_DARK, rgb.shape), rgb)
        shade = 1.0 - 0.2 * np.clip(rn, 0, 1) ** 2
        cv.paint(box, (rn - 1.0) * min(a, b), rgb * shade[..., None], 1)

    # Arms last: they may cross the torso. Sleeves use the shirt pattern in each arm's frame.
    def upper_arm(t, u, v):
        rgb = ident.shirt(u, v)
        return rgb if ident.long_sleeves else _pick_colour(t < 0.55, rgb, skin)

    def forearm(t, u, v):
        if not ident.long_sleeves:
            return np.broadcast_to(skin, t.shape + (3,))
        return _pick_colour(t < 0.92, ident.shirt(u, v), skin)

    for lab_up, lab_fore, (a0, a1, a2), fs in ((6, 8, (2, 3, 4), 1), (7, 9, (5, 6, 7), 3)):
        _capsule(cv, lab_up, j[a0], j[a1], _R_UPPER_ARM * g * s, s, _UPPER_ARM, 0.0, upper_arm)
        _capsule(cv, lab_fore, j[a1], j[a2], _R_FOREARM * g * s, s, _FOREARM,
                 _HAND / (_FOREARM * f[fs]), forearm)
    return _to_uint8(cv.img), cv.labels


# ----------------------------------------------------------------------------- writer


_FACE = np.array([14, 15, 16, 17])
_LIMB_ENDS = np.array([3, 4, 6, 7, 9, 10, 12, 13])


def _annotation_dropout(rng: np.random.Generator, kp: np.ndarray) -> np.ndarray:
    """Mimic a pose detector: sometimes misses eyes/ears, rarely an elbow/wrist/knee/ankle."""
    kp = kp.copy()
    kp[_FACE[rng.random(4) < np.array([0.08, 0.08, 0.2, 0.2])]] = -1
    kp[_LIMB_ENDS[rng.random(8) < 0.02]] = -1
    return kp


def write_pose_pairs(
    out_dir: str | Path,
    size: tuple[int, int] = (128, 64),
    identities: int = 100,
    seed: int = 0,
    *,
    name: str = "market",
    images_per_identity: int = 6,
    max_pairs_per_identity: int = 30,
    test_fraction: float = 0.2,
    shared_background: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> PosePairsDataset:
    """Write a synthetic pose-pair dataset in the Deformable GAN's Market-1501 layout.

    Args:
        out_dir: folder to write into, created if missing. A folder that is not empty is
            refused (FileExistsError) unless ``overwrite``: then the files of a dataset of
            this ``name`` there (``<name>-dataset/``, ``<name>-annotation-*.csv``,
            ``<name>-pairs-*.csv``) are deleted first, so no stale image stays behind;
            other files are left alone.
        size: (H, W) of every image, at least 32x16 and at most 4096x4096; ``"HxW"``
            strings are accepted too.
        identities: number of people (>= 2); the last ``round(identities * test_fraction)``
            (at least 1, at most identities - 1) form the test split, so no identity is in
            both splits.
        seed: non-negative int; the same arguments give byte-identical files. Person ``i``
            depends only on (seed, i).
        name: file-name prefix.
        images_per_identity: images of each person (>= 2), each with its own pose and
            background.
        max_pairs_per_identity: cap on the ordered (from, to) pairs of distinct images of
            a person; above it a seeded random subset is kept.
        test_fraction: share of identities in the test split, in (0, 1).
        shared_background: every image of a person has the same background (one studio
            backdrop per person, as in DeepFashion) instead of one background per image.
        progress: show a tqdm progress bar over identities.
        overwrite: replace a dataset in a non-empty ``out_dir`` (see there).

    Every argument is checked before anything is created on disk.

    Returns:
        A :class:`PosePairsDataset` with the paths and per-split counts.
    """
    h, w = size_at_least(size, _MIN_SIZE)
    identities = _check_int("identities", identities, 2)
    seed = _check_int("seed", seed, 0)
    images_per_identity = _check_int("images_per_identity", images_per_identity, 2)
    max_pairs_per_identity = _check_int("max_pairs_per_identity", max_pairs_per_identity, 1)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"name must be a non-empty file-name prefix ([A-Za-z0-9_.-]), got {name!r}")
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if h > _MAX_SIZE[0] or w > _MAX_SIZE[1]:
        raise ValueError(f"size must be at most {_MAX_SIZE[0]}x{_MAX_SIZE[1]}, got {h}x{w}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"out_dir: {out} is not empty; pass overwrite=True (`--overwrite`) to replace "
                                  f"the {name!r} dataset there, or choose an empty folder")
        if (out / f"{name}-dataset").exists():
            shutil.rmtree(out / f"{name}-dataset")
        for stale in list(out.glob(f"{name}-annotation-*.csv")) + list(out.glob(f"{name}-pairs-*.csv")):
            stale.unlink()

    ds = PosePairsDataset(out, name, {}, {}, {})
    n_test = min(identities - 1, max(1, round(identities * test_fraction)))
    splits = ("train", "test")
    for split in splits:
        ds.image_dir(split).mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {sp: [] for sp in splits}
    pairs: dict[str, list[tuple[str, str]]] = {sp: [] for sp in splits}

    for pid in tqdm(range(1, identities + 1), desc="synth pose-pairs", unit="id",
                    disable=not progress):
        split = "test" if pid > identities - n_test else "train"
        rng = np.random.default_rng([seed, pid])
        ident = sample_identity(rng)
        names = []
        backdrop = sample_background(rng, (h, w)) if shared_background else None
        for k in range(images_per_identity):
            pose = sample_pose(rng, (h, w))
            background = backdrop if shared_background else sample_background(rng, (h, w))
            image, _ = render_person(ident, pose, (h, w), background)
            kp = _annotation_dropout(rng, pose_keypoints(ident, pose, (h, w)))
            fname = f"{pid:04d}_c{int(rng.integers(1, 7))}s1_{k + 1:06d}_00.png"
            # compress_level 1: several times faster than the default, files stay small.
            Image.fromarray(image).save(ds.image_dir(split) / fname, format="PNG", compress_level=1)
            rows[split].append(f"{fname}: {json.dumps(kp[:, 0].tolist())}: {json.dumps(kp[:, 1].tolist())}")
            names.append(fname)
        ordered = list(itertools.permutations(names, 2))
        if len(ordered) > max_pairs_per_identity:
            keep = np.sort(rng.choice(len(ordered), max_pairs_per_identity, replace=False))
            ordered = [ordered[i] for i in keep]
        pairs[split].extend(ordered)

    for split in splits:
        # Same text layout as the authors' files: "name: [y...]: [x...]" and "from,to".
        ds.annotation_file(split).write_text(
            "\n".join(["name:keypoints_y:keypoints_x"] + rows[split]) + "\n")
        ds.pairs_file(split).write_text(
            "\n".join(["from,to"] + [f"{a},{b}" for a, b in pairs[split]]) + "\n")
        ds.num_images[split] = len(rows[split])
        ds.num_pairs[split] = len(pairs[split])
        ds.num_identities[split] = n_test if split == "test" else identities - n_test
    return ds
