"""The Deformable GAN (Siarohin et al., CVPR 2018) on the training engine.

`train(TrainConfig(...))` runs the adversarial loop of `pydeform.train.engine`: per step
one discriminator update and one generator update, both Adam(2e-4, betas (0.5, 0.999)), on
CPU or CUDA, optionally with mixed precision (CUDA) and under torchrun. Rank 0 writes, in
`out`:

    config.json      the run's settings
    log.jsonl        {"step", "loss_d", "g_total", "g_gan", "g_l1"|"g_nn", "it_s", "time"} every log_every steps
    samples/step_XXXXXXX.png   rows of: source | target pose | generated | real target
    checkpoint.pt    written atomically; `resume=True` continues bit-for-bit on the same
                     device, world size and batch size (see pydeform.train.engine)

`evaluate(checkpoint, ...)` generates the test split with the generator in eval mode,
writes the images and metrics.json: SSIM, mask-SSIM, L1 and PSNR of the generated images,
and of the source image itself as a prediction ("copy the source"), the trivial baseline.

Without a data folder both use a synthetic pose-pair set written once into the cache
(`pydeform.data.synth_pose`, $PYDEFORM_CACHE or ~/.cache/pydeform), so a bare checkout trains.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pydeform.errors import user_errors
from pydeform.losses.gan import DeformGANLoss, discriminator_loss
from pydeform.models.deformgan import NUM_SKIP_LEVELS, PRESETS, DeformGANConfig, build_discriminator, build_generator
from pydeform.options import option
from pydeform.train.common import atomic_write, check_minimum
from pydeform.train.engine import Data, Recipe, Run, RunConfig, open_trained
from pydeform.train.engine import train as run_training
from pydeform.train.pose_transfer import (
    PoseTestConfig,
    check_image_size,
    format_metrics,
    pose_pair_folder,
    pose_rows,
    pose_sample_rows,
    test_pose_pairs,
)

__all__ = [
    "TrainConfig",
    "TestConfig",
    "DeformGANRecipe",
    "train",
    "evaluate",
    "open_pose_pairs",
    "RANDOM_VGG_NOTE",
]

CHECKPOINT_KIND = "pydeform.deformgan"
NUM_SAMPLES = 4  # pairs shown in a sample grid
RANDOM_VGG_NOTE = (
    "--random-vgg: the NN loss compares the conv1_2 features of a randomly initialised VGG19, "
    "not the ImageNet-trained features of the paper; fine for smoke tests, not for results"
)


@dataclass
class TrainConfig(RunConfig):
    """Train the Deformable GAN. Without --data it trains on a synthetic pose-pair set, written
    once into $PYDEFORM_CACHE or ~/.cache/pydeform. Writes OUT/config.json, OUT/log.jsonl,
    OUT/samples/*.png (source | target pose | generated | real) and OUT/checkpoint.pt. Under
    torchrun it trains data-parallel.
    """

    model: DeformGANConfig = option(default_factory=DeformGANConfig)
    data: str | None = option(None, "folder in the Deformable GAN layout (<name>-annotation-*.csv, "
                              "<name>-pairs-*.csv, <name>-dataset/); default: a synthetic set", metavar="DIR")  # fmt: skip
    name: str | None = option(None, "file prefix of the dataset (default: market, or fasion for the fashion preset "
                              "as the authors spelt it; synth without --data)")  # fmt: skip
    steps: int = option(1000, "total training steps (a resumed run continues up to it)", required=True,
                        resume="apply")  # fmt: skip
    batch_size: int = option(4, "pairs per step and process")
    vgg19: str | None = option(None, "torchvision vgg19 state dict for the NN loss (variant full)", metavar="PATH",
                               group="vgg", resume="free")  # fmt: skip
    random_vgg: bool = option(False, "NN loss on random VGG19 features (smoke runs only, not the paper's loss)",
                              group="vgg")  # fmt: skip
    vgg_preprocessing: str = option("imagenet", "input of the NN loss's VGG19: imagenet for torchvision's vgg19 file; "
                                    "caffe (BGR, 0..255 minus the mean pixel) for Keras/Caffe weights in torchvision's "
                                    "key layout: the authors' features, for which the paper's --nn-weight 0.01 was "
                                    "set", choices=("imagenet", "caffe"))  # fmt: skip
    lr: float = option(2e-4, "Adam learning rate of the generator and the discriminator (> 0)", resume="apply")
    betas: tuple[float, float] = option((0.5, 0.999), "Adam betas", parse="floats")
    l1_weight: float = option(100.0, "weight of the L1 loss (variants baseline, dsc)", resume="apply")
    nn_weight: float = option(0.01, "weight of the nearest-neighbour loss (variant full)", resume="apply")
    synth_identities: int = option(100, "people in the synthetic set (without --data)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_minimum(self, ("steps", "batch_size", "synth_identities"), 1)
        check_minimum(self, ("lr",), 0, strict=True)
        check_minimum(self, ("l1_weight", "nn_weight"), 0)
        if self.model.variant == "full" and self.vgg19 is None and not self.random_vgg:
            raise ValueError(
                "the full variant's nearest-neighbour loss compares VGG19 conv1_2 features, and nothing is "
                "downloaded: set vgg19 (--vgg19 PATH, a torchvision vgg19 state dict, e.g. vgg19-dcbb9e9d.pth), or "
                "random_vgg (--random-vgg: randomly initialised features, so the loss compares random filter "
                "responses, not the paper's; for smoke tests), or use variant baseline/dsc (L1, no VGG)"
            )
        self.betas = tuple(self.betas)


@dataclass
class TestConfig(PoseTestConfig):
    """Generate the test split with a trained Deformable GAN (eval mode); write the images,
    OUT/samples.png and OUT/metrics.json (SSIM, mask-SSIM, L1, PSNR of the generated images
    and of the copy-the-source baseline)."""

    name: str | None = option(None, "file prefix of the dataset (default: as in training)")
    ops: str | None = option(None, "override the checkpoint's warp implementation", choices=("reference", "pydeform"))


# ----------------------------------------------------------------------------- data


def open_pose_pairs(root: str | os.PathLike, name: str, split: str) -> Dataset:
    """`pydeform.data.PosePairs(root, name, split)`: items are dicts with source, target
    (3, H, W) in [-1, 1], source_pose, target_pose (18, H, W), theta (4, 10, 2, 3),
    masks0..masks3 (10, H/2^l, W/2^l) and target_mask (1, H, W)."""
    from pydeform.data.pose_pairs import PosePairs

    return PosePairs(root, name, split)


def _generator_inputs(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """source, source_pose, target_pose, theta, [masks0..masks3] of a collated batch."""
    masks = [batch[f"masks{level}"] for level in range(NUM_SKIP_LEVELS)]
    return batch["source"], batch["source_pose"], batch["target_pose"], batch["theta"], masks


# ----------------------------------------------------------------------------- testing


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
    detector: str | None = None,
    **image_metric_files: str | None,
) -> dict[str, Any]:
    """Generate the test split with a trained generator and measure it.

    checkpoint: a `train` checkpoint (it carries the model config). data/name: the
    dataset, by default the one the checkpoint was trained on (the synthetic set when it
    had none). ops: override the checkpoint's warp implementation.
    Writes out/images/<source>___<target>.png (the generated 8-bit images that are scored),
    out/samples.png (the first pairs as source | target pose | generated | real) and
    out/metrics.json: {"generated": {ssim, mask_ssim, l1, psnr}, "copy_source": {...},
    "image_metrics", "pairs", "step", ...}: `pydeform.train.pose_transfer.test_pose_pairs`
    (mask-SSIM uses the items' target_mask; FID/IS/LPIPS with `image_metric_files`; "pose",
    PCKh and keypoint error, with a `detector` checkpoint).
    Returns that dict.
    """
    state, model_config, trained = open_trained(checkpoint, CHECKPOINT_KIND, "Deformable GAN", DeformGANConfig, ops=ops)
    torch_device = torch.device(device)
    root, name = pose_pair_folder(
        data if data is not None else trained.get("data"), name or trained.get("name"),
        PRESETS[model_config.preset].data_name, model_config.image_size, trained.get("synth_identities", 100), progress,
    )  # fmt: skip
    with user_errors():
        test_set = open_pose_pairs(root, name, "test")
        check_image_size(test_set[0]["source"].shape[-2:], model_config.image_size, f"{root} ({name}, test)",
                         model_config.preset)

    generator = build_generator(model_config).to(torch_device)
    generator.load_state_dict(state["generator"])
    generator.eval()
    result = test_pose_pairs(
        test_set, Path(out), lambda batch: generator(*_generator_inputs(batch)),
        pose_rows, desc="deformgan test", device=device,
        batch_size=batch_size, workers=workers, progress=progress, detector=detector, **image_metric_files,
    )  # fmt: skip
    result.update(step=int(state["step"]), checkpoint=str(checkpoint), data=str(root), config=model_config.to_dict())
    atomic_write(Path(out) / "metrics.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    return result


# ----------------------------------------------------------------------------- the recipe


class DeformGANRecipe(Recipe):
    """One discriminator and one generator update per step (the authors' schedule)."""

    name = "deformgan"
    kind = CHECKPOINT_KIND
    description = "Deformable GAN (Siarohin et al., CVPR 2018): pose transfer with deformable skip connections"
    config_class = TrainConfig
    eval_config_class = TestConfig

    config: TrainConfig

    def notes(self) -> list[str]:
        return [RANDOM_VGG_NOTE] if self.config.model.variant == "full" and self.config.random_vgg else []

    def total_steps(self) -> int:
        return self.config.steps

    def open_data(self, run: Run) -> Data:
        config = self.config
        root, name = pose_pair_folder(config.data, config.name, PRESETS[config.model.preset].data_name,
                                      config.model.image_size, config.synth_identities,
                                      config.progress and run.info.is_main, run.info)  # fmt: skip
        train_set = open_pose_pairs(root, name, "train")
        check_image_size(train_set[0]["source"].shape[-2:], config.model.image_size, f"{root} ({name}, train)",
                         config.model.preset)
        try:
            sample_set = open_pose_pairs(root, name, "test")
        except (FileNotFoundError, ValueError):  # no (or an empty) test split
            sample_set = train_set
        return Data({"train": (train_set, 0)}, sample_set)

    def build(self, run: Run, state: dict[str, Any] | None) -> None:
        config, device = self.config, run.device
        self.run = run
        self.generator = build_generator(config.model).to(device)
        self.discriminator = build_discriminator(config.model).to(device)
        self.loss_fn = DeformGANLoss(
            config.model.variant, config.model.kernel, config.vgg19, config.random_vgg,
            l1_weight=config.l1_weight, nn_weight=config.nn_weight, ops=config.model.ops,
            vgg_preprocessing=config.vgg_preprocessing,
        ).to(device)  # fmt: skip
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=config.betas)
        self.generator.train()
        self.discriminator.train()

    def learning_rates(self, step: int) -> list[tuple[torch.optim.Optimizer, float]]:
        return [(self.opt_g, self.config.lr), (self.opt_d, self.config.lr)]

    def train_step(self, step: int, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        """One discriminator and one generator update. Returns the detached losses."""
        run, batch = self.run, batches["train"]
        source, source_pose, target_pose, theta, masks = _generator_inputs(batch)
        target = batch["target"]
        with run.autocast():
            fake = self.generator(source, source_pose, target_pose, theta, masks)

        # Discriminator: real and fake pairs in one batch.
        self.discriminator.requires_grad_(True)
        with run.autocast():
            logits = self.discriminator(
                torch.cat([source, source]),
                torch.cat([source_pose, source_pose]),
                torch.cat([target, fake.detach()]),
                torch.cat([target_pose, target_pose]),
            )
            real_logits, fake_logits = logits.chunk(2)
            loss_d = discriminator_loss(real_logits, fake_logits)
        run.update(self.opt_d, loss_d)

        # Generator, through the updated discriminator, with D frozen so that the
        # generator's loss leaves no gradients in D.
        self.discriminator.requires_grad_(False)
        with run.autocast():
            parts = self.loss_fn(self.discriminator(source, source_pose, fake, target_pose), fake, target)
        run.update(self.opt_g, parts["total"])
        self.discriminator.requires_grad_(True)
        return {"loss_d": loss_d.detach(), **{f"g_{name}": value.detach() for name, value in parts.items()}}

    def sample_rows(self, batch: dict[str, Any], done: int) -> tuple[list[list[Tensor]], tuple[float, float]]:
        generate = lambda batch: self.generator(*_generator_inputs(batch))  # noqa: E731
        return pose_sample_rows(self.generator, generate, batch, self.run.autocast()), (-1.0, 1.0)

    def checkpointed(self) -> dict[str, Any]:
        return {"generator": self.generator, "discriminator": self.discriminator, "opt_g": self.opt_g,
                "opt_d": self.opt_d}  # fmt: skip

    @staticmethod
    def evaluate(config: TestConfig) -> dict[str, Any]:
        return evaluate(**dataclasses.asdict(config))

    summary = staticmethod(format_metrics)


def train(config: TrainConfig) -> dict[str, float]:
    """Train (or resume) a Deformable GAN; see the module docstring for what it writes.
    Returns the last logged losses (averaged over the ranks) and the final "step"."""
    return run_training(DeformGANRecipe(config))
