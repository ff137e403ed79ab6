"""Import OpenPose keypoints into the annotation CSV that every pose-transfer family reads.

OpenPose (`--write_json DIR`) writes one `<image stem>_keypoints.json` per image::

    {"version": 1.3, "people": [{"pose_keypoints_2d": [x0, y0, c0, x1, y1, c1, ...], ...}, ...]}

(OpenPose 1.0-1.1 called the list "pose_keypoints"). x, y are pixels of the input image
(with the default `--keypoint_scale 0`), c the confidence, 0 0 0 for an undetected joint.

Joint order. The COCO model (`--model_pose COCO`) outputs 18 joints in the order of the
published annotation files: nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/
wrist, right hip/knee/ankle, left hip/knee/ankle, then 14 REye, 15 LEye, 16 REar, 17 LEar.
pydeform copies those by index. (The Deformable GAN's code names 14-17 "Leye, Reye, Lear,
Rear", and so does `pydeform.pose.JOINT_NAMES`; the published files hold the estimator's
order, index for index, so keeping the index is what makes imported files match them. The
geometry uses the four face joints only together, never by side.)
The BODY_25 model (OpenPose's default) has a mid-hip joint (8) and six foot joints (19-24)
more; `model="body25"` picks the 18 COCO joints by OpenPose's own names:
BODY_25 [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18] -> COCO-18 0..17.
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np

from pydeform.pose.keypoints import MAX_COORDINATE, MISSING, NUM_JOINTS, write_annotations

__all__ = ["BODY25_TO_COCO18", "read_openpose", "import_openpose"]

# COCO-18 joint k is BODY_25 joint BODY25_TO_COCO18[k] (OpenPose's doc/02_output.md names:
# BODY_25 8 is MidHip, 19-24 the feet; the other 18 share names with the COCO model).
BODY25_TO_COCO18: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_MODELS = {"coco18": 18, "body25": 25}
_SUFFIX = "_keypoints.json"


def _line_of(text: str, needle: str, occurrence: int = 0) -> int:
    """1-based line of the `occurrence`-th appearance of `needle` in `text` (1 if absent)."""
    at = -1
    for _ in range(occurrence + 1):
        at = text.find(needle, at + 1)
        if at < 0:
            return 1
    return text.count("\n", 0, at) + 1


def read_openpose(path: str | PathLike, model: str = "coco18", min_confidence: float = 0.1) -> np.ndarray:
    """One OpenPose JSON file -> (18, 2) float64 (x, y) of its most confident person in
    COCO-18 order; a joint below `min_confidence` (or undetected) is -1. No person: all -1.

    The most confident person is the one with the largest sum of confidences over the 18
    joints used. Raises ValueError naming path:line for malformed JSON, a missing or
    non-list "people", a keypoint list of the wrong length for `model` or with non-numbers,
    and for negative, non-finite or absurdly large coordinates of a confident joint.
    """
    if model not in _MODELS:
        raise ValueError(f"model must be one of {tuple(_MODELS)}, got {model!r}")
    if not isinstance(min_confidence, (int, float)) or not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be a number in [0, 1], got {min_confidence!r}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}:1: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        line = _line_of(text, '"people"')
        raise ValueError(f"{path}:{line}: expected an object with a \"people\" list (OpenPose's --write_json output)")
    joints = _MODELS[model]
    index = np.array(BODY25_TO_COCO18 if model == "body25" else range(NUM_JOINTS))
    best, best_score = np.full((NUM_JOINTS, 2), float(MISSING)), -1.0
    for number, person in enumerate(data["people"]):
        key = "pose_keypoints_2d" if isinstance(person, dict) and "pose_keypoints_2d" in person else "pose_keypoints"
        line = _line_of(text, f'"{key}"', number)
        values = person.get(key) if isinstance(person, dict) else None
        if not isinstance(values, list):
            raise ValueError(f"{path}:{line}: person {number} has no \"pose_keypoints_2d\" list")
        if len(values) != 3 * joints:
            other = [m for m, n in _MODELS.items() if 3 * n == len(values)]
            hint = f"; this looks like {other[0]} output (--model {other[0]})" if other else ""
            raise ValueError(f"{path}:{line}: person {number}: {key} has {len(values)} values, --model {model} "
                             f"expects {3 * joints} ({joints} joints x (x, y, confidence)){hint}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{path}:{line}: person {number}: {key} must hold numbers only")
        array = np.asarray(values, dtype=np.float64).reshape(joints, 3)[index]
        xy, confidence = array[:, :2], array[:, 2]
        if not np.isfinite(array).all():
            raise ValueError(f"{path}:{line}: person {number}: {key} holds a non-finite number")
        keep = confidence >= min_confidence
        keep &= confidence > 0  # 0 0 0 is OpenPose's "not detected"
        bad = keep & ((xy < 0).any(axis=1) | (xy > MAX_COORDINATE).any(axis=1))
        if bad.any():
            joint = int(np.argmax(bad))
            raise ValueError(f"{path}:{line}: person {number}: joint {joint} at {xy[joint].tolist()} is outside "
                             f"[0, {MAX_COORDINATE}] pixels (normalised coordinates? use --keypoint_scale 0)")
        score = float(confidence[keep].sum())
        if score > best_score:
            best_score = score
            best = np.where(keep[:, None], xy, float(MISSING))
    return best


def import_openpose(
    json_dir: str | PathLike,
    out: str | PathLike,
    *,
    model: str = "coco18",
    min_confidence: float = 0.1,
    image_ext: str = ".jpg",
) -> dict[str, int]:
    """Convert a folder of OpenPose `*_keypoints.json` files into an annotation CSV.

    Each `<stem>_keypoints.json` gives the row of image `<stem><image_ext>`, its most
    confident person (`read_openpose`), coordinates rounded to ints as the format stores
    them. Rows are sorted by image name. Returns counts: {"images", "no_person",
    "joints_missing"} (images with no joint, and missing joints over all rows).
    Raises FileNotFoundError without JSON files, ValueError naming file:line for a
    malformed one (nothing is written then).
    """
    json_dir = Path(json_dir)
    if not json_dir.is_dir():
        raise FileNotFoundError(f"json_dir: no such folder {json_dir}")
    if not isinstance(image_ext, str) or not image_ext.startswith(".") or "/" in image_ext:
        raise ValueError(f"image_ext must look like '.jpg', got {image_ext!r}")
    files = sorted(json_dir.glob(f"*{_SUFFIX}"))
    if not files:
        raise FileNotFoundError(f"json_dir: no *{_SUFFIX} files in {json_dir} (OpenPose's --write_json output)")
    annotations: dict[str, np.ndarray] = {}
    counts = {"images": 0, "no_person": 0, "joints_missing": 0}
    for path in files:
        xy = read_openpose(path, model, min_confidence)
        annotations[path.name[: -len(_SUFFIX)] + image_ext] = xy
        missing = (xy == MISSING).any(axis=1)
        counts["images"] += 1
        counts["no_person"] += int(missing.all())
        counts["joints_missing"] += int(missing.sum())
    write_annotations(out, dict(sorted(annotations.items())))
    return counts
