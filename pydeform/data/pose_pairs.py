"""Pose-pair dataset in the Deformable GAN authors' format (DESIGN.md sections 5 and 6).

Layout under `root` (`name` e.g. "market" or "fasion", `split` "train" or "test")::

    <name>-annotation-<split>.csv   name:keypoints_y:keypoints_x (JSON lists of 18 ints, -1 missing)
    <name>-pairs-<split>.csv        from,to (image names)
    <name>-dataset/<split>/         the images, all of one size

Each item is a dict of tensors ready for the Deformable GAN generator (see `PosePairs`).
"""
from __future__ import annotations

import csv
import os
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from pydeform.data._images import image_size as _image_size
from pydeform.data._images import read_image, to_rgb
from pydeform.metrics.image import body_mask
from pydeform.pose import JOINT_NAMES, Keypoints, at_resolution, heatmaps, part_transforms
from pydeform.pose.keypoints import _check_size, _read_annotations

__all__ = ["PosePairs"]

_PAIRS_HEADER = ("from", "to")
_HEATMAP_SIGMA = 6.0  # DESIGN.md section 5


def _read_pairs(path: Path) -> list[tuple[int, str, str]]:
    """`from,to` CSV -> [(1-based line, from name, to name)]. Blank lines are skipped;
    a bad header or row raises ValueError naming path:line."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = tuple(field.strip() for field in next(csv.reader(lines[:1]), []))
    if header != _PAIRS_HEADER:
        got = lines[0] if lines else "an empty file"
        raise ValueError(f"{path}:1: expected the header 'from,to', got {got!r}")
    pairs = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [field.strip() for field in next(csv.reader([line]))]
        if len(fields) != 2 or not all(fields):
            raise ValueError(f"{path}:{number}: expected two image names 'from,to', got {line!r}")
        pairs.append((number, fields[0], fields[1]))
    return pairs


class PosePairs(Dataset):
    """(source image, target image) pairs of one person with their poses and part warps.

    Args:
        root: folder holding the files of the module docstring's layout.
        name: file-name prefix ("market" for Market-1501, "fasion" for DeepFashion).
        split: "train" or "test" (any name the files use).
        skip_levels: L, the number of generator encoder resolutions that get deformable
            skip connections (4 in the Deformable GAN); 0 gives no warps.
        image_size: (H, W) to resize every image to (PIL bilinear, with keypoints mapped
            the same way: x -> (x + 0.5) W / W0 - 0.5), or None to keep the images' size.

    The images must all have the size of the first pair's source image (checked per item);
    every pair's names must have an annotation row and an image file (checked on
    construction), and every keypoint must lie less than one image size beyond the image's
    edge. Errors name the file and line: ValueError for a malformed row, a bad header, an
    unknown name or a keypoint far outside the image; FileNotFoundError for a missing file;
    OSError naming the image for an image that cannot be read (truncated, corrupt).

    Item (a dict; `torch.utils.data.default_collate` stacks it into a batch):
        source, target: (3, H, W) float32 images in [-1, 1].
        source_pose, target_pose: (18, H, W) Gaussian joint heatmaps, sigma 6 px
            (`pydeform.pose.heatmaps`), a missing joint all zeros.
        source_kp, target_kp: (18, 2) float32 keypoints (x, y) in pixels of the (resized)
            image, -1 where missing.
        theta: (L, 10, 2, 3) float32, the 10 part transforms of
            `pydeform.pose.part_transforms(source_kp, target_kp, (H, W))` (target pixel ->
            source pixel, the direction `pydeform.ops.multi_affine_warp` takes) rescaled by
            `pydeform.pose.at_resolution` to level l's grid.
        masks0 .. masks{L-1}: (10, H_l, W_l) float32 part masks in the target frame at level
            l (nearest sampling); level l has (H_l, W_l) = (H // 2**l, W // 2**l), the
            encoder feature map before the l-th stride-2 block (a 4x4 stride-2 convolution
            with padding 1 halves a side, rounding down); level 0 is the image itself.
            Separate keys because the levels differ in size.
        target_mask: (1, H, W) float32 in {0, 1}, the body mask of the target pose that
            mask-SSIM uses (`pydeform.metrics.body_mask`, the original evaluation's mask).
        source_name, target_name: the image names (str).
    """

    def __init__(
        self,
        root: str | PathLike,
        name: str = "market",
        split: str = "train",
        skip_levels: int = 4,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        for value, arg in ((name, "name"), (split, "split")):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{arg} must be a non-empty string, got {value!r}")
        if isinstance(skip_levels, bool) or not isinstance(skip_levels, (int, np.integer)) or skip_levels < 0:
            raise ValueError(f"skip_levels must be a non-negative int, got {skip_levels!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: no such folder {self.root}")
        self.name, self.split, self.skip_levels = name, split, int(skip_levels)
        self.annotation_file = self.root / f"{name}-annotation-{split}.csv"
        self.pairs_file = self.root / f"{name}-pairs-{split}.csv"
        self.image_dir = self.root / f"{name}-dataset" / split
        for path in (self.annotation_file, self.pairs_file, self.image_dir):
            if not path.exists():
                raise FileNotFoundError(f"{path} not found (expected <root>/{name}-annotation-{split}.csv, "
                                        f"<root>/{name}-pairs-{split}.csv and <root>/{name}-dataset/{split}/)")

        self.annotations: dict[str, Keypoints]
        self.annotations, lines = _read_annotations(self.annotation_file)
        rows = _read_pairs(self.pairs_file)
        if not rows:
            raise ValueError(f"{self.pairs_file}: no pairs")
        present = set(os.listdir(self.image_dir))  # one listing, not a stat per name
        for number, *names in rows:
            for image in names:
                if image not in self.annotations:
                    raise ValueError(f"{self.pairs_file}:{number}: image {image!r} has no row in "
                                     f"{self.annotation_file}")
                if image not in present and not (self.image_dir / image).is_file():
                    raise FileNotFoundError(f"{self.pairs_file}:{number}: image file {self.image_dir / image} "
                                            "not found")
        self.pairs: list[tuple[str, str]] = [(source, target) for _, source, target in rows]

        self.native_size: tuple[int, int] = _image_size(self.image_dir / self.pairs[0][0])  # the header only
        # A keypoint more than an image size outside the image is a broken annotation (or one
        # made for other images): refuse it rather than warp with it.
        height, width = self.native_size
        for image in sorted({name for pair in self.pairs for name in pair}, key=lines.__getitem__):
            keypoints = self.annotations[image]
            far = ~keypoints.missing & ((keypoints.xy[:, 0] >= 2 * width) | (keypoints.xy[:, 1] >= 2 * height))
            if far.any():
                joint = int(np.argmax(far))
                x, y = keypoints.xy[joint]
                raise ValueError(f"{self.annotation_file}:{lines[image]}: {image}: joint {JOINT_NAMES[joint]} at "
                                 f"(x, y) = ({x:g}, {y:g}) is far outside the {height}x{width} images (allowed: "
                                 f"up to one image size beyond their edge)")
        self.image_size: tuple[int, int] = self.native_size if image_size is None else _check_size(
            image_size, "image_size")
        h, w = self.image_size
        self.level_sizes: list[tuple[int, int]] = [(h >> level, w >> level) for level in range(self.skip_levels)]
        if self.level_sizes and min(self.level_sizes[-1]) < 1:
            raise ValueError(f"skip_levels: {self.skip_levels} halvings of the image size {self.image_size} "
                             "leave an empty feature map")

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return (f"PosePairs(root={str(self.root)!r}, name={self.name!r}, split={self.split!r}, pairs={len(self)}, "
                f"image_size={self.image_size}, skip_levels={self.skip_levels})")

    def _image(self, image: str) -> Tensor:
        """Image file -> (3, H, W) float32 in [-1, 1] at `image_size`."""
        path = self.image_dir / image
        loaded = read_image(path)  # errors name the file
        if (loaded.height, loaded.width) != self.native_size:
            raise ValueError(f"{path}: image of size {(loaded.height, loaded.width)}, but the dataset's images "
                             f"are {self.native_size} (the size of {self.image_dir / self.pairs[0][0]})")
        rgb = to_rgb(loaded)
        if self.image_size != self.native_size:
            rgb = rgb.resize(self.image_size[::-1], Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1)
        return pixels / 127.5 - 1.0

    def _keypoints(self, image: str) -> Keypoints:
        """Annotation of `image`, mapped to `image_size` the way PIL's resize maps pixels."""
        keypoints = self.annotations[image]
        if self.image_size == self.native_size:
            return keypoints
        scale = np.array(self.image_size[::-1], dtype=np.float64) / np.array(self.native_size[::-1])
        xy = (keypoints.xy + 0.5) * scale - 0.5
        xy[keypoints.missing] = -1
        return Keypoints(xy)

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        source_name, target_name = self.pairs[index]
        source_kp, target_kp = self._keypoints(source_name), self._keypoints(target_name)
        size = self.image_size
        item: dict[str, Tensor | str] = {
            "source": self._image(source_name),
            "target": self._image(target_name),
            "source_pose": heatmaps(source_kp, size, sigma=_HEATMAP_SIGMA),
            "target_pose": heatmaps(target_kp, size, sigma=_HEATMAP_SIGMA),
            "source_kp": source_kp.to_tensor(),
            "target_kp": target_kp.to_tensor(),
        }
        theta, masks = part_transforms(source_kp, target_kp, size)
        thetas = []
        for level, level_size in enumerate(self.level_sizes):
            level_theta, item[f"masks{level}"] = at_resolution(theta, masks, level_size)
            thetas.append(level_theta)
        item["theta"] = torch.stack(thetas) if thetas else theta.new_zeros((0, *theta.shape))
        item["target_mask"] = body_mask(target_kp, size).unsqueeze(0)
        item["source_name"], item["target_name"] = source_name, target_name
        return item
