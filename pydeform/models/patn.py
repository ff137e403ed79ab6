"""Pose-attention transfer networks: PATN (Zhu et al., CVPR 2019, "Progressive Pose
Attention Transfer for Person Image Generation") and the nested residual attention variant
(Zhong & Tan 2021, "Nested Residual Attention Module-Based Human Pose Transfer").

The published code (tengteng95/Pose-Transfer) is followed layer by layer:
models/model_variants.py (`PATBlock`, `PATNModel`), models/networks.py
(`ResnetDiscriminator`, `ResnetBlock`, `get_norm_layer`, `weights_init_normal`, `define_G`,
`define_D`). Our own code; the source of each detail is named where it matters.

Generator (`PATNGenerator`), for images (B, 3, H, W) and poses (B, 36, H, W) (the 18
source + 18 target heatmaps):

    two encoders: reflect-pad 3, 7x7 conv -> ngf, norm, ReLU; two (3x3 stride-2 conv, norm,
                  ReLU) to 4 ngf channels at H/4 x W/4
    9 blocks:     a = pose_conv(x2); M = sigmoid(a); x1 = x1 + img_conv(x1) * M; x2 = cat(a, x1)
                  (block 0's pose input has 4 ngf channels, the others 8 ngf)
    decoder:      two (3x3 stride-2 transposed conv, norm, ReLU) to ngf, reflect-pad 3, 7x7
                  conv -> 3 (with bias), tanh

Discriminators (`ResnetDiscriminator`): reflect-pad 3, 7x7 conv -> ndf, norm, ReLU, two
stride-2 3x3 convs to 4 ndf, 3 residual blocks (dropout 0.5 inside), and no final 1-channel
conv: the GAN loss applies to every element of the (B, 4 ndf, H/4, W/4) map. The shape
discriminator sees (image, target heatmaps) (21 channels), the appearance discriminator
(image, source image) (6 channels). They return logits: the published Market model ends in
nn.Sigmoid() and uses BCELoss; pydeform applies the sigmoid inside the loss
(binary_cross_entropy_with_logits, the same function, stable under AMP).

Norm: "batch" (BatchNorm2d, affine, convs without bias) for Market, "instance"
(InstanceNorm2d without affine, convs with bias) for DeepFashion, as `get_norm_layer` and
the `use_bias` rule of the published code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pydeform.options import ModelConfig, check_ints, option

__all__ = [
    "PATNConfig",
    "PRESETS",
    "BLOCKS",
    "NORMS",
    "PATBlock",
    "NestedAttentionBlock",
    "PATNGenerator",
    "ResnetDiscriminator",
    "build_generator",
    "build_discriminators",
    "init_weights",
    "NUM_JOINTS",
]

NUM_JOINTS = 18
BLOCKS = ("patb", "nested")
NORMS = ("batch", "instance")


@dataclass(frozen=True)
class Preset:
    """A dataset's image size, norm, GAN loss, image pool, loss weights and batch size, as
    the authors' training scripts set them (train.sh and the README of Pose-Transfer)."""

    size: tuple[int, int]
    norm: str
    gan_loss: str  # "bce" (--no_lsgan) or "lsgan"
    pool_size: int
    lambda_l1: float  # lambda_A
    lambda_perceptual: float  # lambda_B
    lambda_gan: float
    batch_size: int
    data_name: str


PRESETS: dict[str, Preset] = {
    # train.sh: --no_lsgan --norm batch --batchSize 32 --lambda_A 10 --lambda_B 10 --lambda_GAN 5; pool_size
    # is the default 50.
    "market": Preset((128, 64), "batch", "bce", 50, 10.0, 10.0, 5.0, 32, "market"),
    # The README's DeepFashion command: --norm instance --batchSize 7 --lambda_A 1 --lambda_B 1 --lambda_GAN 5
    # --pool_size 0, LSGAN (no --no_lsgan); images 256x176.
    "fashion": Preset((256, 176), "instance", "lsgan", 0, 1.0, 1.0, 5.0, 7, "fasion"),
}


