"""Image folders for the distribution metrics: listing, reading, Inception outputs in batches
(the last, partial batch counts: every image is used), and feature statistics with a cache
keyed by content.

A cached statistics file is named after a SHA-256 of the images' names and bytes, the
Inception weight file's bytes and the resize mode; a folder whose content changed gets a
new key and never reuses stale statistics.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from pydeform.data._images import to_rgb
from pydeform.metrics.distribution import FeatureStats, feature_stats
from pydeform.nets.inception import InceptionV3FID
from pydeform.nets.weights import file_sha256

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_image", "inception_outputs", "folder_outputs",
           "folder_key", "folder_stats"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_VERSION = "pydeform-fid-stats-1"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in `folder` (by suffix), sorted by name; an error when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def read_image(path: Path) -> Tensor:
    """-> (3, H, W) uint8 RGB."""
    with Image.open(path) as image:
        array = np.asarray(to_rgb(image))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _same_size_runs(images: Sequence[Tensor]) -> Iterable[Tensor]:
    """Consecutive images of one size, stacked (a folder may mix sizes)."""
    start = 0
    for end in range(1, len(images) + 1):
        if end == len(images) or images[end].shape != images[start].shape:
            yield torch.stack(list(images[start:end]))
            start = end


def inception_outputs(net: InceptionV3FID, batches: Iterable[Sequence[Tensor]], total: int | None = None,
                      progress: bool = True, desc: str = "inception") -> tuple[np.ndarray, np.ndarray]:
    """Run `net` over batches of (3, H, W) 0..255 images -> (features (N, 2048), logits (N, 1008))
    as float64 numpy, in input order."""
    device = net.fc.weight.device
    features, logits = [], []
    with torch.inference_mode(), tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for batch in batches:
            for run in _same_size_runs(batch):
                f, z = net(run.to(device))
                features.append(f.double().cpu())
                logits.append(z.double().cpu())
                bar.update(len(run))
    if not features:
        raise ValueError("no images were given")
    return torch.cat(features).numpy(), torch.cat(logits).numpy()


def folder_outputs(net: InceptionV3FID, paths: Sequence[Path], batch_size: int = 50, progress: bool = True,
                   desc: str = "inception") -> tuple[np.ndarray, np.ndarray]:
    """Inception features and logits of image files, `batch_size` at a time (remainder kept)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = ([read_image(p) for p in paths[i:i + batch_size]] for i in range(0, len(paths), batch_size))
    return inception_outputs(net, batches, total=len(paths), progress=progress, desc=desc)


def folder_key(paths: Sequence[Path], net: InceptionV3FID) -> str:
    """SHA-256 of the settings (weight file bytes, resize mode) and of each image's name and bytes."""
    if net.weights_path is None:
        raise ValueError("statistics of random Inception weights are not cached (no weight file to key them by)")
    digest = hashlib.sha256(f"{CACHE_VERSION}\n{file_sha256(net.weights_path)}\n{net.resize}\n".encode())
    for path in paths:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def folder_stats(folder: str | os.PathLike, net: InceptionV3FID, cache_dir: str | os.PathLike | None = None,
                 batch_size: int = 50, progress: bool = True) -> FeatureStats:
    """FID statistics of the images in `folder`. With `cache_dir` (and a weight file), they are
    read from / written to `cache_dir/<content key>.npz`."""
    paths = list_images(folder)
    cache = None
    if cache_dir is not None and net.weights_path is not None:
        key = folder_key(paths, net)
        cache = Path(cache_dir) / f"{key}.npz"
        if cache.is_file():
            return FeatureStats.load(cache)
    features, _ = folder_outputs(net, paths, batch_size, progress, desc=f"statistics of {Path(folder).name}")
    stats = feature_stats(features)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        stats.save(cache, key=cache.stem, folder=Path(folder).resolve(), resize=net.resize)
    return stats
