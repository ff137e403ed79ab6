"""Training and testing of the Deformable GAN (Siarohin et al., CVPR 2018).

`train(TrainConfig(...))` runs the adversarial loop: per step one discriminator update and
one generator update, both Adam(2e-4, betas (0.5, 0.999)), on CPU or CUDA, optionally with
mixed precision (torch.autocast + GradScaler, CUDA) and under torchrun with
DistributedDataParallel (gloo on CPU, nccl on CUDA). Rank 0 writes, in `out`:

    config.json      the run's settings
    log.jsonl        {"step", "loss_d", "g_total", "g_gan", "g_l1"|"g_nn", "it_s", "time"} every log_every steps
    samples/step_XXXXXXX.png   rows of: source | target pose | generated | real target
    checkpoint.pt    written atomically; `resume=True` continues bit-for-bit on the same
                     device, world size and batch size (see pydeform.train.common)

`evaluate(checkpoint, ...)` generates the test split with the generator in eval mode,
writes the images and metrics.json: SSIM, mask-SSIM, L1 and PSNR of the generated images,
and of the source image itself as a prediction ("copy the source"), the trivial baseline.

Without a data folder both use a synthetic pose-pair set written once into the cache
(`pydeform.data.synth_pose`, $PYDEFORM_CACHE or ~/.cache/pydeform), so a bare checkout trains.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from pydeform.losses.gan import DeformGANLoss, discriminator_loss
from pydeform.models.deformgan import (
    NUM_SKIP_LEVELS,
    PRESETS,
    DeformGANConfig,
    build_discriminator,
    build_generator,
)
from pydeform.pose import stickman
from pydeform.train.common import (
    DistInfo,
    JsonlLogger,
    ResumableBatchSampler,
    all_reduce_mean,
    atomic_write,
    barrier,
    cache_dir,
    check_device,
    check_minimum,
    cleanup_distributed,
    load_checkpoint,
    render_pose,
    save_checkpoint,
    save_image_grid,
    seed_everything,
    seed_step,
    setup_distributed,
)

__all__ = [
    "TrainConfig",
    "Networks",
    "build_networks",
    "train_step",
    "train",
    "evaluate",
    "synthetic_data",
    "open_pose_pairs",
    "RANDOM_VGG_NOTE",
]

CHECKPOINT_KIND = "pydeform.deformgan"
CHECKPOINT_VERSION = 1
SYNTH_NAME = "synth"  # file prefix of the synthetic set
SYNTH_SEED = 0  # the synthetic set does not change with the training seed
NUM_SAMPLES = 4  # pairs shown in a sample grid
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
RANDOM_VGG_NOTE = (
    "--random-vgg: the NN loss compares the conv1_2 features of a randomly initialised VGG19, "
    "not the ImageNet-trained features of the paper; fine for smoke tests, not for results"
)


@dataclass
class TrainConfig:
    """Settings of a Deformable GAN training run (the `pydeform train deformgan` flags).

    model: the networks (preset, variant, sizes, ops). data: a folder in the Deformable GAN
    format (DESIGN.md section 6), or None for the synthetic set; name: its file prefix
    (default: the preset's, "market" or "fasion"; "synth" for the synthetic set).
    steps: total steps (a resumed run continues up to it). vgg19 / random_vgg: the NN
    loss's features (variant "full" needs one). amp: mixed precision in amp_dtype (CUDA
    only). sample_every / checkpoint_every: 0 writes them at the end only.
    """

    model: DeformGANConfig = field(default_factory=DeformGANConfig)
    out: str = "runs/deformgan"
    data: str | None = None
    name: str | None = None
    steps: int = 1000
    batch_size: int = 4
    vgg19: str | None = None
    random_vgg: bool = False
    resume: bool = False
    device: str = "cpu"
    amp: bool = False
    amp_dtype: str = "float16"
    sample_every: int = 200
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0
    workers: int = 2
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    l1_weight: float = 100.0
    nn_weight: float = 0.01
    synth_identities: int = 100
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = DeformGANConfig.from_dict(self.model)
        check_minimum(self, ("steps", "batch_size", "log_every"), 1)
        check_minimum(self, ("sample_every", "checkpoint_every", "workers", "seed"), 0)
        check_device(self.device)
        if self.amp and self.device != "cuda":
            raise ValueError("amp (mixed precision) needs device='cuda': the fused CPU kernels are float32/float64 only")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {list(AMP_DTYPES)}, got {self.amp_dtype!r}")
        if self.model.variant == "full" and self.vgg19 is None and not self.random_vgg:
            raise ValueError(
                "variant 'full' needs VGG19 weights for its NN loss: set vgg19=PATH (a torchvision "
                "vgg19 state dict) or random_vgg=True (random features: smoke runs only)"
            )
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- data


def synthetic_data(
    size: tuple[int, int], identities: int = 100, progress: bool = True, info: DistInfo | None = None
) -> Path:
    """The synthetic pose-pair set for images of `size`, written once into
    cache_dir()/synth-pose-{H}x{W}-seed0[-n{identities}] (file prefix "synth").

    Written into a temporary folder and renamed into place, so an interrupted or concurrent
    writer never leaves a half set behind. Under torchrun only rank 0 writes, the others
    wait for it.
    """
    height, width = size
    suffix = "" if identities == 100 else f"-n{identities}"
    root = cache_dir() / f"synth-pose-{height}x{width}-seed{SYNTH_SEED}{suffix}"
    if info is None or info.is_main:
        if not root.exists():
            from pydeform.data.synth_pose import write_pose_pairs

            tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
            print(f"writing the synthetic pose-pair set to {root} (once)", flush=True)
            write_pose_pairs(tmp, (height, width), identities, SYNTH_SEED, name=SYNTH_NAME, progress=progress)
            try:
                os.replace(tmp, root)
            except OSError:  # another process finished first: keep its copy
                shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    return root


def open_pose_pairs(root: str | os.PathLike, name: str, split: str) -> Dataset:
    """`pydeform.data.PosePairs(root, name, split)`: items are dicts with source, target
    (3, H, W) in [-1, 1], source_pose, target_pose (18, H, W), theta (4, 10, 2, 3),
    masks0..masks3 (10, H/2^l, W/2^l) and target_mask (1, H, W)."""
    try:
        from pydeform.data.pose_pairs import PosePairs
    except ImportError as exc:
        raise ImportError("pydeform.data.PosePairs (pydeform/data/pose_pairs.py) is missing from this build") from exc
    return PosePairs(root, name, split)


def _dataset_name(config: TrainConfig) -> str:
    if config.name is not None:
        return config.name
    return SYNTH_NAME if config.data is None else PRESETS[config.model.preset].data_name


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _generator_inputs(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """source, source_pose, target_pose, theta, [masks0..masks3] of a collated batch."""
    masks = [batch[f"masks{level}"] for level in range(NUM_SKIP_LEVELS)]
    return batch["source"], batch["source_pose"], batch["target_pose"], batch["theta"], masks


def _check_image_size(dataset: Dataset, config: DeformGANConfig, where: str) -> None:
    size = tuple(dataset[0]["source"].shape[-2:])
    if size != config.image_size:
        raise ValueError(
            f"{where} holds {size[0]}x{size[1]} images but the model expects "
            f"{config.image_size[0]}x{config.image_size[1]} (preset {config.preset!r}; set the size to match)"
        )


# ----------------------------------------------------------------------------- training


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


@dataclass
class Networks:
    """What a training step updates and a checkpoint holds."""

    generator: nn.Module
    discriminator: nn.Module
    loss_fn: DeformGANLoss
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": _unwrap(self.generator).state_dict(),
            "discriminator": _unwrap(self.discriminator).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _unwrap(self.generator).load_state_dict(state["generator"])
        _unwrap(self.discriminator).load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler.load_state_dict(state["scaler"])


def train_step(networks: Networks, batch: dict[str, Tensor], autocast: AbstractContextManager) -> dict[str, Tensor]:
    """One discriminator and one generator update. Returns the detached losses."""
    generator, discriminator, scaler = networks.generator, networks.discriminator, networks.scaler
    opt_g, opt_d = networks.opt_g, networks.opt_d
    source, source_pose, target_pose, theta, masks = _generator_inputs(batch)
    target = batch["target"]
    with autocast:
        fake = generator(source, source_pose, target_pose, theta, masks)

    # Discriminator: real and fake pairs in one batch, one (DDP) forward per backward.
    d_module = _unwrap(discriminator)
    d_module.requires_grad_(True)
    with autocast:
        logits = discriminator(
            torch.cat([source, source]),
            torch.cat([source_pose, source_pose]),
            torch.cat([target, fake.detach()]),
            torch.cat([target_pose, target_pose]),
        )
        real_logits, fake_logits = logits.chunk(2)
        loss_d = discriminator_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    scaler.scale(loss_d).backward()
    scaler.step(opt_d)

    # Generator, through the updated discriminator; the bare module (no DDP hooks) with
    # frozen weights, so that the generator's loss leaves no gradients in D.
    d_module.requires_grad_(False)
    with autocast:
        parts = networks.loss_fn(d_module(source, source_pose, fake, target_pose), fake, target)
    opt_g.zero_grad(set_to_none=True)
    scaler.scale(parts["total"]).backward()
    scaler.step(opt_g)
    scaler.update()
    d_module.requires_grad_(True)
    return {"loss_d": loss_d.detach(), **{f"g_{name}": value.detach() for name, value in parts.items()}}


@torch.no_grad()
def _write_samples(generator: nn.Module, batch: dict[str, Tensor], path: Path, autocast: AbstractContextManager) -> None:
    """Grid of source | target pose | generated | real, one row per pair; eval mode
    (no dropout) so that grids of different steps compare."""
    was_training = generator.training
    generator.eval()
    with autocast:
        fake = generator(*_generator_inputs(batch)).float()
    generator.train(was_training)
    # The stickman of the target keypoints where the items carry them (clearer than
    # heatmaps with sigma 6 px on small images), else the coloured heatmaps.
    if "target_kp" in batch:
        pose = stickman(batch["target_kp"], tuple(fake.shape[-2:])).to(fake.device) * 2 - 1
    else:
        pose = render_pose(batch["target_pose"])
    rows = [[batch["source"][b], pose[b], fake[b], batch["target"][b]] for b in range(fake.shape[0])]
    save_image_grid(rows, path)


def build_networks(config: TrainConfig, info: DistInfo, state: dict[str, Any] | None) -> Networks:
    """Networks, loss, Adam optimisers and loss scaler, restored from `state` when given,
    wrapped in DistributedDataParallel under torchrun."""
    device = info.device
    seed_everything(config.seed)  # the same initial weights on every rank
    generator = build_generator(config.model).to(device)
    discriminator = build_discriminator(config.model).to(device)
    loss_fn = DeformGANLoss(
        config.model.variant, config.model.kernel, config.vgg19, config.random_vgg,
        l1_weight=config.l1_weight, nn_weight=config.nn_weight, ops=config.model.ops,
    ).to(device)  # fmt: skip
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=config.betas)
    # Loss scaling is for float16 only: bfloat16 has float32's exponent range.
    use_scaler = config.amp and AMP_DTYPES[config.amp_dtype] == torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    networks = Networks(generator, discriminator, loss_fn, opt_g, opt_d, scaler)
    if state is not None:
        networks.load_state_dict(state)
    if info.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        networks.generator = DistributedDataParallel(generator, device_ids=device_ids)
        networks.discriminator = DistributedDataParallel(discriminator, device_ids=device_ids)
    networks.generator.train()
    networks.discriminator.train()
    return networks


def _resume_state(config: TrainConfig, info: DistInfo, path: Path) -> dict[str, Any] | None:
    """The checkpoint to continue from (None: start at step 0), checked against the config."""
    if not config.resume:
        return None
    if not path.exists():
        if info.is_main:
            print(f"--resume: no checkpoint at {path}, starting from step 0", flush=True)
        return None
    state = load_checkpoint(path)
    if state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not a Deformable GAN checkpoint (kind {state.get('kind')!r})")
    saved = state["config"]
    # The two ops compute the same function: a run may switch between them.
    differ = [k for k, v in config.model.to_dict().items() if k != "ops" and saved.get(k) != v]
    if differ:
        raise ValueError(
            f"cannot resume {path}: the model settings differ from the checkpoint's: "
            + ", ".join(f"{k} {saved.get(k)!r} (checkpoint) vs {getattr(config.model, k)!r}" for k in differ)
        )
    layout = (state.get("world_size"), state["train_config"]["batch_size"])
    if info.is_main and layout != (info.world_size, config.batch_size):
        print(
            f"--resume: {layout[0]} process(es) x batch {layout[1]} wrote {path}, now {info.world_size} x "
            f"{config.batch_size}: the data order differs from an uninterrupted run",
            flush=True,
        )
    return state


def _open_datasets(config: TrainConfig, info: DistInfo) -> tuple[Dataset, Dataset]:
    """(training pairs, pairs for the sample grids: the test split, else training pairs)."""
    root = Path(config.data) if config.data is not None else synthetic_data(
        config.model.image_size, config.synth_identities, config.progress and info.is_main, info
    )
    name = _dataset_name(config)
    train_set = open_pose_pairs(root, name, "train")
    _check_image_size(train_set, config.model, f"{root} ({name}, train)")
    try:
        return train_set, open_pose_pairs(root, name, "test")
    except (FileNotFoundError, ValueError):  # no (or an empty) test split
        return train_set, train_set


def train(config: TrainConfig) -> dict[str, float]:
    """Train (or resume) a Deformable GAN; see the module docstring for what it writes.

    Under torchrun each process joins the process group here and leaves it at the end.
    Returns the last logged losses (averaged over the ranks) and the final "step".
    """
    info = setup_distributed(config.device)
    try:
        return _train(config, info)
    finally:
        cleanup_distributed()


def _train(config: TrainConfig, info: DistInfo) -> dict[str, float]:
    out, device = Path(config.out), info.device
    checkpoint_path = out / "checkpoint.pt"
    state = _resume_state(config, info, checkpoint_path)
    start_step = int(state["step"]) if state is not None else 0
    if start_step >= config.steps:
        if info.is_main:
            print(f"{checkpoint_path} is at step {start_step} >= steps={config.steps}: nothing to do", flush=True)
        return {"step": float(start_step)}
    if info.is_main and config.model.variant == "full" and config.random_vgg:
        print(RANDOM_VGG_NOTE, flush=True)

    train_set, sample_set = _open_datasets(config, info)
    # Every rank reads the same files; the sampler gives each rank its share, from start_step on.
    sampler = ResumableBatchSampler(len(train_set), config.batch_size, config.seed, info.rank, info.world_size, start_step)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.workers, pin_memory=device.type == "cuda")
    networks = build_networks(config, info, state)

    def autocast() -> AbstractContextManager:
        return torch.autocast(device.type, dtype=AMP_DTYPES[config.amp_dtype], enabled=config.amp)

    logger, sample_batch = None, None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", lambda f: f.write(json.dumps(config.to_dict(), indent=2).encode()))
        logger = JsonlLogger(out / "log.jsonl", keep_until=start_step if state is not None else None)
        count = min(NUM_SAMPLES, len(sample_set))
        sample_batch = _to_device(default_collate([sample_set[i] for i in range(count)]), device)

    def write_outputs(step: int, samples: bool, checkpoint: bool) -> None:
        if samples:
            path = out / "samples" / f"step_{step:07d}.png"
            _write_samples(_unwrap(networks.generator), sample_batch, path, autocast())
        if checkpoint:
            meta = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "step": step, "world_size": info.world_size,
                    "config": config.model.to_dict(), "train_config": config.to_dict()}  # fmt: skip
            save_checkpoint({**meta, **networks.state_dict()}, checkpoint_path)

    def every(period: int, step: int) -> bool:
        return period > 0 and step % period == 0

    progress = tqdm(
        total=config.steps, initial=start_step, desc="deformgan", unit="step", disable=not (config.progress and info.is_main)
    )
    last: dict[str, float] = {}
    started = interval_start = time.perf_counter()
    logged_step = start_step
    batches = iter(loader)
    try:
        for step in range(start_step, config.steps):
            batch = _to_device(next(batches), device)
            seed_step(config.seed, info.rank, step)  # dropout: a function of (seed, rank, step)
            losses = train_step(networks, batch, autocast())
            done = step + 1
            progress.update(1)
            if every(config.log_every, done) or done == config.steps:
                # A collective: every rank calls it at the same steps; rank 0 writes.
                names = sorted(losses)
                last = dict(zip(names, all_reduce_mean(torch.stack([losses[n].float() for n in names])).tolist()))
                now = time.perf_counter()
                if logger is not None:
                    logger.log(done, **last, it_s=(done - logged_step) / (now - interval_start), time=now - started)
                interval_start, logged_step = now, done
                progress.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in last.items()}, refresh=False)
            if info.is_main:
                write_outputs(done, every(config.sample_every, done), every(config.checkpoint_every, done))
        if info.is_main:  # the end of the run, unless the loop just wrote it
            end = config.steps
            write_outputs(end, not every(config.sample_every, end), not every(config.checkpoint_every, end))
        barrier()  # no rank leaves (and tears the group down) before rank 0 has written
    finally:
        progress.close()
        if logger is not None:
            logger.close()
    return {"step": float(config.steps), **last}


# ----------------------------------------------------------------------------- testing


def _to_uint8_values(images: Tensor, truncate: bool) -> Tensor:
    """[-1, 1] -> float values in {0, ..., 255}. The authors' evaluation truncated the
    generated images (255 (x + 1) / 2, cast to uint8); dataset images are already 8-bit
    values, which rounding recovers exactly."""
    values = (images.float().clamp(-1, 1) + 1) * 127.5
    return (values.floor() if truncate else values.round()).clamp(0, 255)


def _metric_sums(prediction: Tensor, target: Tensor, mask: Tensor) -> dict[str, float]:
    """Sums over the batch of the Deformable GAN's test metrics (their `test.py`):
    prediction, target (B, 3, H, W) 8-bit values as floats; mask (B, 1, H, W).
    SSIM and mask-SSIM on [0, 255] with the prediction's range, L1 on [-1, 1], PSNR with
    peak 255."""
    metrics = importlib.import_module("pydeform.metrics")
    values = {
        "ssim": metrics.ssim(prediction, target),
        "mask_ssim": metrics.mask_ssim(prediction, target, mask),
        "l1": metrics.l1(prediction / 127.5 - 1, target / 127.5 - 1),
        "psnr": metrics.psnr(prediction, target, 255.0),
    }
    return {name: float(value.double().sum()) for name, value in values.items()}


def _image_name(batch: dict[str, Any], offset: int, index: int) -> str:
    """<source>___<target>.png as the authors named generated images, else <index>.png."""
    if "source_name" in batch and "target_name" in batch:
        return f"{Path(batch['source_name'][offset]).stem}___{Path(batch['target_name'][offset]).stem}.png"
    return f"{index:06d}.png"


def evaluate(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    name: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    ops: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the test split with a trained generator and measure it.

    checkpoint: a `train` checkpoint (it carries the model config). data/name: the
    dataset, by default the one the checkpoint was trained on (the synthetic set when it
    had none). ops: override the checkpoint's warp implementation.
    Writes out/images/<source>___<target>.png (the generated 8-bit images that are scored),
    out/samples.png (the first pairs as source | target pose | generated | real) and
    out/metrics.json: {"generated": {ssim, mask_ssim, l1, psnr}, "copy_source": {...},
    "pairs", "step", ...}, the means over the test pairs (see `_metric_sums`; mask-SSIM uses
    the items' target_mask). Returns that dict.
    """
    state = load_checkpoint(checkpoint)
    if state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint} is not a Deformable GAN checkpoint (kind {state.get('kind')!r})")
    model_config = DeformGANConfig.from_dict(state["config"])
    if ops is not None:
        model_config = dataclasses.replace(model_config, ops=ops)
    trained = state.get("train_config", {})
    torch_device = torch.device(device)
    if data is None and trained.get("data") is None:
        root = synthetic_data(model_config.image_size, trained.get("synth_identities", 100), progress)
        name = name or SYNTH_NAME
    else:
        root = Path(data if data is not None else trained["data"])
        name = name or trained.get("name") or PRESETS[model_config.preset].data_name
    test_set = open_pose_pairs(root, name, "test")
    _check_image_size(test_set, model_config, f"{root} ({name}, test)")

    generator = build_generator(model_config).to(torch_device)
    generator.load_state_dict(state["generator"])
    generator.eval()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=workers)
    sums = {"generated": {}, "copy_source": {}}
    count = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc="deformgan test", unit="batch", disable=not progress):
            batch = _to_device(batch, torch_device)
            fake = generator(*_generator_inputs(batch))
            if count == 0:
                first = {k: v[:NUM_SAMPLES] for k, v in batch.items() if isinstance(v, Tensor)}
                _write_samples(generator, first, out / "samples.png", nullcontext())
            generated = _to_uint8_values(fake, truncate=True)
            pixels = generated.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for offset, image in enumerate(pixels):
                Image.fromarray(image).save(out / "images" / _image_name(batch, offset, count + offset))
            target, mask = _to_uint8_values(batch["target"], truncate=False), batch["target_mask"].float()
            source = _to_uint8_values(batch["source"], truncate=False)
            for key, prediction in (("generated", generated), ("copy_source", source)):
                for metric, value in _metric_sums(prediction, target, mask).items():
                    sums[key][metric] = sums[key].get(metric, 0.0) + value
            count += fake.shape[0]
    if count == 0:
        raise ValueError(f"the test split of {root} ({name}) is empty")
    result = {
        "generated": {k: v / count for k, v in sums["generated"].items()},
        "copy_source": {k: v / count for k, v in sums["copy_source"].items()},
        "pairs": count,
        "step": int(state["step"]),
        "checkpoint": str(checkpoint),
        "data": str(root),
        "config": model_config.to_dict(),
    }
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    return result


def format_metrics(result: dict[str, Any]) -> str:
    """A small table of evaluate()'s metrics: generated vs copy-the-source."""
    names = ("ssim", "mask_ssim", "l1", "psnr")
    lines = [f"{'':12s}" + "".join(f"{n:>11s}" for n in names)]
    for key in ("generated", "copy_source"):
        values = result[key]
        cells = (f"{values[n]:11.4f}" if math.isfinite(values[n]) else f"{values[n]:>11}" for n in names)
        lines.append(f"{key:12s}" + "".join(cells))
    lines.append(f"{result['pairs']} test pairs, checkpoint step {result['step']}")
    return "\n".join(lines)
