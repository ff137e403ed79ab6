"""pydeform.data.PosePairs: items checked against the files read back with csv/json/PIL and
closed forms (heatmaps, a translated pose's warps, nearest mask sampling, PIL's resize
convention), DataLoader batching with workers, and the errors for broken datasets."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pydeform.data.pose_pairs import PosePairs
from pydeform.data.synth_pose import write_pose_pairs
from pydeform.metrics import body_mask
from pydeform.pose import part_transforms, write_annotations

SIZE = (128, 64)
LEVELS = [(128, 64), (64, 32), (32, 16), (16, 8)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_pose_pairs(root, size=SIZE, identities=4, seed=1, images_per_identity=3, max_pairs_per_identity=4,
                     progress=False)
    return root


def read_keypoints(root: Path, split: str = "train") -> dict[str, np.ndarray]:
    """name -> (18, 2) (x, y), straight from the CSV."""
    with open(root / f"market-annotation-{split}.csv", newline="") as f:
        rows = list(csv.reader(f, delimiter=":"))[1:]
    return {row[0].strip(): np.stack([json.loads(row[2]), json.loads(row[1])], axis=1).astype(float) for row in rows}


def test_item_against_the_files(synth):
    ds = PosePairs(synth)
    with open(synth / "market-pairs-train.csv", newline="") as f:
        pairs = [tuple(row) for row in list(csv.reader(f))[1:]]
    assert len(ds) == len(pairs) and ds.pairs == pairs
    keypoints = read_keypoints(synth)
    item = ds[1]
    source, target = pairs[1]
    assert (item["source_name"], item["target_name"]) == (source, target)
    for key, name in (("source", source), ("target", target)):
        pixels = np.asarray(Image.open(synth / "market-dataset" / "train" / name).convert("RGB"), dtype=np.float64)
        assert item[key].shape == (3, *SIZE) and item[key].dtype == torch.float32
        np.testing.assert_allclose(item[key].permute(1, 2, 0).numpy(), pixels / 127.5 - 1, atol=1e-6)
        assert -1 <= item[key].min() and item[key].max() <= 1
        kp = keypoints[name]
        np.testing.assert_array_equal(item[f"{key}_kp"].numpy(), kp)
        # Heatmaps: exp(-d^2 / (2 * 6^2)), zeros for a missing joint.
        ys, xs = np.mgrid[0:SIZE[0], 0:SIZE[1]]
        maps = np.exp(-((xs - kp[:, 0, None, None]) ** 2 + (ys - kp[:, 1, None, None]) ** 2) / 72.0)
        maps[(kp == -1).any(axis=1)] = 0
        np.testing.assert_allclose(item[f"{key}_pose"].numpy(), maps, atol=1e-6)
    theta, masks = part_transforms(keypoints[source], keypoints[target], SIZE)
    assert item["theta"].shape == (4, 10, 2, 3)
    torch.testing.assert_close(item["theta"][0], theta)
    for level, (h, w) in enumerate(LEVELS):
        assert item[f"masks{level}"].shape == (10, h, w)
        # Nearest sampling with corners aligned (DESIGN.md section 3).
        rows = np.floor(np.arange(h) * (SIZE[0] - 1) / (h - 1) + 0.5).astype(int)
        cols = np.floor(np.arange(w) * (SIZE[1] - 1) / (w - 1) + 0.5).astype(int)
        np.testing.assert_array_equal(item[f"masks{level}"].numpy(), masks.numpy()[:, rows[:, None], cols])
    np.testing.assert_array_equal(item["target_mask"].numpy(), body_mask(keypoints[target], SIZE)[None].numpy())
    assert 0 < item["target_mask"].mean() < 0.6


def write_dataset(root: Path, poses: dict, pairs: list, size=(64, 32), sizes=None, split="train") -> None:
    """A hand-made dataset: black images with a white 5 x 5 square on the nose keypoint."""
    folder = root / "market-dataset" / split
    folder.mkdir(parents=True, exist_ok=True)
    for name, xy in poses.items():
        h, w = (sizes or {}).get(name, size)
        pixels = np.zeros((h, w, 3), np.uint8)
        x, y = int(xy[0][0]), int(xy[0][1])
        pixels[y - 2:y + 3, x - 2:x + 3] = 255
        Image.fromarray(pixels).save(folder / name)
    write_annotations(root / f"market-annotation-{split}.csv", {name: np.asarray(xy) for name, xy in poses.items()})
    (root / f"market-pairs-{split}.csv").write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs))


BASE = np.array([[16, 10], [16, 16], [11, 16], [9, 24], [8, 31], [21, 16], [23, 24], [24, 31], [13, 32],
                 [12, 43], [12, 54], [19, 32], [20, 43], [20, 54], [17, 9], [15, 9], [18, 10], [-1, -1]],
                dtype=float)  # fmt: skip


def test_translated_pose_gives_translations(tmp_path):
    # Target = source moved by (3, 5): every part's warp (target -> source) is a pure shift,
    # scaled at level l by (side_l - 1) / (side - 1).
    write_dataset(tmp_path, {"a.png": BASE, "b.png": np.where(BASE >= 0, BASE + [3, 5], -1)}, [("a.png", "b.png")])
    item = PosePairs(tmp_path, skip_levels=3)[0]
    assert item["theta"].shape == (3, 10, 2, 3) and set(k for k in item if k.startswith("masks")) == {
        "masks0", "masks1", "masks2"}
    for level, (h, w) in enumerate([(64, 32), (32, 16), (16, 8)]):
        shift = [-3 * (w - 1) / 31, -5 * (h - 1) / 63]
        present = item[f"masks{level}"].flatten(1).any(dim=1)
        assert present.sum() >= 9  # torso, head and the limbs (no ear is needed)
        expected = torch.tensor([[1, 0, shift[0]], [0, 1, shift[1]]], dtype=torch.float32).expand(10, 2, 3)
        torch.testing.assert_close(item["theta"][level][present], expected[present], atol=1e-4, rtol=0)


def test_resize_maps_keypoints_like_pil(tmp_path):
    write_dataset(tmp_path, {"a.png": BASE, "b.png": BASE}, [("a.png", "b.png")])
    for size in ((32, 16), (48, 24), (128, 64)):
        ds = PosePairs(tmp_path, skip_levels=2, image_size=size)
        item = ds[0]
        assert item["source"].shape == (3, *size) and item["masks1"].shape == (10, size[0] // 2, size[1] // 2)
        expected = np.asarray(Image.open(tmp_path / "market-dataset/train/b.png").resize(size[::-1], Image.BILINEAR))
        np.testing.assert_allclose(item["target"].permute(1, 2, 0).numpy(), expected / 127.5 - 1, atol=1e-6)
        # The nose keypoint sits at the resized white square's centroid (corner-aligned or
        # plain scaling would be off by 0.08 to 0.5 px in y).
        weight = item["target"][0].numpy() + 1
        ys, xs = np.mgrid[0:size[0], 0:size[1]]
        centroid = [(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()]
        np.testing.assert_allclose(item["target_kp"][0].numpy(), centroid, atol=0.05)
        assert (item["target_kp"][17] == -1).all()


def test_dataloader_with_workers(synth):
    ds = PosePairs(synth, split="test", skip_levels=4)
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    batch = next(iter(loader))
    assert batch["source"].shape == (3, 3, *SIZE) and batch["theta"].shape == (3, 4, 10, 2, 3)
    assert batch["masks3"].shape == (3, 10, 16, 8) and batch["target_mask"].shape == (3, 1, *SIZE)
    assert batch["source_name"] == [ds.pairs[i][0] for i in range(3)]
    for i in range(3):
        item = ds[i]
        for key in ("source", "target_pose", "theta", "masks2", "target_kp"):
            torch.testing.assert_close(batch[key][i], item[key])


def test_no_skip_levels(synth):
    item = PosePairs(synth, skip_levels=0)[0]
    assert item["theta"].shape == (0, 10, 2, 3) and not any(k.startswith("masks") for k in item)


def error_dataset(tmp_path: Path) -> Path:
    write_dataset(tmp_path, {"a.png": BASE, "b.png": BASE, "c.png": BASE}, [("a.png", "b.png"), ("b.png", "c.png")])
    return tmp_path


def test_malformed_pairs(tmp_path):
    root = error_dataset(tmp_path)
    pairs = root / "market-pairs-train.csv"
    pairs.write_text("from,to\na.png,b.png\nb.png\n")
    with pytest.raises(ValueError, match=r"market-pairs-train\.csv:3: expected two image names"):
        PosePairs(root)
    pairs.write_text("source,target\na.png,b.png\n")
    with pytest.raises(ValueError, match=r"market-pairs-train\.csv:1: expected the header"):
        PosePairs(root)
    pairs.write_text("from,to\n")
    with pytest.raises(ValueError, match="no pairs"):
        PosePairs(root)
    pairs.write_text("from,to\na.png,b.png\n\nb.png,zzz.png\n")
    with pytest.raises(ValueError, match=r"market-pairs-train\.csv:4: image 'zzz.png' has no row in .*annotation"):
        PosePairs(root)


def test_missing_files(tmp_path):
    root = error_dataset(tmp_path)
    (root / "market-dataset/train/c.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"market-pairs-train\.csv:3: image file .*c\.png not found"):
        PosePairs(root)
    with pytest.raises(FileNotFoundError, match=r"market-annotation-test\.csv"):
        PosePairs(root, split="test")
    with pytest.raises(FileNotFoundError, match="root"):
        PosePairs(root / "nowhere")


def test_malformed_annotation(tmp_path):
    root = error_dataset(tmp_path)
    annotation = root / "market-annotation-train.csv"
    lines = annotation.read_text().splitlines()
    lines[2] = lines[2].replace("[", "[1, ", 1)  # 19 rows
    annotation.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"market-annotation-train\.csv:3:"):
        PosePairs(root)


def test_image_of_another_size(tmp_path):
    write_dataset(tmp_path, {"a.png": BASE, "b.png": BASE}, [("a.png", "b.png")], sizes={"b.png": (60, 32)})
    ds = PosePairs(tmp_path)
    with pytest.raises(ValueError, match=r"b\.png: image of size \(60, 32\).*\(64, 32\)"):
        ds[0]


def test_bad_arguments(tmp_path):
    root = error_dataset(tmp_path)
    with pytest.raises(ValueError, match="skip_levels"):
        PosePairs(root, skip_levels=-1)
    with pytest.raises(ValueError, match="skip_levels"):
        PosePairs(root, skip_levels=7)  # 64 x 32 halved 6 times is empty
    with pytest.raises(TypeError, match="image_size"):
        PosePairs(root, image_size=64)


def test_truncated_image_names_the_file(tmp_path):
    root = error_dataset(tmp_path)
    path = root / "market-dataset/train/b.png"
    path.write_bytes(path.read_bytes()[:-40])  # cut off the end of the pixel data
    ds = PosePairs(root)
    with pytest.raises(OSError, match=r"b\.png: cannot read the image") as info:
        ds[0]
    assert "truncated" in str(info.value) or info.value.__cause__ is not None
    path.write_bytes(b"not an image at all")
    with pytest.raises(OSError, match=r"b\.png: cannot read the image"):
        ds[1]
    # The first image's header is read on construction: a broken one names itself there.
    (root / "market-dataset/train/a.png").write_bytes(b"")
    with pytest.raises(OSError, match=r"a\.png: cannot read the image"):
        PosePairs(root)


def test_truncated_image_in_a_dataloader_worker(tmp_path):
    from torch.utils.data import DataLoader

    root = error_dataset(tmp_path)
    path = root / "market-dataset/train/c.png"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(OSError, match=r"c\.png: cannot read the image"):
        list(DataLoader(PosePairs(root), batch_size=1, num_workers=1))


@pytest.mark.parametrize("joint, xy, allowed", [(4, [63, 127], True), (4, [64, 10], False), (9, [10, 128], False),
                                                (0, [10**6, 10], False)])
def test_keypoints_far_outside_the_image_name_file_and_line(tmp_path, joint, xy, allowed):
    """64 x 32 images: keypoints up to one image size past the edge are accepted (x < 64,
    y < 128), farther ones refused with annotation file:line (b.png is on line 3)."""
    root = error_dataset(tmp_path)
    pose = BASE.copy()
    pose[joint] = xy
    if xy[0] > 100000:  # beyond what the annotation format accepts at all
        path = root / "market-annotation-train.csv"
        lines = path.read_text().splitlines()
        name, ys, xs = lines[2].split(":")
        values = json.loads(xs)
        values[joint] = xy[0]
        lines[2] = f"{name}:{ys}: {json.dumps(values)}"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=r"market-annotation-train\.csv:3: keypoints_x has a coordinate beyond"):
            PosePairs(root)
        return
    write_dataset(tmp_path, {"a.png": BASE, "b.png": pose, "c.png": BASE}, [("a.png", "b.png"), ("b.png", "c.png")])
    if allowed:
        PosePairs(root)[0]
        return
    with pytest.raises(ValueError, match=r"market-annotation-train\.csv:3: b\.png: joint .* far outside the 64x32"):
        PosePairs(root)
