"""PATN (Zhu et al., CVPR 2019) and the nested residual attention variant (Zhong & Tan 2021)
on the training engine.

One step follows `TransferModel.optimize_parameters` of the published code
(tengteng95/Pose-Transfer, models/PATN.py): a generator update, then the appearance
discriminator (image, source image) and the shape discriminator (image, target heatmaps),
each once (`--DG_ratio 1`), on the fakes of the step's forward pass through an image pool.

    G:  lambda_A L1 + lambda_B perceptual L1 (VGG19 relu1_2)
        + lambda_GAN (GAN_shape + GAN_appearance) / 2            (pair_L1loss + pair_GANloss)
        [+ lambda_style style loss (Gram matrices), --block nested]
    D:  lambda_GAN (GAN(D(real), 1) + GAN(D(pool(fake)), 0)) / 2  (backward_D_basic: the code
        scales the discriminators' loss by lambda_GAN too)

GAN: BCE (Market, `--no_lsgan`) or LSGAN (DeepFashion). Adam(lr 2e-4, betas (0.5, 0.999))
for all three networks. The learning rate follows `get_scheduler`'s lambda_rule per epoch of
`epoch_pairs` (4,000: KeyDataset.__len__ in training) random pairs, see `lr_factor`.

`evaluate` generates the test split and writes the images, metrics.json (SSIM, mask-SSIM, L1,
PSNR, and copy-the-source, the Deformable GAN's protocol; attention inside / outside the
target body mask per block) and attention.png (the paper's figure 4: the attention masks of
blocks 1..9 for a few test pairs).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from pydeform.errors import user_errors
from pydeform.losses.gan import GAN_CRITERIA, gan_criterion
from pydeform.losses.perceptual import perceptual_l1, style_loss
from pydeform.metrics.image import body_mask
from pydeform.models.patn import PRESETS, PATNConfig, build_discriminators, build_generator
from pydeform.nets.vgg import LAYERS, VGG19Features
from pydeform.options import option
from pydeform.train.common import ImagePool, atomic_write, check_minimum, save_image_grid
from pydeform.train.engine import Data, Recipe, Run, RunConfig, open_trained
from pydeform.train.engine import train as run_training
from pydeform.train.pose_transfer import (
    PoseTestConfig,
    check_image_size,
    format_metrics,
    pose_pair_folder,
    pose_picture,
    pose_rows,
    pose_sample_rows,
    test_pose_pairs,
)

__all__ = ["TrainConfig", "TestConfig", "PATNRecipe", "PATNPairs", "lr_factor", "train", "evaluate", "summary"]

CHECKPOINT_KIND = "pydeform.patn"
HEATMAPS = ("gaussian", "uint8")
PERCEPTUAL_LAYER = "relu1_2"  # --perceptual_layers 3: VGG19 features[:4]
RANDOM_VGG_NOTE = (
    "--random-vgg: the perceptual (and style) losses compare features of a randomly initialised VGG19, not the "
    "ImageNet-trained features of the paper; fine for smoke tests, not for results"
)


def lr_factor(step: int, steps_per_epoch: int, niter: int, niter_decay: int, epoch_count: int = 1) -> float:
    """The learning-rate multiplier at (0-based) `step`: `get_scheduler`'s lambda_rule
    (models/networks.py) of the epoch k = step // steps_per_epoch (LambdaLR's counter, 0 in
    the first epoch, stepped once after each):

        1 - max(0, k + 1 + epoch_count - niter) / (niter_decay + 1)

    With the default epoch_count 1 this is the code's schedule, which differs from the
    paper's words ("constant for niter epochs, then linearly to 0 over niter_decay") by an
    epoch: the rate is constant for the first niter - 1 epochs, then falls by 1/(niter_decay
    + 1) per epoch and is 0 in the last (k = niter + niter_decay - 1) epoch. pydeform follows
    the code. Clamped at 0 beyond the last epoch."""
    epoch = step // steps_per_epoch
    return max(0.0, 1.0 - max(0, epoch + 1 + epoch_count - niter) / float(niter_decay + 1))


# ----------------------------------------------------------------------------- settings


@dataclass
class TrainConfig(RunConfig):
    """Train PATN (--block patb, Zhu et al. 2019) or the nested residual attention variant
    (--block nested, Zhong & Tan 2021). Without --data it trains on a synthetic pose-pair set,
    written once into $PYDEFORM_CACHE or ~/.cache/pydeform. Writes OUT/config.json,
    OUT/log.jsonl, OUT/samples/*.png (source | target pose | generated | real) and
    OUT/checkpoint.pt. Under torchrun it trains data-parallel.
    """

    model: PATNConfig = option(default_factory=PATNConfig)
    data: str | None = option(None, "folder in the Deformable GAN layout (<name>-annotation-*.csv, "
                              "<name>-pairs-*.csv, <name>-dataset/); default: a synthetic set", metavar="DIR")  # fmt: skip
    name: str | None = option(None, "file prefix of the dataset (default: market, or fasion for the fashion preset; "
                              "synth without --data)")  # fmt: skip
    heatmaps: str = option("gaussian", "pose heatmaps: gaussian (sigma 6, float: the paper, and the published Market "
                           "maps) or uint8 (the published DeepFashion maps, written as uint8: every value below 1 "
                           "truncates to 0, leaving one pixel per joint)", choices=HEATMAPS)  # fmt: skip
    crop_columns: tuple[int, int] | None = option(None, "keep image columns A:B (e.g. 40,216: the published 256x176 "
                                                  "DeepFashion crop of 256x256 images)", parse="ints",
                                                  metavar="A,B")  # fmt: skip
    batch_size: int | None = option(None, "pairs per step and process (default: the preset's, 32 market, 7 fashion)")
    niter: int = option(500, "epochs at the initial learning rate (see the README for the code's off-by-one)",
                        resume="apply")  # fmt: skip
    niter_decay: int = option(200, "epochs of linear decay of the learning rate to 0", resume="apply")
    epoch_pairs: int = option(4000, "random pairs per epoch (PATN's KeyDataset.__len__ in training)", resume="apply")
    steps: int | None = option(None, "total training steps (default: (niter + niter_decay) epochs)", resume="apply")
    lr: float = option(2e-4, "Adam learning rate of G and both Ds (> 0)", resume="apply")
    betas: tuple[float, float] = option((0.5, 0.999), "Adam betas", parse="floats")
    lambda_l1: float | None = option(None, "weight of the L1 loss, lambda_A (default: the preset's, 10 market, "
                                     "1 fashion)", resume="apply")  # fmt: skip
    lambda_perceptual: float | None = option(None, "weight of the perceptual L1 loss, lambda_B (default: the "
                                             "preset's, 10 market, 1 fashion)", resume="apply")  # fmt: skip
    lambda_gan: float | None = option(None, "weight of the GAN losses, lambda_GAN (default: the preset's, 5)",
                                      resume="apply")  # fmt: skip
    lambda_style: float = option(10.0, "weight of the style loss (--block nested; ours: the paper gives none "
                                 "here, 10 is Pose-Transfer's --lambda_style default)", resume="apply")  # fmt: skip
    style_layers: str = option("relu1_2,relu2_2,relu3_4,relu4_4", "VGG19 layers of the style loss, comma-separated "
                               "(our choice)")  # fmt: skip
    gan_loss: str | None = option(None, "bce (--no_lsgan, market) or lsgan (fashion) (default: the preset's)",
                                  choices=GAN_CRITERIA)  # fmt: skip
    pool_size: int | None = option(None, "fakes in each discriminator's image pool (default: the preset's, 50 "
                                   "market, 0 fashion)")  # fmt: skip
    vgg19: str | None = option(None, "torchvision vgg19 state dict for the perceptual and style losses", metavar="PATH",
                               group="vgg", resume="free")  # fmt: skip
    random_vgg: bool = option(False, "perceptual/style losses on random VGG19 features (smoke runs only)",
                              group="vgg")  # fmt: skip
    synth_identities: int = option(100, "people in the synthetic set (without --data)")

    def __post_init__(self) -> None:
        super().__post_init__()
        preset = PRESETS[self.model.preset]
        if self.batch_size is None:
            self.batch_size = preset.batch_size
        for name, value in (("lambda_l1", preset.lambda_l1), ("lambda_perceptual", preset.lambda_perceptual),
                            ("lambda_gan", preset.lambda_gan), ("gan_loss", preset.gan_loss),
                            ("pool_size", preset.pool_size)):  # fmt: skip
            if getattr(self, name) is None:
                setattr(self, name, value)
        check_minimum(self, ("batch_size", "synth_identities", "epoch_pairs", "niter"), 1)
        check_minimum(self, ("niter_decay", "pool_size", "lambda_l1", "lambda_perceptual", "lambda_gan",
                             "lambda_style"), 0)  # fmt: skip
        check_minimum(self, ("lr",), 0, strict=True)
        if self.steps is not None:
            check_minimum(self, ("steps",), 1)
        if self.heatmaps not in HEATMAPS:
            raise ValueError(f"heatmaps must be one of {list(HEATMAPS)}, got {self.heatmaps!r}")
        if self.gan_loss not in GAN_CRITERIA:
            raise ValueError(f"gan_loss must be one of {list(GAN_CRITERIA)}, got {self.gan_loss!r}")
        if self.crop_columns is not None:
            self.crop_columns = tuple(int(c) for c in self.crop_columns)
            if len(self.crop_columns) != 2 or not 0 <= self.crop_columns[0] < self.crop_columns[1]:
                raise ValueError(f"crop_columns must be A,B with 0 <= A < B, got {self.crop_columns}")
        layers = self.style_layer_names
        unknown = [layer for layer in layers if layer not in LAYERS]
        if not layers or unknown:
            raise ValueError(f"style_layers must be VGG19 layer names like relu2_2, got {self.style_layers!r}")
        if self.vgg_layers and self.vgg19 is None and not self.random_vgg:
            raise ValueError(
                "the perceptual loss compares VGG19 relu1_2 features, and nothing is downloaded: set vgg19 "
                "(--vgg19 PATH, a torchvision vgg19 state dict, e.g. vgg19-dcbb9e9d.pth), or random_vgg "
                "(--random-vgg: randomly initialised features, for smoke tests), or --lambda-perceptual 0"
                + (" --lambda-style 0" if self.model.block == "nested" else "")
            )
        self.betas = tuple(self.betas)

    @property
    def style_layer_names(self) -> tuple[str, ...]:
        return tuple(layer.strip() for layer in self.style_layers.split(",") if layer.strip())

    @property
    def uses_style(self) -> bool:
        return self.model.block == "nested" and self.lambda_style > 0

    @property
    def vgg_layers(self) -> tuple[str, ...]:
        """The VGG19 activations the losses need (none when their weights are 0)."""
        layers = [PERCEPTUAL_LAYER] if self.lambda_perceptual > 0 else []
        if self.uses_style:
            layers += [layer for layer in self.style_layer_names if layer not in layers]
        return tuple(layers)


@dataclass
class TestConfig(PoseTestConfig):
    """Generate the test split with a trained PATN (eval mode); write the images,
    OUT/samples.png, OUT/attention.png (the attention masks of blocks 1..9, the paper's figure
    4) and OUT/metrics.json (SSIM, mask-SSIM, L1, PSNR of the generated images and of the
    copy-the-source baseline; the attention inside and outside the target body mask)."""

    name: str | None = option(None, "file prefix of the dataset (default: as in training)")
    attention_pairs: int = option(4, "test pairs in attention.png")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_minimum(self, ("attention_pairs",), 1)


# ----------------------------------------------------------------------------- data


class PATNPairs(Dataset):
    """`pydeform.data.PosePairs` (no part warps) as PATN reads it: items with source,
    target (3, H, W) in [-1, 1], source_pose, target_pose (18, H, W), target_mask (1, H, W),
    source_kp, target_kp (18, 2) and the names; optionally the columns A:B only
    (`crop_columns`: keypoints shift by -A, joints outside the crop are marked missing) and
    the heatmaps truncated as the published DeepFashion uint8 maps (`heatmaps="uint8"`:
    floor, so only a joint's own pixel keeps its 1)."""

    def __init__(self, root: str | os.PathLike, name: str, split: str, heatmaps: str = "gaussian",
                 crop_columns: tuple[int, int] | None = None) -> None:  # fmt: skip
        from pydeform.data.pose_pairs import PosePairs

        if heatmaps not in HEATMAPS:
            raise ValueError(f"heatmaps must be one of {list(HEATMAPS)}, got {heatmaps!r}")
        self.pairs = PosePairs(root, name, split, skip_levels=0)
        self.heatmaps, self.crop = heatmaps, crop_columns
        height, width = self.pairs.image_size
        if crop_columns is not None:
            left, right = crop_columns
            if not 0 <= left < right <= width:
                raise ValueError(f"crop_columns {left},{right} do not fit the {height}x{width} images of "
                                 f"{root} ({name}, {split})")  # fmt: skip
            width = right - left
        self.image_size = (height, width)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.pairs[index]
        out = {k: item[k] for k in ("source", "target", "source_pose", "target_pose", "target_mask", "source_kp",
                                    "target_kp", "source_name", "target_name")}  # fmt: skip
        if self.crop is not None:
            left, right = self.crop
            for key in ("source", "target", "source_pose", "target_pose", "target_mask"):
                out[key] = out[key][..., left:right].contiguous()
            for key in ("source_kp", "target_kp"):
                kp = out[key].clone()
                missing = (kp < 0).any(dim=1)
                kp[:, 0] -= left
                outside = missing | (kp[:, 0] < 0) | (kp[:, 0] > right - left - 1)
                kp[outside] = -1
                out[key] = kp
        if self.heatmaps == "uint8":
            out["source_pose"], out["target_pose"] = out["source_pose"].floor(), out["target_pose"].floor()
        return out


def _open_pairs(root: Path, name: str, split: str, heatmaps: str, crop: tuple[int, int] | None,
                model: PATNConfig) -> PATNPairs:  # fmt: skip
    dataset = PATNPairs(root, name, split, heatmaps, crop)
    deepfashion = dataset.image_size == (256, 256)
    hint = " (256x256 DeepFashion images: --crop-columns 40,216 gives PATN's 256x176)" if deepfashion else ""
    check_image_size(dataset.image_size, model.image_size, f"{root} ({name}, {split})", model.preset, hint)
    return dataset


def _generator_inputs(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(source image, cat(source heatmaps, target heatmaps)): PATN's G_input."""
    return batch["source"], torch.cat([batch["source_pose"], batch["target_pose"]], dim=1)


# ----------------------------------------------------------------------------- the recipe


class PATNRecipe(Recipe):
    """One generator update, then the appearance and the shape discriminator (PATN's order)."""

    name = "patn"
    kind = CHECKPOINT_KIND
    description = ("PATN (Zhu et al., CVPR 2019) and nested residual attention (Zhong & Tan 2021): pose attention "
                   "transfer")
    config_class = TrainConfig
    eval_config_class = TestConfig

    config: TrainConfig

    def notes(self) -> list[str]:
        return [RANDOM_VGG_NOTE] if self.config.vgg_layers and self.config.random_vgg else []

    def _world_size(self) -> int:
        run = getattr(self, "run", None)
        return run.info.world_size if run is not None else int(os.environ.get("WORLD_SIZE", "1"))

    def steps_per_epoch(self) -> int:
        """ceil(epoch_pairs / pairs per step): the published DataLoader keeps the last,
        smaller batch of an epoch (4000 / 7 -> 572 steps)."""
        return max(1, math.ceil(self.config.epoch_pairs / (self.config.batch_size * self._world_size())))

    def total_steps(self) -> int:
        config = self.config
        if config.steps is not None:
            return config.steps
        return (config.niter + config.niter_decay) * self.steps_per_epoch()

    def lr_at(self, step: int) -> float:
        config = self.config
        return config.lr * lr_factor(step, self.steps_per_epoch(), config.niter, config.niter_decay)

    def open_data(self, run: Run) -> Data:
        config = self.config
        root, name = pose_pair_folder(config.data, config.name, PRESETS[config.model.preset].data_name,
                                      config.model.image_size, config.synth_identities,
                                      config.progress and run.info.is_main, run.info)  # fmt: skip
        train_set = _open_pairs(root, name, "train", config.heatmaps, config.crop_columns, config.model)
        try:
            sample_set = _open_pairs(root, name, "test", config.heatmaps, config.crop_columns, config.model)
        except (FileNotFoundError, ValueError):  # no (or an empty) test split
            sample_set = train_set
        return Data({"train": (train_set, 0)}, sample_set)

    def build(self, run: Run, state: dict[str, Any] | None) -> None:
        config, device = self.config, run.device
        self.run = run
        self.generator = build_generator(config.model).to(device)
        self.d_shape, self.d_appearance = (d.to(device) for d in build_discriminators(config.model))
        self.vgg = None
        if config.vgg_layers:
            self.vgg = VGG19Features(config.vgg19, config.vgg_layers, config.random_vgg).to(device)
        adam = lambda module: torch.optim.Adam(module.parameters(), lr=config.lr, betas=config.betas)
        self.opt_g, self.opt_d_shape = adam(self.generator), adam(self.d_shape)
        self.opt_d_appearance = adam(self.d_appearance)
        self.pool_shape, self.pool_appearance = ImagePool(config.pool_size), ImagePool(config.pool_size)
        self.generator.train()
        self.d_shape.train()
        self.d_appearance.train()

    def checkpointed(self) -> dict[str, Any]:
        return {"generator": self.generator, "d_shape": self.d_shape, "d_appearance": self.d_appearance,
                "opt_g": self.opt_g, "opt_d_shape": self.opt_d_shape, "opt_d_appearance": self.opt_d_appearance,
                "pool_shape": self.pool_shape, "pool_appearance": self.pool_appearance}  # fmt: skip

    def learning_rates(self, step: int) -> list[tuple[torch.optim.Optimizer, float]]:
        lr = self.lr_at(step)
        return [(self.opt_g, lr), (self.opt_d_shape, lr), (self.opt_d_appearance, lr)]

    def log_fields(self, done: int) -> dict[str, Any]:
        return {"epoch": done / self.steps_per_epoch(), "lr": self.lr_at(max(done - 1, 0))}

    def generator_losses(self, fake: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The generator's terms (unweighted) and their weighted sum "total"."""
        config, target = self.config, batch["target"]
        gan = lambda logits: gan_criterion(config.gan_loss, logits, True)
        parts = {
            "l1": (fake.float() - target.float()).abs().mean(),
            "gan_shape": gan(self.d_shape(torch.cat([fake, batch["target_pose"]], 1))),
            "gan_appearance": gan(self.d_appearance(torch.cat([fake, batch["source"]], 1))),
        }
        total = config.lambda_l1 * parts["l1"] + config.lambda_gan * (parts["gan_shape"] + parts["gan_appearance"]) / 2
        if self.vgg is not None:
            fake_features = self.vgg(fake)
            with torch.no_grad():
                real_features = self.vgg(target)
            if config.lambda_perceptual > 0:
                parts["perceptual"] = perceptual_l1(fake_features[PERCEPTUAL_LAYER], real_features[PERCEPTUAL_LAYER])
                total = total + config.lambda_perceptual * parts["perceptual"]
            if config.uses_style:
                parts["style"] = style_loss(fake_features, real_features, config.style_layer_names)
                total = total + config.lambda_style * parts["style"]
        return {"total": total, **parts}

    def _discriminator_loss(self, d: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        config = self.config
        loss_real = gan_criterion(config.gan_loss, d(real), True) * config.lambda_gan
        loss_fake = gan_criterion(config.gan_loss, d(fake), False) * config.lambda_gan
        return (loss_real + loss_fake) * 0.5

    def train_step(self, step: int, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        run, batch = self.run, batches["train"]
        source, target, target_pose = batch["source"], batch["target"], batch["target_pose"]
        with run.autocast():
            fake = self.generator(*_generator_inputs(batch))

        # Generator first (optimize_parameters), with both Ds frozen so that its loss leaves
        # no gradients in them.
        self.d_shape.requires_grad_(False)
        self.d_appearance.requires_grad_(False)
        with run.autocast():
            parts = self.generator_losses(fake, batch)
        run.update(self.opt_g, parts["total"])
        self.d_shape.requires_grad_(True)
        self.d_appearance.requires_grad_(True)

        # Then D_PP (appearance: image, source image), then D_PB (shape: image, target heatmaps),
        # on the same (pre-update) fakes through the pools, detached.
        fake = fake.detach()
        with run.autocast():
            loss_app = self._discriminator_loss(
                self.d_appearance, torch.cat([target, source], 1),
                self.pool_appearance.query(torch.cat([fake, source], 1)),
            )  # fmt: skip
        run.update(self.opt_d_appearance, loss_app)
        with run.autocast():
            loss_shape = self._discriminator_loss(
                self.d_shape, torch.cat([target, target_pose], 1),
                self.pool_shape.query(torch.cat([fake, target_pose], 1)),
            )  # fmt: skip
        run.update(self.opt_d_shape, loss_shape)
        return {"d_appearance": loss_app.detach(), "d_shape": loss_shape.detach(),
                **{f"g_{name}": value.detach() for name, value in parts.items()}}  # fmt: skip

    def sample_rows(self, batch: dict[str, Any], done: int) -> tuple[list[list[Tensor]], tuple[float, float]]:
        generate = lambda batch: self.generator(*_generator_inputs(batch))  # noqa: E731
        return pose_sample_rows(self.generator, generate, batch, self.run.autocast()), (-1.0, 1.0)

    @staticmethod
    def evaluate(config: TestConfig) -> dict[str, Any]:
        return evaluate(**dataclasses.asdict(config))

    @staticmethod
    def summary(result: dict[str, Any]) -> str:
        return summary(result)


def train(config: TrainConfig) -> dict[str, float]:
    """Train (or resume) PATN; see the module docstring. Returns the last logged losses."""
    return run_training(PATNRecipe(config))


# ----------------------------------------------------------------------------- testing


def attention_sums(masks: list[Tensor], regions: dict[str, Tensor]) -> list[dict[str, tuple[float, float]]]:
    """For each block's mask M_t (B, C, h, w): {region: (sum of the channel-mean attention
    over the region's pixels, their count)}, for boolean (B, 1, H, W) `regions`; the mean
    map is upsampled to the regions' grid by nearest sampling (each attention cell covers
    its (H/h) x (W/w) pixels)."""
    sums = []
    for mask in masks:
        mean = F.interpolate(mask.float().mean(dim=1, keepdim=True), size=next(iter(regions.values())).shape[-2:],
                             mode="nearest")  # fmt: skip
        sums.append({name: (float(mean[where].double().sum()), float(where.sum())) for name, where in regions.items()})
    return sums


def attention_regions(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Where the attention of a test pair is measured: inside the target's body mask (the
    issue's measure: "inside" over "outside"), and the outside split into the source's body
    (what the generator must erase) and the background of both."""
    target = batch["target_mask"] > 0.5
    source = body_mask(batch["source_kp"], tuple(target.shape[-2:])).to(target.device).unsqueeze(1) > 0.5
    return {"inside": target, "outside": ~target, "source_only": source & ~target, "background": ~(source | target)}


def _attention_rows(batch: dict[str, Tensor], fake: Tensor, masks: list[Tensor]) -> list[list[Tensor]]:
    """Rows of source | target pose | M_1 .. M_n | generated | real target for the
    figure. Each mask is its channel mean, upsampled (nearest) and stretched to its own
    min..max for display (grey: low, white: high)."""
    size = tuple(fake.shape[-2:])
    pose = pose_picture(batch, size)
    maps = []
    for mask in masks:
        mean = F.interpolate(mask.float().mean(dim=1, keepdim=True), size=size, mode="nearest")
        low = mean.amin(dim=(1, 2, 3), keepdim=True)
        high = mean.amax(dim=(1, 2, 3), keepdim=True)
        maps.append(((mean - low) / (high - low).clamp_min(1e-8) * 2 - 1).expand(-1, 3, -1, -1))
    return [[batch["source"][b], pose[b], *[m[b] for m in maps], fake[b], batch["target"][b]]
            for b in range(fake.shape[0])]  # fmt: skip


def evaluate(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    name: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    attention_pairs: int = 4,
    progress: bool = True,
    detector: str | None = None,
    **image_metric_files: str | None,
) -> dict[str, Any]:
    """Generate the test split with a trained generator (eval mode) and measure it.

    Writes out/images/<source>___<target>.png (the 8-bit images that are scored),
    out/samples.png, out/attention.png and out/metrics.json: {"generated": {ssim, mask_ssim,
    l1, psnr}, "copy_source": {...}, "attention": {"inside", "outside", "ratio" of the last
    block, "blocks": [{inside, outside, ratio} for blocks 1..n]}, "pairs", "step", ...}.
    The attention numbers are the mean of the channel-mean mask over all test pixels inside
    (outside) the target's body mask (`target_mask`, mask-SSIM's mask); "source_only" and
    "background" split the outside (`attention_regions`). With a `detector`
    checkpoint, "pose": PCKh and keypoint error (`pydeform.train.pose_transfer.PoseScores`).
    Returns that dict.
    """
    state, model_config, trained = open_trained(checkpoint, CHECKPOINT_KIND, "PATN", PATNConfig)
    torch_device = torch.device(device)
    root, name = pose_pair_folder(
        data if data is not None else trained.get("data"), name or trained.get("name"),
        PRESETS[model_config.preset].data_name, model_config.image_size, trained.get("synth_identities", 100), progress,
    )  # fmt: skip
    crop = trained.get("crop_columns")
    with user_errors():
        test_set = _open_pairs(root, name, "test", trained.get("heatmaps", "gaussian"),
                               tuple(crop) if crop is not None else None, model_config)  # fmt: skip

    generator = build_generator(model_config).to(torch_device)
    generator.load_state_dict(state["generator"])
    generator.eval()
    attention: list[dict[str, list[float]]] = [{} for _ in range(model_config.n_blocks)]
    figure_rows: list[list[Tensor]] = []

    def generate(batch: dict[str, Any]) -> Tensor:
        fake, masks = generator(*_generator_inputs(batch), return_attention=True)
        if len(figure_rows) < attention_pairs:
            tensors = {k: v for k, v in batch.items() if isinstance(v, Tensor)}
            figure_rows.extend(_attention_rows(tensors, fake, masks)[: attention_pairs - len(figure_rows)])
        for block, sums in enumerate(attention_sums(masks, attention_regions(batch))):
            for region, (total, count) in sums.items():
                kept = attention[block].setdefault(region, [0.0, 0.0])
                kept[0], kept[1] = kept[0] + total, kept[1] + count
        return fake

    out = Path(out)
    # PATN's tool/getMetrics_fashion.py pads the 256x176 images with 40 white columns each side
    # (addBounding) before SSIM; its Market script does not.
    pad_fashion = model_config.preset == "fashion" and model_config.image_size == (256, 176)
    result = test_pose_pairs(test_set, out, generate, pose_rows, desc="patn test", device=device,
                             batch_size=batch_size, workers=workers, progress=progress, detector=detector,
                             pad_fashion=pad_fashion, **image_metric_files)  # fmt: skip
    save_image_grid(figure_rows, out / "attention.png")

    def means(sums: dict[str, list[float]]) -> dict[str, float | None]:
        block = {region: total / count if count else None for region, (total, count) in sums.items()}
        inside, outside = block["inside"], block["outside"]
        return {**block, "ratio": inside / outside if inside is not None and outside else None}

    blocks = [means(sums) for sums in attention]
    result.update(attention={**blocks[-1], "blocks": blocks}, step=int(state["step"]), checkpoint=str(checkpoint),
                  data=str(root), config=model_config.to_dict())  # fmt: skip
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    return result


def summary(result: dict[str, Any]) -> str:
    """The metrics table plus the last block's attention inside vs outside the body."""
    att = result["attention"]
    line = "attention of the last block: "
    if att["ratio"] is None:
        line += "undefined (a test split without body pixels, or without background)"
    else:
        line += f"{att['inside']:.4f} inside the target body, {att['outside']:.4f} outside (ratio {att['ratio']:.2f})"
        if att.get("source_only") is not None and att.get("background") is not None:
            line += f"; outside: {att['source_only']:.4f} on the source body, {att['background']:.4f} on the background"
    return format_metrics(result) + "\n" + line
