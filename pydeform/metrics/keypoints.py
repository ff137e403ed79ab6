"""Pose metrics on detected keypoints: PCKh and the mean keypoint error.

PCKh as the pose-transfer papers compute it (Zhu et al. 2019, Pose-Transfer
`tool/calPCKH_market.py`, the protocol later papers reuse): for each image, the head box of
the TARGET pose is the bounding box (w, h) of its present head joints (nose, neck, both
eyes, both ears; an image with fewer than 2 of them is skipped); a target joint counts when
present, and is correct when the detected joint is present too and |dx| < alpha w and
|dy| < alpha h (alpha = 0.5). PCKh = correct / counted, pooled over all images.
"""
from __future__ import annotations

import numpy as np

from pydeform.pose.keypoints import JOINT

__all__ = ["HEAD_JOINTS", "keypoint_error", "pckh"]

HEAD_JOINTS = tuple(JOINT[n] for n in ("nose", "neck", "Leye", "Reye", "Lear", "Rear"))


def _as_poses(keypoints, name: str) -> np.ndarray:
    xy = np.asarray(keypoints.detach().cpu() if hasattr(keypoints, "detach") else keypoints, dtype=np.float64)
    if xy.ndim == 2:
        xy = xy[None]
    if xy.ndim != 3 or xy.shape[1:] != (18, 2):
        raise ValueError(f"{name} must have shape (18, 2) or (N, 18, 2), got {xy.shape}")
    return xy


def _present(xy: np.ndarray) -> np.ndarray:
    return np.isfinite(xy).all(-1) & (xy != -1).all(-1)


def pckh(detected, target, alpha: float = 0.5) -> tuple[int, int]:
    """(correct, counted) joints over N images; detected, target (N, 18, 2) or (18, 2)
    pixels, -1 missing. See the module docstring."""
    det, tgt = _as_poses(detected, "detected"), _as_poses(target, "target")
    if det.shape != tgt.shape:
        raise ValueError(f"detected and target must have the same shape, got {det.shape} and {tgt.shape}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    correct = counted = 0
    for d, t in zip(det, tgt):
        head = t[list(HEAD_JOINTS)][_present(t[list(HEAD_JOINTS)])]
        if len(head) < 2:
            continue
        w, h = head[:, 0].max() - head[:, 0].min(), head[:, 1].max() - head[:, 1].min()
        t_ok, d_ok = _present(t), _present(d)
        counted += int(t_ok.sum())
        close = (np.abs(d[:, 0] - t[:, 0]) < alpha * w) & (np.abs(d[:, 1] - t[:, 1]) < alpha * h)
        correct += int((t_ok & d_ok & close).sum())
    return correct, counted


def keypoint_error(detected, target) -> tuple[float, int]:
    """(sum of Euclidean distances, number of joints) over the joints present in both."""
    det, tgt = _as_poses(detected, "detected"), _as_poses(target, "target")
    if det.shape != tgt.shape:
        raise ValueError(f"detected and target must have the same shape, got {det.shape} and {tgt.shape}")
    both = _present(det) & _present(tgt)
    return float(np.hypot(*(det - tgt)[both].T).sum()), int(both.sum())
