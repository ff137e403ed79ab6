"""The Variational U-Net (Esser, Sutter & Ommer, CVPR 2018) on the training engine, after
the official code's main.py (github.com/CompVis/vunet).

One step: part crops of the batch (batched `homography_sample`), the training pass
(posterior samples, the prior fed them), loss = perceptual (5.0 * sum over the input and
VGG19 relu1_2 .. relu5_2 of mean |.|, Caffe preprocessing) + kl_weight * KL, one Adam
update (betas 0.5, 0.9). Schedules (nn.make_linear_var), functions of the step s with
T = --steps (the original's lr_decay_end = 100,000):

    lr(s)        = clip(lr * (1 - (s - b) / (T - b)), 0, lr),   b = --lr-decay-begin (default T / 100)
    kl_weight(s) = clip(1e-6 + (1 - 1e-6) (s - T/2) / (3T/4 - T/2), 1e-6, 1)

so the default run of 100,000 steps is the original's (lr constant to 1,000, linear to 0 at
100,000; KL weight 1e-6 to 50,000, linear to 1 at 75,000), and a shorter run keeps the shape.
A fresh run first initialises every weight-normalised layer from data (main.py init_graph):
one training-mode forward pass over `--init-batches` x batch-size training images, the
first ones of torch.randperm(n) under a generator seeded with --seed (independent of the
data order of training). A resumed run loads its weights instead.

Rank 0 writes config.json, log.jsonl {loss, likelihood, kl, lr, kl_weight}, sample grids
(rows: source | target pose | transfer | 4 appearance samples from the prior) and
checkpoint.pt. `evaluate` (`pydeform test vunet --mode ...`) writes images/, samples.png and
metrics.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from pydeform.errors import user_errors
from pydeform.losses.vunet import VUNetPerceptualLoss
from pydeform.models.vunet import PRESETS, VUNet, VUNetConfig, data_dependent_init
from pydeform.options import option
from pydeform.pose.vunet_parts import part_crops
from pydeform.train.common import (
    DistInfo,
    atomic_write,
    check_minimum,
    save_image_grid,
    to_device,
)
from pydeform.train.engine import Data, Recipe, Run, RunConfig, open_trained
from pydeform.train.engine import train as run_training
from pydeform.train.evaluation import ImageMetrics, format_image_metrics
from pydeform.train.pose_transfer import (
    PoseScores,
    PoseTestConfig,
    format_pose,
    metric_sums,
    pose_pair_folder,
    synthetic_pose_pairs,
    to_uint8_values,
)

__all__ = [
    "RANDOM_VGG_NOTE",
    "TestConfig",
    "TrainConfig",
    "VUNetRecipe",
    "evaluate",
    "kl_weight",
    "learning_rate",
    "train",
]  # fmt: skip

CHECKPOINT_KIND = "pydeform.vunet"
SYNTH_SIZE = (128, 64)  # the pose-pair set every family reads
NUM_PRIOR_SAMPLES = 4
GRID_SEED = 1234  # prior samples of the grids: the same noise at every step
KL_MIN = 1e-6
RANDOM_VGG_NOTE = ("--random-vgg: the perceptual loss compares the features of a randomly initialised VGG19, "
                   "not the ImageNet-trained features of the paper; fine for smoke tests, not for results")  # fmt: skip


# ----------------------------------------------------------------------------- schedules


def _linear(step: float, start: float, end: float, start_value: float, end_value: float, low: float, high: float) -> float:
    """nn.make_linear_var: the line through (start, start_value), (end, end_value), clipped."""
    if end == start:
        value = end_value if step >= end else start_value
    else:
        value = (end_value - start_value) / (end - start) * (step - start) + start_value
    return min(max(value, low), high)


def learning_rate(step: int, total: int, lr: float, decay_begin: int) -> float:
    """main.py's lr at (0-based) step `step`: lr until decay_begin, linear to 0 at `total`."""
    return _linear(step, decay_begin, total, lr, 0.0, 0.0, lr)


