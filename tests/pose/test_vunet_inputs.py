"""The Variational U-Net's inputs: the original's stickman, the 8 part crops (against a
direct numpy warp of the same boxes), and the safe index.p reader."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from pydeform.data.vunet import (
    IndexImages,
    PoseImages,
    PoseTransfers,
    UnsafePickleError,
    load_index,
)
from pydeform.pose import JOINT, vunet_stickman, vunet_thickness
from pydeform.pose.vunet_parts import (
    VUNET_PARTS,
    part_crops,
    part_homographies,
    part_quads,
)


def pose(**overrides) -> np.ndarray:
    """A standing figure in a 64x64 frame; overrides set joints (None: missing)."""
    xy = {"nose": (32, 8), "neck": (32, 16), "Rsho": (24, 17), "Relb": (20, 27), "Rwri": (18, 36),
          "Lsho": (40, 17), "Lelb": (44, 27), "Lwri": (46, 36), "Rhip": (27, 36), "Rkne": (26, 47),
          "Rank": (26, 58), "Lhip": (37, 36), "Lkne": (38, 47), "Lank": (38, 58), "Leye": (34, 6),
          "Reye": (30, 6), "Lear": (36, 7), "Rear": (28, 7)}  # fmt: skip
    out = np.full((18, 2), -1.0)
    for name, value in {**xy, **overrides}.items():
        if value is not None:
            out[JOINT[name]] = value
    return out


V127 = np.float32(127 / 127.5 - 1)


# ----------------------------------------------------------------------------- stickman


def test_stickman_channels_values_and_order():
    image = vunet_stickman(pose(), (64, 64)).numpy()
    assert image.shape == (3, 64, 64)
    assert set(np.unique(image)) <= {-1.0, V127, 1.0}
    assert image[2, 26, 32] == 1 and image[2, 5, 5] == -1  # torso filled, background -1
    assert image[0, 47, 26] == 1 and image[1, 47, 26] == -1  # right knee: channel 0 only
    assert image[1, 47, 38] == 1 and image[0, 47, 38] == -1  # left knee: channel 1 only
    # neck: shoulders' midpoint (32, 17) to the nose (32, 8) at 127 in both limb channels,
    # drawn after the limbs; the nose-eye lines (255) after it.
    assert image[0, 12, 32] == V127 and image[1, 12, 32] == V127
    assert image[0, 6, 30] == 1 and image[1, 6, 34] == 1 and image[0, 6, 34] == -1
    assert vunet_thickness(128) == 3 and vunet_thickness(256) == 6 and vunet_thickness(64) == 1
    assert vunet_thickness(32) == 1  # int(3 * 32 / 128) = 0, which OpenCV refuses


def test_stickman_missing_joint_rules():
    no_eye = vunet_stickman(pose(Leye=None), (64, 64)).numpy()
    assert no_eye[0, 6, 30] == -1  # the eye lines need the nose and both eyes
    no_nose = vunet_stickman(pose(nose=None), (64, 64)).numpy()
    assert no_nose[0, 12, 32] == -1
    # No neck without both shoulders: the original's missing joints are far negative, and so is
    # the midpoint of a missing and a present shoulder (with -1 for missing it would not be).
    assert (vunet_stickman(pose(Rsho=None), (64, 64)).numpy()[:2] != V127).all()
    no_hip = vunet_stickman(pose(Rhip=None), (64, 64)).numpy()
    assert (no_hip[2] == -1).all() and no_hip[0, 47, 26] == 1  # no torso; the shin stays
    batch = vunet_stickman(torch.tensor(np.stack([pose(), pose(Leye=None)])), (64, 64), dtype=torch.float64)
    torch.testing.assert_close(batch[1], torch.from_numpy(no_eye).double())
    with pytest.raises(ValueError, match="keypoints"):
        vunet_stickman(np.zeros((17, 2)), (64, 64))


def _opencv_stickman(cv2, xy: np.ndarray, size: int) -> np.ndarray:
    """batches.py make_joint_img, with OpenCV, on COCO-18 keypoints."""
    thickness = int(3 * size / 128)
    imgs = [np.zeros((size, size), np.uint8) for _ in range(3)]
    point = lambda p: tuple(int(v) for v in np.int_(p))
    body = np.array([[xy[JOINT[n]] for n in ("Lhip", "Lsho", "Rsho", "Rhip")]])
    if body.min() >= 0:
        cv2.fillPoly(imgs[2], np.int_(body), 255)
    for channel, side in ((0, "R"), (1, "L")):
        for a, b in (("ank", "kne"), ("kne", "hip"), ("hip", "sho"), ("sho", "elb"), ("elb", "wri")):
            ends = xy[[JOINT[side + a], JOINT[side + b]]]
            if ends.min() >= 0:
                cv2.line(imgs[channel], point(ends[0]), point(ends[1]), 255, thickness)
    neck, nose = point(0.5 * (xy[JOINT["Rsho"]] + xy[JOINT["Lsho"]])), point(xy[JOINT["nose"]])
    if min(neck) >= 0 and min(nose) >= 0:
        for channel in (0, 1):
            cv2.line(imgs[channel], neck, nose, 127, thickness)
    leye, reye = point(xy[JOINT["Leye"]]), point(xy[JOINT["Reye"]])
    if min(reye) >= 0 and min(leye) >= 0 and min(nose) >= 0:
        cv2.line(imgs[0], nose, reye, 255, thickness)
        cv2.line(imgs[1], nose, leye, 255, thickness)
    return np.stack(imgs)


def test_stickman_against_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for size in (128, 256):
        differing = total = 0
        for _ in range(20):
            xy = pose() * size / 64 + rng.normal(0, size / 40, (18, 2))
            xy[rng.random(18) < 0.1] = -1
            ours = np.round((vunet_stickman(xy, (size, size)).numpy() + 1) * 127.5).astype(np.uint8)
            theirs = _opencv_stickman(cv2, np.where(xy == -1, -size, xy), size)  # the original's missing joints
            differing += (ours != theirs).sum()
            total += ours.size
        assert differing / total < 0.003, (size, differing / total)  # boundary pixels of thick lines


# ----------------------------------------------------------------------------- part crops


def test_part_quads_follow_the_original_rules():
    xy = pose()
    quads, valid = part_quads(xy, 64)
    assert valid.all() and quads.shape == (8, 4, 2)
    np.testing.assert_allclose(quads[0], xy[[JOINT["Lsho"], JOINT["Lhip"], JOINT["Rhip"], JOINT["Rsho"]]])
    # limb Lsho-Lelb: corners p0 +- n/4, p1 -+ n/4 with n the segment turned by 90 degrees
    p0, p1 = xy[JOINT["Lsho"]], xy[JOINT["Lelb"]]
    n = np.array([-(p1 - p0)[1], (p1 - p0)[0]])
    np.testing.assert_allclose(quads[2], [p0 + n / 4, p0 - n / 4, p1 - n / 4, p1 + n / 4])
    # head: from the shoulders' midpoint m to m + 2 (nose - m), as wide as long
    m = (xy[JOINT["Lsho"]] + xy[JOINT["Rsho"]]) / 2
    top = m + 2 * (xy[JOINT["nose"]] - m)
    nh = np.array([-(m - top)[1], (m - top)[0]])
    np.testing.assert_allclose(quads[1], [top - nh / 2, m - nh / 2, m + nh / 2, top + nh / 2])
    # no nose: the square on the shoulder line, normal pointing up
    quads, valid = part_quads(pose(nose=None), 64)
    ls, rs = xy[JOINT["Lsho"]], xy[JOINT["Rsho"]]
    up = np.array([-(rs - ls)[1], (rs - ls)[0]])
    up = -up if up[1] > 0 else up
    np.testing.assert_allclose(quads[1], [ls + up, ls, rs, rs + up])
    # no left knee: the hip straight down to row 63; no left elbow: both left arm parts empty
    quads, valid = part_quads(pose(Lkne=None, Lelb=None), 64)
    hip = xy[JOINT["Lhip"]]
    np.testing.assert_allclose(quads[6][0], hip + np.array([-(63 - hip[1]), 0]) / 4)
    assert valid.tolist() == [True, True, False, False, True, True, True, True]
    assert (quads[2] == 0).all()


def _numpy_crop(image: np.ndarray, quad: np.ndarray, box: int) -> np.ndarray:
    """cv2.warpPerspective(image, getPerspectiveTransform(quad, corners), BORDER_REPLICATE)
    done directly: the forward map estimated by scikit-image, inverted, bilinear sampling with
    the sample point clamped into the image."""
    from skimage.transform import ProjectiveTransform

    corners = np.array([[0, 0], [0, box], [box, box], [box, 0]], dtype=np.float64)
    if hasattr(ProjectiveTransform, "from_estimate"):  # scikit-image >= 0.26
        forward = ProjectiveTransform.from_estimate(quad, corners)
    else:
        forward = ProjectiveTransform()
        assert forward.estimate(quad, corners)
    inverse = np.linalg.inv(forward.params)
    c, h, w = image.shape
    out = np.zeros((c, box, box))
    for i in range(box):
        for j in range(box):
            u, v, s = inverse @ np.array([j, i, 1.0])
            x, y = np.clip(u / s, 0, w - 1), np.clip(v / s, 0, h - 1)
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            fx, fy = x - x0, y - y0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * image[:, y0, x0] + fx * image[:, y0, x1])
                            + fy * ((1 - fx) * image[:, y1, x0] + fx * image[:, y1, x1]))  # fmt: skip
    return out


def test_part_crops_match_a_direct_numpy_warp():
    rng = np.random.default_rng(1)
    poses = [pose(), pose(nose=None, Rkne=None, Lwri=None)]
    images = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 64, 64))).float()
    mats, valid = zip(*(part_homographies(xy, (64, 64), box_factor=2) for xy in poses))
    crops = part_crops(images, torch.stack(mats), torch.stack(valid), (16, 16))
    assert crops.shape == (2, 24, 16, 16)
    for b, xy in enumerate(poses):
        quads, ok = part_quads(xy, 64)
        for k in range(len(VUNET_PARTS)):
            got = crops[b, 3 * k : 3 * k + 3].numpy()
            if not ok[k]:
                assert (got == 0).all()
                continue
            np.testing.assert_allclose(got, _numpy_crop(images[b].double().numpy(), quads[k], 16), atol=2e-4)
    assert valid[1].tolist() == [1, 1, 1, 0, 1, 1, 1, 1]


def test_part_crop_errors():
    mats, valid = part_homographies(pose(), (64, 64), 1)
    with pytest.raises(ValueError, match="images"):
        part_crops(torch.zeros(1, 4, 64, 64), mats[None], valid[None], (32, 32))
    with pytest.raises(ValueError, match="homographies"):
        part_crops(torch.zeros(1, 3, 64, 64), mats, valid[None], (32, 32))
    with pytest.raises(ValueError, match="valid"):
        part_crops(torch.zeros(1, 3, 64, 64), mats[None], valid, (32, 32))
    with pytest.raises(ValueError, match="18, 2"):
        part_quads(np.zeros((5, 2)), 64)
    # a degenerate limb (both ends on one pixel) gives an empty crop, not a crash
    _, valid = part_homographies(pose(Lelb=(40, 17)), (64, 64), 1)
    assert valid[2] == 0


# ----------------------------------------------------------------------------- index.p


def write_index(root, protocol=4) -> None:
    rng = np.random.default_rng(0)
    names = ["rankle", "rknee", "rhip", "lhip", "lknee", "lankle", "rwrist", "relbow", "rshoulder", "lshoulder",
             "lelbow", "lwrist", "cnose", "reye", "leye"]  # fmt: skip
    base = pose()
    coco = {"rankle": "Rank", "rknee": "Rkne", "rhip": "Rhip", "lhip": "Lhip", "lknee": "Lkne", "lankle": "Lank",
            "rwrist": "Rwri", "relbow": "Relb", "rshoulder": "Rsho", "lshoulder": "Lsho", "lelbow": "Lelb",
            "lwrist": "Lwri", "cnose": "nose", "reye": "Reye", "leye": "Leye"}  # fmt: skip
    joints = np.stack([np.stack([base[JOINT[coco[n]]] / 64 for n in names])] * 4).astype(np.float32)
    joints[2, names.index("rhip")] = -1  # no right hip: filtered out
    (root / "img").mkdir(parents=True, exist_ok=True)
    imgs = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        imgs.append(f"img/{i}.png")
    index = {"joint_order": names, "imgs": imgs, "train": [True, True, True, False], "joints": joints}
    (root / "index.p").write_bytes(pickle.dumps(index, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 4])
def test_index_reader_and_dataset(tmp_path, protocol):
    write_index(tmp_path, protocol)
    index = load_index(tmp_path / "index.p")
    assert index["joints"].shape == (4, 15, 2) and index["train"].tolist() == [True, True, True, False]
    train = IndexImages(tmp_path / "index.p", True, size=32, box_factor=1)
    test = IndexImages(tmp_path / "index.p", False, size=32, box_factor=1)
    assert len(train) == 2 and len(test) == 1  # image 2 lacks a hip
    item = train[0]
    assert item["image"].shape == (3, 32, 32) and item["stickman"].shape == (3, 32, 32)
    assert item["homographies"].shape == (8, 3, 3) and item["valid"].shape == (8,)
    np.testing.assert_allclose(item["keypoints"][JOINT["Lsho"]].numpy(), pose()[JOINT["Lsho"]] / 2, rtol=1e-6)
    assert (item["keypoints"][JOINT["Lear"]] == -1).all()  # not in the index's joint order


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_index_reader_refuses_code(tmp_path):
    path = tmp_path / "index.p"
    path.write_bytes(pickle.dumps({"joint_order": [], "imgs": [], "train": [], "joints": _Evil()}))
    with pytest.raises(UnsafePickleError, match="refusing to load (posix|os|nt).system"):
        load_index(path)
    with pytest.raises(pickle.UnpicklingError):  # UnsafePickleError is an UnpicklingError
        load_index(path)


def test_index_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "missing.p")
    path = tmp_path / "index.p"
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable"):
        load_index(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a dict"):
        load_index(path)
    path.write_bytes(pickle.dumps({"imgs": []}))
    with pytest.raises(ValueError, match="missing keys"):
        load_index(path)
    path.write_bytes(pickle.dumps({"joint_order": ["a"], "imgs": ["x"], "train": [True], "joints": np.zeros((2, 1, 2))}))
    with pytest.raises(ValueError, match="joints must be"):
        load_index(path)
    path.write_bytes(pickle.dumps({"joint_order": ["a"], "imgs": ["x"], "train": [True, False],
                                   "joints": np.zeros((1, 1, 2))}))  # fmt: skip
    with pytest.raises(ValueError, match="train must"):
        load_index(path)
    path.write_bytes(pickle.dumps({"joint_order": ["cnose"], "imgs": ["x"], "train": [True],
                                   "joints": np.zeros((1, 1, 2))}))  # fmt: skip
    with pytest.raises(ValueError, match="lacks"):
        IndexImages(path, True, 32, 1)


# ----------------------------------------------------------------------------- pose pairs


def test_pose_pair_format_serves_the_same_set(tmp_path):
    from pydeform.data.synth_pose import write_pose_pairs

    write_pose_pairs(tmp_path, (64, 32), identities=3, seed=0, name="s", max_pairs_per_identity=2, progress=False)
    images = PoseImages(tmp_path, "s", "train", size=32, box_factor=1)
    item = images[0]
    assert item["image"].shape == (3, 32, 32) and item["stickman"].shape == (3, 32, 32)
    pairs = PoseTransfers(tmp_path, "s", "test", size=32, box_factor=1)
    pair = pairs[0]
    assert pair["target_mask"].shape == (1, 32, 32) and pair["homographies"].shape == (8, 3, 3)
    # keypoints follow PIL's resize: x -> (x + 0.5) * 32 / 32 - 0.5, y -> (y + 0.5) * 32 / 64 - 0.5
    raw = pairs.pairs.annotations[pair["target_name"]].xy
    present = (raw >= 0).all(1)
    expected = (raw[present] + 0.5) * np.array([1.0, 0.5]) - 0.5
    np.testing.assert_allclose(pair["target_kp"].numpy()[present], expected, rtol=1e-5)
    with pytest.raises(FileNotFoundError):
        PoseImages(tmp_path, "nope", "train", 32, 1)
