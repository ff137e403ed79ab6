"""pydeform.data.deepfashion and `pydeform data deepfashion-inshop`: a miniature In-shop
tree written here, the flat names against the issue's example and Pose-Transfer's renaming
formula, copies byte for byte, crops against numpy slices, the missing/unlisted report, and
every malformed input's error naming file and line."""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pydeform.cli import main
from pydeform.data.deepfashion import convert_inshop, flat_name, read_name_list, read_partition

TREE = [
    "WOMEN/Blouses_Shirts/id_00000635/04_1_front.jpg",
    "WOMEN/Blouses_Shirts/id_00000635/04_2_side.jpg",
    "WOMEN/Dresses/id_00000002/02_1_front.jpg",
    "MEN/Denim/id_00000080/01_1_front.jpg",
    "MEN/Denim/id_00000080/01_7_additional.jpg",
]


def pose_transfer_name(path: str) -> str:
    """Pose-Transfer's generate_fashion_datasets.py formula, walking from 'img': split the
    path, drop '_' from the item folder, keep only the first '_' of the file name, join with
    the prefix 'fashion'."""
    parts = ("img/" + path).split("/")
    parts[3] = parts[3].replace("_", "")
    parts[4] = parts[4].split("_")[0] + "_" + "".join(parts[4].split("_")[1:])
    return "".join(["fashion"] + parts[1:])


@pytest.fixture
def inshop(tmp_path) -> Path:
    root = tmp_path / "In-shop"
    rng = np.random.default_rng(0)
    for i, relative in enumerate(TREE):
        path = root / "img" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # Smooth (JPEG-friendly), different per image, and a column wave that pins the crop's offset.
        ys, xs = np.mgrid[0:256, 0:256]
        phase = rng.uniform(0, 2 * np.pi)
        pixels = np.stack([128 + 100 * np.sin(2 * np.pi * xs / 32 + phase), ys * 0.9 + 10 * i,
                           np.full_like(xs, 40 * i)], axis=-1)
        Image.fromarray(pixels.round().astype(np.uint8)).save(path, quality=95)
    (root / "img" / "WOMEN" / ".DS_Store").write_text("not an image")
    return root


def names(*indices):
    return [pose_transfer_name(TREE[i]) for i in indices]


def write_lists(tmp_path, train, test, extra_test=()):
    train_list, test_list = tmp_path / "train.lst", tmp_path / "test.lst"
    train_list.write_text("\n".join(train) + "\n")
    test_list.write_text("\n".join(list(test) + list(extra_test)) + "\n\n")
    return train_list, test_list


def test_flat_names():
    assert flat_name("img/WOMEN/Blouses_Shirts/id_00000635/04_1_front.jpg") == \
        "fashionWOMENBlouses_Shirtsid0000063504_1front.jpg"  # the issue's example
    for path in TREE:
        assert flat_name(path) == pose_transfer_name(path)
    assert flat_name(TREE[3], prefix="fasion") == "fasionMENDenimid0000008001_1front.jpg"
    for path in TREE:  # the Deformable GAN's data/split_fasion_dataset.py, walking from 'fasion'
        parts = ("fasion/" + path).split("/")
        item = "".join(parts[:3]) + parts[3].replace("_", "") + parts[4].split("_")[0]
        assert flat_name(path, prefix="fasion") == item + "_" + "".join(parts[4].split("_")[1:])
    with pytest.raises(ValueError, match="expected <GENDER>"):
        flat_name("Denim/id_00000080/01_1_front.jpg")
    with pytest.raises(ValueError, match="outfit_view_pose"):
        flat_name("MEN/Denim/id_00000080/front.jpg")


def test_copies_byte_for_byte_and_reports(inshop, tmp_path):
    lists = write_lists(tmp_path, names(0, 2, 3), names(4), extra_test=["fashionMENDenimid0000009901_1front.jpg"])
    out = tmp_path / "fasion-dataset"
    report = convert_inshop(inshop, out, lists, progress=False)
    assert report.written == {"train": 3, "test": 1}
    assert report.missing == {"train": [], "test": ["fashionMENDenimid0000009901_1front.jpg"]}
    assert report.unlisted == ["img/" + TREE[1]]
    for i, split in [(0, "train"), (2, "train"), (3, "train"), (4, "test")]:
        assert (out / split / pose_transfer_name(TREE[i])).read_bytes() == (inshop / "img" / TREE[i]).read_bytes()
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(names(0, 2, 3))


def test_crop_is_columns_40_to_216(inshop, tmp_path):
    lists = write_lists(tmp_path, names(0), names(1))
    out = tmp_path / "out"
    convert_inshop(inshop, out, lists, crop=True, jpeg_quality=100, progress=False)
    source = np.asarray(Image.open(inshop / "img" / TREE[0]).convert("RGB"), dtype=float)
    cropped = Image.open(out / "train" / names(0)[0])
    assert cropped.size == (176, 256) and cropped.format == "JPEG"
    cropped = np.asarray(cropped, dtype=float)
    # JPEG re-encoding changes pixels a little; one column off would change them a lot.
    assert np.abs(cropped - source[:, 40:216]).mean() < 1.5
    for off_by_one in (source[:, 41:217, 0], source[:, 39:215, 0]):
        assert np.abs(cropped[..., 0] - off_by_one).mean() > 8


