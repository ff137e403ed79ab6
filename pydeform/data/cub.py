"""The CUB-200-2011 layout that FineGAN and MixNMatch read, and their preprocessing.

A dataset folder holds

    images.txt              `<id> <relative path>` per line (paths under images/)
    bounding_boxes.txt      `<id> <x> <y> <w> <h>` per line (pixels, top-left corner and size)
    train_test_split.txt    optional, `<id> <1 train | 0 test>` per line
    images/...              the images

`read_cub(root)` parses the text files (errors name the file and the line).

`CUBObjects(root, split)` yields the deterministic part of FineGAN's preprocessing
(`get_imgs` in code/datasets.py of github.com/kkanshul/finegan); the random part
(`augment`) runs on the batch inside the training step, with the step's seeded generator,
so that a resumed run draws the same crops:

- object image: a square of side 2 r, r = int(0.75 max(w, h)), around the box centre
  (int((2x + w) / 2), int((2y + h) / 2)), clipped to the image; resized to 152 = 128 * 76 / 64;
  `augment`: a random 128 crop and a random horizontal flip (their Scale + RandomCrop +
  RandomHorizontalFlip);
- background image: the whole image resized so the shorter side is 149 = int(126 * 76 / 64);
  `augment`: a random 126 crop (offsets in [0, 149 - 126), np.random.randint's range) and a
  flip, with the box moved, clipped to the crop and flipped along, as (y1, x1, y2, x2) —
  datasets.py's warped_bbox order.

Deviation (fixed-size batches): both images are centre-cropped to squares (152x152 and
149x149) after resizing, where the original keeps the aspect ratio of a clipped box and
crops the background anywhere along the longer side. On square images with boxes inside
them (the synthetic factor set) nothing changes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from pydeform.data._images import read_rgb

__all__ = ["CUBRecord", "read_cub", "CUBObjects", "augment", "object_crop", "centre_object", "OBJECT_LOAD", "OBJECT_SIZE", "SCENE_LOAD", "SCENE_SIZE"]

OBJECT_SIZE, OBJECT_LOAD = 128, 152  # 152 = int(128 * 76 / 64)
SCENE_SIZE, SCENE_LOAD = 126, 149  # 149 = int(126 * 76 / 64)


@dataclass(frozen=True)
class CUBRecord:
    id: int
    path: str  # relative to images/
    box: tuple[float, float, float, float]  # x, y, w, h
    train: bool | None  # None: no train_test_split.txt


def _lines(path: Path, fields: int) -> list[tuple[int, list[str], int]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (a CUB-layout folder holds images.txt, bounding_boxes.txt and images/)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != fields:
            raise ValueError(f"{path}, line {number}: expected {fields} fields, got {len(parts)}: {line!r}")
        try:
            ident = int(parts[0])
        except ValueError:
            raise ValueError(f"{path}, line {number}: the id {parts[0]!r} is not an integer") from None
        rows.append((ident, parts[1:], number))
    return rows


def read_cub(root: str | os.PathLike) -> list[CUBRecord]:
    """The records of a CUB-layout folder, in images.txt order."""
    root = Path(root)
    images = _lines(root / "images.txt", 2)
    boxes: dict[int, tuple[float, ...]] = {}
    box_file = root / "bounding_boxes.txt"
    for ident, parts, number in _lines(box_file, 5):
        try:
            x, y, w, h = (float(v) for v in parts)
        except ValueError:
            raise ValueError(f"{box_file}, line {number}: the box {' '.join(parts)!r} is not 4 numbers") from None
        if not (w > 0 and h > 0):
            raise ValueError(f"{box_file}, line {number}: the box size {w} x {h} is not positive")
        boxes[ident] = (x, y, w, h)
    split: dict[int, bool] = {}
    split_file = root / "train_test_split.txt"
    if split_file.is_file():
        for ident, parts, number in _lines(split_file, 2):
            if parts[0] not in ("0", "1"):
                raise ValueError(f"{split_file}, line {number}: expected 1 (train) or 0 (test), got {parts[0]!r}")
            split[ident] = parts[0] == "1"
    records, seen = [], set()
    for ident, (path,), number in images:
        if ident in seen:
            raise ValueError(f"{root / 'images.txt'}, line {number}: id {ident} appears twice")
        seen.add(ident)
        if ident not in boxes:
            raise ValueError(f"{box_file}: no box for id {ident} (images.txt, line {number})")
        if split and ident not in split:
            raise ValueError(f"{split_file}: no split for id {ident} (images.txt, line {number})")
        records.append(CUBRecord(ident, path, boxes[ident], split.get(ident)))
    if not records:
        raise ValueError(f"{root / 'images.txt'} lists no images")
    return records


def _square(image: Image.Image, side: int) -> tuple[Image.Image, float, float, float]:
    """Resize so the shorter side is `side` (bilinear), centre-crop to side x side; returns
    the image, the scale and the crop's offsets (x, y) in the resized image."""
    w, h = image.size
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    resized = image.resize((nw, nh), Image.BILINEAR)
    ox, oy = (nw - side) // 2, (nh - side) // 2
    return resized.crop((ox, oy, ox + side, oy + side)), scale, ox, oy


