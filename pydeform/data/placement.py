"""Placement datasets for ST-GAN (Lin et al., CVPR 2018): a background, an RGBA foreground in
its canonical frame, a real composite, and warp parameters in ST-GAN's sl(3) basis
(`pydeform.geometry.params_to_matrix`, background -> canonical in normalized coordinates).

`Placement` reads the layout of `pydeform.data.synth_placement.write_placement`.
"""
from __future__ import annotations

import csv
import json
import math
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from pydeform.data.synth_placement import CSV_HEADER

__all__ = ["Placement"]


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


def _load(path: Path, mode: str, size: tuple[int, int]) -> Tensor:
    """Image file -> (C, H, W) float32 in [0, 1], converted to `mode`; checks the size."""
    with Image.open(path) as image:
        if (image.height, image.width) != size:
            raise ValueError(f"{path}: image of size {(image.height, image.width)}, expected {size}")
        pixels = np.asarray(image.convert(mode), dtype=np.float32)
    return torch.from_numpy(pixels / 255.0).permute(2, 0, 1).contiguous()


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
        info = json.loads(info_file.read_text())
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
