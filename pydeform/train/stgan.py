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
as in the unpaired glasses experiment.

Where this differs from the authors' code (each stage there is a separate process):
- the history of fakes is one store for the whole run: stage 0's critic updates use it too
  (train_Donly.py has none) and its fakes carry over into the warp stages, where the authors'
  start each stage with an empty history; the default capacity is 1000 (their histQsize 10000);
- in adversarial mode p_init is the data's, fixed per sample (CelebAGlasses draws it from a
  per-item seed), where train_STGAN.py draws a fresh pertFG N(0, 1) perturbation every
  iteration; their small similarity jitter of the backgrounds (perturbBG) is not applied.
The supervised mode's `init_noise` does draw afresh every step. `paired_reals=True` instead takes each sample's own
real composite (the same background, foreground at p_true; synthetic data): the critic
still scores every image on its own and the generator never sees p_true, but the real and
fake halves of a critic batch then share their backgrounds, which lowers the variance of
the critic's estimate (an option for small budgets, not ST-GAN's setting).

Supervised mode (`supervised=True`, ST-GAN's pretraining of the indoor experiment,
`indoor/pretrain_homo.py`): no critic; stage k trains generator k with the L2 loss
mean_b ||p_k - p_true||^2 to undo random perturbations p_init = p_true + init_noise N(0, 1)
drawn afresh each step (init_noise 0: the data's fixed p_init). It needs data with p_true.

It runs on the training engine (`pydeform.train.engine`): CPU or CUDA, under torchrun too.
In `out` it writes:

    config.json      the run's settings
    log.jsonl        {"step", "stage", losses..., "it_s", "time"} every log_every steps
    samples/step_XXXXXXX.png   rows of: background | initial composite | composite after
                     each trained warp | real
    checkpoint.pt    written atomically (also at the end of every stage); `resume=True`
                     continues bit for bit: the checkpoint holds the stage, step, all
                     networks, all optimisers and the history of fakes.

`evaluate(checkpoint, ...)` applies the trained warps to the test split and writes
metrics.json: the mean corner error (pixels, `pydeform.data.synth_placement.corner_error`)
of the initial placement and after each warp, where the data has p_true; the final
composites as PNGs and a sample grid in any case.

Without a data folder both use the synthetic placement set (`pydeform.data.synth_placement`),
written once into $PYDEFORM_CACHE or ~/.cache/pydeform.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pydeform.errors import user_errors
from pydeform.geometry import params_to_matrix
from pydeform.losses.wgan import wgan_discriminator_loss, wgan_generator_loss
from pydeform.models.stgan import STGAN, STGANConfig, STGANDiscriminator
from pydeform.options import from_flat, option
from pydeform.train.common import (
    DistInfo,
    FakeHistory,
    atomic_write,
    check_minimum,
    save_image_grid,
    synthetic_set,
    to_device,
)
from pydeform.train.engine import Data, Recipe, Run, RunConfig, open_trained
from pydeform.train.engine import train as run_training
from pydeform.train.evaluation import EvalConfig, ImageMetrics, format_image_metrics

__all__ = [
    "TrainConfig",
    "TestConfig",
    "STGANRecipe",
    "FakeHistory",
    "train",
    "evaluate",
    "synthetic_data",
    "open_placement",
    "format_metrics",
]

CHECKPOINT_KIND = "pydeform.stgan"
SYNTH_SEED = 0  # the synthetic set does not change with the training seed
NUM_SAMPLES = 4  # rows of a sample grid
REAL_SEED_OFFSET = 1  # the reals' data order: seed + 1, independent of the backgrounds'


@dataclass
class TrainConfig(RunConfig):
    """Train ST-GAN in stages: the critic alone, then warp generators 1..N, each stage adding a
    generator and freezing the earlier ones (WGAN-GP; --supervised: L2 on the warp parameters).
    Without --data it trains on the synthetic placement set, written once into $PYDEFORM_CACHE or
    ~/.cache/pydeform. Writes OUT/config.json, OUT/log.jsonl, OUT/samples/*.png (background |
    initial composite | composite after each warp | real) and OUT/checkpoint.pt.
    ST-GAN used lr 1e-5 over 50k iterations per stage, which small budgets cannot afford.
    """

    model: STGANConfig = option(default_factory=STGANConfig)
    checkpoint_every: int = option(500, "steps between checkpoints (0: stage ends only)", resume="free")
    sample_every: int = option(200, "steps between sample grids (0: stage ends only)", resume="free")
    data: str | None = option(None, "'synthetic' (default), a folder of `pydeform synth placement`, or a CelebA root "
                              "(with --glasses)", metavar="DIR")  # fmt: skip
    glasses: str | None = option(None, "folder of RGBA glasses PNGs: --data is then a CelebA root", metavar="DIR")
    supervised: bool = option(False, "pretraining mode: learn to undo perturbations of p_true with an L2 loss (needs "
                              "data with p_true)")  # fmt: skip
    steps_per_stage: int = option(1000, "training steps of each warp stage", required=True)
    d_steps: int | None = option(None, "steps of the critic-only stage 0 (default: --steps-per-stage)")
    batch_size: int = option(20, "samples per step and process (20: ST-GAN's)")
    lr_g: float = option(1e-5, "generator Adam lr (1e-5: ST-GAN's)", resume="apply")
    lr_d: float = option(1e-5, "critic Adam lr (1e-5: ST-GAN's)", resume="apply")
    d_updates: int = option(2, "critic updates per generator update", resume="apply")
    gp_weight: float = option(10.0, "gradient penalty weight", resume="apply")
    dp_weight: float = option(1.0, "weight of mean ||dp||^2 in the generator loss", resume="apply")
    history: int = option(1000, "capacity of the history of fakes (0: none)")
    init_noise: float = option(0.1, "--supervised: std of the fresh perturbation p_init = p_true + s N(0, 1) (0: the "
                               "data's p_init)", resume="apply")  # fmt: skip
    paired_reals: bool = option(False, "critic reals = each sample's own real composite (same background; lower "
                                "variance, not ST-GAN's unpaired setting)")  # fmt: skip
    init_from_previous: bool = option(False, "start generator k >= 2 as a copy of generator k-1 (ST-GAN's --loadGP "
                                      "prev)")  # fmt: skip
    d_init_noise: float = option(0.0, "stage 0: critic fakes at p_init + s N(0, 1) (ST-GAN's critic-only stage used "
                                 "larger perturbations)")  # fmt: skip
    synth_train: int = option(2000, "synthetic training samples (without --data)")
    synth_test: int = option(500, "synthetic test samples (without --data)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data == "synthetic":
            self.data = None
        if self.d_steps is None:
            self.d_steps = self.steps_per_stage
        check_minimum(self, ("steps_per_stage", "batch_size", "d_updates", "synth_train", "synth_test"), 1)
        check_minimum(self, ("d_steps", "history"), 0)
        check_minimum(self, ("lr_g", "lr_d"), 0, strict=True)
        check_minimum(self, ("gp_weight", "dp_weight", "init_noise", "d_init_noise"), 0)
        if self.glasses is not None and self.data is None:
            raise ValueError("glasses (a folder of glasses PNGs) goes with data=CelebA root; got no data")
        if self.amp:
            raise ValueError("stgan does not train under amp (--amp): its gradient penalty needs float32 gradients")
        if self.supervised and self.glasses is not None:
            raise ValueError("supervised (--supervised) learns p_true, which CelebA (--glasses) does not have; "
                             "train adversarially")  # fmt: skip

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> TrainConfig:
        """From {option: value}; without a size, the data's: the placement folder's
        info.json, 144x144 for CelebA (--glasses), else 64x64 (the synthetic set)."""
        values = dict(values)
        if values.get("size") is None:
            data = values.get("data")
            info = Path(data) / "info.json" if data not in (None, "synthetic") else None
            if values.get("glasses") is not None:
                values["size"] = (144, 144)
            elif info is not None and info.is_file():
                try:
                    values["size"] = tuple(json.loads(info.read_text())["size"])
                except (ValueError, KeyError, TypeError) as error:
                    raise ValueError(f"{info} does not give the image size ({type(error).__name__}: {error}); "
                                     "pass --size") from error  # fmt: skip
            else:
                values["size"] = (64, 64)
        return from_flat(cls, values)

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



@dataclass
class TestConfig(EvalConfig):
    """Apply a trained ST-GAN to the test split: OUT/images/*.png (final composites),
    OUT/samples.png and OUT/metrics.json (mean corner error in pixels before warping and
    after each warp, where the data has p_true)."""

    batch_size: int = option(50, "images per forward pass")
    glasses: str | None = option(None, "glasses PNGs, with --data a CelebA root", metavar="DIR")
    ops: str | None = option(None, "override the checkpoint's warp sampler", choices=("pydeform", "reference", "kornia"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.glasses is not None and self.data is None:
            raise ValueError("--glasses needs --data (the CelebA root)")


# ----------------------------------------------------------------------------- data


def synthetic_data(
    size: tuple[int, int], train: int = 2000, test: int = 500, progress: bool = True, info: DistInfo | None = None
) -> Path:
    """The synthetic placement set at `size`, written once into
    cache_dir()/synth-placement-{H}x{W}-seed0-n{train}-{test}-{digest} (`synthetic_set`)."""
    from pydeform.data import synth_placement

    write = lambda tmp: synth_placement.write_placement(tmp, size=size, train=train, test=test,  # noqa: E731
                                                        seed=SYNTH_SEED, progress=progress)  # fmt: skip
    stem = f"synth-placement-{size[0]}x{size[1]}-seed{SYNTH_SEED}-n{train}-{test}"
    return synthetic_set("placement", stem, synth_placement, write, info)


def open_placement(root: str | os.PathLike, split: str, glasses: str | None = None, size: int = 144) -> Dataset:
    """`pydeform.data.Placement(root, split)`, or with `glasses`
    `pydeform.data.CelebAGlasses(root, glasses, split, size)`. Items: background (3, H, W),
    foreground (4, H, W), real (3, H, W) in [0, 1], p_init (8,) and (Placement) p_true (8,)."""
    if glasses is not None:
        from pydeform.data import CelebAGlasses

        return CelebAGlasses(root, glasses, split, size=size)
    from pydeform.data import Placement

    return Placement(root, split)


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


# ----------------------------------------------------------------------------- training


@dataclass
class _Networks:
    """What training updates and a checkpoint holds."""

    model: STGAN
    discriminator: STGANDiscriminator | None
    opt_g: list[torch.optim.Optimizer]  # one per generator
    opt_d: torch.optim.Optimizer | None
    history: FakeHistory
    run: Run  # its update(): backward, gradients averaged over the ranks, step


def _build_networks(config: TrainConfig, device: torch.device, run: Run | None = None) -> _Networks:
    """Networks, Adam optimisers and the history of fakes; `run`: the engine's (default: a
    single process on `device`)."""
    run = run or Run(config, DistInfo(0, 1, 0, torch.device(device)))
    model = STGAN(config.model).to(device)
    # ST-GAN: tf.train.AdamOptimizer with its default betas (0.9, 0.999).
    opt_g = [torch.optim.Adam(g.parameters(), lr=config.lr_g) for g in model.generators]
    discriminator, opt_d = None, None
    if not config.supervised:
        discriminator = STGANDiscriminator(config.model.d_widths, config.model.init_std).to(device)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d)
    return _Networks(model, discriminator, opt_g, opt_d, FakeHistory(config.history), run)


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
        networks.run.update(opt_d, parts["total"])
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
        networks.run.update(networks.opt_g[stage - 1], loss)
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
    networks.run.update(networks.opt_g[stage - 1], parts["total"])
    # ST-GAN updates D with the composites of the generator step (before its update).
    losses = _critic_steps(networks, config, real, fake)
    return {**losses, "loss_g": parts["total"].detach(), "g_adv": parts["adv"], "g_dp": parts["dp"]}


@torch.no_grad()
def _sample_rows(model: STGAN, batch: dict[str, Tensor], warps: int) -> list[list[Tensor]]:
    """Rows of: background | initial composite | composite after warps 1..warps | real."""
    steps = model(batch["background"], batch["foreground"], batch["p_init"], steps=warps)
    return [
        [batch["background"][b], *(c[b] for c in steps.composites), batch["real"][b]]
        for b in range(batch["background"].shape[0])
    ]


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
    **image_metric_files: str | None,
) -> dict[str, Any]:
    """Apply a trained ST-GAN to the test split and measure it.

    checkpoint: a `train` checkpoint (it carries the model config); the warps trained so
    far (its stage, at most N) are applied. data / glasses: the dataset, by default the
    one the checkpoint was trained on. ops: override the warp sampler.
    Writes out/images/NNNNNN.png (final composites), out/samples.png (background |
    composites after 0..K warps | real) and out/metrics.json; with p_true in the data:
    {"corner_error_px": [before warping, after warp 1, ..., after warp K],
    "reduction_pct": [...] (relative to before warping), "samples", "step", "stage", ...}.
    With `image_metric_files` (see `pydeform.train.evaluation.ImageMetrics`), "image_metrics"
    holds FID and IS of the composites (FID against `real_stats`) and, where the data has
    p_true, LPIPS against the real composites; otherwise it says what was skipped and why.
    Returns that dict.
    """
    state, model_config, trained = open_trained(checkpoint, CHECKPOINT_KIND, "ST-GAN", STGANConfig, ops=ops)
    if data is None:
        data, glasses = trained.get("data"), glasses if glasses is not None else trained.get("glasses")
    if data is None or data == "synthetic":
        root = synthetic_data(model_config.size, trained.get("synth_train", 2000), trained.get("synth_test", 500), progress)
    else:
        root = Path(data)
    with user_errors():
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
    image_metrics = ImageMetrics(device, progress, **image_metric_files)
    count = 0
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=workers)
    with torch.no_grad():
        for batch in tqdm(loader, desc="stgan test", unit="batch", disable=not progress):
            batch = to_device(batch, torch_device)
            steps = model(batch["background"], batch["foreground"], batch["p_init"], steps=warps)
            if count == 0:
                first = {k: v[:NUM_SAMPLES] for k, v in batch.items() if isinstance(v, Tensor)}
                save_image_grid(_sample_rows(model, first, warps), out / "samples.png", value_range=(0.0, 1.0))
            composites = (steps.composites[-1].clamp(0, 1) * 255).round().to(torch.uint8)
            reals = (batch["real"].clamp(0, 1) * 255).round().to(torch.uint8) if with_truth else None
            image_metrics.add(composites, reals)
            pixels = composites.permute(0, 2, 3, 1).cpu().numpy()
            for offset, image in enumerate(pixels):
                Image.fromarray(image).save(out / "images" / f"{count + offset:06d}.png")
            if with_truth:
                h_true = params_to_matrix(batch["p_true"].double())
                for k, p in enumerate(steps.params):
                    error = corner_error(params_to_matrix(p.double()), h_true, corners.to(torch_device), model_config.size)
                    sums[k] += error.double().sum().cpu()
            count += pixels.shape[0]
    result: dict[str, Any] = {"samples": count, "warps_applied": warps, "image_metrics": image_metrics.result()}
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
    lines.append(format_image_metrics(result["image_metrics"]))
    lines.append(f"{result['samples']} test samples, {result['mode']}, checkpoint step {result['step']} (stage {result['stage']})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the recipe


class STGANRecipe(Recipe):
    """ST-GAN's stages on the engine: which generator trains at which step, several
    critic updates per step, a history of fakes, and reals drawn in their own order."""

    name = "stgan"
    kind = CHECKPOINT_KIND
    description = "ST-GAN (Lin et al., CVPR 2018): learn the homography that places a foreground on a background"
    config_class = TrainConfig
    eval_config_class = TestConfig

    config: TrainConfig

    def total_steps(self) -> int:
        return self.config.total_steps

    def open_data(self, run: Run) -> Data:
        config = self.config
        if config.data is not None:
            root = Path(config.data)
        else:
            progress = config.progress and run.info.is_main
            root = synthetic_data(config.model.size, config.synth_train, config.synth_test, progress, run.info)
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
        streams = {"train": (train_set, 0)}
        if not (config.supervised or config.paired_reals):  # unpaired reals: their own data order
            streams["real"] = (train_set, REAL_SEED_OFFSET)
        return Data(streams, sample_set)

    def build(self, run: Run, state: dict[str, Any] | None) -> None:
        self.networks = _build_networks(self.config, run.device, run)
        self.networks.model.train()
        self.trainable: int | None = None
        ends = np.cumsum(self.config.stage_lengths).tolist()
        self.stage_ends, self.stage_starts = ends, [0, *ends[:-1]]

    def learning_rates(self, step: int) -> list[tuple[torch.optim.Optimizer, float]]:
        rates = [(opt, self.config.lr_g) for opt in self.networks.opt_g]
        return rates + ([(self.networks.opt_d, self.config.lr_d)] if self.networks.opt_d is not None else [])

    def train_step(self, step: int, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        config, networks = self.config, self.networks
        stage = config.stage_of(step)
        if stage != self.trainable:
            _set_trainable(networks.model, stage)
            self.trainable = stage
        if config.init_from_previous and stage >= 2 and step == self.stage_starts[stage]:
            generators = networks.model.generators
            generators[stage - 1].load_state_dict(generators[stage - 2].state_dict())
        batch = batches["train"]
        real = batches["real"]["real"] if "real" in batches else batch["real"]
        return _train_step(networks, config, stage, batch, real)

    def boundaries(self) -> set[int]:
        return set(self.stage_ends)  # a stage's end: the next stage starts from its checkpoint

    def log_fields(self, done: int) -> dict[str, Any]:
        return {"stage": self.config.stage_of(done - 1)}

    def sample_rows(self, batch: dict[str, Any], done: int) -> tuple[list[list[Tensor]], tuple[float, float]]:
        return _sample_rows(self.networks.model, batch, self.config.stage_of(done - 1)), (0.0, 1.0)

    def checkpointed(self) -> dict[str, Any]:
        n = self.networks
        entries = {"generators": n.model, "opt_g": n.opt_g, "history": n.history}
        return entries if n.discriminator is None else {**entries, "discriminator": n.discriminator, "opt_d": n.opt_d}

    def state_dict(self, done: int) -> dict[str, Any]:
        return {"stage": self.config.stage_of(done - 1), **super().state_dict(done)}

    @staticmethod
    def evaluate(config: TestConfig) -> dict[str, Any]:
        return evaluate(**dataclasses.asdict(config))

    summary = staticmethod(format_metrics)


def train(config: TrainConfig) -> dict[str, float]:
    """Train (or resume) ST-GAN; see the module docstring for the stages and what it writes.
    Returns the last logged losses and the final "step" and "stage"."""
    return run_training(STGANRecipe(config))
