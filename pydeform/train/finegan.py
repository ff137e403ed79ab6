"""Training and testing of FineGAN (Singh, Ojha & Lee, CVPR 2019) as the authors trained it
(`code/trainer.py`, `code/datasets.py` and `code/cfg/train.yml` of github.com/kkanshul/finegan).

One step (FineGAN_trainer.train):
- codes: c uniform over the Nc children (datasets.py draws one per image), tied p = c // (Nc / Np)
  and b = c; z ~ N(0, I);
- G's forward once; the background discriminator D0 is updated on the real 126x126 scene crop
  and the fake background (patches near the box excluded from real/fake and labelled object
  for the classifier head), then the child discriminator D2 on the real object crop and the
  fake child image (`pydeform.losses.finegan`);
- one generator loss through the updated discriminators, one backward, and one Adam step over
  G, the parent discriminator D1 (info head only, trained at G's rate) and D2's jointConv and
  code head (FineGAN's optimizerG list: three Adams with the same settings are one Adam with
  three parameter groups);
- the EMA of G's parameters (0.999), used for every sample grid and, by default, evaluation
  (`pydeform test finegan --weights live` measures the trained generator of a short run).
After `steps` main steps, `hard_steps` steps of the hard-negative phase: odd steps draw
`hard_repeat` (10) batches of random (z, c), keep the batch-size codes whose masked child
foreground D2 classifies worst (lowest softmax probability of c), and train on those.
Adam lr 2e-4, betas (0.5, 0.999), orthogonal init. BG loss weight 10. Batch 16 (theirs).

Without --data it trains on the synthetic factor set (`pydeform synth factors`), written once
into $PYDEFORM_CACHE or ~/.cache/pydeform. The code sizes default to FineGAN's CUB settings
(200 backgrounds = children, 20 parents); on the factor set (20 backgrounds, 10 shapes, 20
textures) a run sets e.g. --children 20 --backgrounds 20 --parents 10.

Writes OUT/config.json, OUT/log.jsonl, OUT/samples/*.png (rows: real objects; background,
parent mask, parent, child mask, child of fixed codes; then z, b, p and c varied one at a
time, the others fixed) and OUT/checkpoint.pt (with the EMA).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pydeform.data.cub import CUBObjects, augment, centre_object
from pydeform.errors import user_errors
from pydeform.losses.finegan import background_d_loss, child_d_loss, finegan_g_loss
from pydeform.models.finegan import (
    BackgroundDiscriminator,
    FineGANConfig,
    FineGANGenerator,
    StageDiscriminator,
    background_patch_weights,
    init_weights,
    one_hot,
    tie_codes,
)
from pydeform.nets.ema import ParameterEMA
from pydeform.options import option
from pydeform.train.common import atomic_write, check_minimum, factor_datasets, save_image_grid, synthetic_factors
from pydeform.train.engine import Data, Recipe, Run, RunConfig, open_trained
from pydeform.train.engine import train as run_training
from pydeform.train.evaluation import EvalConfig, ImageMetrics, format_image_metrics

__all__ = ["FactorRunConfig", "TrainConfig", "TestConfig", "FineGANRecipe", "train", "evaluate", "synthetic_factors", "sample_codes",
           "hard_negatives", "format_metrics"]  # fmt: skip

CHECKPOINT_KIND = "pydeform.finegan"
GRID_COLUMNS = 6


@dataclass
class FactorRunConfig(RunConfig):
    """What FineGAN and MixNMatch runs share: the data, the batch, Adam's betas, the background
    weight, the EMA of G, and tied codes (b = c) in training."""

    data: str | None = option(None, "CUB-layout folder (images.txt, bounding_boxes.txt, images/); default: the "
                              "synthetic factor set", metavar="DIR")  # fmt: skip
    batch_size: int = option(16, "images per step and process (16: FineGAN's)")
    betas: tuple[float, float] = option((0.5, 0.999), "Adam betas", parse="floats")
    bg_weight: float = option(10.0, "background adversarial weight (FineGAN's BG_LOSS_WT)", resume="apply")
    ema_decay: float = option(0.999, "decay of the EMA of G's parameters", resume="apply")
    synth_count: int = option(2000, "images of the synthetic factor set (without --data)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data == "synthetic":
            self.data = None
        check_minimum(self, ("synth_count",), 1)
        if self.batch_size < 2:  # BatchNorm in training needs two samples to normalise over
            raise ValueError(f"batch_size must be >= 2 (per process: the networks' BatchNorm needs two samples), "
                             f"got {self.batch_size}")  # fmt: skip
        check_minimum(self, ("bg_weight", "ema_decay"), 0)
        if self.ema_decay > 1:
            raise ValueError(f"ema_decay must be in [0, 1], got {self.ema_decay}")
        if self.model.backgrounds != self.model.children:
            raise ValueError(f"training ties b = c: backgrounds ({self.model.backgrounds}) must equal children "
                             f"({self.model.children})")  # fmt: skip
        self.betas = tuple(self.betas)


@dataclass
class TrainConfig(FactorRunConfig):
    """Train FineGAN: background, parent (shape, mask) and child (texture, mask) stages from tied
    codes, the patch-labelled background discriminator, info losses, the EMA of G, then the
    hard-negative phase. Without --data it trains on the synthetic factor set (`pydeform synth
    factors`), written once into $PYDEFORM_CACHE or ~/.cache/pydeform. Writes OUT/config.json,
    OUT/log.jsonl, OUT/samples/*.png (rows varying one code at a time) and OUT/checkpoint.pt.
    """

    model: FineGANConfig = option(default_factory=FineGANConfig)
    steps: int = option(1000, "steps of the main phase (FineGAN: 600 epochs)", required=True)
    # FineGAN's hard-negative loop is one pass over the data loader that breaks at HARDNEG_MAX_ITER,
    # so on a set of fewer than 1500 batches it is shorter; here its length is this setting alone.
    hard_steps: int = option(1500, "steps of the hard-negative phase after it (FineGAN's HARDNEG_MAX_ITER; its loop "
                             "also ends after one pass over the data: set this to the batches per epoch to match "
                             "on a smaller set)")  # fmt: skip
    hard_repeat: int = option(10, "batches drawn per hard-negative step, of which the worst are kept")
    lr_g: float = option(2e-4, "Adam lr of G (and of D1 and D2's info head)", resume="apply")
    lr_d: float = option(2e-4, "Adam lr of the discriminators D0, D2", resume="apply")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_minimum(self, ("steps", "hard_repeat"), 1)
        check_minimum(self, ("hard_steps",), 0)
        check_minimum(self, ("lr_g", "lr_d"), 0, strict=True)
        if self.amp:
            raise ValueError("finegan does not train under amp (--amp): its discriminators end in a sigmoid, which "
                             "saturates in float16 and gives the BCE losses NaN gradients")  # fmt: skip


@dataclass
class TestConfig(EvalConfig):
    """Generate images with the EMA generator of a FineGAN checkpoint (eval mode): OUT/images/*.png,
    OUT/samples.png (rows varying one code at a time) and OUT/metrics.json (mean parent and child
    mask coverage; with --classifier, the shape read from images that share p)."""

    count: int = option(500, "images to generate")
    per_parent: int = option(20, "images per parent code for the shape-consistency measure")
    classifier: str | None = option(None, "factor classifier checkpoint (`pydeform factors train`)", metavar="PATH")
    seed: int = option(0, "seed of the generated codes")
    weights: str = option("ema", "which generator: the EMA of its parameters (FineGAN's) or the live one (short runs: "
                          "an EMA of 0.999 still holds 0.999^steps of the initial weights)", choices=("ema", "live"))  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        check_minimum(self, ("count", "per_parent"), 1)


# ----------------------------------------------------------------------------- data


# ----------------------------------------------------------------------------- codes


def sample_codes(batch: int, config: FineGANConfig, device: torch.device, generator: torch.Generator | None = None
                 ) -> dict[str, Tensor]:  # fmt: skip
    """Tied training codes: z ~ N(0, I), c uniform, p = c // (Nc / Np), b = c; indices and
    one-hots {"z", "c", "p", "b", "c_index", "p_index", "b_index"}."""
    z = torch.randn(batch, config.z_dim, generator=generator).to(device)
    c = torch.randint(0, config.children, (batch,), generator=generator).to(device)
    p, b = tie_codes(c, config.children, config.parents)
    return {"z": z, "c": one_hot(c, config.children), "p": one_hot(p, config.parents),
            "b": one_hot(b, config.backgrounds), "c_index": c, "p_index": p, "b_index": b}  # fmt: skip


@torch.no_grad()
def hard_negatives(generator: FineGANGenerator, child_d: StageDiscriminator, batch: int, repeat: int,
                   device: torch.device) -> dict[str, Tensor]:  # fmt: skip
    """FineGAN's hard-negative draw: `repeat` batches of random (z, c), each scored by D2's
    softmax probability of its c on the masked child foreground; the `batch` lowest are kept
    (ascending, as torch.sort). Runs the networks in their current mode, as the code does."""
    cfg = generator.config
    draws = [sample_codes(batch, cfg, device) for _ in range(repeat)]
    scores = []
    for codes in draws:
        out = generator(codes["z"], codes["c"])
        logits, _ = child_d(out.child_masked)
        scores.append(logits.float().softmax(1).gather(1, codes["c_index"][:, None])[:, 0])
    order = torch.sort(torch.cat(scores)).indices[:batch]
    pooled = {k: torch.cat([d[k] for d in draws]) for k in draws[0]}
    return {k: v[order] for k, v in pooled.items()}


# ----------------------------------------------------------------------------- sample grids


def _mask_image(mask: Tensor) -> Tensor:
    return mask.expand(-1, 3, -1, -1) * 2 - 1


@torch.no_grad()
def grid_rows(generator: FineGANGenerator, device: torch.device, seed: int = 0, columns: int = GRID_COLUMNS
              ) -> list[list[Tensor]]:  # fmt: skip
    """Rows of (3, 128, 128) images in [-1, 1]: the stages of one fixed code set (background,
    parent mask, parent, child mask, child, child foreground), then rows varying z, b, p and c
    one at a time (the others fixed, untied)."""
    cfg = generator.config
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(1, cfg.z_dim, generator=gen)
    zs = torch.cat([z0, torch.randn(columns - 1, cfg.z_dim, generator=gen)])
    c0 = 0
    p0, b0 = (int(v) for v in tie_codes(torch.tensor([c0]), cfg.children, cfg.parents))

    def spread(n: int) -> Tensor:
        return torch.linspace(0, n - 1, columns).round().long()

    def run(z: Tensor, b: Tensor, p: Tensor, c: Tensor):
        return generator(z.to(device), one_hot(c, cfg.children).to(device), one_hot(p, cfg.parents).to(device),
                         one_hot(b, cfg.backgrounds).to(device))  # fmt: skip

    fixed = lambda v: torch.full((columns,), v, dtype=torch.long)  # noqa: E731
    base = run(z0, torch.tensor([b0]), torch.tensor([p0]), torch.tensor([c0]))
    stages = [base.background[0], _mask_image(base.parent_mask)[0], base.parent[0], _mask_image(base.child_mask)[0],
              base.child[0], base.child_masked[0]]  # fmt: skip
    rows = [[t.cpu() for t in stages]]
    z_rep = z0.expand(columns, -1)
    for z, b, p, c in ((zs, fixed(b0), fixed(p0), fixed(c0)), (z_rep, spread(cfg.backgrounds), fixed(p0), fixed(c0)),
                       (z_rep, fixed(b0), spread(cfg.parents), fixed(c0)), (z_rep, fixed(b0), fixed(p0), spread(cfg.children))):  # fmt: skip
        rows.append(list(run(z, b, p, c).child.cpu()))
    return rows


# ----------------------------------------------------------------------------- the recipe


class FineGANRecipe(Recipe):
    """FineGAN's step: D0 and D2 updates, one generator update over G, D1 and D2's info head,
    the EMA; the hard-negative phase after `steps`."""

    name = "finegan"
    kind = CHECKPOINT_KIND
    description = "FineGAN (Singh et al., CVPR 2019): background, shape and texture disentangled by tied codes"
    config_class = TrainConfig
    eval_config_class = TestConfig

    config: TrainConfig

    def total_steps(self) -> int:
        return self.config.steps + self.config.hard_steps

    def boundaries(self) -> set[int]:
        return {self.config.steps}  # the end of the main phase

    def log_fields(self, done: int) -> dict[str, Any]:
        return {"phase": "hard" if done > self.config.steps else "main"}

    def open_data(self, run: Run) -> Data:
        config = self.config
        train_set, sample_set = factor_datasets(config.data, config.synth_count, config.progress and run.info.is_main,
                                                run.info)  # fmt: skip
        return Data({"train": (train_set, 0)}, sample_set)

    def build(self, run: Run, state: dict[str, Any] | None) -> None:
        config, cfg, device = self.config, self.config.model, run.device
        self.run = run
        self.generator = FineGANGenerator(cfg).to(device)
        self.d_background = BackgroundDiscriminator(cfg.df_dim).to(device)
        self.d_parent = StageDiscriminator(cfg.df_dim, cfg.parents).to(device)
        self.d_child = StageDiscriminator(cfg.df_dim, cfg.children).to(device)
        for net in (self.generator, self.d_background, self.d_parent, self.d_child):
            net.apply(init_weights)
        adam = lambda params, lr: torch.optim.Adam(params, lr=lr, betas=config.betas)  # noqa: E731
        self.opt_g = adam([{"params": list(self.generator.parameters())}, {"params": list(self.d_parent.parameters())},
                           {"params": self.d_child.info_parameters()}], config.lr_g)  # fmt: skip
        self.opt_d0 = adam(self.d_background.parameters(), config.lr_d)
        self.opt_d2 = adam(self.d_child.parameters(), config.lr_d)
        self.ema = ParameterEMA(self.generator, config.ema_decay)
        for net in (self.generator, self.d_background, self.d_parent, self.d_child):
            net.train()

    def learning_rates(self, step: int) -> list[tuple[torch.optim.Optimizer, float]]:
        c = self.config
        return [(self.opt_g, c.lr_g), (self.opt_d0, c.lr_d), (self.opt_d2, c.lr_d)]

    def train_step(self, step: int, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        config, run, cfg = self.config, self.run, self.config.model
        self.ema.decay = config.ema_decay
        real_object, real_scene, box = augment(batches["train"])
        n = real_object.shape[0]
        hard = step >= config.steps and (step - config.steps) % 2 == 1
        codes = (hard_negatives(self.generator, self.d_child, n, config.hard_repeat, run.device) if hard
                 else sample_codes(n, cfg, run.device))  # fmt: skip
        with run.autocast():
            fake = self.generator(codes["z"], codes["c"], codes["p"], codes["b"])

        # D0: patch real/fake and background classification; D2: real/fake.
        weights = background_patch_weights(box)
        with run.autocast():
            cls_real, rf_real = self.d_background(real_scene)
            _, rf_fake = self.d_background(fake.background_small.detach())
            d0 = background_d_loss(cls_real, rf_real, rf_fake, weights, config.bg_weight)
        run.update(self.opt_d0, d0["total"])
        with run.autocast():
            _, rf_real = self.d_child(real_object)
            _, rf_fake = self.d_child(fake.child.detach())
            d2 = child_d_loss(rf_real, rf_fake)
        run.update(self.opt_d2, d2["total"])

        # G (with D1 and D2's info head): the discriminators' other weights take no gradient.
        frozen = [self.d_background, self.d_child.encode, self.d_child.real_fake]
        for net in frozen:
            net.requires_grad_(False)
        with run.autocast():
            bg_cls, bg_rf = self.d_background(fake.background_small)
            parent_logits, _ = self.d_parent(fake.parent_masked)
            _, child_rf = self.d_child(fake.child)
            child_logits, _ = self.d_child(fake.child_masked)
            g = finegan_g_loss(bg_cls, bg_rf, parent_logits, codes["p_index"], child_rf, child_logits,
                               codes["c_index"], config.bg_weight)  # fmt: skip
        run.update(self.opt_g, g["total"])
        for net in frozen:
            net.requires_grad_(True)
        self.ema.update(self.generator)
        losses = {"d0": d0["total"], "d0_class": d0["class"], "d2": d2["total"]}
        losses.update({f"g_{k}": v for k, v in g.items()})
        losses["parent_mask"] = fake.parent_mask.mean()
        return {k: v.detach() for k, v in losses.items()}

    def averaged_generator(self) -> FineGANGenerator:
        return self.ema.averaged(self.generator)

    def sample_rows(self, batch: dict[str, Any], done: int) -> tuple[list[list[Tensor]], tuple[float, float]]:
        real = centre_object(batch["object"]).cpu()
        rows = grid_rows(self.averaged_generator(), self.run.device, self.config.seed)
        return [list(real)] + rows, (-1.0, 1.0)

    def checkpointed(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in
                ("generator", "d_background", "d_parent", "d_child", "opt_g", "opt_d0", "opt_d2", "ema")}  # fmt: skip

    def state_dict(self, done: int) -> dict[str, Any]:  # plus the averaged weights, for sampling and tests
        return {**super().state_dict(done), "ema_generator": self.averaged_generator().state_dict()}

    @staticmethod
    def evaluate(config: TestConfig) -> dict[str, Any]:
        return evaluate(**dataclasses.asdict(config))

    @staticmethod
    def summary(result: dict[str, Any]) -> str:
        return format_metrics(result)


# ----------------------------------------------------------------------------- evaluation


def load_generator(checkpoint: str | Path, device: str | torch.device = "cpu", weights: str = "ema"
                   ) -> tuple[FineGANGenerator, dict[str, Any]]:  # fmt: skip
    """The EMA (or with weights="live" the trained) generator of a FineGAN checkpoint, in eval
    mode, and the checkpoint."""
    if weights not in ("ema", "live"):
        raise ValueError(f"weights must be 'ema' or 'live', got {weights!r}")
    state, config, _ = open_trained(checkpoint, CHECKPOINT_KIND, "FineGAN", FineGANConfig)
    generator = FineGANGenerator(config)
    generator.load_state_dict(state["ema_generator" if weights == "ema" else "generator"])
    return generator.to(device).eval(), state


def _save(images: Tensor, folder: Path, start: int) -> None:
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for k, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{start + k:06d}.png")


@torch.no_grad()
def evaluate(checkpoint: str, out: str, data: str | None = None, device: str = "cpu", batch_size: int = 8,
             workers: int = 0, progress: bool = True, count: int = 500, per_parent: int = 20,
             classifier: str | None = None, seed: int = 0, weights: str = "ema",
             **image_metric_files: str | None) -> dict[str, Any]:  # fmt: skip
    """Generate `count` images from tied random codes with the EMA generator; metrics.json
    holds the mean parent and child mask coverage and, with a factor classifier, the shape
    consistency per parent code (images with the same p and random z, b, c: the share of the
    most frequent shape the classifier reads, averaged over p; chance 1 / shapes), and
    "image_metrics": FID (against `real_stats`) and IS of the generated images when
    `image_metric_files` name the Inception weights (`pydeform.train.evaluation.ImageMetrics`)."""
    torch_device = torch.device(device)
    with user_errors():
        generator, state = load_generator(checkpoint, torch_device, weights)
    cfg = generator.config
    out_dir = Path(out)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    coverage_p, coverage_c, done = 0.0, 0.0, 0
    image_metrics = ImageMetrics(device, progress, **image_metric_files)
    while done < count:
        n = min(batch_size, count - done)
        codes = sample_codes(n, cfg, torch_device, gen)
        result = generator(codes["z"], codes["c"], codes["p"], codes["b"])
        coverage_p += float(result.parent_mask.mean((1, 2, 3)).sum())
        coverage_c += float(result.child_mask.mean((1, 2, 3)).sum())
        image_metrics.add(((result.child.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        _save(result.child, out_dir / "images", done)
        done += n
    save_image_grid(grid_rows(generator, torch_device, seed), out_dir / "samples.png", (-1.0, 1.0))
    metrics: dict[str, Any] = {"images": count, "parent_mask_coverage": coverage_p / count,
                               "child_mask_coverage": coverage_c / count, "step": int(state["step"]), "weights": weights,
                               "checkpoint": str(checkpoint), "config": cfg.to_dict(),
                               "image_metrics": image_metrics.result()}  # fmt: skip
    if classifier is not None:
        from pydeform.train.factors import load_classifier

        with user_errors():
            reader = load_classifier(classifier, torch_device)
        shares, read = [], []
        for p in range(cfg.parents):
            z = torch.randn(per_parent, cfg.z_dim, generator=gen).to(torch_device)
            c = torch.randint(0, cfg.children, (per_parent,), generator=gen)
            b = torch.randint(0, cfg.backgrounds, (per_parent,), generator=gen)
            images = generator(z, one_hot(c, cfg.children).to(torch_device),
                               one_hot(torch.full((per_parent,), p), cfg.parents).to(torch_device),
                               one_hot(b, cfg.backgrounds).to(torch_device)).child  # fmt: skip
            shapes = reader.predict(images)["shape"]
            shares.append(float(torch.bincount(shapes).max()) / per_parent)
            read.append(shapes.cpu())
        # The control: a classifier that reads one shape for everything (e.g. on images that are
        # not yet objects) scores a high consistency without any dependence on p. The pooled
        # majority share (all parents together) and the number of distinct majority shapes say so.
        pooled = torch.cat(read)
        majorities = {int(torch.bincount(r).argmax()) for r in read}
        metrics.update(shape_majority_pooled=float(torch.bincount(pooled).max()) / len(pooled),
                       shape_distinct_majorities=len(majorities))  # fmt: skip
        metrics.update(shape_consistency=float(np.mean(shares)), shape_consistency_per_parent=shares,
                       shape_chance=1.0 / reader.classes["shape"], classifier=str(classifier))  # fmt: skip
        # A Frechet distance on the classifier's penultimate features (not Inception's: no
        # weights are downloaded), generated children against the real test object crops.
        from pydeform.metrics import feature_stats, fid

        with user_errors():
            trained = state.get("train_config", {})
            root = Path(data) if data is not None else (Path(trained["data"]) if trained.get("data") else
                                                         synthetic_factors(trained.get("synth_count", 2000), progress))  # fmt: skip
            real_set = CUBObjects(root, "test")
        real = torch.cat([reader.features(centre_object(b["object"]).to(torch_device))
                          for b in torch.utils.data.DataLoader(real_set, batch_size=64, num_workers=workers)])  # fmt: skip
        fake_features = []
        done = 0
        while done < count:
            n = min(batch_size, count - done)
            codes = sample_codes(n, cfg, torch_device, gen)
            fake_features.append(reader.features(generator(codes["z"], codes["c"], codes["p"], codes["b"]).child))
            done += n
        distance = fid(feature_stats(torch.cat(fake_features)), feature_stats(real))
        metrics.update(fd_classifier_features=distance,
                       fd_features="factor classifier penultimate features (not Inception)",
                       fd_real_images=len(real_set), classifier_test_accuracy=reader.accuracy)  # fmt: skip
    atomic_write(out_dir / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    return metrics


def format_metrics(result: dict[str, Any]) -> str:
    lines = [f"parent mask coverage {100 * result['parent_mask_coverage']:.1f}%, child mask coverage "
             f"{100 * result['child_mask_coverage']:.1f}% ({result['images']} images, step {result['step']}, "
             f"{result.get('weights', 'ema')} weights)"]  # fmt: skip
    if "shape_consistency" in result:
        lines.append(f"shape consistency per parent code {100 * result['shape_consistency']:.1f}% "
                     f"(chance {100 * result['shape_chance']:.1f}%); pooled over all parents "
                     f"{100 * result['shape_majority_pooled']:.1f}%, {result['shape_distinct_majorities']} distinct "
                     f"majority shapes over {len(result['shape_consistency_per_parent'])} parents")  # fmt: skip
        lines.append(f"Frechet distance on factor-classifier features {result['fd_classifier_features']:.2f} "
                     f"(vs {result['fd_real_images']} real test images)")  # fmt: skip
    lines.append(format_image_metrics(result["image_metrics"]))
    return "\n".join(lines)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) FineGAN; see the module docstring."""
    return run_training(FineGANRecipe(config))
