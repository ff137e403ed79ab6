"""The Variational U-Net's appearance input: 8 in-plane-normalised body-part crops
(CompVis/vunet batches.py `normalize` and `get_crop`), built with one homography per part
and `pydeform.ops.homography_sample` (bilinear, border replication), batched.

Parts, in the original's order (which is not the paper's list): torso (Lsho, Lhip, Rhip,
Rsho), head (Lsho, Rsho, nose), left upper arm (Lsho-Lelb), left forearm (Lelb-Lwri), right
upper arm, right forearm, left thigh (Lhip-Lkne), right thigh (Rhip-Rkne). Each source
quadrilateral is mapped onto the box corners (0, 0), (0, h), (w, h), (w, 0) of a
(h, w) = (H, W) / 2^box_factor crop (cv2.getPerspectiveTransform, then cv2.warpPerspective
with BORDER_REPLICATE):

- torso: the four joints themselves;
- a limb p0-p1: the rectangle p0 +- n/4, p1 -+ n/4, n the segment turned by 90 degrees
  (aspect ratio 0.5: the box is half as wide as the limb is long);
- head: from the shoulders' midpoint m to m + 2 (nose - m), half as wide as long on each side;
  without a nose, the square on the shoulder line (Lsho + n, Lsho, Rsho, Rsho + n), n
  the normal pointing up;
- a thigh without its knee: the hip straight down to the image's last row (o_h - 1);
- otherwise a part with a missing joint (a negative coordinate) is all zeros.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pydeform.pose.keypoints import JOINT

__all__ = ["VUNET_PARTS", "part_crops", "part_homographies", "part_quads", "quad_to_box"]

VUNET_PARTS: tuple[tuple[str, ...], ...] = (
    ("Lsho", "Lhip", "Rhip", "Rsho"),
    ("Lsho", "Rsho", "nose"),
    ("Lsho", "Lelb"),
    ("Lelb", "Lwri"),
    ("Rsho", "Relb"),
    ("Relb", "Rwri"),
    ("Lhip", "Lkne"),
    ("Rhip", "Rkne"),
)
_ASPECT = 0.5  # `ar` of normalize()


def _present(points: np.ndarray) -> bool:
    return bool(np.isfinite(points).all() and (points >= 0).all())


def _normal(segment: np.ndarray) -> np.ndarray:
    return np.array([-segment[1], segment[0]])


def _rectangle(p0: np.ndarray, p1: np.ndarray, alpha: float) -> np.ndarray:
    n = _normal(p1 - p0)
    return np.array([p0 + alpha * n, p0 - alpha * n, p1 - alpha * n, p1 + alpha * n])


def part_quads(keypoints: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The 8 source quadrilaterals of one pose (get_crop's rules; see the module docstring).

    keypoints: (18, 2) (x, y) pixels, a negative or non-finite coordinate missing.
    height: the image height o_h (the knee fallback runs to row o_h - 1).
    Returns (quads (8, 4, 2) float64, valid (8,) bool); an invalid part's quad is zeros.
    """
    xy = np.asarray(keypoints, dtype=np.float64)
    if xy.shape != (18, 2):
        raise ValueError(f"keypoints must have shape (18, 2), got {xy.shape}")
    quads, valid = np.zeros((len(VUNET_PARTS), 4, 2)), np.zeros(len(VUNET_PARTS), dtype=bool)
    for k, names in enumerate(VUNET_PARTS):
        points = xy[[JOINT[n] for n in names]]
        if not _present(points):  # the original's fall-backs
            if names in (("Lhip", "Lkne"), ("Rhip", "Rkne")):
                names, points = names[:1], points[:1]
            elif names == ("Lsho", "Rsho", "nose"):
                names, points = ("Lsho", "Rsho", "Rsho"), points[[0, 1, 1]]
        if not _present(points):
            continue
        if len(points) == 1:  # thigh without knee: straight down to the last row
            points = np.array([points[0], [points[0][0], height - 1]])
        if len(points) == 4:
            quad = points
        elif names == ("Lsho", "Rsho", "Rsho"):
            n = _normal(points[1] - points[0])
            if n[1] > 0:
                n = -n
            quad = np.array([points[0] + n, points[0], points[1], points[1] + n])
        elif len(points) == 3:
            neck = 0.5 * (points[0] + points[1])
            a, b, c, d = _rectangle(neck + 2 * (points[2] - neck), neck, 0.5)
            quad = np.array([b, c, d, a])
        else:
            quad = _rectangle(points[0], points[1], _ASPECT / 2)
        quads[k], valid[k] = quad, True
    return quads, valid


