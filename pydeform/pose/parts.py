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

__all__ = ["PART_NAMES", "NUM_PARTS", "part_transforms", "at_resolution", "torso_scale", "affine_tls"]

PART_NAMES: tuple[str, ...] = (
    "torso", "head", "Rhip-Rkne", "Lhip-Lkne", "Rkne-Rank", "Lkne-Lank",
    "Rsho-Relb", "Lsho-Lelb", "Relb-Rwri", "Lelb-Lwri",
)  # fmt: skip
NUM_PARTS = len(PART_NAMES)

_TORSO = tuple(JOINT[n] for n in ("Rhip", "Lhip", "Lsho", "Rsho"))
_HEAD = tuple(JOINT[n] for n in ("nose", "Leye", "Reye", "Lear", "Rear"))
_SHOULDERS = (JOINT["Lsho"], JOINT["Rsho"])
_TORSO_SIDES = ((JOINT["Rhip"], JOINT["Rsho"]), (JOINT["Lhip"], JOINT["Lsho"]))
# Limb parts 2..9: (from joint, to joint, end extension of the transform's rectangle, end
# extension of the mask's rectangle), in the original's `estimate_polygon` convention: the
# start is pushed back by 0.1 limb lengths first, then the end is extended by `inc` times the
# vector from that NEW start, so the effective end extension is 1.1 inc limb lengths.
# The original (AliaksandrSiarohin/pose-gan, pose_transform.py: `estimate_join` for the
# transforms, `pose_masks` / `mask_joint` for the masks) uses inc = 0.1 / 0.3 for the fits
# and 0.1 / 0.5 for the masks of the upper / lower limbs: mask ends at 0.11 and 0.55.
_LIMBS = tuple(
    (JOINT[a], JOINT[b], fit_inc, mask_inc)
    for a, b, fit_inc, mask_inc in (
        ("Rhip", "Rkne", 0.1, 0.1), ("Lhip", "Lkne", 0.1, 0.1), ("Rkne", "Rank", 0.3, 0.5), ("Lkne", "Lank", 0.3, 0.5),
        ("Rsho", "Relb", 0.1, 0.1), ("Lsho", "Lelb", 0.1, 0.1), ("Relb", "Rwri", 0.3, 0.5), ("Lelb", "Lwri", 0.3, 0.5),
    )
)  # fmt: skip
_START_EXTENSION = 0.1  # the start is pushed back by 0.1 limb lengths past `from`
_HALF_WIDTH = 0.2  # limb rectangle half width, in torso scales
_HEAD_HALF_SIZE = 0.4  # head box half side, in torso scales (truncated to int pixels)
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


