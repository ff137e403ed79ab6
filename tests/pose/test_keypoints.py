import json
import re

import numpy as np
import pytest
import torch

from pydeform.pose import (
    JOINT,
    JOINT_NAMES,
    MIRROR,
    Keypoints,
    heatmaps,
    read_annotations,
    write_annotations,
)

HEADER = "name:keypoints_y:keypoints_x\n"


def test_joint_tables():
    assert len(JOINT_NAMES) == 18 and JOINT["nose"] == 0 and JOINT["Rank"] == 10 and JOINT["Rear"] == 17
    for j, name in enumerate(JOINT_NAMES):
        mirrored = JOINT_NAMES[MIRROR[j]]
        assert MIRROR[MIRROR[j]] == j
        if name[0] in "RL":
            assert mirrored == {"R": "L", "L": "R"}[name[0]] + name[1:]
        else:
            assert mirrored == name  # nose, neck


def test_keypoints_structure(standing):
    xy = standing.copy()
    xy[3] = [-1, 40]  # one coordinate -1 marks the joint missing
    xy[4] = [np.nan, 5]
    kp = Keypoints(xy)
    assert kp.xy.shape == (18, 2) and kp.xy.dtype == np.float64
    assert kp.missing.tolist() == [j in (3, 4) for j in range(18)]
    np.testing.assert_array_equal(kp.xy[[3, 4]], -1)
    np.testing.assert_array_equal(kp.xy[5:], standing[5:])
    with pytest.raises(ValueError):
        kp.xy[0, 0] = 3.0  # read-only
    xy[0] = [1, 1]
    assert kp.xy[0, 0] == standing[0, 0]  # a copy, not a view
    torch.testing.assert_close(kp.to_tensor(torch.float64), torch.tensor(kp.xy))
    # from_yx takes the file's order: rows first, then columns.
    np.testing.assert_array_equal(Keypoints.from_yx(standing[:, 1], standing[:, 0]).xy, standing)


def test_keypoints_rejects_bad_shape():
    with pytest.raises(ValueError, match="xy"):
        Keypoints(np.zeros((17, 2)))
    with pytest.raises(ValueError, match="ys and xs"):
        Keypoints.from_yx([0] * 18, [0] * 17)


def test_csv_round_trip(tmp_path, standing, striding):
    a = standing.copy()
    a[[3, 14]] = -1
    b = striding + 0.3  # rounded on writing
    poses = {"0002_c1s1_000451_03.jpg": Keypoints(a), "odd:name.jpg": torch.from_numpy(b), "c.jpg": Keypoints(striding)}
    path = tmp_path / "market-annotation-train.csv"
    write_annotations(path, poses)
    back = read_annotations(path)
    assert list(back) == list(poses)
    np.testing.assert_array_equal(back["0002_c1s1_000451_03.jpg"].xy, a)
    np.testing.assert_array_equal(back["odd:name.jpg"].xy, striding)
    assert back["0002_c1s1_000451_03.jpg"].missing.sum() == 2
    # The layout of the original files: y list first, then x.
    line = path.read_text().splitlines()[3]
    name, ys, xs = line.split(": ")
    assert name == "c.jpg" and json.loads(ys) == striding[:, 1].astype(int).tolist()
    assert json.loads(xs) == striding[:, 0].astype(int).tolist()


def test_reads_original_layout(tmp_path):
    ys = [20, 32, 32, 48, -1, 32, 48, 62, 64, 86, 108, 64, 86, 108, 17, 17, 19, 19]
    xs = [64, 64, 54, 50, -1, 74, 78, 80, 58, 56, 55, 70, 72, 73, 67, 61, 70, 58]
    path = tmp_path / "fashion-annotation-test.csv"
    path.write_text(HEADER + f"img1.jpg: {ys}: {xs}\n\n" + f"img2.jpg:{json.dumps(xs)}:{json.dumps(ys)}\n")
    poses = read_annotations(path)
    assert list(poses) == ["img1.jpg", "img2.jpg"]
    kp = poses["img1.jpg"]
    assert kp.xy[0].tolist() == [64, 20] and kp.xy[3].tolist() == [50, 48]  # (x, y)
    assert kp.missing.tolist() == [j == 4 for j in range(18)]


GOOD_ROW = f"good.jpg: {[1] * 18}: {[2] * 18}\n"


@pytest.mark.parametrize(
    "row, message",
    [
        ("nocolons\n", "3 ':'-separated fields"),
        (f"bad.jpg: {[1] * 18}\n", "3 ':'-separated fields"),
        (f"bad.jpg: {[1] * 17}: {[2] * 18}\n", "keypoints_y must be a list of 18"),
        (f"bad.jpg: {[1] * 18}: [1, 2,\n", "keypoints_x is not a JSON list"),
        (f"bad.jpg: {[1.5] * 18}: {[2] * 18}\n", "keypoints_y must hold ints"),
        (f"bad.jpg: {[1] * 18}: {[-2] * 18}\n", "negative coordinate"),
        (f"bad.jpg: {[1] * 17 + [100001]}: {[2] * 18}\n", "keypoints_y has a coordinate beyond 100000"),
        (f"bad.jpg: {[1] * 18}: {[10**19] + [2] * 17}\n", "keypoints_x has a coordinate beyond 100000"),
        (f": {[1] * 18}: {[2] * 18}\n", "empty image name"),
        (GOOD_ROW, "appears twice"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "x-annotation-train.csv"
    path.write_text(HEADER + GOOD_ROW + row)
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: ") + ".*" + re.escape(message)):
        read_annotations(path)


@pytest.mark.parametrize("header", ["name,keypoints_y,keypoints_x\n", "name:keypoints_x:keypoints_y\n", ""])
def test_bad_header_names_line_1(tmp_path, header):
    path = tmp_path / "x-annotation-train.csv"
    path.write_text(header + (GOOD_ROW if header else ""))
    with pytest.raises(ValueError, match=re.escape(f"{path}:1: ") + "expected the header"):
        read_annotations(path)


def test_writer_validation(tmp_path, standing):
    path = tmp_path / "out.csv"
    shifted = standing.copy()
    shifted[5] = [-3, 10]
    with pytest.raises(ValueError, match="Lsho"):
        write_annotations(path, {"a.jpg": shifted})
    with pytest.raises(ValueError, match="image name"):
        write_annotations(path, {" a.jpg": standing})
    far = standing.copy()
    far[3] = [1e19, 10]
    with pytest.raises(ValueError, match=r"Relb .* beyond 100000 pixels"):
        write_annotations(path, {"a.jpg": far})
    with pytest.raises(ValueError, match="batch"):
        write_annotations(path, {"a.jpg": np.stack([standing, standing])})
    with pytest.raises(TypeError, match="annotations"):
        write_annotations(path, [standing])


def test_keypoint_argument_validation(standing):
    with pytest.raises(ValueError, match="keypoints must have shape"):
        heatmaps(np.zeros((18, 3)), (8, 8))
    with pytest.raises(ValueError, match="keypoints must have shape"):
        heatmaps(torch.zeros(2, 2, 18, 2), (8, 8))
    with pytest.raises(TypeError, match="keypoints must be"):
        heatmaps("nose", (8, 8))
    with pytest.raises(TypeError, match="keypoints must hold real numbers"):
        heatmaps(torch.zeros(18, 2, dtype=torch.bool), (8, 8))
    with pytest.raises(TypeError, match="size"):
        heatmaps(standing, (8.0, 8))
    with pytest.raises(ValueError, match="size"):
        heatmaps(standing, (0, 8))