def kl_weight(step: int, total: int) -> float:
    """main.py's KL weight: 1e-6 until total // 2, linear to 1 at 3 * total // 4."""
    return _linear(step, total // 2, 3 * total // 4, KL_MIN, 1.0, KL_MIN, 1.0)


# ----------------------------------------------------------------------------- settings


@dataclass
class TrainConfig(RunConfig):
    """Train the Variational U-Net. Without --data/--index it trains on the synthetic
    pose-pair set every family uses (written once into $PYDEFORM_CACHE or ~/.cache/pydeform).
    Writes OUT/config.json, OUT/log.jsonl, OUT/samples/*.png (source | target pose | transfer
    | 4 prior samples) and OUT/checkpoint.pt.
    """

    model: VUNetConfig = option(default_factory=VUNetConfig)
    data: str | None = option(None, "pose-pair folder (<name>-annotation-*.csv, <name>-pairs-*.csv, "
                              "<name>-dataset/); default: the synthetic set", metavar="DIR", group="data")  # fmt: skip
    index: str | None = option(None, "the original's index.p (joints, imgs, train; read without running code)",
                               metavar="PATH", group="data")  # fmt: skip
    name: str | None = option(None, "file prefix of the pose-pair set (default: market; synth without --data)")
    steps: int = option(100000, "total training steps; the lr and KL schedules scale with it", required=True,
                        resume="apply")  # fmt: skip
    batch_size: int | None = option(None, "images per step and process (default: the preset's, 16 or 8)")
    lr: float = option(1e-3, "initial Adam learning rate (> 0)", resume="apply")
    lr_decay_begin: int | None = option(None, "step where the lr starts its linear decay to 0 at --steps "
                                        "(default: steps / 100, the original's 1,000 of 100,000)", resume="apply")  # fmt: skip
    betas: tuple[float, float] = option((0.5, 0.9), "Adam betas", parse="floats")
    init_batches: int = option(4, "batches of the data-dependent initialisation (a fresh run)")
    vgg19: str | None = option(None, "VGG19 state dict (torchvision key layout) for the perceptual loss",
                               metavar="PATH", group="vgg", resume="free")  # fmt: skip
    random_vgg: bool = option(False, "perceptual loss on random VGG19 features (smoke runs only)", group="vgg")
    vgg_preprocessing: str = option("caffe", "caffe: the original's Keras VGG19 input (BGR, 0..255 minus the mean; "
                                    "weights converted from Keras/Caffe); imagenet: torchvision's weights",
                                    choices=("caffe", "imagenet"))  # fmt: skip
    gram_weights: tuple[float, ...] = option((0.0,) * 6, "Gram loss weights of input, relu1_2 .. relu5_2 (the "
                                             "original's retrain configs: 0,0.05,0.05,0,0,0)", parse="floats",
                                             resume="apply")  # fmt: skip
    synth_identities: int = option(100, "people in the synthetic set (without --data)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size is None:
            self.batch_size = PRESETS[self.model.preset].batch_size
        if self.lr_decay_begin is None:
            self.lr_decay_begin = self.steps // 100
        check_minimum(self, ("steps", "batch_size", "init_batches", "synth_identities"), 1)
        check_minimum(self, ("lr",), 0, strict=True)
        check_minimum(self, ("lr_decay_begin",), 0)
        if self.lr_decay_begin > self.steps:
            raise ValueError(f"lr_decay_begin ({self.lr_decay_begin}) must be <= steps ({self.steps})")
        self.betas, self.gram_weights = tuple(self.betas), tuple(self.gram_weights)
        if len(self.gram_weights) != 6 or min(self.gram_weights) < 0:
            raise ValueError(f"gram_weights needs 6 non-negative values (input, relu1_2 .. relu5_2), "
                             f"got {self.gram_weights}")  # fmt: skip
        if self.data is not None and self.index is not None:
            raise ValueError("give --data or --index, not both")
        if self.vgg19 is None and not self.random_vgg:
            raise ValueError(
                "the perceptual loss compares VGG19 features, and nothing is downloaded: set vgg19 (--vgg19 PATH, a "
                "VGG19 state dict in torchvision's key layout; with --vgg-preprocessing caffe, the Keras/Caffe "
                "weights the original used, converted), or random_vgg (--random-vgg: random features, smoke tests)"
            )


@dataclass
class TestConfig(PoseTestConfig):
    """Run a trained Variational U-Net on the test split: transfer (posterior mean of the
    source's crops, decoded with the target's stickman), reconstruct (the same with the
    source's own stickman: the paper's Table 1 protocol, never comparable to transfer), or
    sample (4 appearances from the prior for each target pose). Writes OUT/images/,
    OUT/samples.png and OUT/metrics.json."""

    mode: str = option("transfer", "what to generate", choices=("transfer", "reconstruct", "sample"))
    index: str | None = option(None, "the index.p to read (default: as in training)", metavar="PATH")
    name: str | None = option(None, "file prefix of the pose-pair set (default: as in training)")
    seed: int = option(0, "seed of the prior samples")


# ----------------------------------------------------------------------------- data


def synthetic_data(identities: int = 100, progress: bool = True, info: DistInfo | None = None) -> Path:
    """The synthetic pose-pair set every pose-transfer family reads, at 128x64
    (`pydeform.train.pose_transfer.synthetic_pose_pairs`)."""
    return synthetic_pose_pairs(SYNTH_SIZE, identities, progress, info)


def _datasets(config: VUNetConfig, data: str | None, index: str | None, name: str | None, identities: int,
              progress: bool, info: DistInfo | None, train: bool) -> tuple[Dataset | None, Dataset]:
    """(training images or None, test pairs)."""
    from pydeform.data.vunet import ImagePairs, IndexImages, PoseImages, PoseTransfers

    size, box_factor = config.size, config.box_factor
    if index is not None:
        train_set = IndexImages(index, True, size, box_factor) if train else None
        return train_set, ImagePairs(IndexImages(index, False, size, box_factor))
    root, name = pose_pair_folder(data, name, "market", SYNTH_SIZE, identities, progress, info)
    train_set = PoseImages(root, name, "train", size, box_factor) if train else None
    return train_set, PoseTransfers(root, name, "test", size, box_factor)


def _crops(model: VUNet, batch: dict[str, Tensor]) -> Tensor:
    image = batch["image"] if "image" in batch else batch["source"]
    box = (model.config.box_size, model.config.box_size)
    return part_crops(image, batch["homographies"], batch["valid"], box)


@torch.no_grad()
def _grid_rows(model: VUNet, batch: dict[str, Tensor], reconstruct: bool = False) -> list[list[Tensor]]:
    """Rows of source | target pose | transfer (or reconstruction) | 4 prior samples; eval
    mode, the prior's noise from a fixed seed (the global RNG is left as it was)."""
    was_training = model.training
    model.eval()
    pose = batch["source_stickman"] if reconstruct else batch["target_stickman"]
    crops = _crops(model, batch)
    devices = [pose.device] if pose.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(GRID_SEED)
        transfer = model.transfer(crops, pose)
        samples = [model.sample(pose) for _ in range(NUM_PRIOR_SAMPLES)]
    model.train(was_training)
    return [[batch["source"][b], pose[b], transfer[b], *(s[b] for s in samples)] for b in range(pose.shape[0])]


# ----------------------------------------------------------------------------- the recipe


class VUNetRecipe(Recipe):
    """One Adam update per step on perceptual + kl_weight * KL (main.py)."""

    name = "vunet"
    kind = CHECKPOINT_KIND
    description = "Variational U-Net (Esser et al., CVPR 2018): appearance VAE + stickman U-Net"
    config_class = TrainConfig
    eval_config_class = TestConfig

    config: TrainConfig

    def notes(self) -> list[str]:
        return [RANDOM_VGG_NOTE] if self.config.random_vgg else []

    def total_steps(self) -> int:
        return self.config.steps

    def open_data(self, run: Run) -> Data:
        c = self.config
        self.train_set, test_pairs = _datasets(c.model, c.data, c.index, c.name, c.synth_identities,
                                               c.progress and run.info.is_main, run.info, train=True)  # fmt: skip
        return Data({"train": (self.train_set, 0)}, test_pairs)

    def _init_batch(self, device: torch.device) -> dict[str, Tensor]:
        """The data-dependent initialisation's images: the first init_batches * batch_size
        of torch.randperm(n) under a generator seeded with the run's seed."""
        n = min(len(self.train_set), self.config.init_batches * self.config.batch_size)
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(self.config.seed))
        items = [self.train_set[int(i)] for i in order[:n]]
        return to_device(default_collate(items), device)

    def build(self, run: Run, state: dict[str, Any] | None) -> None:
        c, device = self.config, run.device
        self.run = run
        self.model = VUNet(c.model).to(device)
        self.loss_fn = VUNetPerceptualLoss(c.vgg19, c.random_vgg, c.vgg_preprocessing,
                                           gram_weights=c.gram_weights).to(device)  # fmt: skip
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, betas=c.betas)
        if state is None:  # a fresh run: data-dependent init (a resumed one loads the checkpoint's weights)
            batch = self._init_batch(device)
            self.model.train()
            with data_dependent_init(self.model):
                self.model(batch["stickman"], _crops(self.model, batch))
        self.model.train()

    def learning_rates(self, step: int) -> list[tuple[torch.optim.Optimizer, float]]:
        c = self.config
        return [(self.optimizer, learning_rate(step, c.steps, c.lr, c.lr_decay_begin))]

    def train_step(self, step: int, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        run, batch = self.run, batches["train"]
        crops = _crops(self.model, batch)
        weight = kl_weight(step, self.config.steps)
        with run.autocast():
            image, qs, ps = self.model(batch["stickman"], crops)
            likelihood, _ = self.loss_fn(batch["image"], image.float())
            kl = self.model.kl([q.float() for q in qs], [p.float() for p in ps])
            loss = likelihood + weight * kl
        run.update(self.optimizer, loss)
        return {"loss": loss.detach(), "likelihood": likelihood.detach(), "kl": kl.detach()}

    def log_fields(self, done: int) -> dict[str, Any]:
        c, step = self.config, max(done - 1, 0)  # the values the last step used
        return {"lr": learning_rate(step, c.steps, c.lr, c.lr_decay_begin), "kl_weight": kl_weight(step, c.steps)}

    def sample_rows(self, batch: dict[str, Any], done: int) -> tuple[list[list[Tensor]], tuple[float, float]]:
        return _grid_rows(self.model, batch), (-1.0, 1.0)

    def checkpointed(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer}

    @staticmethod
    def evaluate(config: TestConfig) -> dict[str, Any]:
        return evaluate(**dataclasses.asdict(config))

    @staticmethod
    def summary(result: dict[str, Any]) -> str:
        lines = [f"mode {result['mode']}: {result['images']} images, checkpoint step {result['step']}",
                 format_image_metrics(result["image_metrics"])]
        for key in ("generated", "copy_source"):
            if key in result:
                lines.append(f"{key:12s}" + "".join(f" {k}={v:.4f}" for k, v in result[key].items()))
        if "pose" in result:
            lines.append(format_pose(result["pose"]))
        if "sample_std" in result:
            lines.append(f"mean per-pixel std across {NUM_PRIOR_SAMPLES} prior samples: {result['sample_std']:.4f}")
        return "\n".join(lines)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) a Variational U-Net; see the module docstring."""
    return run_training(VUNetRecipe(config))


# ----------------------------------------------------------------------------- testing


def evaluate(checkpoint: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None = None,
             index: str | None = None, name: str | None = None, mode: str = "transfer", seed: int = 0,
             device: str = "cpu", batch_size: int = 8, workers: int = 0, progress: bool = True,
             detector: str | None = None, **image_metric_files: str | None) -> dict[str, Any]:
    """Generate the test split (see TestConfig) and measure it.

    transfer: SSIM, mask-SSIM, L1, PSNR against the target, at the dataset's own image size
    (the square output resized back bilinearly, as the other families are scored), and the
    copy-the-source baseline; reconstruct: the same against the source itself (no mask);
    sample: 4 prior samples per target pose and their mean per-pixel standard deviation
    (in [-1, 1] units). With a `detector` checkpoint, transfer and sample also report
    "pose": PCKh@0.5 and the mean keypoint error (pixels) of the keypoints detected in the
    generated images (at the dataset's own size; every prior sample counts) against the
    target pose. The images written are those scored (transfer, reconstruct: at the
    dataset's own size). "image_metrics": FID/IS (and LPIPS against the target or source, except
    in sample mode) when `image_metric_files` name the weights, else what was skipped and why
    (`pydeform.train.evaluation.ImageMetrics`). Writes out/images/*.png, out/samples.png,
    out/metrics.json.
    """
    if mode not in ("transfer", "reconstruct", "sample"):
        raise ValueError(f"mode must be transfer, reconstruct or sample, got {mode!r}")
    state, config, trained = open_trained(checkpoint, CHECKPOINT_KIND, "Variational U-Net", VUNetConfig)
    torch_device = torch.device(device)
    with user_errors():
        if index is None and data is None:
            index, data = trained.get("index"), trained.get("data")
        _, pairs = _datasets(config, data, index, name or trained.get("name"), trained.get("synth_identities", 100),
                             progress, None, train=False)  # fmt: skip
    pose_scores = PoseScores(detector, torch_device) if detector is not None and mode != "reconstruct" else None
    model = VUNet(config).to(torch_device)
    model.load_state_dict(state["model"])
    model.eval()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=False, num_workers=workers)
    sums: dict[str, dict[str, float]] = {"generated": {}, "copy_source": {}}
    std_sum, count = 0.0, 0
    image_metrics = ImageMetrics(device, progress, **image_metric_files)
    torch.manual_seed(seed)
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"vunet test ({mode})", unit="batch", disable=not progress):
            batch = to_device(batch, torch_device)
            if count == 0:
                first = {k: v[:4] for k, v in batch.items() if isinstance(v, Tensor)}
                with torch.random.fork_rng(devices=[torch_device] if torch_device.type == "cuda" else []):
                    save_image_grid(_grid_rows(model, first, reconstruct=mode == "reconstruct"), out / "samples.png")
            n = batch["source"].shape[0]
            if mode == "sample":
                samples = torch.stack([model.sample(batch["target_stickman"]) for _ in range(NUM_PRIOR_SAMPLES)])
                std_sum += float(samples.clamp(-1, 1).std(dim=0, unbiased=False).mean(dim=(1, 2, 3)).sum())
                outputs = samples[0]
                if pose_scores is not None:
                    for sample in samples:
                        pose_scores.add(sample, batch)
            else:
                pose = batch["source_stickman"] if mode == "reconstruct" else batch["target_stickman"]
                outputs = model.transfer(_crops(model, batch), pose)
                reference = batch["source"] if mode == "reconstruct" else batch.get("target_native", batch["target"])
                mask = None if mode == "reconstruct" else batch.get("target_mask_native", batch.get("target_mask"))
                scored = outputs
                if scored.shape[-2:] != reference.shape[-2:]:
                    scored = F.interpolate(outputs, size=reference.shape[-2:], mode="bilinear", align_corners=False)
                predictions = {"generated": scored}
                if mode == "transfer":
                    source = batch["source"]
                    if source.shape[-2:] != reference.shape[-2:]:
                        source = F.interpolate(source, size=reference.shape[-2:], mode="bilinear", align_corners=False)
                    predictions["copy_source"] = source
                if pose_scores is not None:
                    pose_scores.add(outputs, batch)
                target = to_uint8_values(reference, truncate=False)
                image_metrics.add(to_uint8_values(scored, truncate=True).to(torch.uint8), target.to(torch.uint8))
                for key, prediction in predictions.items():
                    for metric, value in metric_sums(to_uint8_values(prediction, key == "generated"), target,
                                                      mask).items():  # fmt: skip
                        sums[key][metric] = sums[key].get(metric, 0.0) + value
            if mode == "sample":
                image_metrics.add(to_uint8_values(outputs, truncate=True).to(torch.uint8))
            else:  # the images that are scored: at the dataset's own size
                outputs = scored
            pixels = to_uint8_values(outputs, truncate=True).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for offset, image in enumerate(pixels):
                stem = f"{Path(batch['source_name'][offset]).stem}___{Path(batch['target_name'][offset]).stem}"
                Image.fromarray(image).save(out / "images" / f"{stem}.png")
            count += n
    if count == 0:
        raise ValueError("the test split is empty")
    result: dict[str, Any] = {"mode": mode, "images": count, "step": int(state["step"]), "checkpoint": str(checkpoint),
                              "config": config.to_dict()}  # fmt: skip
    for key in ("generated", "copy_source"):
        if sums[key]:
            result[key] = {k: v / count for k, v in sums[key].items()}
    result["image_metrics"] = image_metrics.result()
    if mode == "sample":
        result["sample_std"] = std_sum / count
    if pose_scores is not None:
        result["pose"] = pose_scores.result()
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    return result