def _normalise(points: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Centre (n, 2) points and divide by their root-mean-square coordinate (scikit-image's
    'rms' scaling, the same as Hartley's sqrt(2) mean-square-distance normalisation).
    Returns (centroid, divisor, normalised points); divisor 0 for coincident points."""
    centre = points.mean(axis=0)
    centred = points - centre
    divisor = float(np.sqrt(np.mean(centred**2)))
    return centre, divisor, centred / divisor if divisor > 0 else centred


def affine_tls(source: np.ndarray, destination: np.ndarray) -> np.ndarray | None:
    """(n, 2) source points, (n, 2) destination points, n >= 3 -> the (2, 3) affine map
    source -> destination of scikit-image's `estimate_transform('affine', src, dst)`, or None
    where that estimator fails (coincident points, or a solution at infinity).

    This is the estimator the Deformable GAN's original code fits the torso and head with
    (AliaksandrSiarohin/pose-gan, pose_transform.py `affine_transforms`; the algorithm of
    scikit-image, skimage/transform/_geometric.py `ProjectiveTransform._estimate` restricted
    to the affine coefficients), written here with numpy only:
    1. normalise both point sets (centroid to 0, rms coordinate to 1);
    2. with normalised source (x, y) and destination (X, Y), stack one row per coordinate,
       [x, y, 1, 0, 0, 0, X] and [0, 0, 0, x, y, 1, Y], into a (2n, 7) matrix A;
    3. take the right singular vector v of A's smallest singular value (a total least
       squares solve: the constant and destination columns count as noisy too) and read
       the normalised affine as -v[:6] / v[6];
    4. undo the normalisations: M = T_dst^-1 [a; 0 0 1] T_src.
    On exact correspondences it is the exact map; on noisy, over-determined points it
    differs from ordinary least squares (most on nearly collinear points).
    """
    source_centre, source_scale, s = _normalise(source)
    dest_centre, dest_scale, d = _normalise(destination)
    if source_scale == 0 or dest_scale == 0:
        return None
    n = len(s)
    system = np.zeros((2 * n, 7))
    system[:n, 0:2], system[:n, 2], system[:n, 6] = s, 1.0, d[:, 0]
    system[n:, 3:5], system[n:, 5], system[n:, 6] = s, 1.0, d[:, 1]
    v = np.linalg.svd(system)[2][-1]
    if np.isclose(v[6], 0):
        return None
    normalised = (-v[:6] / v[6]).reshape(2, 3)
    # x_n = (x - c_s) / k_s, X = k_d X_n + c_d  =>  X = k_d (L (x - c_s) / k_s + t) + c_d
    linear = normalised[:, :2] * (dest_scale / source_scale)
    translation = dest_scale * normalised[:, 2] + dest_centre - linear @ source_centre
    return np.concatenate([linear, translation[:, None]], axis=1)


def _fit(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(n, 2) target points, (n, 2) source points -> (2, 3) affine, target -> source.

    With three or more target points that fix an affine map: `affine_tls`, the original's
    estimator (ordinary least squares if it fails). With collinear target points an affine
    map is not determined (rank-deficient): fit a similarity (rotation + uniform scale +
    translation) instead; with coincident target points (or n = 1), a translation. The
    result is always finite.
    """
    target_centre, source_centre = target.mean(axis=0), source.mean(axis=0)
    p, q = target - target_centre, source - source_centre
    singular = np.linalg.svd(p, compute_uv=False)
    spread = singular[0] if singular.size else 0.0
    if spread <= 1e-9 * max(1.0, float(np.abs(target).max())):
        linear = np.eye(2)
    elif singular.size == 2 and singular[1] > _COLLINEAR * spread:
        fitted = affine_tls(target, source)
        if fitted is not None and np.isfinite(fitted).all():
            return fitted
        linear = np.linalg.lstsq(p, q, rcond=None)[0].T
    else:
        # Least-squares [[a, -b], [b, a]]: complex ratio sum(conj(p) q) / sum(|p|^2).
        norm = np.sum(p**2)
        a = np.sum(p * q) / norm
        b = np.sum(p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]) / norm
        linear = np.array([[a, -b], [b, a]])
    return np.concatenate([linear, (source_centre - linear @ target_centre)[:, None]], axis=1)


def _limb_rectangle(start: np.ndarray, end: np.ndarray, inc: float, scale: float) -> np.ndarray:
    """(4, 2) corners of a limb's rectangle, the original's `estimate_polygon`
    (AliaksandrSiarohin/pose-gan, pose_transform.py): the start pushed back to
    first = start - 0.1 (end - start), then the end extended from that new start,
    last = end + inc (end - first) (an extension of 1.1 inc limb lengths), half width
    0.2 scale; corners in the order first+n, first-n, last-n, last+n (n the unit normal).
    A zero-length limb takes a vertical direction."""
    direction = end - start
    length = np.linalg.norm(direction)
    unit = direction / length if length > 0 else np.array([0.0, 1.0])
    normal = np.array([-unit[1], unit[0]]) * (_HALF_WIDTH * scale)
    first = start - _START_EXTENSION * direction
    last = end + inc * (end - first)
    return np.stack([first + normal, first - normal, last - normal, last + normal])