def test_lists_may_be_the_published_csvs(inshop, tmp_path):
    annotation = tmp_path / "fasion-annotation-train.csv"
    row = f": {[1] * 18}: {[2] * 18}\n"
    annotation.write_text("name:keypoints_y:keypoints_x\n" + "".join(n.replace("fashion", "fasion", 1) + row
                                                                      for n in names(0, 2)))
    pairs = tmp_path / "fasion-pairs-test.csv"
    a, b = (n.replace("fashion", "fasion", 1) for n in names(3, 4))
    pairs.write_text(f"from,to\n{a},{b}\n{b},{a}\n")
    out = tmp_path / "out"
    report = convert_inshop(inshop, out, (annotation, pairs), progress=False)  # prefix "fasion" from the lists
    assert report.written == {"train": 2, "test": 2} and not report.missing["train"]
    assert (out / "test" / a).is_file() and (out / "test" / b).is_file()


def test_benchmark_folder_layout_img_under_img(inshop, tmp_path):
    """The benchmark unpacks to Img/img/: pointing at its top folder works too."""
    top = tmp_path / "In-shop Clothes Retrieval Benchmark"
    (top / "Img").mkdir(parents=True)
    (inshop / "img").rename(top / "Img" / "img")
    report = convert_inshop(top, tmp_path / "out", write_lists(tmp_path, names(0), names(1)), progress=False)
    assert report.written == {"train": 1, "test": 1}


def test_partition_file_without_lists(inshop, tmp_path):
    (inshop / "Eval").mkdir()
    rows = [f"img/{TREE[0]} id_00000635 train", f"img/{TREE[1]} id_00000635 query", f"img/{TREE[3]} id_00000080 gallery"]
    (inshop / "Eval" / "list_eval_partition.txt").write_text(
        f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n")
    report = convert_inshop(inshop, tmp_path / "out", progress=False)
    assert report.written == {"train": 1, "test": 2}
    assert sorted(p.name for p in (tmp_path / "out" / "test").iterdir()) == sorted(names(1, 3))
    assert report.unlisted == sorted("img/" + TREE[i] for i in (2, 4))


@pytest.mark.parametrize("text, line, message", [
    ("fashionA_1front.jpg\nimg/WOMEN/x.jpg\n", 2, "is a path"),
    ("fashionA_1front.jpg\n\nfashionA_1front.txt\n", 3, "is not an image name"),
    ("fashionA_1front.jpg\nfashionA_1front.jpg\n", 2, "listed twice \\(first on line 1\\)"),
    ("name:keypoints_y:keypoints_x\nfashionA_1front.jpg [1] [2]\n", 2, "expected a annotation row"),
    ("from,to\na.jpg,b.jpg\na.jpg\n", 3, "expected a pairs row"),
])  # fmt: skip
def test_malformed_lists_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "train.lst"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: ") + ".*" + message):
        read_name_list(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="no image names"):
        read_name_list(path)


@pytest.mark.parametrize("text, line, message", [
    ("2\nimage_name item_id evaluation_status\nimg/a/b/c/01_1_front.jpg id_1 train\n", 1, "says 2 images"),
    ("x\n", 1, "expected the number of images"),
    ("1\nimage item status\n", 2, "expected the header"),
    ("1\nimage_name item_id evaluation_status\nimg/a/b/c/01_1_front.jpg id_1 validation\n", 3, "train\\|query"),
])  # fmt: skip
def test_malformed_partition_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "list_eval_partition.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: ") + ".*" + message):
        read_partition(path)


def test_errors(inshop, tmp_path):
    lists = write_lists(tmp_path, names(0, 2), names(1, 0))
    with pytest.raises(ValueError, match=re.escape(f"{lists[1]}:2: {names(0)[0]} is in both lists (also "
                                                   f"{lists[0]}:1)")):
        convert_inshop(inshop, tmp_path / "o1", lists, progress=False)
    lists = write_lists(tmp_path, names(0), names(1))
    with pytest.raises(FileNotFoundError, match="no lists given and no In-shop partition file"):
        convert_inshop(inshop, tmp_path / "o2", progress=False)
    with pytest.raises(FileNotFoundError, match="root: no such folder"):
        convert_inshop(tmp_path / "nowhere", tmp_path / "o3", lists, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_inshop(inshop, tmp_path / "full", lists, progress=False)
    with pytest.raises(ValueError, match="jpeg_quality"):
        convert_inshop(inshop, tmp_path / "o4", lists, jpeg_quality=0, progress=False)
    # An image of another size (the high-resolution tree): named, and nothing written.
    big = inshop / "img" / TREE[1]
    Image.new("RGB", (750, 1101)).save(big)
    with pytest.raises(ValueError, match=re.escape(f"{big}: image of size 1101x750")):
        convert_inshop(inshop, tmp_path / "o5", lists, progress=False)
    assert not (tmp_path / "o5").exists()
    big.write_bytes(b"broken")
    with pytest.raises(OSError, match=re.escape(f"{big}: cannot read the image")):
        convert_inshop(inshop, tmp_path / "o6", lists, progress=False)
    # A file outside the 4-level layout.
    stray = inshop / "img" / "WOMEN" / "stray.jpg"
    Image.new("RGB", (256, 256)).save(stray)
    with pytest.raises(ValueError, match=re.escape(f"{stray}: expected")):
        convert_inshop(inshop, tmp_path / "o7", lists, progress=False)


def test_cli(inshop, tmp_path, capsys):
    lists = write_lists(tmp_path, names(0, 2), names(3), extra_test=["fashionMENDenimid0000009901_1front.jpg"])
    out = tmp_path / "fasion-dataset"
    argv = ["data", "deepfashion-inshop", str(inshop), "--out", str(out), "--lists", *map(str, lists),
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 train + 1 test images" in printed
    assert "1 test images named by the lists are not in the tree: fashionMENDenimid0000009901_1front.jpg" in printed
    assert "2 tree images are in no list" in printed
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "not empty" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--crop"]) == 0
    assert Image.open(out / "train" / names(0)[0]).size == (176, 256)
