"""Training and testing of ST-GAN (Lin et al., CVPR 2018), staged as the authors trained it
(`glasses/train.sh`, `train_Donly.py`, `train_STGAN.py` of
github.com/chenhsuanlin/spatial-transformer-GAN).

Adversarial mode (default), WGAN-GP (`pydeform.losses.wgan`):
- stage 0: the critic D alone for `d_steps` steps, on composites at the initial placement;
- stage k = 1..N: generator k is added, generators 1..k-1 are frozen; each step is one
  update of generator k (loss -mean D(fake) + dp_weight * mean ||dp_k||^2) followed by
  `d_updates` = 2 critic updates (their updateGP = 1, updateD = 2) on the real batch and a
  fake batch of which half comes from a history of earlier fakes (their histSize = 10 of
  batchSize = 20, `updateHistory` in glasses/data.py). Every generator has its own Adam;
  the critic's Adam runs through all stages.
Reals are drawn independently of the backgrounds being composited (their own data order),
as in the unpaired glasses experiment. `paired_reals=True` instead takes each sample's own
real composite (the same background, foreground at p_true; synthetic data): the critic
still scores every image on its own and the generator never sees p_true, but the real and
fake halves of a critic batch then share their backgrounds, which lowers the variance of
the critic's estimate (an option for small budgets, not ST-GAN's setting).

Supervised mode (`supervised=True`, ST-GAN's pretraining of the indoor experiment,
`indoor/pretrain_homo.py`): no critic; stage k trains generator k with the L2 loss
mean_b ||p_k - p_true||^2 to undo random perturbations p_init = p_true + init_noise N(0, 1)
drawn afresh each step (init_noise 0: the data's fixed p_init). It needs data with p_true.

Rank-free, single process, CPU or CUDA. In `out` it writes:

    config.json      the run's settings
    log.jsonl        {"step", "stage", losses..., "it_s", "time"} every log_every steps
    samples/step_XXXXXXX.png   rows of: background | initial composite | composite after
                     each trained warp | real
    checkpoint.pt    written atomically (also at the end of every stage); `resume=True`
                     continues bit for bit: torch's RNG is reseeded every step from
                     (seed, step) (`seed_step`), the data order is a function of the step
                     (`ResumableBatchSampler`), and the checkpoint holds the stage, step,
                     all networks, all optimisers and the history of fakes.

`evaluate(checkpoint, ...)` applies the trained warps to the test split and writes
metrics.json: the mean corner error (pixels, `pydeform.data.synth_placement.corner_error`)
of the initial placement and after each warp, where the data has p_true; the final
composites as PNGs and a sample grid in any case.

Without a data folder both use the synthetic placement set (`pydeform.data.synth_placement`),
written once into $PYDEFORM_CACHE or ~/.cache/pydeform.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from pydeform.geometry import params_to_matrix
from pydeform.losses.wgan import wgan_discriminator_loss, wgan_generator_loss
from pydeform.models.stgan import STGAN, STGANConfig, STGANDiscriminator
from pydeform.train.common import (
    JsonlLogger,
    ResumableBatchSampler,
    atomic_write,
    cache_dir,
    check_device,
    check_minimum,
    load_checkpoint,
    save_checkpoint,
    save_image_grid,
    seed_everything,
    seed_step,
)

__all__ = ["TrainConfig", "FakeHistory", "train", "evaluate", "synthetic_data", "open_placement", "format_metrics"]

CHECKPOINT_KIND = "pydeform.stgan"
CHECKPOINT_VERSION = 1
SYNTH_SEED = 0  # the synthetic set does not change with the training seed
NUM_SAMPLES = 4  # rows of a sample grid
REAL_SEED_OFFSET = 1  # the reals' data order: seed + 1, independent of the backgrounds'


@dataclass
class TrainConfig:
    """Settings of an ST-GAN training run (the `pydeform train stgan` flags).

    model: the networks (size, warps, ops, ...). data: a placement folder
    (`pydeform.data.Placement` layout) or CelebA root (with `glasses`, a folder of RGBA
    glasses PNGs: `pydeform.data.CelebAGlasses`); None or "synthetic": the synthetic set
    of synth_train + synth_test samples at the model's size.
    supervised: the pretraining mode (see the module docstring). steps_per_stage: steps of
    each warp stage; d_steps: steps of the critic-only stage 0 (default steps_per_stage;
    adversarial only). lr_g / lr_d: Adam learning rates; ST-GAN used 1e-5 for both over
    50k iterations per stage, which our small budgets cannot afford (the CLI's default is
    larger; see `pydeform train stgan --help`). d_updates: critic updates per generator
    update (2, ST-GAN's updateD). gp_weight: 10 (gradlambda); dp_weight: 1 (dplambda).
    history: capacity of the history of fakes (ST-GAN: 10000; 0 disables it).
    init_noise: supervised only: the std of the fresh perturbation of p_true.
    paired_reals: adversarial only: the critic's reals are the batch's own real composites
    (see the module docstring) instead of an independent draw.
    init_from_previous: generator k >= 2 starts as a copy of generator k - 1 (ST-GAN's
    `--loadGP prev` in train_STGAN.py) instead of from the random init.
    d_init_noise: stage 0 only: the critic's fakes are placed at p_init + d_init_noise
    N(0, 1), larger misplacements than at test time (ST-GAN trained its critic alone with
    pertFG 0.2 instead of 0.1, glasses/train.sh; 0.17 on top of the data's 0.1 gives 0.2).
    sample_every / checkpoint_every: 0 writes them at the end of each stage only.
    """

    model: STGANConfig = field(default_factory=STGANConfig)
    out: str = "runs/stgan"
    data: str | None = None
    glasses: str | None = None
    supervised: bool = False
    steps_per_stage: int = 1000
    d_steps: int | None = None
    batch_size: int = 20
    lr_g: float = 1e-5
    lr_d: float = 1e-5
    d_updates: int = 2
    gp_weight: float = 10.0
    dp_weight: float = 1.0
    history: int = 1000
    init_noise: float = 0.1
    paired_reals: bool = False
    init_from_previous: bool = False
    d_init_noise: float = 0.0
    resume: bool = False
    device: str = "cpu"
    sample_every: int = 200
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    workers: int = 2
    synth_train: int = 2000
    synth_test: int = 500
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = STGANConfig.from_dict(self.model)
        if self.data == "synthetic":
            self.data = None
        if self.d_steps is None:
            self.d_steps = self.steps_per_stage
        check_minimum(self, ("steps_per_stage", "batch_size", "log_every", "d_updates", "synth_train", "synth_test"), 1)
        check_minimum(self, ("d_steps", "sample_every", "checkpoint_every", "workers", "seed", "history"), 0)
        check_minimum(self, ("lr_g", "lr_d"), 0, strict=True)
        check_minimum(self, ("gp_weight", "dp_weight", "init_noise", "d_init_noise"), 0)
        check_device(self.device)
        if self.glasses is not None and self.data is None:
            raise ValueError("glasses (a folder of glasses PNGs) goes with data=CelebA root; got no data")

    @property
    def stage_lengths(self) -> list[int]:
        """Steps of stages 0..N (stage 0, the critic alone, has 0 steps when supervised)."""
        return [0 if self.supervised else self.d_steps] + [self.steps_per_stage] * self.model.warps

    @property
    def total_steps(self) -> int:
        return sum(self.stage_lengths)

    def stage_of(self, step: int) -> int:
        """The stage that global step `step` (0-based) belongs to."""
        end = 0
        for stage, length in enumerate(self.stage_lengths):
            end += length
            if step < end:
                return stage
        return self.model.warps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- data


def synthetic_data(size: tuple[int, int], train: int = 2000, test: int = 500, progress: bool = True) -> Path:
    """The synthetic placement set at `size`, written once into
    cache_dir()/synth-placement-{H}x{W}-seed0-n{train}-{test}-{generator} (a temporary folder
    renamed into place, so an interrupted or concurrent writer leaves no half set).
    {generator} is a digest of the generator's source, so a changed generator never reuses
    a set written by an older one."""
    from pydeform.data import synth_placement

    height, width = size
    generator = hashlib.sha256(Path(synth_placement.__file__).read_bytes()).hexdigest()[:10]
    root = cache_dir() / f"synth-placement-{height}x{width}-seed{SYNTH_SEED}-n{train}-{test}-{generator}"
    if not root.exists():
        from pydeform.data.synth_placement import write_placement

        tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
        print(f"writing the synthetic placement set to {root} (once)", flush=True)
        write_placement(tmp, size=(height, width), train=train, test=test, seed=SYNTH_SEED, progress=progress)
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def open_placement(root: str | os.PathLike, split: str, glasses: str | None = None, size: int = 144) -> Dataset:
    """`pydeform.data.Placement(root, split)`, or with `glasses`
    `pydeform.data.CelebAGlasses(root, glasses, split, size)`. Items: background (3, H, W),
    foreground (4, H, W), real (3, H, W) in [0, 1], p_init (8,) and (Placement) p_true (8,)."""
    if glasses is not None:
        from pydeform.data import CelebAGlasses

        return CelebAGlasses(root, glasses, split, size=size)
    from pydeform.data import Placement

    return Placement(root, split)


def _data_root(config: TrainConfig) -> Path:
    if config.data is not None:
        return Path(config.data)
    return synthetic_data(config.model.size, config.synth_train, config.synth_test, config.progress)


def _open_split(root: Path, split: str, glasses: str | None, model: STGANConfig) -> Dataset:
    if glasses is not None and model.size[0] != model.size[1]:
        raise ValueError(f"CelebAGlasses crops are square; the model size is {model.size[0]}x{model.size[1]}")
    dataset = open_placement(root, split, glasses, model.size[0])
    if len(dataset) == 0:
        raise ValueError(f"the {split} split of {root} is empty")
    size = tuple(dataset[0]["background"].shape[-2:])
    if size != model.size:
        raise ValueError(
            f"{root} ({split}) holds {size[0]}x{size[1]} images but the model expects "
            f"{model.size[0]}x{model.size[1]} (set the size to match)"
        )
    return dataset


def _has_p_true(dataset: Dataset) -> bool:
    return "p_true" in dataset[0]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


# ----------------------------------------------------------------------------- history


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
        if self.images is not None and (self.images.shape[1:] != fakes.shape[1:] or self.images.device != fakes.device):
            raise ValueError(f"fakes of shape {tuple(fakes.shape[1:])} do not match the stored {tuple(self.images.shape[1:])}")
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


# ----------------------------------------------------------------------------- training


@dataclass
class _Networks:
    """What training updates and a checkpoint holds."""

    model: STGAN
    discriminator: STGANDiscriminator | None
    opt_g: list[torch.optim.Optimizer]  # one per generator
    opt_d: torch.optim.Optimizer | None
    history: FakeHistory

    def state_dict(self) -> dict[str, Any]:
        state = {
            "generators": self.model.state_dict(),
            "opt_g": [opt.state_dict() for opt in self.opt_g],
            "history": self.history.state_dict(),
        }
        if self.discriminator is not None:
            state.update(discriminator=self.discriminator.state_dict(), opt_d=self.opt_d.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["generators"])
        for opt, saved in zip(self.opt_g, state["opt_g"], strict=True):
            opt.load_state_dict(saved)
        self.history.load_state_dict(state["history"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])


def _build_networks(config: TrainConfig, device: torch.device, state: dict[str, Any] | None) -> _Networks:
    seed_everything(config.seed)
    model = STGAN(config.model).to(device)
    # ST-GAN: tf.train.AdamOptimizer with its default betas (0.9, 0.999).
    opt_g = [torch.optim.Adam(g.parameters(), lr=config.lr_g) for g in model.generators]
    discriminator, opt_d = None, None
    if not config.supervised:
        discriminator = STGANDiscriminator(config.model.d_widths, config.model.init_std).to(device)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d)
    networks = _Networks(model, discriminator, opt_g, opt_d, FakeHistory(config.history))
    if state is not None:
        networks.load_state_dict(state)
    return networks


def _set_trainable(model: STGAN, stage: int) -> None:
    """Only generator `stage` (1-based) learns; the earlier ones are frozen."""
    for k, generator in enumerate(model.generators, start=1):
        generator.requires_grad_(k == stage)


def _critic_steps(networks: _Networks, config: TrainConfig, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """`d_updates` critic updates on the reals and the fakes mixed with the history."""
    discriminator, opt_d = networks.discriminator, networks.opt_d
    fake = networks.history.mix(fake.detach())
    for _ in range(config.d_updates):
        parts = wgan_discriminator_loss(discriminator, real, fake, config.gp_weight)
        opt_d.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt_d.step()
    return {"loss_d": parts["total"].detach(), "wasserstein": parts["wasserstein"], "gp": parts["gp"]}


def _train_step(networks: _Networks, config: TrainConfig, stage: int, batch: dict[str, Tensor], real: Tensor) -> dict[str, Tensor]:
    """One step of `stage`: stage 0 = critic updates only; stage k >= 1 = one update of
    generator k (adversarial or supervised), then (adversarial) the critic updates."""
    model, background, foreground = networks.model, batch["background"], batch["foreground"]
    if config.supervised:
        p_true = batch["p_true"]
        p_init = p_true + config.init_noise * torch.randn_like(p_true) if config.init_noise > 0 else batch["p_init"]
        steps = model(background, foreground, p_init, steps=stage, frozen=stage - 1)
        loss = (steps.params[stage] - p_true).square().sum(dim=1).mean()
        opt = networks.opt_g[stage - 1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss_p": loss.detach()}

    p_init = batch["p_init"]
    if stage == 0:
        if config.d_init_noise > 0:
            p_init = p_init + config.d_init_noise * torch.randn_like(p_init)
        with torch.no_grad():
            fake = model(background, foreground, p_init, steps=0).composites[0]
        return _critic_steps(networks, config, real, fake)
    steps = model(background, foreground, p_init, steps=stage, frozen=stage - 1)
    fake = steps.composites[stage]
    discriminator = networks.discriminator
    discriminator.requires_grad_(False)  # the generator's loss leaves no gradients in D
    parts = wgan_generator_loss(discriminator(fake), steps.updates[stage - 1], config.dp_weight)
    discriminator.requires_grad_(True)
    opt = networks.opt_g[stage - 1]
    opt.zero_grad(set_to_none=True)
    parts["total"].backward()
    opt.step()
    # ST-GAN updates D with the composites of the generator step (before its update).
    losses = _critic_steps(networks, config, real, fake)
    return {**losses, "loss_g": parts["total"].detach(), "g_adv": parts["adv"], "g_dp": parts["dp"]}


@torch.no_grad()
def _write_samples(model: STGAN, batch: dict[str, Tensor], warps: int, path: Path) -> None:
    """Rows of: background | initial composite | composite after warps 1..warps | real."""
    steps = model(batch["background"], batch["foreground"], batch["p_init"], steps=warps)
    rows = [
        [batch["background"][b], *(c[b] for c in steps.composites), batch["real"][b]]
        for b in range(batch["background"].shape[0])
    ]
    save_image_grid(rows, path, value_range=(0.0, 1.0))


def _resume_state(config: TrainConfig, path: Path) -> dict[str, Any] | None:
    if not config.resume:
        return None
    if not path.exists():
        print(f"--resume: no checkpoint at {path}, starting from step 0", flush=True)
        return None
    state = load_checkpoint(path)
    if state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not an ST-GAN checkpoint (kind {state.get('kind')!r})")
    saved = state["config"]
    # The three samplers compute the same function: a run may switch between them.
    differ = [k for k, v in config.model.to_dict().items() if k != "ops" and _jsonable(saved.get(k)) != _jsonable(v)]
    if differ:
        raise ValueError(
            f"cannot resume {path}: the model settings differ from the checkpoint's: "
            + ", ".join(f"{k} {saved.get(k)!r} (checkpoint) vs {getattr(config.model, k)!r}" for k in differ)
        )
    trained = state["train_config"]
    for key in ("supervised", "steps_per_stage", "d_steps", "batch_size", "paired_reals", "init_from_previous",
                "d_init_noise"):
        if trained.get(key) != getattr(config, key):
            raise ValueError(
                f"cannot resume {path}: {key} was {trained.get(key)!r}, now {getattr(config, key)!r} "
                "(the stage boundaries and the data order depend on it)"
            )
    return state


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def train(config: TrainConfig) -> dict[str, float]:
    """Train (or resume) ST-GAN; see the module docstring for the stages and what it writes.
    Returns the last logged losses and the final "step" and "stage"."""
    out, device = Path(config.out), torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda': torch sees no CUDA GPU")
    checkpoint_path = out / "checkpoint.pt"
    state = _resume_state(config, checkpoint_path)
    start = int(state["step"]) if state is not None else 0
    total = config.total_steps
    if start >= total:
        print(f"{checkpoint_path} is at step {start} >= {total} (all stages): nothing to do", flush=True)
        return {"step": float(start), "stage": float(config.model.warps)}

    root = _data_root(config)
    train_set = _open_split(root, "train", config.glasses, config.model)
    if config.supervised and not _has_p_true(train_set):
        raise ValueError(
            f"supervised training learns p_true, which {root} does not have (real photographs: CelebA); "
            "train adversarially, or use the synthetic placement set"
        )
    try:
        sample_set = _open_split(root, "test", config.glasses, config.model)
    except (FileNotFoundError, ValueError):
        sample_set = train_set

    def loader(seed: int) -> DataLoader:
        sampler = ResumableBatchSampler(len(train_set), config.batch_size, seed, start_step=start)
        return DataLoader(train_set, batch_sampler=sampler, num_workers=config.workers, pin_memory=device.type == "cuda")

    batches = iter(loader(config.seed))
    unpaired = not (config.supervised or config.paired_reals)
    reals = iter(loader(config.seed + REAL_SEED_OFFSET)) if unpaired else None
    networks = _build_networks(config, device, state)
    networks.model.train()

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(config.to_dict(), indent=2).encode()))
    logger = JsonlLogger(out / "log.jsonl", keep_until=start if state is not None else None)
    count = min(NUM_SAMPLES, len(sample_set))
    sample_batch = _to_device(default_collate([sample_set[i] for i in range(count)]), device)
    stage_ends = np.cumsum(config.stage_lengths).tolist()
    stage_starts = [0, *stage_ends[:-1]]

    def write_outputs(step: int, stage: int, samples: bool, checkpoint: bool) -> None:
        if samples:
            _write_samples(networks.model, sample_batch, stage, out / "samples" / f"step_{step:07d}.png")
        if checkpoint:
            meta = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "step": step, "stage": stage,
                    "config": config.model.to_dict(), "train_config": config.to_dict()}  # fmt: skip
            save_checkpoint({**meta, **networks.state_dict()}, checkpoint_path)

    def every(period: int, step: int) -> bool:
        return period > 0 and step % period == 0

    progress = tqdm(total=total, initial=start, desc="stgan", unit="step", disable=not config.progress)
    last: dict[str, float] = {}
    started = interval_start = time.perf_counter()
    logged_step, trainable = start, None
    try:
        for step in range(start, total):
            stage = config.stage_of(step)
            if stage != trainable:
                _set_trainable(networks.model, stage)
                trainable = stage
            if config.init_from_previous and stage >= 2 and step == stage_starts[stage]:
                generators = networks.model.generators
                generators[stage - 1].load_state_dict(generators[stage - 2].state_dict())
            batch = _to_device(next(batches), device)
            real = _to_device(next(reals), device)["real"] if reals is not None else batch["real"]
            seed_step(config.seed, 0, step)  # alpha, history, perturbations: a function of (seed, step)
            losses = _train_step(networks, config, stage, batch, real)
            done = step + 1
            progress.update(1)
            stage_end = done in stage_ends
            if every(config.log_every, done) or stage_end:
                last = {name: float(value) for name, value in sorted(losses.items())}
                now = time.perf_counter()
                logger.log(done, stage=stage, **last, it_s=(done - logged_step) / (now - interval_start),
                           time=now - started)  # fmt: skip
                interval_start, logged_step = now, done
                progress.set_postfix({"stage": stage, **{k: f"{v:.3f}" for k, v in last.items()}}, refresh=False)
            # A stage's end always gets a grid and a checkpoint: the next stage starts from them.
            write_outputs(
                done, stage, every(config.sample_every, done) or stage_end, every(config.checkpoint_every, done) or stage_end
            )
    finally:
        progress.close()
        logger.close()
    return {"step": float(total), "stage": float(config.model.warps), **last}


# ----------------------------------------------------------------------------- testing


def _corner_setup(root: Path) -> tuple[Any, Tensor]:
    """corner_error and the corners of the set at root (its info.json, else CORNERS)."""
    from pydeform.data.synth_placement import CORNERS, corner_error

    info = root / "info.json"
    corners = json.loads(info.read_text()).get("corners", CORNERS) if info.is_file() else CORNERS
    return corner_error, torch.as_tensor(corners, dtype=torch.float64)


def evaluate(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    data: str | None = None,
    glasses: str | None = None,
    device: str = "cpu",
    batch_size: int = 50,
    workers: int = 0,
    ops: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Apply a trained ST-GAN to the test split and measure it.

    checkpoint: a `train` checkpoint (it carries the model config); the warps trained so
    far (its stage, at most N) are applied. data / glasses: the dataset, by default the
    one the checkpoint was trained on. ops: override the warp sampler.
    Writes out/images/NNNNNN.png (final composites), out/samples.png (background |
    composites after 0..K warps | real) and out/metrics.json; with p_true in the data:
    {"corner_error_px": [before warping, after warp 1, ..., after warp K],
    "reduction_pct": [...] (relative to before warping), "samples", "step", "stage", ...}.
    Returns that dict.
    """
    state = load_checkpoint(checkpoint)
    if state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint} is not an ST-GAN checkpoint (kind {state.get('kind')!r})")
    model_config = STGANConfig.from_dict(state["config"])
    if ops is not None:
        model_config = dataclasses.replace(model_config, ops=ops)
    trained = state.get("train_config", {})
    if data is None:
        data, glasses = trained.get("data"), glasses if glasses is not None else trained.get("glasses")
    if data is None or data == "synthetic":
        root = synthetic_data(model_config.size, trained.get("synth_train", 2000), trained.get("synth_test", 500), progress)
    else:
        root = Path(data)
    test_set = _open_split(root, "test", glasses, model_config)
    with_truth = _has_p_true(test_set)
    warps = min(int(state["stage"]), model_config.warps)

    torch_device = torch.device(device)
    model = STGAN(model_config).to(torch_device)
    model.load_state_dict(state["generators"])
    model.eval()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if with_truth:
        corner_error, corners = _corner_setup(root)
    sums = torch.zeros(warps + 1, dtype=torch.float64)
    count = 0
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=workers)
    with torch.no_grad():
        for batch in tqdm(loader, desc="stgan test", unit="batch", disable=not progress):
            batch = _to_device(batch, torch_device)
            steps = model(batch["background"], batch["foreground"], batch["p_init"], steps=warps)
            if count == 0:
                first = {k: v[:NUM_SAMPLES] for k, v in batch.items() if isinstance(v, Tensor)}
                _write_samples(model, first, warps, out / "samples.png")
            pixels = (steps.composites[-1].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for offset, image in enumerate(pixels):
                Image.fromarray(image).save(out / "images" / f"{count + offset:06d}.png")
            if with_truth:
                h_true = params_to_matrix(batch["p_true"].double())
                for k, p in enumerate(steps.params):
                    error = corner_error(params_to_matrix(p.double()), h_true, corners.to(torch_device), model_config.size)
                    sums[k] += error.double().sum().cpu()
            count += pixels.shape[0]
    result: dict[str, Any] = {"samples": count, "warps_applied": warps}
    if with_truth:
        errors = (sums / count).tolist()
        result["corner_error_px"] = errors
        result["reduction_pct"] = [100.0 * (1 - e / errors[0]) if errors[0] > 0 else math.nan for e in errors]
    result.update(
        step=int(state["step"]), stage=int(state["stage"]), mode="supervised" if trained.get("supervised") else "adversarial",
        checkpoint=str(checkpoint), data=str(root), config=model_config.to_dict(),
    )  # fmt: skip
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    return result


def format_metrics(result: dict[str, Any]) -> str:
    """A small table of evaluate()'s corner errors per warp step (or a note without p_true)."""
    lines = []
    if "corner_error_px" in result:
        lines.append(f"{'after warp':>10s} {'corner error px':>16s} {'reduction':>10s}")
        for k, (error, cut) in enumerate(zip(result["corner_error_px"], result["reduction_pct"])):
            lines.append(f"{('init' if k == 0 else str(k)):>10s} {error:16.3f} {cut:9.1f}%")
    else:
        lines.append("no p_true in this data: composites only (no corner error)")
    lines.append(f"{result['samples']} test samples, {result['mode']}, checkpoint step {result['step']} (stage {result['stage']})")
    return "\n".join(lines)
