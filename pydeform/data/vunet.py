"""Data of the Variational U-Net: the original's `index.p` (read safely) and the pose-pair
format every pose-transfer family reads (`pydeform.data.PosePairs` layout), as square
images with their stickman and part homographies.

`index.p` (CompVis/vunet batches.py IndexFlow): a pickled dict with
    joint_order  list of joint names ("rankle", "rknee", ..., "cnose", "leye", ...)
    imgs         list of image paths relative to the index's folder
    train        list/array of bools, one per image (True: training split)
    joints       (N, J, 2) float array, (x, y) in [0, 1] of the image size, negative: missing
Pickles can run code when loaded; `load_index` unpickles with a restricted Unpickler that
admits only plain containers and numpy arrays and refuses every other class.

Only images with both shoulders and both hips are used, as in the original (IndexFlow._filter).
Images are resized to size x size with PIL bilinear (batches.load_img), keypoints scaled
with them.
"""
from __future__ import annotations

import io
import os
import pickle
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from pydeform.data._images import image_size, read_rgb
from pydeform.pose.keypoints import JOINT, NUM_JOINTS, read_annotations
from pydeform.pose.render import vunet_stickman
from pydeform.pose.vunet_parts import part_homographies

__all__ = [
    "INDEX_JOINT_NAMES",
    "REQUIRED_JOINTS",
    "ImagePairs",
    "IndexImages",
    "PoseImages",
    "PoseTransfers",
    "UnsafePickleError",
    "load_index",
]  # fmt: skip

# index.p joint names -> COCO-18 names (names not listed are ignored).
INDEX_JOINT_NAMES = {
    "cnose": "nose", "nose": "nose", "neck": "neck", "rshoulder": "Rsho", "relbow": "Relb", "rwrist": "Rwri",
    "lshoulder": "Lsho", "lelbow": "Lelb", "lwrist": "Lwri", "rhip": "Rhip", "rknee": "Rkne", "rankle": "Rank",
    "lhip": "Lhip", "lknee": "Lkne", "lankle": "Lank", "leye": "Leye", "reye": "Reye", "lear": "Lear", "rear": "Rear",
}  # fmt: skip
REQUIRED_JOINTS = ("Lsho", "Rsho", "Lhip", "Rhip")

# What an index pickle may reference: numpy's array and scalar reconstruction, and what
# Python 3 pickles of byte strings use (_codecs.encode). Everything else is refused.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"),
    ("__builtin__", "set"), ("__builtin__", "frozenset"),
}  # fmt: skip


class UnsafePickleError(pickle.UnpicklingError):
    """An index pickle referenced a class or function outside the allowed set."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: an index.p may hold only plain containers (dict, list, tuple, "
                "str, numbers) and numpy arrays; this file references other code, which unpickling would run"
            )
        return super().find_class(module, name)


def load_index(path: str | PathLike) -> dict[str, Any]:
    """Read and check an `index.p` (see the module docstring) without running code from it.

    Returns the dict with `joints` as a float64 (N, J, 2) array and `train` as a bool (N,)
    array. Raises FileNotFoundError, UnsafePickleError (a class other than containers and
    numpy arrays), or ValueError (a missing key or inconsistent lengths)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index file not found: {path}")
    data = path.read_bytes()
    try:
        index = _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file, said as such
        raise ValueError(f"{path} is not a readable index pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(index, dict):
        raise ValueError(f"{path}: expected a dict, got {type(index).__name__}")
    missing = [k for k in ("joint_order", "imgs", "train", "joints") if k not in index]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (expected joint_order, imgs, train, joints)")
    joints = np.asarray(index["joints"], dtype=np.float64)
    n = len(index["imgs"])
    if joints.ndim != 3 or joints.shape[2] != 2 or joints.shape[0] != n or joints.shape[1] != len(index["joint_order"]):
        raise ValueError(f"{path}: joints must be (N, J, 2) with N = {n} images and J = {len(index['joint_order'])} "
                         f"joint names, got {joints.shape}")  # fmt: skip
    train = np.asarray(index["train"], dtype=bool)
    if train.shape != (n,):
        raise ValueError(f"{path}: train must hold one flag per image ({n}), got shape {train.shape}")
    return {**index, "joints": joints, "train": train}


def _has_required(xy: np.ndarray) -> bool:
    points = xy[[JOINT[n] for n in REQUIRED_JOINTS]]
    return bool(np.isfinite(points).all() and (points >= 0).all())


def _load_square(path: Path, size: int) -> tuple[Tensor, tuple[int, int]]:
    """Image -> ((3, size, size) float32 in [-1, 1], native (H, W)); errors name the file."""
    rgb = read_rgb(path)
    native = (rgb.height, rgb.width)
    if native != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1)
    return pixels / 127.5 - 1.0, native


