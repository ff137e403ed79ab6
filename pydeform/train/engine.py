"""The training engine: one loop for every model family.

A family plugs in as a `Recipe`: how to open its data, build its networks and optimisers
(and restore them from a checkpoint), one training step, its learning rates at a step, a
sample grid and what its checkpoint holds. Everything else lives here, once:

- torchrun: each process joins the group (gloo on the CPU, nccl on CUDA) and averages the
  gradients of every optimiser update over the ranks (`Run.update`: what DDP does, done
  explicitly, so that frozen networks, several updates per step and stages need no
  `find_unused_parameters`); rank 0 alone writes;
- the data order (`ResumableBatchSampler`, a function of seed, epoch, rank and step) and
  the randomness of a step (torch reseeded from (seed, rank, step)), so that a resumed run
  is the uninterrupted run, bit for bit;
- AMP (`Run.autocast`, one GradScaler), the progress bar with the latest losses,
  `log.jsonl`, TensorBoard (`--tensorboard`), sample grids and atomic checkpoints every N
  steps and at the recipe's boundaries (ST-GAN's stage ends) and the end;
- the run folder: a lock held for the run's life (a second run into the same folder
  refuses), a fresh run refuses a folder that holds a run unless `overwrite`, stale
  temporary files of a killed checkpoint write are removed, `resume` applies the policy
  of each setting (`pydeform.options`), and a non-finite loss stops the run before it
  can overwrite the last good checkpoint.

Checkpoints hold {"kind", "version", "step", "world_size", "config" (the model's),
"train_config", "changes", "rng", "scaler"} and the recipe's own entries.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import random
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, default_collate
from tqdm import tqdm

from pydeform.errors import RunError, TrainingDiverged, mark_user_error, user_errors
from pydeform.options import flat_values, flatten_dict, jsonable, option, options
from pydeform.train.common import (
    DistInfo,
    JsonlLogger,
    atomic_write,
    barrier,
    check_minimum,
    distributed,
    load_checkpoint,
    require_device,
    require_folder,
    save_checkpoint,
    save_image_grid,
    seed_everything,
    seed_step,
    to_device,
)
from pydeform.train.evaluation import EvalConfig

__all__ = [
    "RunConfig",
    "Recipe",
    "Data",
    "Run",
    "ResumableBatchSampler",
    "train",
    "setup_distributed",
    "cleanup_distributed",
    "all_reduce_mean",
    "open_checkpoint",
    "open_trained",
    "RUN_FILES",
    "CHECKPOINT",
]

FORMAT_VERSION = 2  # 2: rng, scaler and changes in every checkpoint (1: before the engine)
CHECKPOINT = "checkpoint.pt"
LOCK = ".pydeform.lock"
RUN_FILES = ("config.json", "log.jsonl", CHECKPOINT, "samples", "tb")  # what makes a folder a run
NUM_SAMPLES = 4  # items in a sample grid
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------- settings


@dataclass
class RunConfig:
    """The settings every training run has; a family's TrainConfig subclasses it."""

    out: str = option("runs/run", "run folder: config.json, log.jsonl, samples/, checkpoint.pt", required=True,
                      metavar="DIR", resume="free")  # fmt: skip
    resume: bool = option(False, "continue from OUT/checkpoint.pt, bit for bit as an uninterrupted run (starts at "
                          "step 0 when there is none); changed settings: see the README", resume="free")  # fmt: skip
    overwrite: bool = option(False, "start afresh in an OUT that holds a run, deleting its log, samples and "
                             "checkpoint", resume="free")  # fmt: skip
    device: str = option("cpu", "where to train", choices=("cpu", "cuda"), resume="free")
    amp: bool = option(False, "mixed precision on CUDA (torch.autocast, and loss scaling for float16)", resume="apply")
    amp_dtype: str = option("float16", "the autocast dtype of --amp", choices=tuple(AMP_DTYPES), resume="apply")
    seed: int = option(0, "seed of the initial weights, the data order and each step's randomness")
    workers: int = option(2, "data loader processes", resume="free")
    sample_every: int = option(200, "steps between sample grids in OUT/samples (0: only at the end)", resume="free")
    checkpoint_every: int = option(1000, "steps between checkpoints (0: only at the end)", resume="free")
    log_every: int = option(10, "steps between log.jsonl lines", resume="free")
    tensorboard: bool = option(False, "also write losses and sample grids to OUT/tb for TensorBoard (needs the "
                               "tensorboard package: pip install 'pydeform[tensorboard]')", resume="free")  # fmt: skip
    progress: bool = option(True, "no progress bar", flag="--no-progress", resume="free")

    def __post_init__(self) -> None:
        model = next((f for f in dataclasses.fields(self) if f.name == "model"), None)
        if model is not None and isinstance(self.model, dict):  # a saved config: its model config as a dict
            self.model = model.default_factory.from_dict(self.model)
        betas = getattr(self, "betas", None)  # the families' Adam betas
        if betas is not None and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1) (Adam's beta1,beta2), got {betas}")
        check_minimum(self, ("log_every",), 1)
        check_minimum(self, ("sample_every", "checkpoint_every", "workers", "seed"), 0)
        if self.amp and self.device != "cuda":
            raise ValueError("amp (mixed precision) needs device='cuda': the fused CPU kernels are float32/float64 only")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {list(AMP_DTYPES)}, got {self.amp_dtype!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- distributed


def setup_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT in the environment): gloo for cpu, nccl for cuda, one GPU per local
    rank. Without torchrun (WORLD_SIZE unset or 1) it is a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    require_device(device)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, torch_device)


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if distributed():
        dist.destroy_process_group()


