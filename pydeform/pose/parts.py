"""The Deformable GAN's 10 body parts: per-part affine transforms and target-frame masks
(DESIGN.md section 5), and their rescaling to a generator's feature-map resolution.

theta[k] maps an OUTPUT (target-pose) pixel (x, y, 1) to an INPUT (source-pose) pixel,
the sampling direction of `pydeform.ops.multi_affine_warp`: it is a least-squares affine
fit from target points to source points. masks[k] is in the target frame.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pydeform.pose.keypoints import JOINT, MIRROR, KeypointsLike, _as_keypoint_array, _check_size, _missing

__all__ = ["PART_NAMES", "NUM_PARTS", "part_transforms", "at_resolution", "torso_scale"]

PART_NAMES: tuple[str, ...] = (
    "torso", "head", "Rhip-Rkne", "Lhip-Lkne", "Rkne-Rank", "Lkne-Lank",
    "Rsho-Relb", "Lsho-Lelb", "Relb-Rwri", "Lelb-Lwri",
)  # fmt: skip
NUM_PARTS = len(PART_NAMES)

_TORSO = tuple(JOINT[n] for n in ("Rhip", "Lhip", "Lsho", "Rsho"))
_HEAD = tuple(JOINT[n] for n in ("nose", "Leye", "Reye", "Lear", "Rear"))
_SHOULDERS = (JOINT["Lsho"], JOINT["Rsho"])
_TORSO_SIDES = ((JOINT["Rhip"], JOINT["Rsho"]), (JOINT["Lhip"], JOINT["Lsho"]))
# Limb parts 2..9: (from joint, to joint, how far the end is extended past `to`, in limb
# lengths): 0.1 for the upper limbs, 0.3 for the lower ones (forearm, shin).
_LIMBS = tuple(
    (JOINT[a], JOINT[b], extension)
    for a, b, extension in (
        ("Rhip", "Rkne", 0.1), ("Lhip", "Lkne", 0.1), ("Rkne", "Rank", 0.3), ("Lkne", "Lank", 0.3),
        ("Rsho", "Relb", 0.1), ("Lsho", "Lelb", 0.1), ("Relb", "Rwri", 0.3), ("Lelb", "Lwri", 0.3),
    )
)  # fmt: skip
_START_EXTENSION = 0.1  # the start is pushed back by 0.1 limb lengths past `from`
_HALF_WIDTH = 0.2  # limb rectangle half width, in torso scales
_HEAD_HALF_SIZE = 0.4  # head box half side, in torso scales
_COLLINEAR = 1e-3  # smaller/larger singular value of the centred target points below this: collinear


def torso_scale(keypoints: KeypointsLike) -> Tensor:
    """st = sqrt((|Rhip - Rsho|^2 + |Lhip - Lsho|^2) / 2), the Deformable GAN's body scale.

    keypoints: (18, 2) or (B, 18, 2). Returns a float64 tensor of shape () or (B,). A side
    with a missing joint is left out of the mean; with both sides missing (or of zero
    length) the scale is NaN (`part_transforms` then falls back, see there).
    """
    xy, batched, _ = _as_keypoint_array(keypoints, "keypoints")
    scales = torch.tensor([_torso_scale(pose) or math.nan for pose in xy], dtype=torch.float64)
    return scales if batched else scales[0]


def _torso_scale(xy: np.ndarray) -> float | None:
    squares = [np.sum((xy[a] - xy[b]) ** 2) for a, b in _TORSO_SIDES if not _missing(xy[[a, b]]).any()]
    scale = math.sqrt(sum(squares) / len(squares)) if squares else 0.0
    return scale if scale > 0 else None


def _fit(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(n, 2) target points, (n, 2) source points -> (2, 3) least-squares affine, target -> source.

    With collinear target points an affine map is not determined (rank-deficient): fit a
    similarity (rotation + uniform scale + translation) instead; with coincident target
    points (or n = 1), a translation. The result is always finite.
    """
    target_centre, source_centre = target.mean(axis=0), source.mean(axis=0)
    p, q = target - target_centre, source - source_centre
    singular = np.linalg.svd(p, compute_uv=False)
    spread = singular[0] if singular.size else 0.0
    if spread <= 1e-9 * max(1.0, float(np.abs(target).max())):
        linear = np.eye(2)
    elif singular.size == 2 and singular[1] > _COLLINEAR * spread:
        linear = np.linalg.lstsq(p, q, rcond=None)[0].T
    else:
        # Least-squares [[a, -b], [b, a]]: complex ratio sum(conj(p) q) / sum(|p|^2).
        norm = np.sum(p**2)
        a = np.sum(p * q) / norm
        b = np.sum(p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]) / norm
        linear = np.array([[a, -b], [b, a]])
    return np.concatenate([linear, (source_centre - linear @ target_centre)[:, None]], axis=1)