@dataclass
class PATNConfig(ModelConfig):
    """Everything needed to rebuild the networks (saved in checkpoints).

    preset: "market" or "fashion"; size and norm override the preset's. block: "patb" (PATN)
    or "nested" (Zhong & Tan). ngf, ndf: base widths (64 in the paper). n_blocks: attention
    blocks (9). d_blocks: residual blocks of each discriminator (3: --n_layers_D 3).
    inner_blocks: residual blocks inside each nested attention module.
    """

    preset: str = option("market", "market: 128x64, batch norm, BCE GAN, pool 50, weights 10/10/5; fashion: "
                         "256x176, instance norm, LSGAN, no pool, weights 1/1/5", choices=tuple(PRESETS))  # fmt: skip
    block: str = option("patb", "attention block: patb (PATN, Zhu et al. 2019) or nested (nested residual attention, "
                        "Zhong & Tan 2021)", choices=BLOCKS)  # fmt: skip
    size: tuple[int, int] | None = option(None, "override the preset's image size (tiny runs, other datasets); both "
                                          "sides divisible by 4", parse="size", metavar="HxW")  # fmt: skip
    norm: str | None = option(None, "normalisation of all networks (default: the preset's)", choices=NORMS)
    ngf: int = option(64, "generator base width (64 in the paper)")
    ndf: int = option(64, "discriminator base width (64 in the paper)")
    n_blocks: int = option(9, "attention blocks of the generator (9 in the paper)")
    d_blocks: int = option(3, "residual blocks of each discriminator (3 in the paper: --n_layers_D 3)")
    inner_blocks: int = option(1, "residual blocks inside each nested attention module (--block nested)")
    dropout: bool = option(True, "no dropout in the generator's blocks (the paper uses 0.5)", flag="--no-dropout")
    d_dropout: bool = option(True, "no dropout in the discriminators' residual blocks (the paper uses 0.5)",
                             flag="--no-d-dropout")  # fmt: skip

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {list(BLOCKS)}, got {self.block!r}")
        if self.norm is not None and self.norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {self.norm!r}")
        if self.size is not None:
            self.size = tuple(int(s) for s in self.size)  # JSON round trips give lists
            if len(self.size) != 2:
                raise ValueError(f"size must be (H, W), got {self.size}")
        check_ints(self, ("ngf", "ndf", "n_blocks", "inner_blocks"))
        check_ints(self, ("d_blocks",), minimum=0)
        height, width = self.image_size
        # Two stride-2 convs down and two transposed convs up give back the size exactly
        # only when 4 divides it; reflect padding needs at least 4 pixels at H/4 (pad 3 at full size).
        if height % 4 or width % 4 or min(height, width) < 8:
            raise ValueError(f"size {height}x{width}: both sides must be divisible by 4 and at least 8")

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.size) if self.size is not None else PRESETS[self.preset].size

    @property
    def norm_kind(self) -> str:
        return self.norm if self.norm is not None else PRESETS[self.preset].norm


# ----------------------------------------------------------------------------- layers


def _norm(kind: str, channels: int) -> nn.Module:
    # get_norm_layer: BatchNorm2d(affine=True), InstanceNorm2d(affine=False).
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels, affine=False)


def _conv3(cin: int, cout: int, bias: bool) -> list[nn.Module]:
    """Reflect-padded 3x3 conv (padding_type='reflect' of the published blocks)."""
    return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3, bias=bias)]


def _conv_unit(cin: int, cout: int, norm: str, dropout: bool, activation: nn.Module, last_norm: bool) -> nn.Sequential:
    """pad, conv cin->cin, norm, activation, [dropout 0.5], pad, conv cin->cout, [norm]:
    the body of `ResnetBlock` and of both branches of `PATBlock.build_conv_block`."""
    bias = norm == "instance"
    layers = [*_conv3(cin, cin, bias), _norm(norm, cin), activation]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers += _conv3(cin, cout, bias)
    if last_norm:
        layers.append(_norm(norm, cout))
    return nn.Sequential(*layers)


