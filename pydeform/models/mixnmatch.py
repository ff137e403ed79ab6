"""MixNMatch (Li, Singh, Ojha & Lee, "MixNMatch: Multifactor Disentanglement and Encoding for
Conditional Image Generation", CVPR 2020): FineGAN's hierarchy plus four encoders trained with
one bi-adversarial (image, code) discriminator per code, and a shape-and-pose feature
extractor for the "feature mode".

Written after the authors' code, github.com/Yuheng-Li/MixNMatch (also WisconsinAIVision/MixNMatch)
`code/model_train.py` and `code/model_eval.py`. The blocks (GLU, conv-BN-GLU, residual
blocks, the background discriminator) are FineGAN's, shared from `pydeform.models.finegan`.

Differences from FineGAN's G_NET, as in MixNMatch's code:
- background stage: fc on concat(z, b) (z first) to (8gf, 4, 4), then 5 up-blocks
  8gf -> 4gf -> 2gf -> gf -> gf -> gf/2 (gf = 64: 512 ... 32 at 128x128), RGB head on gf/2;
- parent stage: fc on concat(z, p) to (8gf, 4, 4), up-blocks to 4gf, 2gf, gf, gf/4, gf/4,
  then concat(features, tiled p) (features first), conv-BN-GLU to gf/4 and 3 residual blocks;
  no halving block. RGB and mask heads on gf/4. "Feature mode" replaces this stage's output;
- child stage: concat(tiled c, features), conv-BN-GLU to gf/2, 2 residual blocks, conv-BN-GLU
  to gf/4; RGB and mask heads;
- in evaluation the background and the parent stage may take different z (model_eval.py: z of
  the background image and z of the pose image).
Parent discriminator: MixNMatch's PARENT_D has width df/2 (32) and keeps 8 df/2 channels after
the fifth conv; the child discriminator has width df with the same layout (8 df after the fifth
conv, where FineGAN's has a 16 df down block).

Encoder (`Encoder`): four separate networks (z, b, p, c), each FineGAN's 4-conv image encoder
(to 8 de at 8x8), a down block (16 de, 4x4), two conv3x3-BN-LReLU (8 de), conv4 stride 4 to the
code; z = 4 tanh(.); b, p, c are logits (softmax for soft codes).

Bi-discriminator (`BiDiscriminator`, their Bi_Dis_base), one per code: image branch of five
conv4 s2 p1 + LReLU (w, 2w, 4w, 8w, 16w, biases, no BN; w = 16) and conv4 s1 to 512 (1x1 at
128x128); code branch of three Linear + LReLU(0.2) + additive Gaussian noise (std 0.5, 0.3, 0.3,
in training and evaluation alike, as their Gaussian module); joint Linear 1024 -> 1024 + LReLU,
Linear -> 1 (a WGAN critic score).

Feature extractor (`FeatureExtractor`, their U-Net): two conv-BN-GLU (32), six down blocks
(conv4 s2 + BN + GLU: 32, 64, 128, 256, 512, 512), six up blocks (convT4 s2 + BN + GLU) with
skip concatenations, to gf/4 channels at 128x128, then 2 residual blocks. Its discriminator
(`FeatureDiscriminator`, Dis_Dis): bilinear resize to 126, FineGAN's background encoder (32,
64, 128) and one sigmoid patch head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydeform.models.finegan import (
    BACKGROUND_D_SIZE,
    GLU,
    FineGANOutput,
    ResBlock,
    Trunk,
    composite,
    conv3x3,
    glu_block,
    one_hot,
    tie_codes,
)
from pydeform.options import ModelConfig, check_ints, option

__all__ = [
    "MixNMatchConfig",
    "MixGenerator",
    "MixStageDiscriminator",
    "Encoder",
    "BiDiscriminator",
    "BiDiscriminators",
    "FeatureExtractor",
    "FeatureDiscriminator",
    "CODES",
]

CODES = ("z", "b", "p", "c")


@dataclass
class MixNMatchConfig(ModelConfig):
    """The networks' sizes (saved in checkpoints); MixNMatch's CUB settings by default."""

    z_dim: int = option(100, "noise dimension")
    backgrounds: int = option(200, "background codes Nb (= children when codes are tied)")
    parents: int = option(20, "parent (shape) codes Np")
    children: int = option(200, "child (texture) codes Nc, a multiple of Np")
    gf_dim: int = option(64, "generator width gf (a multiple of 4)")
    df_dim: int = option(64, "child discriminator width (the parent's is half)")
    encoder_dim: int = option(64, "encoder width")
    bd_dim: int = option(16, "bi-discriminator image-branch width")
    bd_hidden: int = option(512, "bi-discriminator code-branch and image-feature width")
    fx_dim: int = option(32, "feature extractor (U-Net) width")

    def __post_init__(self) -> None:
        check_ints(self, ("z_dim", "backgrounds", "parents", "children", "gf_dim", "df_dim", "encoder_dim", "bd_dim",
                          "bd_hidden", "fx_dim"))  # fmt: skip
        if self.gf_dim % 4:
            raise ValueError(f"gf_dim must be a multiple of 4, got {self.gf_dim}")
        if self.df_dim % 2:
            raise ValueError(f"df_dim must be even (the parent discriminator has df_dim / 2), got {self.df_dim}")
        if self.children % self.parents:
            raise ValueError(f"children ({self.children}) must be a multiple of parents ({self.parents})")

    def code_sizes(self) -> dict[str, int]:
        return {"z": self.z_dim, "b": self.backgrounds, "p": self.parents, "c": self.children}


# ----------------------------------------------------------------------------- generator


def _tile(code: Tensor, like: Tensor) -> Tensor:
    return code[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


class MixGenerator(nn.Module):
    """MixNMatch's G_NET. forward(z, c, p, b, z_parent=None, parent_features=None) ->
    FineGANOutput; codes are one-hot or soft (encoder softmax); z_parent defaults to z;
    parent_features (B, gf/4, 128, 128) replace the parent stage (feature mode)."""

    def __init__(self, config: MixNMatchConfig) -> None:
        super().__init__()
        self.config = config
        gf, ngf = config.gf_dim, config.gf_dim * 8
        self.background_trunk = Trunk(config.z_dim + config.backgrounds, ngf,
                                       [ngf // 2, ngf // 4, ngf // 8, ngf // 8, ngf // 16])  # fmt: skip
        self.background_image = nn.Sequential(conv3x3(gf // 2, 3), nn.Tanh())
        self.parent_trunk = Trunk(config.z_dim + config.parents, ngf, [ngf // 2, ngf // 4, ngf // 8, ngf // 32, ngf // 32])
        self.parent_joint = glu_block(gf // 4 + config.parents, gf // 4, False)
        self.parent_residual = nn.Sequential(*[ResBlock(gf // 4) for _ in range(3)])
        self.parent_image = nn.Sequential(conv3x3(gf // 4, 3), nn.Tanh())
        self.parent_mask = nn.Sequential(conv3x3(gf // 4, 1), nn.Sigmoid())
        self.child_joint = glu_block(config.children + gf // 4, gf // 2, False)
        self.child_residual = nn.Sequential(ResBlock(gf // 2), ResBlock(gf // 2))
        self.child_same = glu_block(gf // 2, gf // 4, False)
        self.child_image = nn.Sequential(conv3x3(gf // 4, 3), nn.Tanh())
        self.child_mask = nn.Sequential(conv3x3(gf // 4, 1), nn.Sigmoid())

    def parent_features(self, z: Tensor, p: Tensor) -> Tensor:
        h = self.parent_trunk(z, p)
        return self.parent_residual(self.parent_joint(torch.cat([h, _tile(p, h)], 1)))

    def forward(self, z: Tensor, c: Tensor, p: Tensor, b: Tensor, z_parent: Tensor | None = None,
                parent_features: Tensor | None = None) -> FineGANOutput:  # fmt: skip
        cfg = self.config
        n = z.shape[0]
        for name, code, size in (("z", z, cfg.z_dim), ("c", c, cfg.children), ("p", p, cfg.parents),
                                 ("b", b, cfg.backgrounds)):  # fmt: skip
            if code.shape != (n, size):
                raise ValueError(f"{name} must be ({n}, {size}), got {tuple(code.shape)}")
        background = self.background_image(self.background_trunk(z, b))
        small = F.interpolate(background, size=(BACKGROUND_D_SIZE, BACKGROUND_D_SIZE), mode="bilinear",
                              align_corners=True)  # fmt: skip
        if parent_features is None:
            parent_features = self.parent_features(z if z_parent is None else z_parent, p)
        parent_fg, parent_mask = self.parent_image(parent_features), self.parent_mask(parent_features)
        parent, parent_masked = composite(parent_fg, parent_mask, background)
        h = self.child_same(self.child_residual(self.child_joint(torch.cat([_tile(c, parent_features), parent_features], 1))))
        child_fg, child_mask = self.child_image(h), self.child_mask(h)
        child, child_masked = composite(child_fg, child_mask, parent)
        return FineGANOutput(background, small, parent, child, parent_fg, child_fg, parent_mask, child_mask,
                             parent_masked, child_masked, parent_features)  # fmt: skip


def tied_codes(batch: int, config: MixNMatchConfig, device: torch.device, generator: torch.Generator | None = None
               ) -> dict[str, Tensor]:  # fmt: skip
    """FineGAN's tied codes (c uniform, p = c // (Nc / Np), b = c) and z ~ N(0, I)."""
    z = torch.randn(batch, config.z_dim, generator=generator).to(device)
    c = torch.randint(0, config.children, (batch,), generator=generator).to(device)
    p, b = tie_codes(c, config.children, config.parents)
    return {"z": z, "b": one_hot(b, config.backgrounds), "p": one_hot(p, config.parents), "c": one_hot(c, config.children)}