def all_reduce_mean(values: Tensor) -> Tensor:
    """Mean of `values` over the ranks (a copy; itself in a single process)."""
    values = values.clone()
    if distributed():
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def _on_main(info: DistInfo, action: Callable[[], Any]) -> Any:
    """Run `action` on rank 0; if it raises, every rank raises the same error (so that
    no rank waits forever for one that stopped). Returns rank 0's result on rank 0."""
    error, result = None, None
    if info.is_main:
        try:
            result = action()
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            error = exc
    if info.distributed:
        message = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(message, src=0)
        if message[0] is not None and error is None:
            raise RunError(f"rank 0 stopped: {message[0]}")
    if error is not None:
        raise error
    return result


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
                f"{dataset_size} training items over {world_size} process(es) do not fill one batch of {batch_size}: "
                "lower --batch-size"
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


# ----------------------------------------------------------------------------- the recipe


@dataclass
class Data:
    """A recipe's data: `streams` {name: (dataset, seed offset)}, each read in its own
    resumable order with seed + offset (the first one is the training set), and the
    dataset whose first items make the sample grids."""

    streams: dict[str, tuple[Dataset, int]]
    samples: Dataset


class Run:
    """What a recipe's step uses from the engine: the device, autocast and `update`."""

    def __init__(self, config: RunConfig, info: DistInfo) -> None:
        self.config, self.info, self.device = config, info, info.device
        dtype = AMP_DTYPES[config.amp_dtype]
        # Loss scaling is for float16 only: bfloat16 has float32's exponent range.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp and dtype == torch.float16)

    def autocast(self) -> AbstractContextManager:
        if not self.config.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.config.amp_dtype])

    def update(self, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        """One optimiser update: zero the gradients, backward (scaled under float16 AMP),
        average the gradients over the ranks, step."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.info.distributed:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                flat = torch.cat([g.reshape(-1) for g in grads])
                dist.all_reduce(flat)
                flat /= self.info.world_size
                offset = 0
                for g in grads:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()
        self.scaler.step(optimizer)


class Recipe:
    """A model family's training, as the engine drives it: subclasses set the class
    attributes and implement the methods. `config` is their TrainConfig (a RunConfig with a
    `model` config, saved as the checkpoint's "config")."""

    name: ClassVar[str]  # the command name; description: one line for `pydeform train --help`
    kind: ClassVar[str]  # the checkpoint kind
    description: ClassVar[str]
    config_class: ClassVar[type[RunConfig]]
    eval_config_class: ClassVar[type[EvalConfig]]

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def total_steps(self) -> int:
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Lines rank 0 prints before training (e.g. that the losses use random features)."""
        return []

    def open_data(self, run: Run) -> Data:
        raise NotImplementedError

    def build(self, run: Run, state: dict[str, Any] | None) -> None:
        """Networks and optimisers (torch seeded with config.seed just before); the engine
        then loads `state`, the checkpoint, when resuming (see `checkpointed`)."""
        raise NotImplementedError

    def learning_rates(self, step: int) -> list[tuple[torch.optim.Optimizer, float]]:
        """(optimiser, lr) pairs, set before step `step`: schedules are functions of the
        step, and a resumed run with a new rate uses it."""
        raise NotImplementedError

    def train_step(self, step: int, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        """One step (0-based) on a batch of each stream; returns named detached losses."""
        raise NotImplementedError

    def boundaries(self) -> set[int]:
        """Steps done after which a log line, a grid and a checkpoint are always written."""
        return set()

    def log_fields(self, done: int) -> dict[str, Any]:
        """Fields of the log line after step `done`, before the losses."""
        return {}

    def sample_rows(self, batch: dict[str, Any], done: int) -> tuple[list[list[Tensor]], tuple[float, float]]:
        """A sample grid of a fixed batch: rows of (3, H, W) images, and their value range."""
        raise NotImplementedError

    def checkpointed(self) -> dict[str, Any]:
        """What the checkpoint holds of the recipe: {entry: an object with state_dict and
        load_state_dict (a network, an optimiser, a pool), or a list of them}."""
        raise NotImplementedError

    def state_dict(self, done: int) -> dict[str, Any]:
        """The recipe's entries of the checkpoint after step `done` (a recipe may add more)."""
        return {name: [o.state_dict() for o in obj] if isinstance(obj, list) else obj.state_dict()
                for name, obj in self.checkpointed().items()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, obj in self.checkpointed().items():
            for part, saved in zip(obj, state[name], strict=True) if isinstance(obj, list) else [(obj, state[name])]:
                part.load_state_dict(saved)

    @staticmethod
    def evaluate(config: EvalConfig) -> dict[str, Any]:
        """`pydeform test`: measure a checkpoint on the test split, write config.out."""
        raise NotImplementedError

    @staticmethod
    def summary(result: dict[str, Any]) -> str:
        """What `pydeform test` prints of the result."""
        raise NotImplementedError


def open_checkpoint(path: str | os.PathLike, kind: str, family: str) -> dict[str, Any]:
    """Load a checkpoint and check that it is one of `kind`; user errors are marked."""
    with user_errors():
        state = load_checkpoint(path)
        if state.get("kind") != kind:
            raise ValueError(f"{path} is not a {family} checkpoint (kind {state.get('kind')!r})")
        if int(state.get("version", 1)) > FORMAT_VERSION:
            raise ValueError(f"{path} has checkpoint format {state['version']}, newer than this pydeform's "
                             f"({FORMAT_VERSION}): upgrade pydeform")  # fmt: skip
    return state


def open_trained(path: str | os.PathLike, kind: str, family: str, model_class: type, **overrides: Any) -> tuple[
    dict[str, Any], Any, dict[str, Any]
]:  # fmt: skip
    """What a test reads of a training checkpoint (`open_checkpoint`): the state, its model
    config with the `overrides` that are not None, and the run's training settings."""
    state = open_checkpoint(path, kind, family)
    model = model_class.from_dict(state["config"])
    model = dataclasses.replace(model, **{k: v for k, v in overrides.items() if v is not None})
    return state, model, state.get("train_config", {})


# ----------------------------------------------------------------------------- the run folder


class RunLock:
    """An exclusive lock on a run folder, held for the run's life (`flock`, which the
    kernel releases when the process dies, so a crashed run's lock file is stale and the
    next run takes it over). The file holds the owner's host and pid, for the message."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunError(
                    f"{folder} is in use by another run ({owner}); wait for it to finish, or choose another --out"
                ) from None
            try:  # the owner before us may have unlinked the file between our open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()} pid {os.getpid()}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def _prepare_folder(out: Path, config: RunConfig) -> RunLock:
    """Rank 0: check OUT, lock it, refuse (or with overwrite clear) an earlier run when not
    resuming, and remove temporary files of a killed write."""
    require_folder(out, "run")
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out)
    try:
        held = [name for name in RUN_FILES if (out / name).exists()]
        if held and not config.resume:
            if not config.overwrite:
                raise RunError(
                    f"{out} holds a run ({', '.join(held)}): pass --resume to continue it, --overwrite to replace it, "
                    "or choose another --out"
                )
            for name in held:
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for stale in [*out.glob(".*.tmp-*"), *out.glob("samples/.*.tmp-*")]:  # ours: we hold the lock
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def _resume_changes(state: dict[str, Any], config: RunConfig, path: Path, model_only: bool) -> list[dict[str, Any]]:
    """Compare the checkpoint's settings with the new ones: refuse a changed "fixed"
    setting (model_only: of the networks alone); return the changes of "apply" settings
    (recorded with the step)."""
    model = state.get("config", {})
    saved = {**flatten_dict(state.get("train_config", {})), **model}
    now = flat_values(config)
    fixed, applied = [], []
    for opt in options(type(config)):
        if opt.name not in saved or jsonable(saved[opt.name]) == jsonable(now[opt.name]):
            continue
        if model_only and opt.name not in model:
            continue
        change = {"field": opt.name, "checkpoint": jsonable(saved[opt.name]), "now": jsonable(now[opt.name])}
        if opt.resume == "fixed":
            fixed.append(change)
        elif opt.resume == "apply":
            applied.append(change)
    if fixed:
        listed = ", ".join(f"{c['field']} {c['checkpoint']!r} (checkpoint) vs {c['now']!r}" for c in fixed)
        raise ValueError(
            f"cannot resume {path}: settings differ from the checkpoint's: {listed}. These are fixed for a run "
            "(the networks, the data and its order depend on them): set them back, or start a new run"
        )
    return [{"step": int(state["step"]), **change} for change in applied]


def _rng_state() -> dict[str, Any]:
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},  # fmt: skip
        "python": {"version": version, "state": list(internal), "gauss": python_gauss},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise mark_user_error(ImportError(
            "--tensorboard needs the tensorboard package: pip install tensorboard (or pip install 'pydeform[tensorboard]')"
        )) from exc  # fmt: skip
    return SummaryWriter(log_dir=str(out / "tb"))


def _finite(values: dict[str, float]) -> list[str]:
    return [name for name, value in values.items() if not math.isfinite(value)]


# ----------------------------------------------------------------------------- the loop


def train(recipe: Recipe) -> dict[str, Any]:
    """Train (or resume) `recipe.config`; see the module docstring. Under torchrun every
    process calls it. Returns {"step": last step, **recipe.log_fields, **last losses}."""
    config = recipe.config
    info = setup_distributed(config.device)
    lock = None
    try:
        lock = _on_main(info, lambda: _prepare_folder(Path(config.out), config))
        return _train(recipe, info)
    finally:
        if lock is not None:
            lock.release()
        cleanup_distributed()


def _train(recipe: Recipe, info: DistInfo) -> dict[str, Any]:
    config, out = recipe.config, Path(recipe.config.out)
    checkpoint_path = out / CHECKPOINT
    state, changes = None, []
    if config.resume:
        if checkpoint_path.exists():
            state = open_checkpoint(checkpoint_path, recipe.kind, recipe.name)
        elif info.is_main:
            print(f"--resume: no checkpoint at {checkpoint_path}, starting from step 0", flush=True)
    start, total = (int(state["step"]) if state is not None else 0), recipe.total_steps()
    if state is not None:
        # A finished run has nothing to do whatever the run settings, but never resumes
        # another network.
        with user_errors():
            changes = state.get("changes", []) + _resume_changes(state, config, checkpoint_path, start >= total)
    if start >= total:
        if info.is_main:
            print(f"{checkpoint_path} is at step {start} >= {total} steps: nothing to do", flush=True)
        return {"step": start, **recipe.log_fields(start)}
    if state is not None:
        if info.is_main and state.get("world_size", 1) != info.world_size:
            print(f"--resume: {state.get('world_size', 1)} process(es) wrote {checkpoint_path}, now "
                  f"{info.world_size}: the data order differs from an uninterrupted run", flush=True)  # fmt: skip
    if info.is_main:
        for note in recipe.notes():
            print(note, flush=True)
        for change in changes[len(state.get("changes", [])) if state else 0 :]:
            print(f"--resume at step {change['step']}: {change['field']} {change['checkpoint']!r} -> "
                  f"{change['now']!r} (takes effect now; recorded in config.json)", flush=True)  # fmt: skip

    run = Run(config, info)
    with user_errors():
        data = recipe.open_data(run)
        samplers = {
            name: ResumableBatchSampler(len(dataset), config.batch_size, config.seed + offset, info.rank,
                                        info.world_size, start)  # fmt: skip
            for name, (dataset, offset) in data.streams.items()
        }
        seed_everything(config.seed)  # the same initial weights on every rank
        recipe.build(run, state)
        if state is not None:
            recipe.load_state_dict(state)
    if state is not None:
        run.scaler.load_state_dict(state.get("scaler", {}))
        if "rng" in state:
            _set_rng_state(state["rng"])
    pin = info.device.type == "cuda"
    streams = {
        name: iter(DataLoader(data.streams[name][0], batch_sampler=sampler, num_workers=config.workers, pin_memory=pin))
        for name, sampler in samplers.items()
    }

    logger = writer = sample_batch = None
    if info.is_main:
        writer = _tensorboard(out) if config.tensorboard else None  # first: a refusal leaves no run behind
        record = {**config.to_dict(), "changes": changes}
        atomic_write(out / "config.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
        logger = JsonlLogger(out / "log.jsonl", keep_until=start if state is not None else None)
        count = min(NUM_SAMPLES, len(data.samples))
        with user_errors():
            sample_batch = to_device(default_collate([data.samples[i] for i in range(count)]), info.device)

    def write_outputs(done: int, samples: bool, checkpoint: bool) -> None:
        if samples:
            rows, value_range = recipe.sample_rows(sample_batch, done)
            path = save_image_grid(rows, out / "samples" / f"step_{done:07d}.png", value_range)
            if writer is not None:
                from PIL import Image

                writer.add_image("samples", np.asarray(Image.open(path)), done, dataformats="HWC")
        if checkpoint:
            meta = {"kind": recipe.kind, "version": FORMAT_VERSION, "step": done, "world_size": info.world_size,
                    "config": config.model.to_dict(), "train_config": config.to_dict(), "changes": changes,
                    "rng": _rng_state(), "scaler": run.scaler.state_dict()}  # fmt: skip
            save_checkpoint({**meta, **recipe.state_dict(done)}, checkpoint_path)
            nonlocal last_checkpoint
            last_checkpoint = done

    def every(period: int, done: int) -> bool:
        return period > 0 and done % period == 0

    forced = recipe.boundaries() | {total}
    progress = tqdm(total=total, initial=start, desc=recipe.name, unit="step",
                    disable=not (config.progress and info.is_main))  # fmt: skip
    last: dict[str, float] = {}
    last_checkpoint = start if state is not None else None
    finite = torch.ones((), dtype=torch.bool, device=info.device)
    started = interval_start = time.perf_counter()
    logged_step = start
    try:
        for step in range(start, total):
            for opt, lr in recipe.learning_rates(step):
                for group in opt.param_groups:
                    group["lr"] = lr
            with user_errors():  # a file the loader cannot read is the data's fault
                batches = {name: to_device(next(stream), info.device) for name, stream in streams.items()}
            seed_step(config.seed, info.rank, step)  # the step's randomness: a function of (seed, rank, step)
            losses = recipe.train_step(step, batches)
            run.scaler.update()
            if losses:
                finite &= torch.stack([v.detach().float() for v in losses.values()]).isfinite().all()
            done = step + 1
            progress.update(1)
            boundary = done in forced
            log, samples, checkpoint = (every(config.log_every, done) or boundary, every(config.sample_every, done)
                                        or boundary, every(config.checkpoint_every, done) or boundary)  # fmt: skip
            if not (log or samples or checkpoint):
                continue
            # Every rank reaches the same events: the collectives below line up.
            names = sorted(losses)
            if log:
                values = all_reduce_mean(torch.stack([losses[n].float() for n in names])) if names else torch.zeros(0)
                last = dict(zip(names, values.tolist()))
                now = time.perf_counter()
                if logger is not None:
                    logger.log(done, **recipe.log_fields(done), **last, it_s=(done - logged_step) / (now - interval_start),
                               time=now - started)  # fmt: skip
                    if writer is not None:
                        for name, value in last.items():
                            writer.add_scalar(f"loss/{name}", value, done)
                interval_start, logged_step = now, done
                progress.set_postfix({**recipe.log_fields(done), **{k.removeprefix("loss_"): f"{v:.3f}"
                                                                    for k, v in last.items()}}, refresh=False)  # fmt: skip
            if not bool(all_reduce_mean(finite.float()) == 1):
                bad = _finite(dict(zip(names, [float(losses[n]) for n in names])))
                kept = (f"{checkpoint_path} still holds step {last_checkpoint}" if last_checkpoint is not None
                        else "no checkpoint was written")  # fmt: skip
                raise TrainingDiverged(
                    f"training diverged: a loss became NaN or infinite by step {done} "
                    f"({', '.join(bad) if bad else 'earlier in the interval'}); the run stopped and {kept}. "
                    "Lower the learning rate, or check the data"
                )
            if info.is_main:
                write_outputs(done, samples, checkpoint)
        barrier()  # no rank leaves (and tears the group down) before rank 0 has written
    finally:
        progress.close()
        if logger is not None:
            logger.close()
        if writer is not None:
            writer.close()
    return {"step": total, **recipe.log_fields(total), **last}
