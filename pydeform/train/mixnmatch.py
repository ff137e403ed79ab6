"""Training, testing and mixing of MixNMatch (Li, Singh, Ojha & Lee, CVPR 2020) as the authors
trained it (`code/train_first_stage.py`, `code/train_second_stage.py`, `code/eval.py`,
`code/utils.py` of github.com/Yuheng-Li/MixNMatch).

Stage 1 (`steps`), one step (their Trainer.train):
- tied codes (z, b = c, p = c // (Nc / Np), c uniform) and the encoders' soft codes of the real
  object crop; G's forward once;
- FineGAN's background (D0) and child (D2) discriminator updates;
- the bi-discriminators (one WGAN critic per code on (image, code) pairs): the real image with
  its encoded codes against the generated image with its codes,
  loss = -sum_k mean BD_k(real, E_k(real)) + sum_k mean BD_k(G(codes), codes_k) + 10 GP, the
  gradient penalty with each input interpolated on its own (`mixed_gradient_penalty`);
- one update of G, the encoders, D1 and D2's code head together: FineGAN's info losses on the
  masked foregrounds (p, c), its background and child adversarial losses, the bi-adversarial
  loss reversed, and the code-prediction loss: fakes generated (no gradient) from independent,
  untied codes, encoded again, 5 L1(z) + 5 CE(b) + 10 CE(p) + 10 CE(c), which trains only the
  encoders;
- the EMA of G (0.999).
Stage 2 (`feature_steps`, feature mode): the EMA generator is frozen (eval mode); a U-Net
extractor maps a real image to the parent stage's features, trained against a patch
discriminator on the generator's own parent features (codes: z, b, c random, p one-hot or, with
probability 0.2 for a batch, a softmax of N(0, 1)) and with an L1 loss between the extractor's
features of a generated image and the features that made it. Adam lr 2e-4 (extractor), 2e-5
(its discriminator), betas (0.5, 0.999) everywhere.

Without --data it trains on the synthetic factor set, like FineGAN. Writes OUT/config.json,
OUT/log.jsonl, OUT/samples/*.png (the mixing grid: first row the texture source and the
background sources, first column the shape sources, each cell their mix in code mode; in
stage 2 the same in feature mode below it) and OUT/checkpoint.pt.
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
from torch.utils.data import DataLoader, Subset

from pydeform.data._images import read_rgb
from pydeform.data.cub import CUBObjects, augment, centre_object
from pydeform.errors import user_errors
from pydeform.losses.codes import code_cross_entropy
from pydeform.losses.finegan import background_d_loss, bce, child_d_loss
from pydeform.losses.wgan import mixed_gradient_penalty
from pydeform.models.finegan import BackgroundDiscriminator, background_patch_weights, init_weights
from pydeform.models.mixnmatch import (
    CODES,
    BiDiscriminators,
    Encoder,
    FeatureDiscriminator,
    FeatureExtractor,
    MixGenerator,
    MixNMatchConfig,
    MixStageDiscriminator,
    free_codes,
    tied_codes,
)
from pydeform.nets.ema import ParameterEMA
from pydeform.options import option
from pydeform.train.common import atomic_write, check_minimum, factor_datasets, save_image_grid, synthetic_factors
from pydeform.train.engine import Data, Recipe, Run, open_trained
from pydeform.train.engine import train as run_training
from pydeform.train.evaluation import EvalConfig, ImageMetrics, format_image_metrics
from pydeform.train.finegan import FactorRunConfig

__all__ = ["TrainConfig", "TestConfig", "MixNMatchRecipe", "train", "evaluate", "mix", "load_mixer",
           "bi_discriminator_loss", "code_prediction_loss", "Mixer"]  # fmt: skip

CHECKPOINT_KIND = "pydeform.mixnmatch"
CODE_WEIGHTS = {"z": 5.0, "b": 5.0, "p": 10.0, "c": 10.0}  # train_EG
GP_WEIGHT = 10.0
SOFT_P_PROBABILITY = 0.2  # train_second_stage.prepare_data


@dataclass
class TrainConfig(FactorRunConfig):
    """Train MixNMatch: stage 1, FineGAN with four encoders, four bi-adversarial (image, code)
    critics (WGAN-GP, mixed interpolation) and the code-prediction loss on untied codes; stage 2
    (--feature-steps), the feature-mode extractor against the frozen generator. Without --data it
    trains on the synthetic factor set. Writes OUT/config.json, OUT/log.jsonl, OUT/samples/*.png
    (the mixing grid) and OUT/checkpoint.pt."""

    model: MixNMatchConfig = option(default_factory=MixNMatchConfig)
    batch_size: int = option(12, "images per step and process (12: MixNMatch's, code/config.py)")
    steps: int = option(1000, "steps of stage 1", required=True)
    feature_steps: int = option(0, "steps of stage 2 (feature mode) after stage 1")
    lr: float = option(2e-4, "Adam lr of G, encoders, D0, D2 and the bi-discriminators", resume="apply")
    lr_extractor: float = option(2e-4, "Adam lr of the feature extractor (stage 2)", resume="apply")
    lr_feature_d: float = option(2e-5, "Adam lr of the feature discriminator (stage 2)", resume="apply")
    gp_weight: float = option(GP_WEIGHT, "gradient penalty weight of the bi-discriminators", resume="apply")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_minimum(self, ("steps",), 1)
        check_minimum(self, ("feature_steps",), 0)
        check_minimum(self, ("lr", "lr_extractor", "lr_feature_d"), 0, strict=True)
        check_minimum(self, ("gp_weight",), 0)
        if self.amp:
            raise ValueError("mixnmatch does not train under amp (--amp): its gradient penalty needs float32 gradients")


@dataclass
class TestConfig(EvalConfig):
    """Mix real test images with a MixNMatch checkpoint: for triples (A, B, C) of the test split,
    the background of A, the shape (and pose) of B and the texture of C, in code mode and (after
    stage 2) feature mode. Writes OUT/images/*.png, OUT/samples.png and OUT/metrics.json: with
    --classifier the accuracy of A's background, B's shape and C's texture read from the mixes;
    with masks in the data, feature mode's shape IoU against B's true mask."""

    count: int = option(200, "triples to mix (at most the test split's size)")
    classifier: str | None = option(None, "factor classifier checkpoint (`pydeform factors train`)", metavar="PATH")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_minimum(self, ("count",), 1)


# ----------------------------------------------------------------------------- losses


def bi_discriminator_loss(encoded: tuple[Tensor, ...], generated: tuple[Tensor, ...]) -> Tensor:
    """-sum_k mean BD_k(real, E(real)_k) + sum_k mean BD_k(G(codes), codes_k) (train_BD, without the penalty)."""
    return -sum(s.mean() for s in encoded) + sum(s.mean() for s in generated)


def code_prediction_loss(predicted: dict[str, Tensor], codes: dict[str, Tensor]) -> dict[str, Tensor]:
    """5 L1(z) + 5 CE(b) + 10 CE(p) + 10 CE(c) (train_EG); predicted b, p, c are logits."""
    parts = {"z": (predicted["z"].float() - codes["z"].float()).abs().mean()}
    for name in ("b", "p", "c"):
        parts[name] = code_cross_entropy(predicted[name], codes[name])
    parts["total"] = sum(CODE_WEIGHTS[k] * parts[k] for k in CODES)
    return parts


# ----------------------------------------------------------------------------- mixing


class Mixer:
    """The EMA generator, the encoders and (after stage 2) the feature extractor, in eval mode."""

    def __init__(self, generator: MixGenerator, encoder: Encoder, extractor: FeatureExtractor | None) -> None:
        self.generator, self.encoder, self.extractor = generator.eval(), encoder.eval(), extractor
        if extractor is not None:
            extractor.eval()

    @torch.no_grad()
    def __call__(self, background: Tensor, shape: Tensor, texture: Tensor, pose: Tensor | None = None,
                 mode: str = "code") -> Any:  # fmt: skip
        """(B, 3, 128, 128) images in [-1, 1] -> FineGANOutput of the mixes (eval.py: z and b of
        the background image, p of the shape image, z of the pose image (default: the shape
        image) for the parent stage, c of the texture image; feature mode: the extractor's
        features of the shape image)."""
        if mode not in ("code", "feature"):
            raise ValueError(f"mode must be 'code' or 'feature', got {mode!r}")
        bg, sh, tx = self.encoder.soft(background), self.encoder.soft(shape), self.encoder.soft(texture)
        if mode == "feature":
            if self.extractor is None:
                raise ValueError("feature mode needs a checkpoint trained with stage 2 (--feature-steps > 0)")
            if pose is not None:
                raise ValueError("feature mode takes the pose from the shape image: drop --pose")
            return self.generator(bg["z"], tx["c"], sh["p"], bg["b"], parent_features=self.extractor(shape))
        z_parent = (self.encoder.soft(pose) if pose is not None else sh)["z"]
        return self.generator(bg["z"], tx["c"], sh["p"], bg["b"], z_parent=z_parent)


def mixing_grid(mixer: Mixer, images: Tensor, mode: str = "code") -> list[list[Tensor]]:
    """The paper's mixing grid from (N, 3, 128, 128) real images: the first row holds the
    texture source (image 0) and the background sources (images 0..N-1), the first column the
    shape sources; cell (i, j): background j, shape i, texture 0."""
    n = images.shape[0]
    rows = [[images[0].cpu(), *images.cpu()]]
    texture = images[:1]
    for i in range(n):
        shape = images[i : i + 1].expand(n, -1, -1, -1)
        out = mixer(images, shape, texture.expand(n, -1, -1, -1), mode=mode)
        rows.append([images[i].cpu(), *out.child.cpu()])
    return rows


# ----------------------------------------------------------------------------- the recipe


class MixNMatchRecipe(Recipe):
    """MixNMatch's stage 1 (FineGAN + encoders + bi-discriminators) and stage 2 (feature mode)."""

    name = "mixnmatch"
    kind = CHECKPOINT_KIND
    description = "MixNMatch (Li et al., CVPR 2020): encode background, shape, pose and texture of real images and mix them"
    config_class = TrainConfig
    eval_config_class = TestConfig

    config: TrainConfig

    def total_steps(self) -> int:
        return self.config.steps + self.config.feature_steps

    def boundaries(self) -> set[int]:
        return {self.config.steps}

    def log_fields(self, done: int) -> dict[str, Any]:
        return {"stage": 1 if done <= self.config.steps else 2}

    def open_data(self, run: Run) -> Data:
        config = self.config
        train_set, sample_set = factor_datasets(config.data, config.synth_count, config.progress and run.info.is_main,
                                                run.info)  # fmt: skip
        return Data({"train": (train_set, 0)}, sample_set)

    def build(self, run: Run, state: dict[str, Any] | None) -> None:
        config, cfg, device = self.config, self.config.model, run.device
        self.run = run
        self.generator = MixGenerator(cfg).to(device)
        self.d_background = BackgroundDiscriminator(cfg.df_dim).to(device)
        self.d_parent = MixStageDiscriminator(cfg.df_dim // 2, cfg.parents).to(device)
        self.d_child = MixStageDiscriminator(cfg.df_dim, cfg.children).to(device)
        self.encoder = Encoder(cfg).to(device)
        self.bi = BiDiscriminators(cfg).to(device)  # their Bi_Dis keeps torch's default init
        self.extractor = FeatureExtractor(cfg.gf_dim // 4, cfg.fx_dim).to(device)
        self.d_feature = FeatureDiscriminator(cfg.gf_dim // 4, cfg.fx_dim).to(device)
        for net in (self.generator, self.d_background, self.d_parent, self.d_child, self.encoder, self.extractor,
                    self.d_feature):  # fmt: skip
            net.apply(init_weights)
        adam = lambda params, lr: torch.optim.Adam(params, lr=lr, betas=config.betas)  # noqa: E731
        self.opt_ge = adam([{"params": list(self.generator.parameters())}, {"params": list(self.encoder.parameters())},
                            {"params": list(self.d_parent.parameters())}, {"params": self.d_child.info_parameters()}],
                           config.lr)  # fmt: skip
        self.opt_d0 = adam(self.d_background.parameters(), config.lr)
        self.opt_d2 = adam(self.d_child.parameters(), config.lr)
        self.opt_bd = adam(self.bi.parameters(), config.lr)
        self.opt_ex = adam(self.extractor.parameters(), config.lr_extractor)
        self.opt_fd = adam(self.d_feature.parameters(), config.lr_feature_d)
        self.ema = ParameterEMA(self.generator, config.ema_decay)
        self.frozen: MixGenerator | None = None
        for net in (self.generator, self.d_background, self.d_parent, self.d_child, self.encoder, self.bi,
                    self.extractor, self.d_feature):  # fmt: skip
            net.train()

    def learning_rates(self, step: int) -> list[tuple[torch.optim.Optimizer, float]]:
        c = self.config
        return [(self.opt_ge, c.lr), (self.opt_d0, c.lr), (self.opt_d2, c.lr), (self.opt_bd, c.lr),
                (self.opt_ex, c.lr_extractor), (self.opt_fd, c.lr_feature_d)]  # fmt: skip

    def train_step(self, step: int, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        self.ema.decay = self.config.ema_decay
        if step < self.config.steps:
            return self._first_stage(batches["train"])
        return self._second_stage(batches["train"])

    def _first_stage(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        config, run, cfg = self.config, self.run, self.config.model
        real, scene, box = augment(batch)
        n = real.shape[0]
        codes = tied_codes(n, cfg, run.device)
        encoded = self.encoder.soft(real)
        fake = self.generator(codes["z"], codes["c"], codes["p"], codes["b"])

        weights = background_patch_weights(box)
        cls_real, rf_real = self.d_background(scene)
        _, rf_fake = self.d_background(fake.background_small.detach())
        d0 = background_d_loss(cls_real, rf_real, rf_fake, weights, config.bg_weight)
        run.update(self.opt_d0, d0["total"])
        _, rf_real = self.d_child(real)
        _, rf_fake = self.d_child(fake.child.detach())
        d2 = child_d_loss(rf_real, rf_fake)
        run.update(self.opt_d2, d2["total"])

        # Bi-discriminators: (real image, its codes) against (generated image, the codes that made it).
        real_inputs = [real] + [encoded[k].detach() for k in CODES]
        fake_inputs = [fake.child.detach()] + [codes[k] for k in CODES]
        bd_loss = bi_discriminator_loss(self.bi(*real_inputs), self.bi(*fake_inputs))
        penalty = mixed_gradient_penalty(self.bi, real_inputs, fake_inputs)
        run.update(self.opt_bd, bd_loss + config.gp_weight * penalty)

        # G, encoders, D1 and D2's code head.
        frozen = [self.d_background, self.d_child.encode, self.d_child.real_fake, self.bi]
        for net in frozen:
            net.requires_grad_(False)
        parent_logits, _ = self.d_parent(fake.parent_masked)
        child_logits, _ = self.d_child(fake.child_masked)
        info = code_cross_entropy(parent_logits, codes["p"]) + code_cross_entropy(child_logits, codes["c"])
        free = free_codes(n, cfg, run.device)
        with torch.no_grad():
            free_image = self.generator(free["z"], free["c"], free["p"], free["b"]).child
        prediction = code_prediction_loss(self.encoder(free_image), free)
        bg_cls, bg_rf = self.d_background(fake.background_small)
        background = config.bg_weight * bce(bg_rf, 1.0) + bce(bg_cls, 1.0)
        _, child_rf = self.d_child(fake.child)
        child_adv = bce(child_rf, 1.0)
        fool = -bi_discriminator_loss(self.bi(real, *[encoded[k] for k in CODES]),
                                      self.bi(fake.child, *[codes[k] for k in CODES]))  # fmt: skip
        total = info + background + child_adv + fool + prediction["total"]
        run.update(self.opt_ge, total)
        for net in frozen:
            net.requires_grad_(True)
        self.ema.update(self.generator)
        losses = {"d0": d0["total"], "d2": d2["total"], "bd": bd_loss, "gp": penalty, "eg": total, "info": info,
                  "background": background, "child_adv": child_adv, "fool_bd": fool,
                  **{f"pred_{k}": v for k, v in prediction.items()}, "parent_mask": fake.parent_mask.mean()}  # fmt: skip
        return {k: v.detach() for k, v in losses.items()}

    def _frozen_generator(self) -> MixGenerator:
        if self.frozen is None:
            self.frozen = self.ema.averaged(self.generator).requires_grad_(False)
        return self.frozen

    def _second_stage(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        run, cfg = self.run, self.config.model
        real, _, _ = augment(batch)
        n = real.shape[0]
        generator = self._frozen_generator()
        codes = free_codes(n, cfg, run.device)
        if float(torch.rand(())) < SOFT_P_PROBABILITY:
            codes["p"] = torch.randn(n, cfg.parents).softmax(1).to(run.device)
        with torch.no_grad():
            made = generator(codes["z"], codes["c"], codes["p"], codes["b"])
        features = self.extractor(real)
        fd_loss = bce(self.d_feature(features.detach()), 0.0) + bce(self.d_feature(made.parent_features), 1.0)
        run.update(self.opt_fd, fd_loss)
        self.d_feature.requires_grad_(False)
        adversarial = bce(self.d_feature(features), 1.0)
        l1 = (self.extractor(made.child) - made.parent_features).abs().mean()
        run.update(self.opt_ex, adversarial + l1)
        self.d_feature.requires_grad_(True)
        return {"fd": fd_loss.detach(), "ex_adv": adversarial.detach(), "ex_l1": l1.detach()}

    def mixer(self) -> Mixer:
        encoder = type(self.encoder)(self.config.model).to(self.run.device)
        encoder.load_state_dict(self.encoder.state_dict())
        extractor = None
        if self.frozen is not None:
            extractor = FeatureExtractor(self.config.model.gf_dim // 4, self.config.model.fx_dim).to(self.run.device)
            extractor.load_state_dict(self.extractor.state_dict())
        return Mixer(self.ema.averaged(self.generator), encoder, extractor)

    def sample_rows(self, batch: dict[str, Any], done: int) -> tuple[list[list[Tensor]], tuple[float, float]]:
        images = centre_object(batch["object"]).to(self.run.device)
        mixer = self.mixer()
        rows = mixing_grid(mixer, images)
        if mixer.extractor is not None:
            rows += mixing_grid(mixer, images, "feature")
        return rows, (-1.0, 1.0)

    def checkpointed(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in
                ("generator", "d_background", "d_parent", "d_child", "encoder", "bi", "extractor", "d_feature",
                 "opt_ge", "opt_d0", "opt_d2", "opt_bd", "opt_ex", "opt_fd", "ema")}  # fmt: skip

    def state_dict(self, done: int) -> dict[str, Any]:  # plus what `pydeform mix` and `test` read
        return {**super().state_dict(done), "ema_generator": self.ema.averaged(self.generator).state_dict(),
                "feature_trained": done > self.config.steps}  # fmt: skip

    @staticmethod
    def evaluate(config: TestConfig) -> dict[str, Any]:
        return evaluate(**dataclasses.asdict(config))

    @staticmethod
    def summary(result: dict[str, Any]) -> str:
        return format_metrics(result)


# ----------------------------------------------------------------------------- testing and mixing


def load_mixer(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[Mixer, dict[str, Any]]:
    """The Mixer of a MixNMatch checkpoint (EMA generator; the extractor when stage 2 ran)."""
    state, cfg, _ = open_trained(checkpoint, CHECKPOINT_KIND, "MixNMatch", MixNMatchConfig)
    generator, encoder = MixGenerator(cfg), Encoder(cfg)
    generator.load_state_dict(state["ema_generator"])
    encoder.load_state_dict(state["encoder"])
    extractor = None
    if state.get("feature_trained"):
        extractor = FeatureExtractor(cfg.gf_dim // 4, cfg.fx_dim)
        extractor.load_state_dict(state["extractor"])
        extractor.to(device)
    return Mixer(generator.to(device), encoder.to(device), extractor), state


def load_image(path: str | Path) -> Tensor:
    """An image file -> (1, 3, 128, 128) in [-1, 1] (eval.py: Resize((128, 128)))."""
    try:
        image = read_rgb(path).resize((128, 128), Image.BILINEAR)
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot read the image {path}: {exc}") from exc
    return torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None] / 127.5 - 1


def _to_pil(image: Tensor) -> Image.Image:
    return Image.fromarray(((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def mix(checkpoint: str, background: str, shape: str, texture: str, out: str, pose: str | None = None,
        mode: str = "code", device: str = "cpu") -> Path:  # fmt: skip
    """`pydeform mix`: one mixed image written to `out` (PNG)."""
    with user_errors():
        mixer, _ = load_mixer(checkpoint, device)
        images = [load_image(p).to(device) if p is not None else None for p in (background, shape, texture, pose)]
        result = mixer(*images, mode=mode)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    _to_pil(result.child[0]).save(path)
    return path


def _mask_crops(root: Path, records: list, indices: list[int]) -> Tensor | None:
    """The true object masks of the records, cropped like the object images (centre 128)."""
    from pydeform.data.cub import object_crop

    masks = []
    for i in indices:
        path = root / "masks" / records[i].path
        if not path.is_file():
            return None
        crop = object_crop(read_rgb(path), records[i].box)
        masks.append(torch.from_numpy(np.asarray(crop, np.float32)[..., 0] >= 128))
    return centre_object(torch.stack(masks)[:, None])[:, 0]


@torch.no_grad()
def evaluate(checkpoint: str, out: str, data: str | None = None, device: str = "cpu", batch_size: int = 8,
             workers: int = 0, progress: bool = True, count: int = 200, classifier: str | None = None,
             **image_metric_files: str | None) -> dict[str, Any]:  # fmt: skip
    """Mix triples of the test split: output k takes the background of image k, the shape of
    image k + 1 and the texture of image k + 2 (indices mod N). See TestConfig. With
    `image_metric_files`, "image_metrics" holds FID/IS of the code-mode mixes
    (`pydeform.train.evaluation.ImageMetrics`)."""
    torch_device = torch.device(device)
    with user_errors():
        mixer, state = load_mixer(checkpoint, torch_device)
        trained = state.get("train_config", {})
        if data is None:
            data = trained.get("data")
        if data is None:
            root = synthetic_factors(trained.get("synth_count", 2000), progress)
        else:
            root = Path(data)
        test_set = CUBObjects(root, "test")
    n, size = min(count, len(test_set)), len(test_set)
    # Read only the images of the triples (k, k + 1, k + 2) and of the grid (the first 4): a whole
    # test split (CUB's 5,794) would take gigabytes.
    used = sorted({k % size for k in range(n + 2)} | set(range(min(4, size))))
    loader = DataLoader(Subset(test_set, used), batch_size=len(used), shuffle=False, num_workers=workers)
    loaded = centre_object(next(iter(loader))["object"]).to(torch_device)
    position = {index: row for row, index in enumerate(used)}

    def images(indices: list[int]) -> Tensor:
        return loaded[[position[i] for i in indices]]

    a = list(range(n))
    b = [(k + 1) % size for k in a]
    c = [(k + 2) % size for k in a]
    out_dir = Path(out)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    modes = ["code"] + (["feature"] if mixer.extractor is not None else [])
    results: dict[str, Any] = {"triples": n, "modes": modes, "step": int(state["step"]), "checkpoint": str(checkpoint)}
    reader = None
    if classifier is not None:
        from pydeform.train.factors import factor_labels, load_classifier

        with user_errors():
            reader = load_classifier(classifier, torch_device)
            labels = factor_labels(root, test_set.records)
    masks = _mask_crops(root, test_set.records, b)
    for mode in modes:
        outputs, parent_masks = [], []
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            result = mixer(images(a[sl]), images(b[sl]), images(c[sl]), mode=mode)
            outputs.append(result.child)
            parent_masks.append(result.parent_mask[:, 0])
        mixed = torch.cat(outputs)
        if mode == "code":
            image_metrics = ImageMetrics(device, progress, **image_metric_files)
            image_metrics.add(((mixed.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
            results["image_metrics"] = image_metrics.result()
        for k, image in enumerate(mixed):
            _to_pil(image).save(out_dir / "images" / f"{mode}_{k:04d}.png")
        entry: dict[str, Any] = {}
        if reader is not None:
            predicted = reader.predict(mixed)
            for factor, source in (("background", a), ("shape", b), ("texture", c)):
                truth = torch.tensor([labels[factor][i] for i in source], device=predicted[factor].device)
                entry[f"{factor}_accuracy"] = float((predicted[factor] == truth).float().mean())
                entry[f"{factor}_chance"] = 1.0 / reader.classes[factor]
        if masks is not None:
            pm = torch.cat(parent_masks).cpu() >= 0.5
            inter = (pm & masks).flatten(1).sum(1).float()
            union = (pm | masks).flatten(1).sum(1).float().clamp_min(1)
            entry["shape_iou"] = float((inter / union).mean())
        results[mode] = entry
    grid = images(list(range(min(4, size))))
    rows = mixing_grid(mixer, grid)
    if mixer.extractor is not None:
        rows += mixing_grid(mixer, grid, "feature")
    save_image_grid(rows, out_dir / "samples.png", (-1.0, 1.0))
    atomic_write(out_dir / "metrics.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    return results


def format_metrics(result: dict[str, Any]) -> str:
    lines = []
    for mode in result["modes"]:
        entry = result[mode]
        cells = [f"{k} {100 * v:.1f}%" for k, v in entry.items()]
        lines.append(f"{mode} mode: " + (", ".join(cells) if cells else "no classifier or masks: images only"))
    lines.append(format_image_metrics(result["image_metrics"]))
    lines.append(f"{result['triples']} triples, checkpoint step {result['step']}")
    return "\n".join(lines)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) MixNMatch; see the module docstring."""
    return run_training(MixNMatchRecipe(config))
