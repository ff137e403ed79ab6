"""What the training engine and the families' recipes share: atomic checkpoints (written
to a temporary file, fsynced, renamed over the old one, so a crash leaves the previous one
intact), a JSONL logger, sample-grid PNGs, pose pictures, seeding, settings checks and the
cache folder. The loop itself is `pydeform.train.engine`.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import math
import os
import random
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor

from pydeform.errors import RunError
from pydeform.nets.weights import load_state_file

__all__ = [
    "atomic_write",
    "save_checkpoint",
    "load_checkpoint",
    "require_device",
    "require_folder",
    "JsonlLogger",
    "images_to_uint8",
    "render_pose",
    "save_image_grid",
    "seed_everything",
    "step_seed",
    "seed_step",
    "check_minimum",
    "FakeHistory",
    "ImagePool",
    "DistInfo",
    "distributed",
    "barrier",
    "write_once",
    "to_device",
    "cache_dir",
    "factor_datasets",
    "synthetic_set",
    "synthetic_factors",
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
    state = load_state_file(path, "checkpoint", kind="checkpoint", map_location=map_location)
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
        """Write {"step": step, **values}; tensors become Python numbers, NaN and
        infinities null."""
        record = {"step": int(step)}
        for key, value in values.items():
            value = value.item() if isinstance(value, Tensor) else value
            # Strict JSON has no NaN or Infinity: a non-finite number is written as null.
            record[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
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


# ----------------------------------------------------------------------------- randomness


def require_device(device: str) -> None:
    """A user error (RunError) for device "cuda" on a machine where torch sees no GPU."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda: torch sees no CUDA GPU (use --device cpu)")


def require_folder(out: str | os.PathLike, purpose: str) -> None:
    """A user error (RunError) for an --out that is a file: checked before any work."""
    if Path(out).exists() and not Path(out).is_dir():
        raise RunError(f"--out {out} is a file, not a folder: choose a folder for the {purpose}")


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


# ----------------------------------------------------------------------------- training


def _match_store(store: Any, fakes: Tensor) -> None:
    """A store of fakes (FakeHistory, ImagePool) follows the fakes' device (a restored
    checkpoint's images come back on the CPU) and refuses fakes of another shape."""
    if store.images is None:
        return
    if store.images.shape[1:] != fakes.shape[1:]:
        raise ValueError(f"fakes of shape {tuple(fakes.shape[1:])} do not match the stored {tuple(store.images.shape[1:])}")
    store.images = store.images.to(fakes.device)