def object_crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """FineGAN's 1.5x square crop around box (x, y, w, h), clipped to the image, resized and
    centre-cropped to 152x152 (see the module docstring)."""
    width, height = image.size
    x, y, w, h = box
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    crop = image.crop((max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)))
    return _square(crop, OBJECT_LOAD)[0]


def _to_tensor(image: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


class CUBObjects(Dataset):
    """Items: "object" (3, 152, 152) and "scene" (3, 149, 149) in [-1, 1], "box" (4,) the
    box in the scene as (x1, y1, x2, y2) pixels, "index". split: "train", "test" (by
    train_test_split.txt; without it both are every image) or "all"."""

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        self.root = Path(root)
        records = read_cub(self.root)
        if split != "all" and records[0].train is not None:
            records = [r for r in records if r.train == (split == "train")]
        if not records:
            raise ValueError(f"the {split} split of {self.root} is empty")
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Tensor | int]:
        record = self.records[index]
        path = self.root / "images" / record.path
        try:
            image = read_rgb(path)
        except OSError as exc:
            raise OSError(f"{exc} (images.txt id {record.id})") from exc
        x, y, w, h = record.box
        if not (x < image.width and y < image.height and x + w > 0 and y + h > 0 and max(w, h) * 0.75 >= 1):
            raise ValueError(f"{path} (images.txt id {record.id}): the box {x} {y} {w} {h} of bounding_boxes.txt "
                             f"is smaller than 2 pixels or outside the {image.width}x{image.height} image")  # fmt: skip
        obj = object_crop(image, record.box)
        scene, scale, ox, oy = _square(image, SCENE_LOAD)
        box = torch.tensor([x * scale - ox, y * scale - oy, (x + w) * scale - ox, (y + h) * scale - oy])
        return {"object": _to_tensor(obj), "scene": _to_tensor(scene), "box": box.float(), "index": index}


def centre_object(objects: Tensor) -> Tensor:
    """The centre 128x128 of (B, C, 152, 152) object crops (evaluation: no random crop)."""
    start = (OBJECT_LOAD - OBJECT_SIZE) // 2
    return objects[..., start : start + OBJECT_SIZE, start : start + OBJECT_SIZE]


def augment(batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """FineGAN's random crops and flips of a batch of `CUBObjects` items (torch's global
    generator unless one is given) -> (object (B, 3, 128, 128), scene (B, 3, 126, 126),
    box (B, 4) as (y1, x1, y2, x2) in the scene crop)."""
    obj, scene, box = batch["object"], batch["scene"], batch["box"].double()
    n = obj.shape[0]
    draw = lambda high, size: torch.randint(0, high, (size,), generator=generator).tolist()  # noqa: E731
    ox, oy = draw(OBJECT_LOAD - OBJECT_SIZE + 1, n), draw(OBJECT_LOAD - OBJECT_SIZE + 1, n)
    sx, sy = draw(SCENE_LOAD - SCENE_SIZE, n), draw(SCENE_LOAD - SCENE_SIZE, n)
    flip_obj, flip_scene = draw(2, n), draw(2, n)
    objects, scenes, boxes = [], [], []
    for i in range(n):
        o = obj[i, :, oy[i] : oy[i] + OBJECT_SIZE, ox[i] : ox[i] + OBJECT_SIZE]
        objects.append(o.flip(-1) if flip_obj[i] else o)  # RandomHorizontalFlip: p = 0.5
        s = scene[i, :, sy[i] : sy[i] + SCENE_SIZE, sx[i] : sx[i] + SCENE_SIZE]
        x1, y1, x2, y2 = box[i].tolist()
        x1, y1 = min(max(0.0, x1 - sx[i]), SCENE_SIZE), min(max(0.0, y1 - sy[i]), SCENE_SIZE)
        x2, y2 = max(min(SCENE_SIZE, x2 - sx[i]), 0.0), max(min(SCENE_SIZE, y2 - sy[i]), 0.0)
        if flip_scene[i] == 0:  # datasets.py flips when randint(2) == 0
            s = s.flip(-1)
            x1, x2 = SCENE_SIZE - x2, SCENE_SIZE - x1
        scenes.append(s)
        boxes.append([y1, x1, y2, x2])
    return torch.stack(objects), torch.stack(scenes), torch.tensor(boxes, dtype=torch.float32, device=obj.device)