def free_codes(batch: int, config: MixNMatchConfig, device: torch.device, generator: torch.Generator | None = None
               ) -> dict[str, Tensor]:  # fmt: skip
    """Independent (untied) codes, MixNMatch's prepare_code: z ~ N(0, I), b, p, c uniform one-hots."""
    z = torch.randn(batch, config.z_dim, generator=generator).to(device)
    draw = lambda n: one_hot(torch.randint(0, n, (batch,), generator=generator), n).to(device)  # noqa: E731
    b = draw(config.backgrounds)
    p = draw(config.parents)
    c = draw(config.children)
    return {"z": z, "b": b, "p": p, "c": c}


# ----------------------------------------------------------------------------- discriminators


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


def _image_encoder(width: int) -> list[nn.Module]:
    """FineGAN's encode_parent_and_child_img: 128 -> 8, to 8 width channels."""
    return [
        nn.Conv2d(3, width, 4, 2, 1, bias=False), _lrelu(),
        nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), _lrelu(),
        nn.Conv2d(width * 2, width * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 4), _lrelu(),
        nn.Conv2d(width * 4, width * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 8), _lrelu(),
    ]  # fmt: skip


class MixStageDiscriminator(nn.Module):
    """PARENT_D / CHILD_D: (B, 3, 128, 128) -> (code logits (B, classes), real/fake (B, 1, 1, 1)).
    `info_parameters()`: the code head (code_logits), which the generator's optimiser trains."""

    def __init__(self, df: int, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.encode = nn.Sequential(
            *_image_encoder(df),
            nn.Conv2d(df * 8, df * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(df * 8), _lrelu(),
            conv3x3(df * 8, df * 8), nn.BatchNorm2d(df * 8), _lrelu(),
        )  # fmt: skip
        self.code_logits = nn.Sequential(conv3x3(df * 8, df * 8), nn.BatchNorm2d(df * 8), _lrelu(),
                                         nn.Conv2d(df * 8, classes, 4, 4))  # fmt: skip
        self.real_fake = nn.Sequential(nn.Conv2d(df * 8, 1, 4, 4), nn.Sigmoid())

    def info_parameters(self) -> list[nn.Parameter]:
        return list(self.code_logits.parameters())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encode(x)
        return self.code_logits(h).view(-1, self.classes), self.real_fake(h)


class Encoder(nn.Module):
    """Four separate encoders. forward(x (B, 3, 128, 128)) -> {"z": 4 tanh (B, z_dim), "b",
    "p", "c": logits}; `soft(x)` gives softmax codes (their type_ 'softmax')."""

    def __init__(self, config: MixNMatchConfig) -> None:
        super().__init__()
        e = config.encoder_dim

        def head(out: int, tanh: bool) -> nn.Sequential:
            layers = [
                *_image_encoder(e),
                nn.Conv2d(e * 8, e * 16, 4, 2, 1, bias=False), nn.BatchNorm2d(e * 16), _lrelu(),
                conv3x3(e * 16, e * 8), nn.BatchNorm2d(e * 8), _lrelu(),
                conv3x3(e * 8, e * 8), nn.BatchNorm2d(e * 8), _lrelu(),
                nn.Conv2d(e * 8, out, 4, 4),
            ]  # fmt: skip
            return nn.Sequential(*layers, nn.Tanh()) if tanh else nn.Sequential(*layers)

        sizes = config.code_sizes()
        self.heads = nn.ModuleDict({name: head(sizes[name], name == "z") for name in CODES})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = {name: net(x).flatten(1) for name, net in self.heads.items()}
        out["z"] = out["z"] * 4
        return out

    def soft(self, x: Tensor) -> dict[str, Tensor]:
        out = self(x)
        return {k: (v if k == "z" else v.softmax(1)) for k, v in out.items()}


class GaussianNoise(nn.Module):
    """x + std N(0, 1), always (their Gaussian module does not look at training)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.randn_like(x) * self.std


class BiDiscriminator(nn.Module):
    """Bi_Dis_base: (image (B, 3, 128, 128), code (B, n)) -> critic score (B,)."""

    def __init__(self, code_dim: int, width: int = 16, hidden: int = 512) -> None:
        super().__init__()
        w = width
        chain = [3, w, w * 2, w * 4, w * 8, w * 16]
        layers: list[nn.Module] = []
        for a, b in zip(chain[:-1], chain[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        self.image = nn.Sequential(*layers, nn.Conv2d(w * 16, hidden, 4, 1, 0), nn.LeakyReLU(0.2), nn.Flatten())
        self.code = nn.Sequential(
            nn.Linear(code_dim, hidden), nn.LeakyReLU(0.2), GaussianNoise(0.5),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), GaussianNoise(0.3),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), GaussianNoise(0.3),
        )  # fmt: skip
        self.joint = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.LeakyReLU(0.2), nn.Linear(2 * hidden, 1))

    def forward(self, image: Tensor, code: Tensor) -> Tensor:
        return self.joint(torch.cat([self.image(image), self.code(code)], 1)).view(-1)


class BiDiscriminators(nn.Module):
    """Bi_Dis: one BiDiscriminator per code. forward(image, z, b, p, c) -> 4 scores (B,)."""

    def __init__(self, config: MixNMatchConfig) -> None:
        super().__init__()
        sizes = config.code_sizes()
        self.nets = nn.ModuleDict({name: BiDiscriminator(sizes[name], config.bd_dim, config.bd_hidden) for name in CODES})

    def forward(self, image: Tensor, z: Tensor, b: Tensor, p: Tensor, c: Tensor) -> tuple[Tensor, ...]:
        codes = {"z": z, "b": b, "p": p, "c": c}
        return tuple(self.nets[name](image, codes[name]) for name in CODES)


# ----------------------------------------------------------------------------- feature mode


def _down(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b * 2, 4, 2, 1), nn.BatchNorm2d(b * 2), GLU())


def _up(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(a, b * 2, 4, 2, 1), nn.BatchNorm2d(b * 2), GLU())


class FeatureExtractor(nn.Module):
    """The U-Net of feature mode: (B, 3, 128, 128) -> (B, out, 128, 128), out = gf / 4."""

    def __init__(self, out: int, width: int = 32) -> None:
        super().__init__()
        w = width
        d = [w, w, 2 * w, 4 * w, 8 * w, 16 * w, 16 * w]  # first, down1..down6
        self.first = nn.Sequential(glu_block(3, w, False), glu_block(w, w, False))
        self.downs = nn.ModuleList([_down(a, b) for a, b in zip(d[:-1], d[1:])])
        # up1: 16w -> 8w; then up k: concat with down (6 - k)'s output
        self.ups = nn.ModuleList([
            _up(16 * w, 8 * w), _up(8 * w + 16 * w, 16 * w), _up(16 * w + 8 * w, 8 * w),
            _up(8 * w + 4 * w, 4 * w), _up(4 * w + 2 * w, 2 * w), _up(2 * w + w, out),
        ])  # fmt: skip
        self.last = nn.Sequential(ResBlock(out), ResBlock(out))

    def forward(self, x: Tensor) -> Tensor:
        x = self.first(x)
        skips = []
        for down in self.downs[:-1]:
            x = down(x)
            skips.append(x)  # down1 .. down5
        x = self.ups[0](self.downs[-1](x))
        for up, skip in zip(self.ups[1:], reversed(skips)):
            x = up(torch.cat([x, skip], 1))
        return self.last(x)


class FeatureDiscriminator(nn.Module):
    """Dis_Dis: features (B, C, H, W) -> bilinear to 126 -> sigmoid patch scores (B, 1, 24, 24)."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.encode = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 0, bias=False), _lrelu(),
            nn.Conv2d(w, w * 2, 4, 2, 0, bias=False), _lrelu(),
            nn.Conv2d(w * 2, w * 4, 4, 1, 0, bias=False), _lrelu(),
        )  # fmt: skip
        self.real_fake = nn.Sequential(nn.Conv2d(w * 4, 1, 4, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, size=(BACKGROUND_D_SIZE, BACKGROUND_D_SIZE), mode="bilinear", align_corners=True)
        return self.real_fake(self.encode(x))
