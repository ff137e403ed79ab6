"""pydeform.pose.pairs and `pydeform pose make-pairs`: the published pair rule checked
against pairs enumerated by hand-written loops, the identity rules on Market-1501 and
DeepFashion names, and the errors naming file and line."""
import re

import numpy as np
import pytest

from pydeform.cli import main
from pydeform.data.pose_pairs import _read_pairs
from pydeform.pose import JOINT, write_annotations
from pydeform.pose.pairs import identity_of, make_pairs, write_pairs

FULL = np.array([[16, 10], [16, 16], [11, 16], [9, 24], [8, 31], [21, 16], [23, 24], [24, 31], [13, 32],
                 [12, 43], [12, 54], [19, 32], [20, 43], [20, 54], [17, 9], [15, 9], [18, 10], [14, 10]],
                dtype=float)  # fmt: skip


def without(*joints):
    xy = FULL.copy()
    for joint in joints:
        xy[JOINT[joint]] = -1
    return xy


MARKET = {
    "0002_c1s1_000451_03.jpg": FULL,
    "0002_c1s1_000551_01.jpg": without("Lhip"),  # dropped: a hip is missing
    "0002_c2s1_000301_01.jpg": without("Rwri", "Lank"),  # kept: limbs may be missing
    "0003_c1s1_000100_01.jpg": FULL,
    "0000_c1s1_000001_01.jpg": FULL,  # Market distractor
    "-1_c1s1_000002_01.jpg": FULL,  # Market junk
    "0002_c3s1_000801_02.jpg": FULL,
    "0004_c1s1_000100_01.jpg": without("Rsho"),  # the only image of 0004 left has no pair
    "0004_c2s1_000100_01.jpg": FULL,
}


def reference_pairs(poses, person, keep):
    """All ordered pairs of distinct kept images with the same person, by brute force."""
    names = [n for n in poses if keep(n, poses[n])]
    return [(a, b) for a in names for b in names if a != b and person(a) == person(b)]


def torso(name, xy):
    return all((xy[JOINT[j]] != -1).all() for j in ("Rsho", "Lsho", "Rhip", "Lhip"))


def test_market_rule(tmp_path):
    path = tmp_path / "market-annotation-train.csv"
    write_annotations(path, MARKET)
    pairs, counts = make_pairs(path)
    want = reference_pairs(MARKET, lambda n: n.split("_")[0],
                           lambda n, xy: torso(n, xy) and not n.startswith(("0000", "-1")))
    assert sorted(pairs) == sorted(want) and len(pairs) == 6 + 0
    assert counts == {"images": 9, "kept": 5, "identities": 3, "pairs": 6}
    # Keeping distractors: 0000 and -1 become identities of their own (one image each, no pair).
    pairs, counts = make_pairs(path, drop_distractors=False)
    assert counts["kept"] == 7 and len(pairs) == 6
    # Fewer required joints: the image without Lhip joins person 0002 (4 images: 12 pairs).
    pairs, _ = make_pairs(path, required=("Rsho", "Lsho"))
    assert sum(a.startswith("0002") for a, _ in pairs) == 12
    # min_joints: FULL has 18 joints, the Rwri/Lank one 16.
    pairs, counts = make_pairs(path, min_joints=17)
    assert counts["kept"] == 4 and ("0002_c2s1_000301_01.jpg" not in {a for a, _ in pairs})