def _inputs(xy: np.ndarray, size: int, box_factor: int) -> dict[str, Tensor]:
    mats, valid = part_homographies(xy, (size, size), box_factor)
    return {"stickman": vunet_stickman(xy, (size, size)), "homographies": mats, "valid": valid,
            "keypoints": torch.from_numpy(xy).float()}  # fmt: skip


class _Images(Dataset):
    size: int
    box_factor: int

    def _item(self, path: Path, xy: np.ndarray, native: tuple[int, int] | None = None) -> dict[str, Any]:
        image, size = _load_square(path, self.size)
        if native is not None and size != native:  # the keypoints were scaled from `native`
            raise ValueError(f"{path}: image of size {size}, but the folder's images are {native} (the size of its "
                             "first image)")  # fmt: skip
        return {"image": image, **_inputs(xy, self.size, self.box_factor), "name": path.name}


class IndexImages(_Images):
    """The images of one split of an `index.p` (train=True/False), with both shoulders and
    both hips. Keypoints: joints * (size, size), the original's scaling, in COCO-18 order.

    Item: image (3, S, S) in [-1, 1]; stickman (3, S, S) (`vunet_stickman`); homographies
    (8, 3, 3) and valid (8,) of the part crops (`pydeform.pose.vunet_parts`); keypoints
    (18, 2) pixels (-1 missing); name."""

    def __init__(self, index_path: str | PathLike, train: bool, size: int, box_factor: int) -> None:
        self.index_path = Path(index_path)
        index = load_index(self.index_path)
        self.size, self.box_factor = int(size), int(box_factor)
        order = [INDEX_JOINT_NAMES.get(str(name).lower()) for name in index["joint_order"]]
        for required in REQUIRED_JOINTS:
            if required not in order:
                raise ValueError(f"{self.index_path}: joint_order lacks {required} (names: {index['joint_order']})")
        coco = np.full((len(index["imgs"]), NUM_JOINTS, 2), -1.0)
        for j, name in enumerate(order):
            if name is not None:
                coco[:, JOINT[name]] = index["joints"][:, j] * size
        coco[(coco < 0).any(axis=2) | ~np.isfinite(coco).all(axis=2)] = -1.0
        keep = [i for i in range(len(index["imgs"])) if index["train"][i] == train and _has_required(coco[i])]
        if not keep:
            raise ValueError(f"{self.index_path}: no {'training' if train else 'test'} image has both shoulders and hips")
        self.paths = [self.index_path.parent / str(index["imgs"][i]) for i in keep]
        self.keypoints = coco[keep]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._item(self.paths[i], self.keypoints[i])


def _scaled(xy: np.ndarray, native: tuple[int, int], size: int) -> np.ndarray:
    """Keypoints of a (H, W) image resized to size x size (PIL's pixel mapping)."""
    out = (xy + 0.5) * np.array([size / native[1], size / native[0]]) - 0.5
    out[(xy < 0).any(axis=1)] = -1.0
    return out


