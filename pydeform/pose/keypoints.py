"""COCO-18 keypoints in OpenPose order and the Deformable GAN annotation CSV format.

A pose is 18 (x, y) pixel positions, x the column and y the row (docs/contracts.md);
a missing joint is (-1, -1). The functions of `pydeform.pose` take a `Keypoints`, a
sequence of them (a batch), or an array/tensor of shape (18, 2) or (B, 18, 2) in which a
joint with a coordinate equal to -1 (or not finite) is missing.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Union

import numpy as np
import torch

__all__ = [
    "JOINT_NAMES",
    "JOINT",
    "MIRROR",
    "NUM_JOINTS",
    "MISSING",
    "Keypoints",
    "KeypointsLike",
    "read_annotations",
    "write_annotations",
]

JOINT_NAMES: tuple[str, ...] = (
    "nose", "neck", "Rsho", "Relb", "Rwri", "Lsho", "Lelb", "Lwri", "Rhip",
    "Rkne", "Rank", "Lhip", "Lkne", "Lank", "Leye", "Reye", "Lear", "Rear",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)
MISSING = -1
JOINT: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}


def _mirror_name(name: str) -> str:
    swap = {"R": "L", "L": "R"}
    return swap[name[0]] + name[1:] if name[0] in swap else name


# MIRROR[j]: the joint on the other side of the body (nose and neck are their own mirror).
MIRROR: tuple[int, ...] = tuple(JOINT[_mirror_name(name)] for name in JOINT_NAMES)

_HEADER = ("name", "keypoints_y", "keypoints_x")
# The annotation files refuse coordinates beyond this many pixels: no image is that large,
# and from about 1e19 up numpy's int casts overflow silently (a keypoint far outside the
# image is a broken annotation, not a pose).
MAX_COORDINATE = 100_000


def _missing(xy: np.ndarray) -> np.ndarray:
    """(..., 18, 2) -> (..., 18) bool: a coordinate is -1 or not finite."""
    return (xy == MISSING).any(axis=-1) | ~np.isfinite(xy).all(axis=-1)


@dataclass(frozen=True, eq=False)
class Keypoints:
    """One COCO-18 pose.

    xy: (18, 2) float64, read-only, (x, y) = (column, row) in pixels; a missing joint's
    row is (-1, -1) (a row with either coordinate -1 or not finite is made so).
    """

    xy: np.ndarray

    def __post_init__(self) -> None:
        if isinstance(self.xy, torch.Tensor):
            xy = self.xy.detach().cpu().numpy().astype(np.float64)
        else:
            try:
                xy = np.array(self.xy, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"xy must be an (18, 2) array of numbers, got {type(self.xy).__name__}") from exc
        if xy.shape != (NUM_JOINTS, 2):
            raise ValueError(f"xy must have shape (18, 2), got {tuple(xy.shape)}")
        xy[_missing(xy)] = MISSING
        xy.flags.writeable = False
        object.__setattr__(self, "xy", xy)

    @classmethod
    def from_yx(cls, ys: Sequence[float], xs: Sequence[float]) -> Keypoints:
        """From the annotation format's two lists of 18 (rows, then columns), -1 missing."""
        ys, xs = np.asarray(ys, dtype=np.float64), np.asarray(xs, dtype=np.float64)
        if ys.shape != (NUM_JOINTS,) or xs.shape != (NUM_JOINTS,):
            raise ValueError(f"ys and xs must have 18 values each, got {ys.shape} and {xs.shape}")
        return cls(np.stack([xs, ys], axis=1))

    @property
    def missing(self) -> np.ndarray:
        """(18,) bool, True where the joint is missing."""
        return _missing(self.xy)

    def to_tensor(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """(18, 2) tensor, missing joints -1."""
        return torch.tensor(self.xy, dtype=dtype, device=device)

    def __repr__(self) -> str:
        present = int((~self.missing).sum())
        return f"Keypoints({present}/{NUM_JOINTS} joints present)"


KeypointsLike = Union[Keypoints, Sequence[Keypoints], np.ndarray, torch.Tensor]


def _as_keypoint_array(keypoints: KeypointsLike, name: str) -> tuple[np.ndarray, bool, torch.device]:
    """-> (xy (B, 18, 2) float64 with missing rows -1, whether the input was batched,
    the device of a tensor input (cpu otherwise))."""
    device = torch.device("cpu")
    if isinstance(keypoints, Keypoints):
        return keypoints.xy[None].copy(), False, device
    if isinstance(keypoints, (list, tuple)) and keypoints and all(isinstance(k, Keypoints) for k in keypoints):
        return np.stack([k.xy for k in keypoints]), True, device
    if isinstance(keypoints, torch.Tensor):
        device = keypoints.device
        if keypoints.is_complex() or keypoints.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {keypoints.dtype}")
        xy = keypoints.detach().cpu().to(torch.float64).numpy()
    elif isinstance(keypoints, np.ndarray):
        if not (np.issubdtype(keypoints.dtype, np.integer) or np.issubdtype(keypoints.dtype, np.floating)):
            raise TypeError(f"{name} must hold real numbers, got dtype {keypoints.dtype}")
        xy = keypoints.astype(np.float64)
    else:
        raise TypeError(
            f"{name} must be a Keypoints, a list of Keypoints, or an (18, 2) / (B, 18, 2) array or tensor, "
            f"got {type(keypoints).__name__}"
        )
    if xy.ndim not in (2, 3) or xy.shape[-2:] != (NUM_JOINTS, 2):
        raise ValueError(f"{name} must have shape (18, 2) or (B, 18, 2), got {tuple(xy.shape)}")
    batched = xy.ndim == 3
    xy = xy.reshape(-1, NUM_JOINTS, 2).copy()
    xy[_missing(xy)] = MISSING
    return xy, batched, device


def _check_size(size: object, name: str = "size") -> tuple[int, int]:
    """A (height, width) pair of positive ints."""
    if (
        not isinstance(size, (tuple, list, torch.Size))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"{name} must be a (height, width) pair of ints, got {size!r}")
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"{name} must be positive, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _parse_coordinates(text: str, field: str) -> list[int]:
    try:
        values = json.loads(text)
    except ValueError:
        raise ValueError(f"{field} is not a JSON list: {text.strip()[:60]!r}") from None
    if not isinstance(values, list) or len(values) != NUM_JOINTS:
        raise ValueError(f"{field} must be a list of 18 ints, got {text.strip()[:60]!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{field} must hold ints, got {values}")
    if any(v < MISSING for v in values):
        raise ValueError(f"{field} has a negative coordinate other than -1 (missing): {values}")
    if any(v > MAX_COORDINATE for v in values):
        raise ValueError(f"{field} has a coordinate beyond {MAX_COORDINATE} pixels, far outside any image: "
                         f"{max(values)}")
    return values


def read_annotations(path: str | PathLike) -> dict[str, Keypoints]:
    """Read `<name>-annotation-{train,test}.csv` (DESIGN.md section 6).

    The file is `:`-separated with the header `name:keypoints_y:keypoints_x`; each row holds
    an image name and two JSON lists of 18 ints (rows first, then columns), -1 for a missing
    joint. Returns {image name: Keypoints} in file order. Blank lines are skipped.
    Raises ValueError naming the file and 1-based line number of a malformed row or header,
    of a repeated name and of a coordinate below -1 or above `MAX_COORDINATE` (100000).
    """
    return _read_annotations(path)[0]


def _read_annotations(path: str | PathLike) -> tuple[dict[str, Keypoints], dict[str, int]]:
    """`read_annotations`, plus {image name: 1-based line number} for later errors."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = tuple(field.strip() for field in lines[0].split(":")) if lines else ()
    if header != _HEADER:
        got = lines[0] if lines else "an empty file"
        raise ValueError(f"{path}:1: expected the header 'name:keypoints_y:keypoints_x', got {got!r}")
    poses: dict[str, Keypoints] = {}
    numbers: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            # The name comes first and may itself contain ':'; the JSON lists cannot.
            fields = line.rsplit(":", 2)
            if len(fields) != 3:
                raise ValueError(f"expected 3 ':'-separated fields (name:keypoints_y:keypoints_x), got {line!r}")
            name = fields[0].strip()
            if not name:
                raise ValueError("empty image name")
            if name in poses:
                raise ValueError(f"image name {name!r} appears twice (first on line {numbers[name]})")
            ys = _parse_coordinates(fields[1], "keypoints_y")
            xs = _parse_coordinates(fields[2], "keypoints_x")
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        poses[name] = Keypoints.from_yx(ys, xs)
        numbers[name] = number
    return poses, numbers


def write_annotations(path: str | PathLike, annotations: Mapping[str, KeypointsLike]) -> None:
    """Write {image name: pose} in the format `read_annotations` reads.

    annotations: each pose a Keypoints or an (18, 2) (x, y) array/tensor. The format stores
    ints, so coordinates are rounded to the nearest integer; a present joint must round to a
    non-negative coordinate (-1 would read back as missing). Rows are written in mapping
    order as `name: [y, ...]: [x, ...]`, the layout of the original files.
    """
    if not isinstance(annotations, Mapping):
        raise TypeError(f"annotations must be a mapping of image name -> keypoints, got {type(annotations).__name__}")
    rows = [":".join(_HEADER)]
    for name, keypoints in annotations.items():
        if not isinstance(name, str) or not name or name != name.strip() or "\n" in name or "\r" in name:
            raise ValueError(f"annotations: image name {name!r} must be a non-empty string without surrounding "
                             "whitespace or line breaks")
        xy, batched, _ = _as_keypoint_array(keypoints, f"annotations[{name!r}]")
        if batched:
            raise ValueError(f"annotations[{name!r}] must be one pose of shape (18, 2), got a batch")
        xy, missing = xy[0], _missing(xy[0])
        far = ~missing & (np.abs(xy) > MAX_COORDINATE).any(axis=1)
        if far.any():
            joint = JOINT_NAMES[int(np.argmax(far))]
            raise ValueError(f"annotations[{name!r}]: joint {joint} at {xy[far][0].tolist()} is beyond "
                             f"{MAX_COORDINATE} pixels, far outside any image")
        coords = np.floor(xy + 0.5).astype(np.int64)
        bad = ~missing & (coords < 0).any(axis=1)
        if bad.any():
            joint = JOINT_NAMES[int(np.argmax(bad))]
            raise ValueError(f"annotations[{name!r}]: joint {joint} at {xy[bad][0].tolist()} is present but rounds "
                             "to a negative coordinate, which the format cannot store")
        coords[missing] = MISSING
        rows.append(f"{name}: {json.dumps(coords[:, 1].tolist())}: {json.dumps(coords[:, 0].tolist())}")
    Path(path).write_text("\n".join(rows) + "\n", encoding="utf-8")