def quad_to_box(quad: np.ndarray, box: tuple[int, int]) -> np.ndarray | None:
    """The homography mapping box pixel (x, y) -> source pixel, for the box corners
    (0, 0), (0, h), (w, h), (w, 0) onto `quad` (4, 2): the inverse of the original's
    cv2.getPerspectiveTransform(quad, corners), which cv2.warpPerspective inverts to sample.
    Solved directly (8 x 8 linear system, h33 = 1) in float64; None when degenerate."""
    h, w = box
    corners = np.array([[0.0, 0.0], [0.0, h], [w, h], [w, 0.0]])
    a, rhs = np.zeros((8, 8)), np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(corners, quad)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -x * u, -y * u]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -x * v, -y * v]
        rhs[2 * i], rhs[2 * i + 1] = u, v
    if not np.isfinite(a).all() or abs(np.linalg.det(a)) < 1e-9:
        return None
    return np.append(np.linalg.solve(a, rhs), 1.0).reshape(3, 3)


def part_homographies(keypoints: np.ndarray, size: tuple[int, int], box_factor: int) -> tuple[Tensor, Tensor]:
    """(8, 3, 3) float32 homographies (box pixel -> source pixel) and (8,) float32 validity
    of one pose in an image of `size` (H, W). An invalid or degenerate part gets the
    identity and validity 0 (its crop is zeros, as in the original)."""
    height, width = size
    box = (height // 2**box_factor, width // 2**box_factor)
    quads, valid = part_quads(keypoints, height)
    mats = np.tile(np.eye(3), (len(VUNET_PARTS), 1, 1))
    for k in range(len(VUNET_PARTS)):
        if valid[k]:
            mat = quad_to_box(quads[k], box)
            if mat is None:
                valid[k] = False
            else:
                mats[k] = mat
    return torch.from_numpy(mats).float(), torch.from_numpy(valid.astype(np.float32))


def part_crops(images: Tensor, homographies: Tensor, valid: Tensor, box: tuple[int, int]) -> Tensor:
    """The 8 part crops of a batch, concatenated to 24 channels (part k in channels
    3k..3k+2), with one batched `homography_sample(..., padding_mode="border")`.

    images (B, 3, H, W); homographies (B, 8, 3, 3) box pixel -> image pixel; valid (B, 8);
    box (h, w). Returns (B, 24, h, w); invalid parts are 0.
    """
    from pydeform.ops import homography_sample

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    b = images.shape[0]
    parts = len(VUNET_PARTS)
    if tuple(homographies.shape) != (b, parts, 3, 3):
        raise ValueError(f"homographies must be ({b}, {parts}, 3, 3), got {tuple(homographies.shape)}")
    if tuple(valid.shape) != (b, parts):
        raise ValueError(f"valid must be ({b}, {parts}), got {tuple(valid.shape)}")
    repeated = images.repeat_interleave(parts, dim=0)
    crops = homography_sample(repeated, homographies.reshape(b * parts, 3, 3).to(images), size=box,
                              padding_mode="border")  # fmt: skip
    crops = crops * valid.reshape(b * parts, 1, 1, 1).to(crops)
    return crops.reshape(b, parts * 3, *box)
