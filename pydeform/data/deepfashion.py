"""DeepFashion In-shop Clothes -> the flat train/test layout the published pose-transfer
annotation and pair CSVs refer to.

The In-shop benchmark ships its images in a tree, `img/<GENDER>/<Category>/<id_item>/<file>`,
e.g. `img/WOMEN/Blouses_Shirts/id_00000635/04_1_front.jpg` (256x256 pixels). The
Deformable GAN's and Pose-Transfer's CSVs name the images flat, built from those four parts
(Pose-Transfer, tool/generate_fashion_datasets.py; the Deformable GAN,
data/split_fasion_dataset.py):

    prefix + GENDER + Category + item id without "_" + file with only its first "_" kept
    fashion  WOMEN   Blouses_Shirts  id00000635   04_1front.jpg
    -> fashionWOMENBlouses_Shirtsid0000063504_1front.jpg

(Pose-Transfer's prefix is "fashion", the Deformable GAN's "fasion"). Pose-Transfer's
script no longer runs (it refers to an undefined `new_path`; its issues #126 and #127);
`convert_inshop` does its job: it copies every image a train or test list names into
`out/train/` or `out/test/` under its flat name, keeping the 256x256 images byte for byte,
or cropping them to 256x176 (columns 40:216, Pose-Transfer's crop) where asked, and reports
the images the lists name that the tree lacks, and the tree's images no list names.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from tqdm import tqdm

from pydeform.data._images import image_size, read_rgb

__all__ = ["flat_name", "read_name_list", "read_partition", "convert_inshop", "InshopReport", "CROP_COLUMNS"]

INSHOP_SIZE = (256, 256)
CROP_COLUMNS = (40, 216)  # Pose-Transfer: img.crop((40, 0, 216, 256)) -> 256 x 176
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")
_ANNOTATION_HEADER = "name:keypoints_y:keypoints_x"


def flat_name(relative: str | PathLike, prefix: str = "fashion") -> str:
    """The flat name of an In-shop image from its path in the tree (its last four parts,
    GENDER/Category/id_item/file; see the module docstring)."""
    parts = Path(relative).parts
    if len(parts) < 4:
        raise ValueError(f"{relative}: expected <GENDER>/<Category>/<id_item>/<file> (as under In-shop's img/)")
    gender, category, item, file = parts[-4:]
    head, sep, rest = file.partition("_")
    if not sep:
        raise ValueError(f"{relative}: expected a file name like 04_1_front.jpg (outfit_view_pose)")
    return prefix + gender + category + item.replace("_", "") + head + "_" + rest.replace("_", "")


def read_name_list(path: str | PathLike) -> dict[str, int]:
    """Image names of a split list -> {name: 1-based line}. Accepted: a `.lst` file with one
    flat name per line (Pose-Transfer's train.lst / test.lst), an annotation CSV
    (`name:keypoints_y:keypoints_x`), or a pairs CSV (`from,to`: both columns). Blank lines
    are skipped; errors name path:line (a name with a folder, not an image name, repeated
    in a .lst)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    first = lines[0].strip().replace(" ", "") if lines else ""
    names: dict[str, int] = {}
    kind = "annotation" if first == _ANNOTATION_HEADER else "pairs" if first == "from,to" else "list"
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (kind != "list" and number == 1):
            continue
        if kind == "annotation":
            fields = [line.rsplit(":", 2)[0].strip()] if line.count(":") >= 2 else None
        elif kind == "pairs":
            fields = [f.strip() for f in line.split(",")]
            fields = fields if len(fields) == 2 and all(fields) else None
        else:
            fields = [line.strip()]
        if fields is None:
            raise ValueError(f"{path}:{number}: expected a {kind} row, got {line!r}")
        for name in fields:
            if "/" in name or "\\" in name:
                raise ValueError(f"{path}:{number}: {name!r} is a path; the lists hold flat image names "
                                 "(fashionWOMEN...jpg)")
            if not name.lower().endswith(_IMAGE_EXTENSIONS):
                raise ValueError(f"{path}:{number}: {name!r} is not an image name (expected e.g. .jpg)")
            if name in names and kind == "list":
                raise ValueError(f"{path}:{number}: {name!r} is listed twice (first on line {names[name]})")
            names.setdefault(name, number)
    if not names:
        raise ValueError(f"{path}: no image names")
    return names


def read_partition(path: str | PathLike) -> dict[str, tuple[str, int]]:
    """In-shop's Eval/list_eval_partition.txt -> {tree path: ("train" | "test", line)}.

    Format: line 1 the number of images, line 2 `image_name item_id evaluation_status`,
    then `img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train` rows; the status
    "train" gives train, "query" and "gallery" give test. Errors name path:line.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise ValueError(f"{path}:1: expected the number of images, got {lines[0] if lines else 'an empty file'!r}")
    if len(lines) < 2 or lines[1].split() != ["image_name", "item_id", "evaluation_status"]:
        raise ValueError(f"{path}:2: expected the header 'image_name item_id evaluation_status'")
    split_of = {"train": "train", "query": "test", "gallery": "test"}
    rows: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or fields[2] not in split_of:
            raise ValueError(f"{path}:{number}: expected '<image path> <item id> train|query|gallery', got {line!r}")
        rows[fields[0]] = (split_of[fields[2]], number)
    if len(rows) != int(lines[0]):
        raise ValueError(f"{path}:1: says {int(lines[0])} images, but the file has {len(rows)} rows")
    return rows


@dataclass
class InshopReport:
    """What `convert_inshop` did: images written per split, listed names the tree lacks
    (per split), tree images no list names (their tree paths)."""

    written: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unlisted: list[str] = field(default_factory=list)


def _tree(root: Path, prefix: str) -> dict[str, Path]:
    """{flat name: path} of the images under root/img (or root); errors for a name clash."""
    # The benchmark's download unpacks to Img/img/; a user may also point at img/ itself.
    base = next((b for b in (root / "img", root / "Img" / "img") if b.is_dir()), root)
    images: dict[str, Path] = {}
    for folder, _, files in sorted(os.walk(base)):
        for file in sorted(files):
            if not file.lower().endswith(_IMAGE_EXTENSIONS):
                continue
            path = Path(folder) / file
            relative = path.relative_to(base)
            if len(relative.parts) != 4:
                raise ValueError(f"{path}: expected {base}/<GENDER>/<Category>/<id_item>/<file>, the In-shop tree")
            name = flat_name(relative, prefix)
            if name in images:
                raise ValueError(f"{path} and {images[name]} both map to {name}")
            images[name] = path
    if not images:
        raise FileNotFoundError(f"root: no images under {base} (expected img/<GENDER>/<Category>/<id_item>/<file>)")
    return images


def _infer_prefix(names: list[str]) -> str:
    for name in names:
        match = re.match(r"^(.*?)(?:WOMEN|MEN)", name)
        if match:
            return match.group(1)
    return "fashion"


def convert_inshop(
    root: str | PathLike,
    out: str | PathLike,
    lists: tuple[str | PathLike, str | PathLike] | None = None,
    *,
    crop: bool = False,
    prefix: str | None = None,
    jpeg_quality: int = 75,
    overwrite: bool = False,
    progress: bool = True,
) -> InshopReport:
    """Copy the In-shop images into `out/train/` and `out/test/` under their flat names.

    root: the In-shop folder holding `img/` or `Img/img/` (and `Eval/list_eval_partition.txt`).
    lists: (train list, test list), each a .lst, annotation CSV or pairs CSV
        (`read_name_list`); without lists, In-shop's own partition file (root/Eval/ or
        root/list_eval_partition.txt: train -> train, query and gallery -> test).
    crop: write 256x176 crops (columns 40:216, Pose-Transfer's layout), as JPEG of
        `jpeg_quality` (75 is PIL's default, what Pose-Transfer's script used); without it
        the 256x256 files are copied byte for byte.
    prefix: the flat names' prefix; default the lists' ("fashion" for Pose-Transfer's,
        "fasion" for the Deformable GAN's), else "fashion".
    overwrite: allow a non-empty `out` (files of the same names are replaced).
    Every image must be 256x256 (the published resolution; the high-resolution tree
    img_highres is not what the CSVs' keypoints refer to). Errors name the file (and line
    for a list). Returns an `InshopReport`; nothing is copied when the input is malformed.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"root: no such folder {root}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be an int in [1, 100], got {jpeg_quality!r}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"out: {out} is not empty; pass overwrite=True (--overwrite) or choose an empty folder")

    wanted: dict[str, dict[str, str]] = {"train": {}, "test": {}}  # split -> {name: where it was listed}
    if lists is not None:
        if len(lists) != 2:
            raise ValueError(f"lists must be (train list, test list), got {len(lists)} files")
        for split, list_path in zip(("train", "test"), lists):
            wanted[split] = {name: f"{list_path}:{line}" for name, line in read_name_list(list_path).items()}
        prefix = _infer_prefix(list(wanted["train"]) + list(wanted["test"])) if prefix is None else prefix
        both = sorted(set(wanted["train"]) & set(wanted["test"]))
        if both:
            raise ValueError(f"{wanted['test'][both[0]]}: {both[0]} is in both lists (also "
                             f"{wanted['train'][both[0]]}); {len(both)} such names")
        tree = _tree(root, prefix)
    else:
        candidates = [root / "Eval" / "list_eval_partition.txt", root / "list_eval_partition.txt",
                      root / "Anno" / "list_eval_partition.txt"]
        partition_file = next((p for p in candidates if p.is_file()), None)
        if partition_file is None:
            raise FileNotFoundError(f"no lists given and no In-shop partition file ({candidates[0]}); "
                                    "pass --lists TRAIN TEST")
        prefix = "fashion" if prefix is None else prefix
        tree = _tree(root, prefix)
        for tree_path, (split, line) in read_partition(partition_file).items():
            try:
                name = flat_name(Path(tree_path).relative_to("img") if tree_path.startswith("img/") else tree_path,
                                 prefix)
            except ValueError as exc:
                raise ValueError(f"{partition_file}:{line}: {exc}") from None
            wanted[split][name] = f"{partition_file}:{line}"

    report = InshopReport()
    jobs: list[tuple[Path, Path]] = []
    for split in ("train", "test"):
        report.missing[split] = sorted(name for name in wanted[split] if name not in tree)
        jobs += [(tree[name], out / split / name) for name in sorted(wanted[split]) if name in tree]
    listed = set(wanted["train"]) | set(wanted["test"])
    report.unlisted = sorted(str(path.relative_to(root)) for name, path in tree.items() if name not in listed)
    for source, _ in jobs:  # every size before writing anything
        size = image_size(source)
        if size != INSHOP_SIZE:
            raise ValueError(f"{source}: image of size {size[0]}x{size[1]}, expected the In-shop "
                             f"{INSHOP_SIZE[0]}x{INSHOP_SIZE[1]} images (img/, not img_highres/)")

    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
    left, right = CROP_COLUMNS
    for source, target in tqdm(jobs, desc="deepfashion-inshop", unit="img", disable=not progress):
        if crop:
            image = read_rgb(source).crop((left, 0, right, INSHOP_SIZE[0]))
            image.save(target, quality=jpeg_quality)  # format from the extension (.jpg: JPEG)
        else:
            shutil.copyfile(source, target)
    report.written = {split: sum(1 for _, t in jobs if t.parent.name == split) for split in ("train", "test")}
    return report
