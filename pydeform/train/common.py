"""Trainer utilities shared by the model families: atomic checkpoints, a JSONL logger,
sample-grid PNGs, seeding, a resumable data order and DistributedDataParallel setup.

Resumable training rests on three rules:
- a checkpoint is written to a temporary file in the same folder, fsynced, then renamed
  over the old one (`os.replace` is atomic), so a crash leaves the previous one intact;
- the data order is a function of (seed, epoch, rank, world size) only, so a run
  resumed at step s reads exactly the batches an uninterrupted run reads from step s
  (`ResumableBatchSampler`);
- the RNG that training consumes (dropout) is reseeded every step from (seed, rank, step)
  (`seed_step`), so no RNG state has to travel in the checkpoint and every rank differs.
"""
from __future__ import annotations

import colorsys
import json
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor
from torch.utils.data import BatchSampler, DistributedSampler

__all__ = [
    "atomic_write",
    "save_checkpoint",
    "load_checkpoint",
    "JsonlLogger",
    "images_to_uint8",
    "render_pose",
    "save_image_grid",
    "seed_everything",
    "step_seed",
    "seed_step",
    "ResumableBatchSampler",
    "DistInfo",
    "setup_distributed",
    "cleanup_distributed",
    "barrier",
    "all_reduce_mean",
    "cache_dir",
]


# ----------------------------------------------------------------------------- files


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call write(file) on a temporary file next to `path`, fsync it, then rename it over
    `path`. Readers see the old file or the complete new one, never a partial one; on an
    exception the temporary file is removed and `path` is untouched. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable (POSIX; not possible on every platform).
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save(state) to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (tensors, numbers, strings, lists and
    dicts only: loaded with weights_only=True, so a file cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict (got {type(state).__name__})")
    return state


class JsonlLogger:
    """Appends one JSON object per line: {"step": int, name: value, ...}.

    keep_until: None starts an empty log (a fresh run); a step keeps the lines of an
    existing log up to that step and drops later ones, which a resumed run rewrites.
    Each line is flushed, so `tail -f` and a crash both see whole lines.
    """

    def __init__(self, path: str | os.PathLike, keep_until: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if keep_until is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a torn last line from a crash
                    continue
                if record.get("step", math.inf) <= keep_until:
                    kept.append(line)
        self._file = open(self.path, "w")
        for line in kept:
            self._file.write(line + "\n")
        self._file.flush()

    def log(self, step: int, **values: Any) -> None:
        """Write {"step": step, **values}; tensors become Python numbers."""
        record = {"step": int(step)}
        for key, value in values.items():
            record[key] = value.item() if isinstance(value, Tensor) else value
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- images


def images_to_uint8(images: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) floats in value_range -> uint8 (..., H, W, 3), clipped."""
    low, high = value_range
    scaled = ((images.detach().float().cpu() - low) / (high - low)).clamp(0, 1) * 255
    return scaled.round().to(torch.uint8).movedim(-3, -1).numpy()


def _joint_colours(n: int) -> Tensor:
    return torch.tensor([colorsys.hsv_to_rgb(i / n, 1.0, 1.0) for i in range(n)], dtype=torch.float32)


def render_pose(heatmaps: Tensor) -> Tensor:
    """Joint heatmaps (B, J, H, W) in [0, 1] -> a picture (B, 3, H, W) in [-1, 1]: each
    joint its own hue, max over joints, black background."""
    colours = _joint_colours(heatmaps.shape[1]).to(heatmaps.device)  # (J, 3)
    coloured = heatmaps.float().clamp(0, 1)[:, :, None] * colours[None, :, :, None, None]  # (B, J, 3, H, W)
    return coloured.amax(dim=1) * 2 - 1


def save_image_grid(
    rows: Sequence[Sequence[Tensor]] | Tensor,
    path: str | os.PathLike,
    value_range: tuple[float, float] = (-1.0, 1.0),
    padding: int = 2,
) -> Path:
    """Write a grid PNG (atomically): rows[r][c] is a (3, H, W) image in value_range;
    a tensor (R, C, 3, H, W) works too. White `padding` pixels separate the cells."""
    cells = [[images_to_uint8(image, value_range) for image in row] for row in rows]
    H, W = cells[0][0].shape[:2]
    R, C = len(cells), max(len(row) for row in cells)
    canvas = np.full((R * (H + padding) + padding, C * (W + padding) + padding, 3), 255, np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            top, left = padding + r * (H + padding), padding + c * (W + padding)
            canvas[top : top + H, left : left + W] = cell
    image = Image.fromarray(canvas)
    return atomic_write(path, lambda f: image.save(f, format="PNG"))


# ----------------------------------------------------------------------------- settings


def check_minimum(config: Any, names: Sequence[str], minimum: float, strict: bool = False) -> None:
    """Raise ValueError unless config.<name> >= minimum (> minimum when strict) for each
    name; NaN fails too."""
    for name in names:
        value = getattr(config, name)
        if not (value > minimum if strict else value >= minimum):
            raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")


def check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


# ----------------------------------------------------------------------------- randomness


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed that depends on (seed, rank, step) only, well mixed (SeedSequence)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_step(seed: int, rank: int, step: int) -> None:
    """Reseed torch's generators (CPU and CUDA) for one training step."""
    torch.manual_seed(step_seed(seed, rank, step))


class ResumableBatchSampler:
    """Endless batches of dataset indices that can start at any step.

    Epoch e is `DistributedSampler(num_replicas=world_size, rank=rank, shuffle=True,
    seed=seed)` after set_epoch(e), that is, randperm seeded with seed + e, padded to a
    multiple of world_size and split across the ranks, cut into full batches (drop_last).
    Step s reads batch s % per_epoch of epoch s // per_epoch, so `start_step=s` continues
    an interrupted run exactly (with the same world size and batch size).
    """

    def __init__(
        self, dataset_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start_step: int = 0
    ) -> None:
        self.sampler = DistributedSampler(
            range(dataset_size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        self.batch_size, self.start_step = batch_size, start_step
        self.batches_per_epoch = len(self.sampler) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{dataset_size} pairs over {world_size} process(es) do not fill one batch of {batch_size}"
            )

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = divmod(self.start_step, self.batches_per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            batches = BatchSampler(self.sampler, self.batch_size, drop_last=True)
            for index, batch in enumerate(batches):
                if index >= skip:
                    yield batch
            epoch, skip = epoch + 1, 0


# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank among world_size, its device; is_main = rank 0."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT in the environment): gloo for cpu, nccl for cuda, one GPU per local
    rank. Without torchrun (WORLD_SIZE unset or 1) it is a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    check_device(device)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA GPU")
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, torch_device)


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: Tensor) -> Tensor:
    """Mean of `values` over the ranks (a copy; itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values.clone()
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def cache_dir() -> Path:
    """pydeform's cache folder: $PYDEFORM_CACHE, else ~/.cache/pydeform."""
    return Path(os.environ.get("PYDEFORM_CACHE") or Path.home() / ".cache" / "pydeform")