def test_deepfashion_rule(tmp_path):
    names = [
        "fashionWOMENBlouses_Shirtsid0000063504_1front.jpg", "fashionWOMENBlouses_Shirtsid0000063504_2side.jpg",
        "fashionWOMENBlouses_Shirtsid0000063504_7additional.jpg", "fashionWOMENBlouses_Shirtsid0000063505_1front.jpg",
        "fashionMENDenimid0000008001_1front.jpg", "fashionMENDenimid0000008001_2side.jpg",
    ]  # fmt: skip
    poses = {name: FULL for name in names}
    path = tmp_path / "fasion-annotation-train.csv"
    write_annotations(path, poses)
    pairs, counts = make_pairs(path, identity="deepfashion")
    # The Deformable GAN's split_fasion_dataset.py: identity = path parts 1-3 joined plus the
    # outfit number, i.e. everything before the "_<view><pose>.jpg" suffix.
    want = reference_pairs(poses, lambda n: n[: n.rindex("_")], torso)
    assert pairs == want and counts["identities"] == 3 and len(pairs) == 3 * 2 + 0 + 2
    assert identity_of(names[0], "deepfashion") == "fashionWOMENBlouses_Shirtsid0000063504"
    assert identity_of("0002_c1s1_000451_03.jpg", "market") == "0002"
    assert identity_of("-1_c1s1_000451_03.jpg", "market") == "-1"
    # A user regular expression: the item id only (all outfits of an item together).
    pairs, counts = make_pairs(path, identity=r"id(\d{8})")
    assert counts["identities"] == 2 and len(pairs) == 4 * 3 + 2


def test_max_pairs_is_a_seeded_subset(tmp_path):
    path = tmp_path / "a.csv"
    write_annotations(path, {f"0001_c1s1_{i:06d}_01.jpg": FULL for i in range(6)})
    every, _ = make_pairs(path)
    some, counts = make_pairs(path, max_pairs=7, seed=3)
    assert len(every) == 30 and counts["pairs"] == 7
    assert some == [p for p in every if p in set(some)]  # a subset, in file order
    assert make_pairs(path, max_pairs=7, seed=3)[0] == some != make_pairs(path, max_pairs=7, seed=4)[0]
    assert make_pairs(path, max_pairs=100)[0] == every


def test_write_pairs_reads_back(tmp_path):
    path = tmp_path / "market-pairs-train.csv"
    write_pairs(path, [("a.jpg", "b.jpg"), ("b.jpg", "a.jpg")])
    assert _read_pairs(path) == [(2, "a.jpg", "b.jpg"), (3, "b.jpg", "a.jpg")]
    with pytest.raises(ValueError, match="cannot be written"):
        write_pairs(path, [("a,b.jpg", "c.jpg")])


def test_errors_name_file_and_line(tmp_path):
    path = tmp_path / "x-annotation-train.csv"
    write_annotations(path, {"0001_c1s1_000001_01.jpg": FULL, "photo.jpg": FULL})
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: image name 'photo.jpg' does not match")):
        make_pairs(path)
    path.write_text("name:keypoints_y:keypoints_x\na.jpg: [1]: [2]\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: ")):
        make_pairs(path)
    with pytest.raises(ValueError, match="identity: '\\(' is neither"):
        make_pairs(path, identity="(")
    with pytest.raises(ValueError, match="required: unknown joint names \\['Rshoulder'\\]"):
        make_pairs(path, required=("Rshoulder",))
    with pytest.raises(ValueError, match="min_joints"):
        make_pairs(path, min_joints=19)
    with pytest.raises(ValueError, match="max_pairs"):
        make_pairs(path, max_pairs=0)


def test_cli(tmp_path, capsys):
    annotation = tmp_path / "market-annotation-train.csv"
    write_annotations(annotation, MARKET)
    out = tmp_path / "market-pairs-train.csv"
    assert main(["pose", "make-pairs", str(annotation), "--out", str(out)]) == 0
    assert "5 of 9 images kept, 3 identities, 6 pairs" in capsys.readouterr().out
    assert [(a, b) for _, a, b in _read_pairs(out)] == make_pairs(annotation)[0]
    assert main(["pose", "make-pairs", str(annotation), "--out", str(out), "--require", "", "--keep-distractors"]) == 0
    assert "9 of 9 images kept" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["pose", "make-pairs", str(annotation), "--out", str(out), "--identity", r"^id(\d+)"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{annotation}:2: image name '0002_c1s1_000451_03.jpg' does not match" in err
