"""pydeform.data.Placement and CelebAGlasses: items checked against the files read back with
csv/json/PIL, DataLoader batching with workers, a tiny CelebA-format folder written here
(its crops compared with numpy slices of the decoded JPEGs), and the errors for broken
datasets (naming file and line)."""
import csv
import re
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pydeform.data import CelebAGlasses, Placement
from pydeform.data.synth_placement import write_placement


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("placement")
    write_placement(root, (32, 48), train=6, test=3, seed=2, progress=False, foregrounds=2)
    return root


def image(path: Path) -> np.ndarray:
    """(C, H, W) float64 in [0, 1] of the file, channels as stored."""
    return np.asarray(Image.open(path), dtype=np.float64).transpose(2, 0, 1) / 255.0


def test_items_against_the_files(synth):
    with open(synth / "placement-test.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    ds = Placement(synth, "test")
    assert len(ds) == 3 and ds.size == (32, 48)
    for item, row in zip(ds, rows):
        assert item["name"] == row[0]
        for key, file, channels in (("background", row[0], 3), ("foreground", row[1], 4), ("real", row[2], 3)):
            assert item[key].shape == (channels, 32, 48) and item[key].dtype == torch.float32
            np.testing.assert_allclose(item[key].numpy(), image(synth / file), atol=1e-7)
        for key, text in (("p_true", row[3]), ("p_init", row[4])):
            assert item[key].dtype == torch.float32
            np.testing.assert_array_equal(item[key].numpy(), np.array(json.loads(text), np.float32))
    assert len(Placement(synth)) == 6  # train by default


def test_dataloader_with_workers(synth):
    ds = Placement(synth, "train")
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert [b["background"].shape for b in batches] == [(4, 3, 32, 48), (2, 3, 32, 48)]
    assert batches[0]["foreground"].shape == (4, 4, 32, 48) and batches[0]["p_init"].shape == (4, 8)
    torch.testing.assert_close(batches[1]["real"][1], ds[5]["real"])
    assert batches[1]["name"] == [ds[4]["name"], ds[5]["name"]]


def broken_copy(synth: Path, tmp_path: Path, edit) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(synth, root)
    path = root / "placement-train.csv"
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return root


def replace_field(index, value):
    def edit(lines):
        fields = next(csv.reader([lines[2]]))
        fields[index] = value
        lines[2] = ",".join(f'"{f}"' for f in fields)
    return edit


@pytest.mark.parametrize("edit, error, message", [
    (lambda lines: lines.__setitem__(2, "a,b,c"), ValueError, r"placement-train\.csv:3: expected 5 fields"),
    (replace_field(3, "[1, 2, 3]"), ValueError, r"placement-train\.csv:3: p_true must be a JSON list of 8"),
    (replace_field(4, "[1, 2, 3, 4, 5, 6, 7, NaN]"), ValueError, r"placement-train\.csv:3: p_init"),
    (replace_field(4, "not json"), ValueError, r"placement-train\.csv:3: p_init"),
    (replace_field(0, "backgrounds/train/999999.png"), FileNotFoundError, r"placement-train\.csv:3: background file"),
    (lambda lines: lines.__setitem__(0, "bg,fg,real,p_true,p_init"), ValueError, r"placement-train\.csv:1: expected the header"),
    (lambda lines: lines.__delitem__(slice(1, None)), ValueError, "no samples"),
])  # fmt: skip
def test_broken_csv_names_file_and_line(synth, tmp_path, edit, error, message):
    root = broken_copy(synth, tmp_path, edit)
    with pytest.raises(error, match=message):
        Placement(root, "train")


def test_missing_files_and_wrong_image_size(synth, tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        Placement(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="placement-val.csv"):
        Placement(synth, "val")
    with pytest.raises(TypeError, match="split"):
        Placement(synth, "")
    root = broken_copy(synth, tmp_path, lambda lines: None)
    Image.new("RGB", (48, 33)).save(root / "real" / "train" / "000001.png")
    ds = Placement(root, "train")
    ds[0]
    with pytest.raises(ValueError, match=r"000001\.png: image of size \(33, 48\), expected \(32, 48\)"):
        ds[1]


# ----------------------------------------------------------------------------- CelebA

ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
# (name, partition, eyeglasses)
FACES = [
    ("000001.jpg", 0, False), ("000002.jpg", 0, True), ("000003.jpg", 0, False), ("000004.jpg", 0, False),
    ("000005.jpg", 0, True), ("000006.jpg", 0, False), ("000007.jpg", 1, False), ("000008.jpg", 1, True),
    ("000009.jpg", 2, True), ("000010.jpg", 2, False),
]  # fmt: skip


def write_celeba(root: Path, faces=FACES) -> None:
    """A CelebA-format folder: 178 x 218 JPEGs, the attribute and partition files."""
    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:218, 0:178]
    lines = [str(len(faces)), " ".join(ATTRIBUTES) + " "]
    for i, (name, _, glasses) in enumerate(faces):
        # Smooth gradients plus a few blocks, different per image.
        pixels = np.stack([xx * (1 + i) % 256, yy + 10 * i, (xx + yy) // 2], axis=-1)
        pixels[rng.integers(0, 200):, rng.integers(0, 160):] //= 2
        Image.fromarray(pixels.astype(np.uint8)).save(root / "img_align_celeba" / name, quality=90)
        values = rng.choice([-1, 1], len(ATTRIBUTES))
        values[ATTRIBUTES.index("Eyeglasses")] = 1 if glasses else -1
        lines.append(name + "".join(f" {v:2d}" for v in values))  # CelebA pads with spaces: "-1  1"
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{name} {part}\n" for name, part, _ in faces))


def write_glasses(folder: Path) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    out = []
    for k, side in enumerate((144, 72, 144)):
        rgba = np.zeros((side, side, 4), np.uint8)
        rgba[side // 3:side // 2, side // 8:-side // 8] = (40 * k, 200, 90, 255 - 50 * k)
        Image.fromarray(rgba, "RGBA").save(folder / f"glasses{k}.png")
        out.append(rgba)
    (folder / "notes.txt").write_text("not an image")
    return out


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> tuple[Path, Path, list[np.ndarray]]:
    root = tmp_path_factory.mktemp("celeba")
    write_celeba(root / "celeba")
    glasses = write_glasses(root / "glasses")
    return root / "celeba", root / "glasses", glasses


def decoded_crop(root: Path, name: str) -> np.ndarray:
    pixels = np.asarray(Image.open(root / "img_align_celeba" / name).convert("RGB"), dtype=np.float64) / 255.0
    return pixels[52:196, 17:161].transpose(2, 0, 1)


def test_celeba_splits_and_the_glasses_separation(celeba):
    root, glasses_dir, _ = celeba
    for split, backgrounds, reals in (
        ("train", ["000001.jpg", "000003.jpg", "000004.jpg", "000006.jpg"], ["000002.jpg", "000005.jpg"]),
        ("val", ["000007.jpg"], ["000008.jpg"]),
        ("test", ["000010.jpg"], ["000009.jpg"]),
    ):
        ds = CelebAGlasses(root, glasses_dir, split)
        assert ds.backgrounds == backgrounds and ds.reals == reals and len(ds) == len(backgrounds)
        assert len(ds.glasses) == 3
    ds = CelebAGlasses(root, glasses_dir, "train")
    crops = {name: decoded_crop(root, name) for name, _, _ in FACES if name in ds.backgrounds + ds.reals}
    for index in range(len(ds)):
        item = ds[index]
        assert set(item) == {"background", "foreground", "real", "p_init", "name"}
        assert item["name"] == ds.backgrounds[index]
        matches = [name for name, crop in crops.items() if np.abs(item["real"].numpy() - crop).max() < 1e-6]
        assert len(matches) == 1 and matches[0] in ds.reals  # always a face with eyeglasses


def test_celeba_crop_is_rows_52_196_cols_17_161(celeba):
    root, glasses_dir, glasses = celeba
    ds = CelebAGlasses(root, glasses_dir, "train")
    item = ds[2]
    assert item["background"].shape == (3, 144, 144) and item["background"].dtype == torch.float32
    np.testing.assert_allclose(item["background"].numpy(), decoded_crop(root, "000004.jpg"), atol=1e-6)
    # The foreground is one of the glasses, the 72 x 72 one resized to 144 x 144.
    want = [g.transpose(2, 0, 1) / 255.0 for g in glasses]
    want[1] = np.asarray(Image.fromarray(glasses[1], "RGBA").resize((144, 144), Image.Resampling.BILINEAR),
                         np.float64).transpose(2, 0, 1) / 255.0
    foregrounds = [ds[i]["foreground"].numpy() for i in range(len(ds))]
    assert all(f.shape == (4, 144, 144) for f in foregrounds)
    assert all(min(np.abs(f - w).max() for w in want) < 1e-6 for f in foregrounds)
    # A smaller size resizes the crop.
    small = CelebAGlasses(root, glasses_dir, "train", size=64)[2]
    crop = Image.open(root / "img_align_celeba" / "000004.jpg").convert("RGB").crop((17, 52, 161, 196))
    resized = np.asarray(crop.resize((64, 64), Image.Resampling.BILINEAR), np.float64).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(small["background"].numpy(), resized, atol=1e-6)
    assert small["foreground"].shape == (4, 64, 64) and small["real"].shape == (3, 64, 64)


def test_celeba_p_init_is_deterministic_per_item(celeba):
    root, glasses_dir, _ = celeba
    first = CelebAGlasses(root, glasses_dir, "train", seed=3)
    backwards = [first[i]["p_init"] for i in reversed(range(len(first)))][::-1]
    again = CelebAGlasses(root, glasses_dir, "train", seed=3)
    other = CelebAGlasses(root, glasses_dir, "train", seed=4)
    for i in range(len(first)):
        p = again[i]["p_init"]
        assert p.shape == (8,) and p.dtype == torch.float32
        torch.testing.assert_close(p, backwards[i], rtol=0, atol=0)
        assert not torch.equal(p, other[i]["p_init"])
    # Many draws: about 0.1 N(0, 1) (800 values; standard error of the std 0.0025).
    many = torch.stack([CelebAGlasses(root, glasses_dir, "train", seed=s)[0]["p_init"] for s in range(100)])
    assert abs(many.std().item() - 0.1) < 0.015 and abs(many.mean().item()) < 0.015


def test_celeba_works_with_a_dataloader(celeba):
    root, glasses_dir, _ = celeba
    batch = next(iter(DataLoader(CelebAGlasses(root, glasses_dir, "train", size=32), batch_size=4, num_workers=2)))
    assert batch["background"].shape == (4, 3, 32, 32) and batch["foreground"].shape == (4, 4, 32, 32)


def edited_celeba(tmp_path: Path, file: str, edit) -> Path:
    root = tmp_path / "celeba"
    write_celeba(root, FACES[:4])
    path = root / file
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("file, edit, error, message", [
    ("list_attr_celeba.txt", lambda l: l.__setitem__(3, l[3][:-3]), ValueError, r"list_attr_celeba\.txt:4: expected"),
    ("list_attr_celeba.txt", lambda l: l.__setitem__(2, l[2].replace("-1", "0", 1)), ValueError,
     r"list_attr_celeba\.txt:3: expected"),
    ("list_attr_celeba.txt", lambda l: l.__setitem__(1, l[1].replace("Eyeglasses", "Glasses")), ValueError,
     r"list_attr_celeba\.txt:2: no 'Eyeglasses'"),
    ("list_attr_celeba.txt", lambda l: l.__setitem__(0, "5"), ValueError, r"list_attr_celeba\.txt:1: says 5"),
    ("list_attr_celeba.txt", lambda l: (l.__delitem__(4), l.__setitem__(0, "3")), ValueError,
     r"list_eval_partition\.txt:3: 000003\.jpg has no row"),
    ("list_eval_partition.txt", lambda l: l.__setitem__(1, "000002.jpg 3"), ValueError,
     r"list_eval_partition\.txt:2: expected"),
    ("list_eval_partition.txt", lambda l: l.append("000099.jpg 0"), ValueError,
     r"list_eval_partition\.txt:5: 000099\.jpg has no row in .*list_attr_celeba\.txt"),
])  # fmt: skip
def test_celeba_errors_name_file_and_line(tmp_path, file, edit, error, message):
    root = edited_celeba(tmp_path, file, edit)
    write_glasses(tmp_path / "glasses")
    with pytest.raises(error, match=message):
        CelebAGlasses(root, tmp_path / "glasses", "train")


def test_celeba_bad_arguments_and_folders(celeba, tmp_path):
    root, glasses_dir, _ = celeba
    with pytest.raises(ValueError, match="split"):
        CelebAGlasses(root, glasses_dir, "validation")
    with pytest.raises(ValueError, match="size"):
        CelebAGlasses(root, glasses_dir, "train", size=0)
    with pytest.raises(ValueError, match="seed"):
        CelebAGlasses(root, glasses_dir, "train", seed=-1)
    with pytest.raises(FileNotFoundError, match="list_attr_celeba"):
        CelebAGlasses(tmp_path, glasses_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="glasses_dir: no"):
        CelebAGlasses(root, tmp_path / "empty")
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "opaque.png")
    with pytest.raises(ValueError, match="opaque.png: glasses must have an alpha channel"):
        CelebAGlasses(root, tmp_path / "empty")
    # A split with faces of only one kind has nothing to learn from.
    only = tmp_path / "only"
    write_celeba(only, [("000001.jpg", 0, False), ("000002.jpg", 0, False), ("000003.jpg", 2, True)])
    with pytest.raises(ValueError, match="no face with eyeglasses"):
        CelebAGlasses(only, glasses_dir, "train")
    # A missing image names the partition line; a wrongly sized one is reported when read.
    missing = tmp_path / "missing"
    write_celeba(missing, FACES[:4])
    (missing / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"list_eval_partition\.txt:3: image file .*000003\.jpg not found"):
        CelebAGlasses(missing, glasses_dir, "train")
    wrong = tmp_path / "wrong"
    write_celeba(wrong, FACES[:2])
    Image.new("RGB", (178, 200)).save(wrong / "img_align_celeba" / "000001.jpg")
    with pytest.raises(ValueError, match=r"000001\.jpg: image of size \(200, 178\)"):
        CelebAGlasses(wrong, glasses_dir, "train")[0]


# ----------------------------------------------------------------------------- data errors


def test_unreadable_images_name_the_file(synth, tmp_path):
    root = broken_copy(synth, tmp_path, lambda lines: None)
    rows = list(csv.reader((root / "placement-train.csv").read_text().splitlines()))[1:]
    background = root / rows[0][0]
    background.write_bytes(background.read_bytes()[:-30])  # truncated pixel data
    ds = Placement(root, "train")
    with pytest.raises(OSError, match=re.escape(str(background)) + ": cannot read the image"):
        ds[0]
    with pytest.raises(OSError, match=re.escape(str(background)) + ": cannot read the image"):
        list(DataLoader(ds, batch_size=2, num_workers=1))
    (root / rows[1][2]).write_bytes(b"GIF89a broken")
    with pytest.raises(OSError, match=re.escape(str(root / rows[1][2])) + ": cannot read the image"):
        ds[1]


@pytest.mark.parametrize("text, message", [
    ('{"size": [32, 48],\n "corners": [1, 2,]}', r"info\.json:2: not valid JSON"),
    ("", r"info\.json:1: not valid JSON"),
    ('{"size": [32]}', r"info\.json: expected \"size\": \[H, W\]"),
])  # fmt: skip
def test_malformed_info_json_names_the_path(synth, tmp_path, text, message):
    root = broken_copy(synth, tmp_path, lambda lines: None)
    (root / "info.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        Placement(root, "train")
    (root / "info.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=r"info\.json: not UTF-8"):
        Placement(root, "train")


def test_foreground_without_alpha_is_refused(synth, tmp_path):
    root = broken_copy(synth, tmp_path, lambda lines: None)
    rows = list(csv.reader((root / "placement-train.csv").read_text().splitlines()))[1:]
    foreground = root / rows[0][1]
    Image.open(foreground).convert("RGB").save(foreground)
    ds = Placement(root, "train")
    with pytest.raises(ValueError, match=re.escape(str(foreground)) + ": the foreground must have an alpha channel"):
        ds[0]
    # A palette PNG with a transparency key carries alpha: accepted, as in CelebAGlasses.
    Image.open(root / rows[1][1]).convert("RGB").convert("P").save(foreground, transparency=0)
    assert ds[0]["foreground"].shape[0] == 4


def test_celeba_unreadable_images_name_the_file(tmp_path):
    root = tmp_path / "celeba"
    write_celeba(root, FACES[:4])
    glasses = tmp_path / "glasses"
    write_glasses(glasses)
    ds = CelebAGlasses(root, glasses, "train")
    name = ds.backgrounds[0]
    path = root / "img_align_celeba" / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(OSError, match=re.escape(str(path)) + ": cannot read the image"):
        ds.crop(name)
    broken = sorted(glasses.glob("*.png"))[0]
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(OSError, match=re.escape(str(broken)) + ": cannot read the image"):
        CelebAGlasses(root, glasses, "train")