class PoseImages(_Images):
    """The distinct images of a pose-pair split (`<name>-annotation-<split>.csv`, images in
    `<name>-dataset/<split>/`; the layout of `pydeform.data.PosePairs`) with both shoulders
    and both hips, resized to size x size. Items as `IndexImages`."""

    def __init__(self, root: str | PathLike, name: str, split: str, size: int, box_factor: int) -> None:
        self.root, self.size, self.box_factor = Path(root), int(size), int(box_factor)
        annotation = self.root / f"{name}-annotation-{split}.csv"
        self.image_dir = self.root / f"{name}-dataset" / split
        for path in (annotation, self.image_dir):
            if not path.exists():
                raise FileNotFoundError(f"{path} not found (expected <root>/{name}-annotation-{split}.csv and "
                                        f"<root>/{name}-dataset/{split}/)")  # fmt: skip
        annotations = read_annotations(annotation)
        present = set(os.listdir(self.image_dir))
        self.names = sorted(n for n, kp in annotations.items() if n in present and _has_required(kp.xy))
        if not self.names:
            raise ValueError(f"{annotation}: no image with both shoulders and hips in {self.image_dir}")
        self.native = image_size(self.image_dir / self.names[0])
        self.keypoints = np.stack([_scaled(annotations[n].xy, self.native, self.size) for n in self.names])

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._item(self.image_dir / self.names[i], self.keypoints[i], self.native)


class PoseTransfers(Dataset):
    """The pairs of a pose-pair split for transfer: the source's image and part homographies,
    the target's image, stickman, keypoints and body mask (for mask-SSIM), at size x size.

    Item: source, target (3, S, S); source_stickman, target_stickman (3, S, S);
    homographies (8, 3, 3), valid (8,) of the SOURCE; source_kp, target_kp (18, 2);
    target_mask (1, S, S); target_native (3, H, W) the target at the files' size and
    target_mask_native (1, H, W) its body mask, target_kp_native (18, 2) its keypoints (so that metrics compare with the other
    families at the dataset's own size); source_name, target_name."""

    def __init__(self, root: str | PathLike, name: str, split: str, size: int, box_factor: int) -> None:
        from pydeform.data.pose_pairs import PosePairs

        self.pairs = PosePairs(root, name, split, skip_levels=0)
        self.size, self.box_factor = int(size), int(box_factor)
        self.native = self.pairs.native_size

    def __len__(self) -> int:
        return len(self.pairs.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from pydeform.metrics.image import body_mask

        source_name, target_name = self.pairs.pairs[i]
        folder = self.pairs.image_dir
        source, _ = _load_square(folder / source_name, self.size)
        target, _ = _load_square(folder / target_name, self.size)
        source_kp = _scaled(self.pairs.annotations[source_name].xy, self.native, self.size)
        target_kp = _scaled(self.pairs.annotations[target_name].xy, self.native, self.size)
        src, tgt = _inputs(source_kp, self.size, self.box_factor), _inputs(target_kp, self.size, self.box_factor)
        return {
            "source": source, "target": target, "source_stickman": src["stickman"],
            "target_stickman": tgt["stickman"], "homographies": src["homographies"], "valid": src["valid"],
            "source_kp": src["keypoints"], "target_kp": tgt["keypoints"],
            "target_mask": body_mask(target_kp, (self.size, self.size)).unsqueeze(0),
            "target_native": self.pairs._image(target_name),
            "target_mask_native": body_mask(self.pairs._keypoints(target_name), self.native).unsqueeze(0),
            "target_kp_native": self.pairs._keypoints(target_name).to_tensor(),
            "source_name": source_name, "target_name": target_name,
        }  # fmt: skip


class ImagePairs(Dataset):
    """Pairs (image i, image i + offset mod n) of an images dataset (`IndexImages`,
    `PoseImages`), with the keys of `PoseTransfers` but no masks or native images: for
    sample grids and transfers on data that has no pair list (index.p)."""

    def __init__(self, images: Dataset, offset: int = 1) -> None:
        self.images, self.offset = images, int(offset)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        source, target = self.images[i], self.images[(i + self.offset) % len(self.images)]
        return {
            "source": source["image"], "target": target["image"], "source_stickman": source["stickman"],
            "target_stickman": target["stickman"], "homographies": source["homographies"], "valid": source["valid"],
            "source_kp": source["keypoints"], "target_kp": target["keypoints"], "source_name": source["name"],
            "target_name": target["name"],
        }  # fmt: skip