class FakeHistory:
    """ST-GAN's history of earlier fakes (`updateHistory`, glasses/data.py): half of each
    critic batch comes from earlier generator outputs, so the critic does not forget them.

    mix(fakes (B, ...)): a random half of the new fakes (B // 2) is stored; the returned
    batch (B, ...) holds min(B // 2, stored) earlier fakes drawn at random from the store
    (before this call's additions) and new fakes for the rest. The store is a ring of
    `capacity` images (the oldest are overwritten once full). Randomness: torch's global
    generator. capacity 0 returns the fakes unchanged.
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be an int >= 0, got {capacity!r}")
        self.capacity = capacity
        self.images: Tensor | None = None  # (count, ...), count <= capacity
        self.next = 0  # where the next image goes once full

    @property
    def count(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    def mix(self, fakes: Tensor) -> Tensor:
        if not isinstance(fakes, Tensor) or fakes.dim() < 1 or fakes.shape[0] < 1:
            raise ValueError(f"fakes must be a tensor (B, ...) with B >= 1, got {getattr(fakes, 'shape', fakes)!r}")
        if self.capacity == 0:
            return fakes
        fakes = fakes.detach()
        _match_store(self, fakes)
        half = fakes.shape[0] // 2
        order = torch.randperm(fakes.shape[0], device=fakes.device)
        old = min(half, self.count)
        drawn = self.images[torch.randperm(self.count, device=fakes.device)[:old]] if old else fakes[:0]
        mixed = torch.cat([drawn, fakes[order[old:]]])
        self._store(fakes[order[:half]])
        return mixed

    def _store(self, images: Tensor) -> None:
        images = images[: self.capacity]
        room = self.capacity - self.count
        if room > 0:  # filling up: one concatenation per call
            head = images[:room].clone()
            self.images = head if self.images is None else torch.cat([self.images, head])
            images = images[room:]
        for image in images:  # full: overwrite the oldest
            self.images[self.next] = image
            self.next = (self.next + 1) % self.capacity

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "images": self.images, "next": self.next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.images, self.next = int(state["capacity"]), state["images"], int(state["next"])


class ImagePool:
    """pix2pix's image buffer (util/image_pool.py of pytorch-CycleGAN-and-pix2pix, which
    PATN uses with 50 images for Market): the discriminator sees, for each new fake, with
    probability 1/2 an earlier fake (which the new one replaces in the pool) and otherwise
    the new fake itself. While the pool is not yet full every new fake is stored and
    returned. Unlike `FakeHistory` (ST-GAN: always half old, half new) the mix is random
    per image.

    query(fakes (B, ...)) -> (B, ...), detached. Randomness: torch's global generator (the
    engine reseeds it every step, so a resumed run draws the same; the original used
    Python's `random`). capacity 0 returns the fakes unchanged.
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be an int >= 0, got {capacity!r}")
        self.capacity = capacity
        self.images: Tensor | None = None  # (count, ...), count <= capacity

    @property
    def count(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    def query(self, fakes: Tensor) -> Tensor:
        if not isinstance(fakes, Tensor) or fakes.dim() < 1 or fakes.shape[0] < 1:
            raise ValueError(f"fakes must be a tensor (B, ...) with B >= 1, got {getattr(fakes, 'shape', fakes)!r}")
        fakes = fakes.detach()
        if self.capacity == 0:
            return fakes
        _match_store(self, fakes)
        out = []
        for image in fakes:
            if self.count < self.capacity:
                image = image.clone()
                self.images = image[None] if self.images is None else torch.cat([self.images, image[None]])
                out.append(image)
            elif bool(torch.rand(()) > 0.5):
                slot = int(torch.randint(self.capacity, ()))
                out.append(self.images[slot].clone())
                self.images[slot] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "images": self.images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.images = int(state["capacity"]), state["images"]


# ----------------------------------------------------------------------------- processes


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


def distributed() -> bool:
    """Whether this process has joined a process group (torchrun)."""
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if distributed():
        dist.barrier()


def write_once(root: Path, write: Callable[[Path], None], info: DistInfo | None = None) -> Path:
    """A dataset (or other folder) written once: `write(tmp)` into a temporary folder
    renamed to `root`, so an interrupted or concurrent writer never leaves a half one.
    Under torchrun rank 0 writes and the others wait."""
    if info is None or info.is_main:
        if not root.exists():
            tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
            write(tmp)
            try:
                os.replace(tmp, root)
            except OSError:  # another process finished first: keep its copy
                shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    return root


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def cache_dir() -> Path:
    """pydeform's cache folder: $PYDEFORM_CACHE, else ~/.cache/pydeform."""
    return Path(os.environ.get("PYDEFORM_CACHE") or Path.home() / ".cache" / "pydeform")


def synthetic_set(what: str, stem: str, generator: Any, write: Callable[[Path], None], info: DistInfo | None) -> Path:
    """A synthetic set written once (`write_once`) into cache_dir()/{stem}-{digest}, the
    digest of the `generator` module's source: a changed generator never reuses a set that
    an older one wrote."""
    root = cache_dir() / f"{stem}-{hashlib.sha256(Path(generator.__file__).read_bytes()).hexdigest()[:10]}"

    def announced(tmp: Path) -> None:
        print(f"writing the synthetic {what} set to {root} (once)", file=sys.stderr, flush=True)
        write(tmp)

    return write_once(root, announced, info)


def synthetic_factors(count: int = 2000, progress: bool = True, info: DistInfo | None = None) -> Path:
    """The synthetic factor set (`pydeform synth factors`, 128x128, seed 0) that FineGAN and
    MixNMatch train on without --data: cache_dir()/synth-factors-128-seed0-n{count}-{digest}."""
    from pydeform.data import synth_factors

    write = lambda tmp: synth_factors.write_factors(tmp, count=count, size=128, seed=0, progress=progress)  # noqa: E731
    return synthetic_set("factor", f"synth-factors-128-seed0-n{count}", synth_factors, write, info)


def factor_datasets(data: str | None, synth_count: int, progress: bool, info: DistInfo | None) -> tuple[Any, Any]:
    """(training objects, objects for the sample grids: the test split, else the training
    one) of a CUB-layout folder, or of the synthetic factor set without one
    (`pydeform.data.cub.CUBObjects`; FineGAN and MixNMatch)."""
    from pydeform.data.cub import CUBObjects

    root = Path(data) if data is not None else synthetic_factors(synth_count, progress, info)
    train_set = CUBObjects(root, "train")
    try:
        return train_set, CUBObjects(root, "test")
    except ValueError:
        return train_set, train_set