def _limb_rectangle(start: np.ndarray, end: np.ndarray, extension: float, scale: float) -> np.ndarray:
    """(4, 2) corners of a limb's rectangle: from `start` - 0.1 (end - start) to `end` +
    extension (end - start), half width 0.2 scale; corners in the order start+n, start-n,
    end-n, end+n (n the unit normal). A zero-length limb takes a vertical direction."""
    direction = end - start
    length = np.linalg.norm(direction)
    unit = direction / length if length > 0 else np.array([0.0, 1.0])
    normal = np.array([-unit[1], unit[0]]) * (_HALF_WIDTH * scale)
    first = start - _START_EXTENSION * direction
    last = end + extension * direction
    return np.stack([first + normal, first - normal, last - normal, last + normal])


def _rectangle_mask(grid: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(H, W, 2) pixel (x, y) grid, `_limb_rectangle` corners -> (H, W) bool, edges included."""
    origin = corners[1]
    along, across = corners[2] - origin, corners[0] - origin
    if along @ along == 0 or across @ across == 0:  # a zero-area rectangle covers no pixel
        return np.zeros(grid.shape[:2], dtype=bool)
    offset = grid - origin
    a, b = offset @ along, offset @ across
    return (a >= 0) & (a <= along @ along) & (b >= 0) & (b <= across @ across)


def _parts_one(source: np.ndarray, target: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One pose pair (18, 2) x2 -> theta (10, 2, 3), masks (10, H, W) float64."""
    theta = np.tile(np.eye(2, 3), (NUM_PARTS, 1, 1))  # empty parts keep the identity
    masks = np.zeros((NUM_PARTS, height, width))
    source_missing, target_missing = _missing(source), _missing(target)
    both = ~source_missing & ~target_missing
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    grid = np.stack([xs, ys], axis=-1)

    # A pose without a torso side borrows the other pose's scale; without either, a quarter
    # of the image height (about a torso in a full-body crop).
    own_source, own_target = _torso_scale(source), _torso_scale(target)
    target_scale = own_target or own_source or height / 4
    source_scale = own_source or own_target or height / 4

    # Torso: the global fallback, mask all ones. Fit whatever torso joints both poses have
    # (affine with 3+, similarity with 2, translation with 1, identity with none).
    masks[0] = 1.0
    torso = [j for j in _TORSO if both[j]]
    if torso:
        theta[0] = _fit(target[torso], source[torso])

    # Head: head joints present in both poses, plus the shoulders both poses have.
    head = [j for j in _HEAD if both[j]]
    if head:
        points = head + [j for j in _SHOULDERS if both[j]]
        theta[1] = _fit(target[points], source[points])
        centre = target[[j for j in _HEAD if not target_missing[j]]].mean(axis=0)
        masks[1] = (np.abs(grid - centre) <= _HEAD_HALF_SIZE * target_scale).all(axis=-1)

    for k, (start, end, extension) in enumerate(_LIMBS, start=2):
        if target_missing[start] or target_missing[end]:
            continue
        source_start, source_end = start, end
        if source_missing[start] or source_missing[end]:  # borrow the other side's limb
            source_start, source_end = MIRROR[start], MIRROR[end]
            if source_missing[source_start] or source_missing[source_end]:
                continue
        # Rectangles in both poses (each with its own scale) fix rotation, scale along and
        # across the limb, and translation: four corners, not just the two joints.
        target_rectangle = _limb_rectangle(target[start], target[end], extension, target_scale)
        source_rectangle = _limb_rectangle(source[source_start], source[source_end], extension, source_scale)
        theta[k] = _fit(target_rectangle, source_rectangle)
        masks[k] = _rectangle_mask(grid, target_rectangle)
    # A part that covers no pixel (zero area, or outside the image) is empty like a missing one.
    theta[~masks.any(axis=(1, 2))] = np.eye(2, 3)
    return theta, masks


def part_transforms(
    source: KeypointsLike,
    target: KeypointsLike,
    size: tuple[int, int],
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Per-part affine transforms and masks for warping a source-pose image to a target pose.

    source, target: (18, 2) or both (B, 18, 2) keypoints (x, y) pixels, of images of the same
    size. size: (H, W) of the output (target) frame.
    Returns theta (10, 2, 3) or (B, 10, 2, 3) and masks (10, H, W) or (B, 10, H, W) in {0, 1},
    both of `dtype` on the target keypoints' device; parts in `PART_NAMES` order.

    theta[k] maps a target pixel (x, y, 1) to a source pixel (what `multi_affine_warp` takes).
    - torso: fit of Rhip, Lhip, Lsho, Rsho; mask all ones (the global fallback). Torso joints
      missing in either pose are left out of the fit (identity when none are shared).
    - head: fit of the nose/eyes/ears present in both poses plus the shoulders; mask a box of
      +-0.4 st around the mean of the target's head joints. Empty without a shared head joint.
    - limbs: fit of the four corners of the limb rectangle (start pushed back 0.1 limb
      lengths, end extended 0.1 for upper and 0.3 for lower limbs, half width 0.2 st, built
      in each pose with that pose's st), so a limb gets rotation, scale along and across it,
      and translation; the mask is the target rectangle. A limb missing in the source uses
      the source's mirrored limb (right <-> left).
    st is the target's `torso_scale` for masks and each pose's own for its rectangle.
    An empty part (missing in the target, or in the source with its mirror, or covering no
    pixel of the image) has mask 0 and identity theta. Collinear target points fall back to
    a similarity fit, coincident ones to a translation: theta is always finite. No gradient
    flows to the keypoints.
    """
    source_xy, source_batched, _ = _as_keypoint_array(source, "source")
    target_xy, target_batched, device = _as_keypoint_array(target, "target")
    if source_batched != target_batched or source_xy.shape != target_xy.shape:
        raise ValueError(
            f"source and target must both be one pose or batches of the same size, got "
            f"{'batch of ' + str(len(source_xy)) if source_batched else 'one pose'} and "
            f"{'batch of ' + str(len(target_xy)) if target_batched else 'one pose'}"
        )
    height, width = _check_size(size)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    pairs = [_parts_one(s, t, height, width) for s, t in zip(source_xy, target_xy)]
    theta = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device=device, dtype=dtype)
    masks = torch.from_numpy(np.stack([p[1] for p in pairs])).to(device=device, dtype=dtype)
    return (theta, masks) if target_batched else (theta[0], masks[0])


def _grid_ratio(full: int, low: int, name: str) -> float:
    """Factor taking a full-size pixel coordinate to the other size, pixel centres at
    0..n-1 with the corners aligned: x -> x (low - 1) / (full - 1)."""
    if full == 1:
        if low != 1:
            raise ValueError(f"size: cannot rescale a {name} of 1 pixel to {low}")
        return 1.0
    return (low - 1) / (full - 1)


def at_resolution(theta: Tensor, masks: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Rescale part transforms and masks from their full size to a feature map's size.

    theta: (K, 2, 3) or (B, K, 2, 3) pixel transforms output -> input at full size, the input
    image the same size as the masks. masks: (K, H, W) or (B, K, H, W), the same leading
    shape. size: (H', W').
    Pixel x at full size sits at x (W'-1)/(W-1) at the new size (corners aligned, section 3),
    so with S = diag((W'-1)/(W-1), (H'-1)/(H-1)): theta' = S theta S^-1 (linear part S A S^-1,
    translation S t), differentiable in theta. masks' samples the nearest full-size pixel:
    masks'[i, j] = masks[round(i (H-1)/(H'-1)), round(j (W-1)/(W'-1))].
    Returns (theta', masks') of the inputs' dtypes and devices.
    """
    if not isinstance(theta, Tensor) or not isinstance(masks, Tensor):
        bad = "theta" if not isinstance(theta, Tensor) else "masks"
        raise TypeError(f"{bad} must be a torch.Tensor")
    if theta.dim() not in (3, 4) or theta.shape[-2:] != (2, 3):
        raise ValueError(f"theta must have shape (K, 2, 3) or (B, K, 2, 3), got {tuple(theta.shape)}")
    if masks.dim() != theta.dim() or masks.shape[:-2] != theta.shape[:-2]:
        raise ValueError(
            f"masks must have shape {tuple(theta.shape[:-2])} + (H, W) to match theta, got {tuple(masks.shape)}"
        )
    if not theta.is_floating_point():
        raise TypeError(f"theta must be a floating tensor, got {theta.dtype}")
    new_height, new_width = _check_size(size)
    height, width = masks.shape[-2:]
    ratio_x, ratio_y = _grid_ratio(width, new_width, "width"), _grid_ratio(height, new_height, "height")

    scale = torch.tensor([ratio_x, ratio_y], dtype=theta.dtype, device=theta.device)
    # A new side of 1 pixel has only coordinate 0, so S^-1's 1/0 entry never matters: use 0.
    inverse = torch.tensor([1 / r if r else 0.0 for r in (ratio_x, ratio_y)], dtype=theta.dtype, device=theta.device)
    linear = scale[:, None] * theta[..., :2] * inverse[None, :]
    translation = scale * theta[..., 2]
    new_theta = torch.cat([linear, translation[..., None]], dim=-1)

    def nearest(new: int, full: int, ratio: float) -> Tensor:
        position = torch.arange(new, dtype=torch.float64) / ratio if ratio else torch.zeros(new, dtype=torch.float64)
        return torch.floor(position + 0.5).long().clamp(max=full - 1).to(masks.device)

    rows, cols = nearest(new_height, height, ratio_y), nearest(new_width, width, ratio_x)
    new_masks = masks[..., rows[:, None], cols[None, :]]
    return new_theta, new_masks