class ResnetBlock(nn.Module):
    """x + conv_unit(x) (networks.py `ResnetBlock`); `negative_slope` > 0 swaps the ReLU for
    LeakyReLU (the nested module's residual blocks)."""

    def __init__(self, dim: int, norm: str, dropout: bool, negative_slope: float = 0.0) -> None:
        super().__init__()
        activation = nn.LeakyReLU(negative_slope) if negative_slope > 0 else nn.ReLU()
        self.body = _conv_unit(dim, dim, norm, dropout, activation, last_norm=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PATBlock(nn.Module):
    """One pose-attention transfer block (model_variants.py `PATBlock`).

    dim: appearance channels (4 ngf). first: block 0, whose pose input has dim channels
    (the others get 2 dim: the previous pose code and the updated appearance).
    forward(x1 (B, dim, h, w), x2 (B, dim or 2 dim, h, w)) -> (x1', x2', M) with
    M = sigmoid(pose_conv(x2)), x1' = x1 + img_conv(x1) * M, x2' = cat(pose_conv(x2), x1').
    """

    def __init__(self, dim: int, norm: str, dropout: bool, first: bool) -> None:
        super().__init__()
        pose_in = dim if first else 2 * dim
        self.img_conv = _conv_unit(dim, dim, norm, dropout, nn.ReLU(), last_norm=True)
        # The attention branch ends in a bare conv: no norm, no activation (cal_att=True).
        self.pose_conv = _conv_unit(pose_in, dim, norm, dropout, nn.ReLU(), last_norm=False)

    def appearance(self, x1: Tensor) -> Tensor:
        return self.img_conv(x1)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = self.pose_conv(x2)
        attention = torch.sigmoid(a)
        x1 = x1 + self.appearance(x1) * attention
        return x1, torch.cat([a, x1], dim=1), attention


class NestedAttentionBlock(PATBlock):
    """The nested residual attention module (Zhong & Tan 2021): residual blocks with
    LeakyReLU(0.01) inside the attention module, on the appearance branch, under the mask:

        M = sigmoid(pose_conv(x2)); x1' = x1 + R(x1) * M; x2' = cat(pose_conv(x2), x1')

    with R = `inner_blocks` ResnetBlocks (x + conv_unit(x), LeakyReLU 0.01). The attended
    appearance x1' goes back into the pose branch as in PATN.

    Choices where the paper is silent (ours): the pose branch is PATN's unchanged; each
    inner residual block has the layers of PATN's appearance branch (two 3x3 convs with norm
    and dropout), so with inner_blocks=1 the two generators have exactly the same parameters
    and differ only in the inner skip and the activation: a fair comparison.
    """

    def __init__(self, dim: int, norm: str, dropout: bool, first: bool, inner_blocks: int = 1) -> None:
        super().__init__(dim, norm, dropout, first)
        self.img_conv = nn.Sequential(*[ResnetBlock(dim, norm, dropout, 0.01) for _ in range(inner_blocks)])


class PATNGenerator(nn.Module):
    """PATN's generator (`PATNModel` with n_blocks=9, n_downsampling=2).

    forward(image (B, 3, H, W) in [-1, 1], pose (B, 36, H, W): source then target heatmaps)
    -> (B, 3, H, W) in [-1, 1]; with return_attention=True also the list of the blocks'
    masks M_t (B, 4 ngf, H/4, W/4), t = 1..n_blocks.
    """

    def __init__(self, config: PATNConfig) -> None:
        super().__init__()
        self.config = config
        norm, ngf = config.norm_kind, config.ngf
        bias = norm == "instance"

        def encoder(cin: int) -> nn.Sequential:
            layers = [nn.ReflectionPad2d(3), nn.Conv2d(cin, ngf, 7, bias=bias), _norm(norm, ngf), nn.ReLU()]
            for mult in (1, 2):
                layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                           _norm(norm, ngf * mult * 2), nn.ReLU()]  # fmt: skip
            return nn.Sequential(*layers)

        self.image_encoder = encoder(3)
        self.pose_encoder = encoder(2 * NUM_JOINTS)
        dim = 4 * ngf
        if config.block == "patb":
            blocks = [PATBlock(dim, norm, config.dropout, first=t == 0) for t in range(config.n_blocks)]
        else:
            blocks = [NestedAttentionBlock(dim, norm, config.dropout, t == 0, config.inner_blocks)
                      for t in range(config.n_blocks)]  # fmt: skip
        self.blocks = nn.ModuleList(blocks)
        decoder: list[nn.Module] = []
        for mult in (4, 2):
            decoder += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                           bias=bias), _norm(norm, ngf * mult // 2), nn.ReLU()]  # fmt: skip
        decoder += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]  # the last conv has a bias in both norms
        self.decoder = nn.Sequential(*decoder)

    def forward(
        self, image: Tensor, pose: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        if pose.dim() != 4 or pose.shape[1] != 2 * NUM_JOINTS or pose.shape[0] != image.shape[0] \
                or pose.shape[-2:] != image.shape[-2:]:  # fmt: skip
            raise ValueError(f"pose must be (B, {2 * NUM_JOINTS}, H, W) matching image {tuple(image.shape)}, "
                             f"got {tuple(pose.shape)}")  # fmt: skip
        if image.shape[-2] % 4 or image.shape[-1] % 4:
            raise ValueError(f"image height and width must be divisible by 4, got {tuple(image.shape[-2:])}")
        x1, x2 = self.image_encoder(image), self.pose_encoder(pose)
        masks = []
        for block in self.blocks:
            x1, x2, attention = block(x1, x2)
            masks.append(attention)
        out = self.decoder(x1)
        return (out, masks) if return_attention else out


class ResnetDiscriminator(nn.Module):
    """networks.py `ResnetDiscriminator` (n_downsampling=2, n_blocks=d_blocks), returning
    logits (B, 4 ndf, H/4, W/4) (see the module docstring for the sigmoid)."""

    def __init__(self, in_channels: int, ndf: int, norm: str, blocks: int, dropout: bool) -> None:
        super().__init__()
        bias = norm == "instance"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ndf, 7, bias=bias), _norm(norm, ndf), nn.ReLU()]
        for mult in (1, 2):
            layers += [nn.Conv2d(ndf * mult, ndf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       _norm(norm, ndf * mult * 2), nn.ReLU()]  # fmt: skip
        layers += [ResnetBlock(4 * ndf, norm, dropout) for _ in range(blocks)]
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.model(x)


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """`weights_init_normal` of networks.py: every conv and transposed conv weight
    N(0, std), BatchNorm weights N(1, std) and biases 0; conv biases keep PyTorch's
    default initialisation (the published code leaves them)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def build_generator(config: PATNConfig) -> PATNGenerator:
    """The generator, initialised N(0, 0.02) (define_G calls init_weights)."""
    return init_weights(PATNGenerator(config))


def build_discriminators(config: PATNConfig) -> tuple[ResnetDiscriminator, ResnetDiscriminator]:
    """(shape D on image + target heatmaps, 21 channels; appearance D on image + source
    image, 6 channels). Following the code, not the brief's "init N(0, 0.02)": the
    published define_D never calls init_weights, so the discriminators keep PyTorch's
    default initialisation."""
    norm = config.norm_kind
    shape = ResnetDiscriminator(3 + NUM_JOINTS, config.ndf, norm, config.d_blocks, config.d_dropout)
    appearance = ResnetDiscriminator(6, config.ndf, norm, config.d_blocks, config.d_dropout)
    return shape, appearance
