"""The published pair rule: which (source, target) images of one person train and test a
pose-transfer model.

The Deformable GAN's `create_pairs_dataset.py` (AliaksandrSiarohin/pose-gan; Pose-Transfer
copies it) keeps the images whose pose has both shoulders and both hips, drops Market-1501's
distractor and junk images (names starting with "0000" or "-1"), and pairs every image with
every other image of the same identity, both orders. The identity comes from the file name:

- market: the person id before the first "_" (`0002_c1s1_000451_03.jpg` -> `0002`);
- deepfashion: the name up to its last "_", i.e. the item id and outfit number as the
  Deformable GAN's `split_fasion_dataset.py` builds the names
  (`fashionWOMENBlouses_Shirtsid0000063504_1front.jpg` -> `...id0000063504`);
- or any regular expression whose first group (or whole match) is the identity.

The authors then sample a seeded subset of the test pairs (12000 for Market-1501);
`max_pairs` does the same.
"""
from __future__ import annotations

import itertools
import re
from os import PathLike
from pathlib import Path

import numpy as np

from pydeform.pose.keypoints import JOINT, JOINT_NAMES, _read_annotations

__all__ = ["IDENTITY_RULES", "REQUIRED_JOINTS", "identity_of", "make_pairs", "write_pairs"]

IDENTITY_RULES: dict[str, str] = {
    "market": r"^(-?\d+)_",
    "deepfashion": r"^(.+)_[^_]*$",
}
REQUIRED_JOINTS: tuple[str, ...] = ("Rsho", "Lsho", "Rhip", "Lhip")
_MARKET_DISTRACTORS = ("0000", "-1")


def _compile(identity: str) -> re.Pattern:
    pattern = IDENTITY_RULES.get(identity, identity)
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"identity: {identity!r} is neither {tuple(IDENTITY_RULES)} nor a valid regular "
                         f"expression ({exc})") from None


def identity_of(name: str, identity: str | re.Pattern = "market") -> str | None:
    """The identity of image `name` under a rule (see the module docstring), None if the
    name does not match it."""
    pattern = identity if isinstance(identity, re.Pattern) else _compile(identity)
    match = pattern.search(name)
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def make_pairs(
    annotation: str | PathLike,
    *,
    identity: str = "market",
    required: tuple[str, ...] = REQUIRED_JOINTS,
    min_joints: int = 0,
    drop_distractors: bool | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Ordered (from, to) pairs of the images in an annotation CSV.

    annotation: `<name>-annotation-<split>.csv` (read with `read_annotations`).
    identity: "market", "deepfashion" or a regular expression (module docstring).
    required: joints an image must have (default both shoulders and both hips, the
        published rule); min_joints: and at least this many joints in all.
    drop_distractors: drop names starting with "0000" or "-1" (Market-1501's distractors
        and junk); default True for identity="market", False otherwise.
    max_pairs: keep a seeded random subset of this many pairs (file order kept).
    Returns (pairs, counts) with counts {"images", "kept", "identities", "pairs"}: pairs in
    annotation order, grouped by identity in order of first appearance.
    Raises ValueError naming annotation:line for a name the identity rule does not match,
    and for bad arguments.
    """
    pattern = _compile(identity)
    unknown = [j for j in required if j not in JOINT]
    if unknown:
        raise ValueError(f"required: unknown joint names {unknown}; the names are {list(JOINT_NAMES)}")
    if isinstance(min_joints, bool) or not isinstance(min_joints, int) or not 0 <= min_joints <= len(JOINT_NAMES):
        raise ValueError(f"min_joints must be an int in [0, 18], got {min_joints!r}")
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValueError(f"max_pairs must be a positive int or None, got {max_pairs!r}")
    if drop_distractors is None:
        drop_distractors = identity == "market"
    poses, lines = _read_annotations(annotation)
    groups: dict[str, list[str]] = {}
    kept = 0
    for name, keypoints in poses.items():
        if drop_distractors and name.startswith(_MARKET_DISTRACTORS):
            continue
        present = ~keypoints.missing
        if not all(present[JOINT[j]] for j in required) or present.sum() < min_joints:
            continue
        person = identity_of(name, pattern)
        if person is None:
            raise ValueError(f"{annotation}:{lines[name]}: image name {name!r} does not match the identity rule "
                             f"{pattern.pattern!r} (--identity)")
        groups.setdefault(person, []).append(name)
        kept += 1
    pairs = [pair for names in groups.values() for pair in itertools.permutations(names, 2)]
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False))
        pairs = [pairs[i] for i in keep]
    counts = {"images": len(poses), "kept": kept, "identities": len(groups), "pairs": len(pairs)}
    return pairs, counts


def write_pairs(path: str | PathLike, pairs: list[tuple[str, str]]) -> None:
    """Write `from,to` rows, the format `pydeform.data.PosePairs` reads."""
    for a, b in pairs:
        for name in (a, b):
            if "," in name or '"' in name or "\n" in name:
                raise ValueError(f"pairs: image name {name!r} cannot be written to the from,to CSV unquoted")
    Path(path).write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs), encoding="utf-8")
