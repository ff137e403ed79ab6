"""Placement datasets for ST-GAN (Lin et al., CVPR 2018): a background, an RGBA foreground in
its canonical frame, a real composite, and warp parameters in ST-GAN's sl(3) basis
(`pydeform.geometry.params_to_matrix`, background -> canonical in normalized coordinates).

`Placement` reads the layout of `pydeform.data.synth_placement.write_placement`;
`CelebAGlasses` reads the CelebA layout for ST-GAN's glasses experiment.
"""
from __future__ import annotations

import csv
import json
import math
import os
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from pydeform.data._images import has_alpha, read_image, to_rgb
from pydeform.data.synth_placement import CSV_HEADER, PERTURBATION_STD

__all__ = ["Placement", "CelebAGlasses", "CELEBA_CROP", "CELEBA_IMAGE_SIZE"]


def _read_params(path: Path, number: int, column: str, text: str) -> Tensor:
    """A JSON list of 8 finite numbers -> (8,) float32; errors name path:line."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = None
    ok = (
        isinstance(values, list) and len(values) == 8
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )  # fmt: skip
    if not ok:
        raise ValueError(f"{path}:{number}: {column} must be a JSON list of 8 finite numbers, got {text!r}")
    return torch.tensor(values, dtype=torch.float32)


def _to_tensor(image: Image.Image) -> Tensor:
    """PIL image -> (C, H, W) float32 in [0, 1]. The layout change is done in numpy: a torch
    copy this small pays more for waking torch's thread pool than for the work."""
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(pixels))


def _load(path: Path, mode: str, size: tuple[int, int]) -> Tensor:
    """Image file -> (C, H, W) float32 in [0, 1], converted to `mode`; checks the size, and
    for mode RGBA that the file has an alpha channel (a foreground without one would
    silently be fully opaque). Read errors name the file (OSError)."""
    image = read_image(path)
    if (image.height, image.width) != size:
        raise ValueError(f"{path}: image of size {(image.height, image.width)}, expected {size}")
    if mode == "RGBA" and not has_alpha(image):
        raise ValueError(f"{path}: the foreground must have an alpha channel (RGBA PNG), got mode {image.mode}")
    return _to_tensor(image.convert(mode))