def _head_box(centre: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """The original's head mask (pose_masks -> mask_from_kp_array): the centre truncated to
    int pixels, half size b = int(0.4 scale), the half-open box [c - b, c + b) in x and y,
    clipped to the image. -> (H, W) bool."""
    cx, cy = (int(c) for c in centre)  # int() truncates toward zero, as numpy's astype(int)
    half = int(_HEAD_HALF_SIZE * scale)
    box = np.zeros((height, width), dtype=bool)
    rows = slice(min(max(cy - half, 0), height), min(max(cy + half, 0), height))
    cols = slice(min(max(cx - half, 0), width), min(max(cx + half, 0), width))
    box[rows, cols] = True
    return box


def _rectangle_mask(grid: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(H, W, 2) pixel (x, y) grid, `_limb_rectangle` corners -> (H, W) bool, edges included
    (the original rasterises with skimage.measure.grid_points_in_poly, whose crossing rule
    keeps some edge pixels and drops others: they differ only in pixels exactly on an edge)."""
    origin = corners[1]
    along, across = corners[2] - origin, corners[0] - origin
    if along @ along == 0 or across @ across == 0:  # a zero-area rectangle covers no pixel
        return np.zeros(grid.shape[:2], dtype=bool)
    offset = grid - origin
    a, b = offset @ along / (along @ along), offset @ across / (across @ across)
    # Edges included, also where rounding puts a pixel on an edge a hair outside.
    tol = 1e-9
    return (a >= -tol) & (a <= 1 + tol) & (b >= -tol) & (b <= 1 + tol)


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
        masks[1] = _head_box(centre, target_scale, height, width)

    for k, (start, end, fit_inc, mask_inc) in enumerate(_LIMBS, start=2):
        if target_missing[start] or target_missing[end]:
            continue
        source_start, source_end = start, end
        if source_missing[start] or source_missing[end]:  # borrow the other side's limb
            source_start, source_end = MIRROR[start], MIRROR[end]
            if source_missing[source_start] or source_missing[source_end]:
                continue
        # Rectangles in both poses (each with its own scale) fix rotation, scale along and
        # across the limb, and translation: four corners, not just the two joints.
        # (The fit does not depend on the extension: both rectangles extend by the same
        # fraction of their limbs. The original's 0.3 is kept for the record.)
        target_rectangle = _limb_rectangle(target[start], target[end], fit_inc, target_scale)
        source_rectangle = _limb_rectangle(source[source_start], source[source_end], fit_inc, source_scale)
        theta[k] = _fit(target_rectangle, source_rectangle)
        masks[k] = _rectangle_mask(grid, _limb_rectangle(target[start], target[end], mask_inc, target_scale))
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
    The geometry is the original code's (AliaksandrSiarohin/pose-gan, pose_transform.py
    `affine_transforms` and `pose_masks`; DESIGN.md section 5):
    - torso: fit of Rhip, Lhip, Lsho, Rsho; mask all ones (the global fallback). Torso joints
      missing in either pose are left out of the fit (identity when none are shared).
    - head: fit of the nose/eyes/ears present in both poses plus the shoulders; mask the
      half-open box [c - b, c + b) in x and y, c the mean of the target's head joints
      truncated to int, b = int(0.4 st). Empty without a shared head joint.
    - limbs: fit of the four corners of the limb rectangle (built in each pose with that
      pose's st: start pushed back 0.1 limb lengths, half width 0.2 st), so a limb gets
      rotation, scale along and across it, and translation; the mask is the target's
      rectangle with its end extended 0.11 (upper limbs) or 0.55 (forearm, shin) limb
      lengths past the joint (the original's inc 0.1 / 0.5, applied from the pushed-back
      start). A limb missing in the source uses the source's mirrored limb (right <-> left).
    Over-determined fits (torso, head) use `affine_tls`, the original's scikit-image
    estimator (normalised total least squares), not ordinary least squares.
    st is the target's `torso_scale` for masks and each pose's own for its rectangle.
    An empty part (missing in the target, or in the source with its mirror, or covering no
    pixel of the image) has mask 0 and identity theta. Collinear target points fall back to
    a similarity fit, coincident ones to a translation: theta is always finite (the original
    returns NaN or crashes there). No gradient flows to the keypoints.
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

    A deliberate deviation from the original code: its AffineTransformLayer maps pixel i of a
    map s times smaller to full-size pixel s i (it divides the translation by s). Neither
    rule is exact for a generator's features: after l 4x4, stride-2, padding-1 convolutions
    (s = 2^l), feature i is centred on full-size pixel s i + (s - 1)/2. Measured on the part
    transforms of random pose pairs (tests/pose/test_parts.py), the corner-aligned rule's
    median error against that geometry is 0.07-0.18 feature pixels at s = 2, 4, 8 (128x64
    and 256x256), the original's 0.28-0.57; so pydeform keeps the corner-aligned rule.
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
