"""pydeform.pose.openpose and `pydeform pose import-openpose`: the hand-written OpenPose
files of openpose_fixtures/ read back against the JSON decoded here, joint by joint, the
BODY_25 -> COCO-18 mapping checked by OpenPose's joint names, and every malformed input's
error naming file and line."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pydeform.cli import main
from pydeform.pose import read_annotations
from pydeform.pose.openpose import import_openpose, read_openpose

FIXTURES = Path(__file__).parent / "openpose_fixtures"
COCO_FILE = FIXTURES / "0002_c1s1_000451_03_keypoints.json"
OLD_FILE = FIXTURES / "0002_c2s1_000500_01_keypoints.json"
EMPTY_FILE = FIXTURES / "0003_c2s1_000100_01_keypoints.json"
BODY25_FILE = FIXTURES / "fashionWOMENDressesid0000000201_1front_keypoints.json"

# OpenPose's names (doc/02_output.md), for an independent check of the mapping.
COCO_NAMES = ["Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee",
              "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar"]  # fmt: skip
BODY25_NAMES = ["Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip",
                "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe",
                "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]  # fmt: skip


def expected(values, names, min_confidence=0.1):
    """(18, 2) from a flat x, y, c list: the joints picked by name, -1 below the threshold."""
    triples = np.asarray(values, float).reshape(-1, 3)
    out = np.full((18, 2), -1.0)
    for k, name in enumerate(COCO_NAMES):
        x, y, c = triples[names.index(name)]
        if c >= min_confidence and c > 0:
            out[k] = x, y
    return out


def test_coco_file():
    values = json.loads(COCO_FILE.read_text())["people"][0]["pose_keypoints_2d"]
    xy = read_openpose(COCO_FILE)
    np.testing.assert_array_equal(xy, expected(values, COCO_NAMES))
    assert (xy[4] == -1).all() and (xy[16] == -1).all()  # wrist at 0.05, ear undetected
    np.testing.assert_array_equal(read_openpose(COCO_FILE, min_confidence=0.01), expected(values, COCO_NAMES, 0.01))
    np.testing.assert_array_equal(read_openpose(OLD_FILE), xy)  # OpenPose 1.0's "pose_keypoints"
    assert (read_openpose(EMPTY_FILE) == -1).all()


def test_body25_keeps_the_most_confident_person_and_maps_by_name():
    people = json.loads(BODY25_FILE.read_text())["people"]
    xy = read_openpose(BODY25_FILE, model="body25")
    np.testing.assert_array_equal(xy, expected(people[1]["pose_keypoints_2d"], BODY25_NAMES))
    # With a threshold above the confident person's ankles, it still wins on the sum.
    assert (read_openpose(BODY25_FILE, model="body25", min_confidence=0.8)[[10, 13]] == -1).all()
    with pytest.raises(ValueError, match=re.escape(f"{BODY25_FILE}:2: person 0: pose_keypoints_2d has 75 values, "
                                                   "--model coco18 expects 54") + ".*--model body25"):
        read_openpose(BODY25_FILE)


def test_import_writes_the_annotation_csv(tmp_path):
    folder = tmp_path / "json"
    folder.mkdir()
    for path in (COCO_FILE, EMPTY_FILE, OLD_FILE):
        shutil.copy(path, folder)
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "market-annotation-train.csv"
    counts = import_openpose(folder, out)
    poses = read_annotations(out)
    assert list(poses) == ["0002_c1s1_000451_03.jpg", "0002_c2s1_000500_01.jpg", "0003_c2s1_000100_01.jpg"]
    want = np.floor(read_openpose(COCO_FILE) + 0.5)
    want[read_openpose(COCO_FILE) == -1] = -1
    np.testing.assert_array_equal(poses["0002_c1s1_000451_03.jpg"].xy, want)
    assert poses["0002_c1s1_000451_03.jpg"].xy[0].tolist() == [30, 13]  # (30.4, 12.6) rounded
    assert poses["0003_c2s1_000100_01.jpg"].missing.all()
    assert counts == {"images": 3, "no_person": 1, "joints_missing": 2 + 2 + 18}
    import_openpose(folder, out, image_ext=".png")
    assert next(iter(read_annotations(out))).endswith(".png")


def write(tmp_path, text, name="x_keypoints.json"):
    path = tmp_path / name
    path.write_text(text)
    return path


PERSON = json.dumps([1.0, 2.0, 0.9] * 18)


@pytest.mark.parametrize("text, line, message", [
    ('{"people": [\n{"pose_keypoints_2d": [1, 2,]}\n]}', 2, "not valid JSON"),
    ("", 1, "not valid JSON"),
    ('{"version": 1.3}', 1, 'expected an object with a "people" list'),
    ('{"version": 1.3,\n "people": {}}', 2, 'expected an object with a "people" list'),
    ('[1, 2]', 1, 'expected an object with a "people" list'),
    ('{"people": [\n{"pose_keypoints_2d": ' + PERSON + '},\n{"face_keypoints_2d": []}]}', 1,
     'person 1 has no "pose_keypoints_2d" list'),
    ('{"people": [\n{"pose_keypoints_2d": ' + PERSON + '},\n{"pose_keypoints_2d": [1, 2, 3]}]}', 3,
     "person 1: pose_keypoints_2d has 3 values, --model coco18 expects 54"),
    ('{"people": [\n{"pose_keypoints_2d": ' + PERSON.replace("1.0", '"a"', 1) + '}]}', 2, "numbers only"),
    ('{"people": [\n{"pose_keypoints_2d": ' + PERSON.replace("1.0", "-5.0", 1) + '}]}', 2,
     r"joint 0 at \[-5.0, 2.0\] is outside"),
    ('{"people": [\n{"pose_keypoints_2d": ' + PERSON.replace("1.0", "1e20", 1) + '}]}', 2, "is outside"),
    ('{"people": [\n{"pose_keypoints_2d": ' + PERSON.replace("1.0", "NaN", 1) + '}]}', 2, "non-finite"),
])  # fmt: skip
def test_malformed_files_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: ") + ".*" + message):
        read_openpose(path)


def test_low_confidence_joint_with_bad_coordinates_is_just_missing(tmp_path):
    values = [1.0, 2.0, 0.9] * 18
    values[0:3] = [-5.0, 2.0, 0.05]  # below the threshold: not checked, missing
    xy = read_openpose(write(tmp_path, json.dumps({"people": [{"pose_keypoints_2d": values}]})))
    assert (xy[0] == -1).all() and (xy[1] == [1, 2]).all()


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="model must be one of"):
        read_openpose(COCO_FILE, model="mpi")
    with pytest.raises(ValueError, match="min_confidence"):
        read_openpose(COCO_FILE, min_confidence=2)
    with pytest.raises(FileNotFoundError, match="no \\*_keypoints.json files"):
        import_openpose(tmp_path, tmp_path / "a.csv")
    with pytest.raises(FileNotFoundError, match="json_dir: no such folder"):
        import_openpose(tmp_path / "nowhere", tmp_path / "a.csv")
    with pytest.raises(ValueError, match="image_ext"):
        import_openpose(FIXTURES, tmp_path / "a.csv", image_ext="jpg")
    (tmp_path / "bad_keypoints.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"bad_keypoints\.json:1: not UTF-8"):
        import_openpose(tmp_path, tmp_path / "a.csv")


def test_cli(tmp_path, capsys):
    folder = tmp_path / "json"
    folder.mkdir()
    shutil.copy(BODY25_FILE, folder)
    out = tmp_path / "fasion-annotation-test.csv"
    assert main(["pose", "import-openpose", str(folder), "--out", str(out), "--model", "body25"]) == 0
    assert "wrote 1 rows" in capsys.readouterr().out
    pose = read_annotations(out)["fashionWOMENDressesid0000000201_1front.jpg"]
    np.testing.assert_array_equal(pose.xy, read_openpose(BODY25_FILE, model="body25"))
    with pytest.raises(SystemExit) as exit_info:
        main(["pose", "import-openpose", str(folder), "--out", str(out)])  # coco18 on BODY_25 files
    assert exit_info.value.code == 2 and "--model body25" in capsys.readouterr().err