class Placement(Dataset):
    """The synthetic placement task of `write_placement`, one split.

    Args:
        root: the folder `write_placement` wrote (placement-<split>.csv, info.json, images).
        split: "train" or "test".

    Checked on construction, errors naming file and line: the CSV header, each row's 5
    fields and 8-number parameter lists (ValueError), every image file's existence
    (FileNotFoundError). Image sizes are checked when an item is read against info.json's
    "size".

    Item (a dict; `torch.utils.data.default_collate` stacks it into a batch):
        background: (3, H, W) float32 in [0, 1].
        foreground: (4, H, W) float32 RGBA in [0, 1] (straight alpha), canonical frame.
        real: (3, H, W) float32 in [0, 1], the foreground composited at p_true.
        p_true: (8,) float32, the correct warp (background -> canonical).
        p_init: (8,) float32, the perturbed starting warp.
        name: str, the background's path relative to root.
    """

    def __init__(self, root: str | PathLike, split: str = "train") -> None:
        if not isinstance(split, str) or not split:
            raise TypeError(f"split must be a non-empty string, got {split!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: no such folder {self.root}")
        self.split = split
        self.csv_file = self.root / f"placement-{split}.csv"
        info_file = self.root / "info.json"
        for path in (self.csv_file, info_file):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (expected the layout of `pydeform synth placement`)")
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{info_file}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{info_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        size = info.get("size") if isinstance(info, dict) else None
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
            raise ValueError(f"{info_file}: expected \"size\": [H, W], got {size!r}")
        self.size: tuple[int, int] = (size[0], size[1])
        self.corners: list[list[float]] | None = info.get("corners")
        self.rows: list[tuple[str, str, str, Tensor, Tensor]] = self._read_csv()

    def _read_csv(self) -> list[tuple[str, str, str, Tensor, Tensor]]:
        path = self.csv_file
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        header = tuple(field.strip() for field in next(csv.reader(lines[:1]), []))
        if header != CSV_HEADER:
            got = lines[0] if lines else "an empty file"
            raise ValueError(f"{path}:1: expected the header {','.join(CSV_HEADER)!r}, got {got!r}")
        rows = []
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = [field.strip() for field in next(csv.reader([line]))]
            if len(fields) != len(CSV_HEADER) or not all(fields):
                raise ValueError(f"{path}:{number}: expected 5 fields {','.join(CSV_HEADER)}, got {line!r}")
            images = fields[:3]
            for column, image in zip(CSV_HEADER, images):
                if not (self.root / image).is_file():
                    raise FileNotFoundError(f"{path}:{number}: {column} file {self.root / image} not found")
            p_true = _read_params(path, number, "p_true", fields[3])
            p_init = _read_params(path, number, "p_init", fields[4])
            rows.append((*images, p_true, p_init))
        if not rows:
            raise ValueError(f"{path}: no samples")
        return rows

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"Placement(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}, size={self.size})"

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        background, foreground, real, p_true, p_init = self.rows[index]
        return {
            "background": _load(self.root / background, "RGB", self.size),
            "foreground": _load(self.root / foreground, "RGBA", self.size),
            "real": _load(self.root / real, "RGB", self.size),
            "p_true": p_true.clone(),
            "p_init": p_init.clone(),
            "name": background,
        }


# ST-GAN's glasses experiment (Lin et al., CVPR 2018, github.com/chenhsuanlin/spatial-transformer-GAN,
# glasses/): 144 x 144 crops of the aligned 178 x 218 CelebA images centred at (row 124, col 89).
CELEBA_IMAGE_SIZE = (218, 178)  # (height, width) of img_align_celeba
CELEBA_CROP = (52, 196, 17, 161)  # rows 52:196, cols 17:161
_PARTITIONS = {"train": 0, "val": 1, "test": 2}


def _read_partition(path: Path) -> dict[str, tuple[int, int]]:
    """list_eval_partition.txt ("000001.jpg 0" lines) -> {name: (0 | 1 | 2, line)}; errors name path:line."""
    partition = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{number}: expected '<image> <0|1|2>', got {line!r}")
        partition[fields[0]] = (int(fields[1]), number)
    return partition


def _read_attribute(path: Path, attribute: str) -> dict[str, bool]:
    """list_attr_celeba.txt -> {name: attribute == 1}; errors name path:line.

    Layout: line 1 the number of images, line 2 the attribute names, then
    "<image> <-1|1> ..." with one value per name.
    """
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        got = lines[0] if lines else "an empty file"
        raise ValueError(f"{path}:1: expected the number of images, got {got!r}")
    names = lines[1].split()
    if attribute not in names:
        raise ValueError(f"{path}:2: no {attribute!r} among the attribute names {names}")
    column = names.index(attribute)
    values = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1 or not all(v in ("-1", "1") for v in fields[1:]):
            raise ValueError(f"{path}:{number}: expected '<image>' and {len(names)} values of -1 or 1, got {line!r}")
        values[fields[0]] = fields[1 + column] == "1"
    if len(values) != int(lines[0]):
        raise ValueError(f"{path}:1: says {int(lines[0])} images, but the file has {len(values)} rows")
    return values


class CelebAGlasses(Dataset):
    """ST-GAN's glasses task on CelebA: put glasses on faces that have none (unpaired).

    Args:
        root: the CelebA folder: img_align_celeba/*.jpg (178 wide, 218 tall),
            list_attr_celeba.txt (its Eyeglasses column), list_eval_partition.txt.
        glasses_dir: a folder of RGBA glasses PNGs aligned to the canonical (cropped) face;
            each is resized to the crop size.
        split: "train", "val" or "test" (partition 0, 1, 2).
        size: side of the square items; the 144 x 144 crop (rows 52:196, cols 17:161, as
            ST-GAN) is resized to it (PIL bilinear) when it is not 144.
        seed: seeds the per-item choices below.

    The items are the split's faces without eyeglasses, in file order. Item i (a dict;
    `torch.utils.data.default_collate` stacks it into a batch), drawn from
    numpy.random.default_rng([seed, i]) so that it does not depend on the loading order:
        background: (3, size, size) float32 in [0, 1], face i without eyeglasses.
        foreground: (4, size, size) float32 RGBA in [0, 1], one of the glasses at random.
        real: (3, size, size) float32 in [0, 1], a random face of the split WITH eyeglasses.
        p_init: (8,) float32, 0.1 N(0, 1) (ST-GAN's initial perturbation of the identity).
        name: str, the background's file name.
    There is no p_true: the correct placement on a real photo is unknown.

    Errors (on construction) name the file and line: ValueError for a malformed row, an
    image of the split without an attribute row, a split with no face with (or without)
    eyeglasses, a glasses PNG without alpha; FileNotFoundError for a missing image file or
    a glasses_dir without PNGs. Image sizes are checked when an item is read.
    """

    def __init__(
        self,
        root: str | PathLike,
        glasses_dir: str | PathLike,
        split: str = "train",
        size: int = 144,
        seed: int = 0,
    ) -> None:
        if split not in _PARTITIONS:
            raise ValueError(f"split must be one of {tuple(_PARTITIONS)}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.root, self.glasses_dir = Path(root), Path(glasses_dir)
        self.split, self.size, self.seed = split, size, seed
        self.image_dir = self.root / "img_align_celeba"
        attr_file = self.root / "list_attr_celeba.txt"
        partition_file = self.root / "list_eval_partition.txt"
        for path in (self.image_dir, attr_file, partition_file, self.glasses_dir):
            if not path.exists():
                raise FileNotFoundError(f"{path} not found (expected root/img_align_celeba/, root/list_attr_celeba.txt, "
                                        "root/list_eval_partition.txt and a glasses folder)")

        partition = _read_partition(partition_file)
        eyeglasses = _read_attribute(attr_file, "Eyeglasses")
        present = set(os.listdir(self.image_dir))  # one listing, not a stat per name
        self.backgrounds: list[str] = []
        self.reals: list[str] = []
        for name, (code, line) in partition.items():
            if code != _PARTITIONS[split]:
                continue
            if name not in eyeglasses:
                raise ValueError(f"{partition_file}:{line}: {name} has no row in {attr_file}")
            if name not in present:
                raise FileNotFoundError(f"{partition_file}:{line}: image file {self.image_dir / name} not found")
            (self.reals if eyeglasses[name] else self.backgrounds).append(name)
        for kind, names in (("without", self.backgrounds), ("with", self.reals)):
            if not names:
                raise ValueError(f"{partition_file}: the {split} split has no face {kind} eyeglasses")

        glasses_files = sorted(self.glasses_dir.glob("*.png"))
        if not glasses_files:
            raise FileNotFoundError(f"glasses_dir: no *.png in {self.glasses_dir}")
        self.glasses: list[Tensor] = [self._glasses(path) for path in glasses_files]  # (4, size, size) each

    def _glasses(self, path: Path) -> Tensor:
        image = read_image(path)
        if not has_alpha(image):
            raise ValueError(f"{path}: glasses must have an alpha channel (RGBA PNG), got mode {image.mode}")
        rgba = image.convert("RGBA")
        if rgba.size != (self.size, self.size):
            rgba = rgba.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return _to_tensor(rgba)

    def crop(self, name: str) -> Tensor:
        """The face crop of image `name`: (3, size, size) float32 in [0, 1]."""
        path = self.image_dir / name
        image = read_image(path)
        if (image.height, image.width) != CELEBA_IMAGE_SIZE:
            raise ValueError(f"{path}: image of size {(image.height, image.width)}, expected the aligned CelebA "
                             f"size {CELEBA_IMAGE_SIZE}")
        top, bottom, left, right = CELEBA_CROP
        face = to_rgb(image).crop((left, top, right, bottom))
        if self.size != bottom - top:
            face = face.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return _to_tensor(face)

    def __len__(self) -> int:
        return len(self.backgrounds)

    def __repr__(self) -> str:
        return (f"CelebAGlasses(root={str(self.root)!r}, split={self.split!r}, backgrounds={len(self)}, "
                f"reals={len(self.reals)}, glasses={len(self.glasses)}, size={self.size})")

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        name = self.backgrounds[index]
        rng = np.random.default_rng([self.seed, index])
        real = self.reals[int(rng.integers(len(self.reals)))]
        glasses = self.glasses[int(rng.integers(len(self.glasses)))]
        p_init = PERTURBATION_STD * rng.standard_normal(8)
        return {
            "background": self.crop(name),
            "foreground": torch.from_numpy(glasses.numpy().copy()),
            "real": self.crop(real),
            "p_init": torch.from_numpy(p_init.astype(np.float32)),
            "name": name,
        }
