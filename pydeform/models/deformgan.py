"""Deformable GAN (Siarohin et al., CVPR 2018, "Deformable GANs for Pose-based Human Image
Generation"): a U-Net generator whose skip connections warp the source image's features
part by part into the target pose, and a conditional patch discriminator.

Architecture (following the authors' code, `conditional_gan.py` of pose-gan):

- Encoders. Level 0 is a 3x3 stride-1 conv at the input resolution (no norm, no
  activation); level l = 1..n-1 is LeakyReLU(0.2) -> 4x4 stride-2 conv -> norm (the last
  level has no norm). Widths 64-128-256-512-512-512(-512) for ngf = 64, so level l has
  resolution H/2^l x W/2^l. The `market` preset (128x64) has n = 6 levels, `fashion`
  (256x256) n = 7.
- Deformable skips (variants `dsc`, `full`). Two encoders that share no weights: the
  appearance encoder sees concat(source image, source heatmaps) (21 channels), the pose
  encoder the target heatmaps (18 channels). At levels l = 0..3 (resolutions H/2^l, the
  levels `pydeform.data.PosePairs` gives theta/masks at) the appearance features are
  warped with `pydeform.nn.DeformableSkip` (multi_affine_warp, 10 parts, masks in the target frame, no identity, max
  over parts); every level is then concatenated with the pose encoder's features.
- `baseline`: a plain U-Net, one encoder on concat(source, source pose, target pose)
  (39 channels), no warping.
- Decoder: level l = n-2..1 is ReLU -> 4x4 stride-2 transposed conv -> norm (-> dropout
  0.5 in its first three blocks), each fed concat(previous output, skip of the level
  below); level l has the width of encoder level l+1 (512-512-512-256-128 for market).
  Output: concat(output, skip 0) -> ReLU -> 3x3 conv -> tanh, in (-1, 1).
- Discriminator: a pix2pix 70x70-style patch discriminator on concat(source image, source
  pose, image, target pose) (42 channels): 4x4 convs 64-128-256 stride 2, 512 stride 1,
  1-channel map stride 1, LeakyReLU(0.2), norm on all but the first and last; it returns
  logits. (The authors' discriminator used stride 2 throughout; the patch version keeps
  more output positions on small images.)

Norm and initial weights are the authors' by default (`norm="keras"`, `init="keras"`): their
`InstanceNormalization()` of keras_contrib, called with its default axis=None, normalises each
sample over all its channels and pixels with one scalar scale and shift (`SampleNorm`), and
their layers start from Keras's defaults (Glorot-uniform kernels, zero biases, scale 1).
`norm="instance"` (per-channel instance norm, which the paper's name suggests) and
`init="normal"` (N(0, 0.02), the DCGAN/pix2pix initialisation) are what this project used
before (the README's recorded runs say which they used).
The authors' `gan/train.py` also draws a separate batch for the discriminator's and for the
generator's update; `pydeform.train.deformgan` uses one batch for both (the pix2pix way).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pydeform.nn import DeformableSkip
from pydeform.options import ModelConfig, check_ints, option
from pydeform.pose import NUM_JOINTS, NUM_PARTS

__all__ = [
    "PRESETS",
    "VARIANTS",
    "OPS",
    "NUM_SKIP_LEVELS",
    "Preset",
    "DeformGANConfig",
    "SampleNorm",
    "norm_layer",
    "init_weights",
    "DeformableGenerator",
    "PatchDiscriminator",
    "build_generator",
    "build_discriminator",
]


@dataclass(frozen=True)
class Preset:
    """A dataset's image size (H, W), generator depth (levels), NN-loss window n and the
    file prefix of the authors' prepared files ("fasion" is their spelling)."""

    size: tuple[int, int]
    num_blocks: int
    nn_kernel: int
    data_name: str


PRESETS: dict[str, Preset] = {
    "market": Preset(size=(128, 64), num_blocks=6, nn_kernel=3, data_name="market"),  # Market-1501
    "fashion": Preset(size=(256, 256), num_blocks=7, nn_kernel=5, data_name="fasion"),  # DeepFashion
}
VARIANTS = ("baseline", "dsc", "full")  # plain U-Net + L1; deformable skips + L1; + NN loss
OPS = ("reference", "pydeform")  # pure-torch ops, or the fused kernels
NUM_SKIP_LEVELS = 4  # deformable skips at resolutions H/2^l, l = 0..3
NORMS = ("keras", "instance", "batch")  # keras: what the authors' InstanceNormalization() computes
INITS = ("keras", "normal")  # keras: the authors' (Keras defaults); normal: DCGAN/pix2pix's N(0, 0.02)


@dataclass
class DeformGANConfig(ModelConfig):
    """Everything needed to rebuild the networks (saved in checkpoints).

    preset: "market" or "fashion"; size / num_blocks / nn_kernel override the preset's
    (tiny runs, other datasets). variant: one of VARIANTS. ngf, ndf: generator and
    discriminator base widths (64 in the paper). d_layers: stride-2 convs of the
    discriminator (3 = the 70x70 patch). norm: one of NORMS (`norm_layer`). init: one of
    INITS (`init_weights`). ops: "pydeform" (the fused kernels) or "reference" (pure torch,
    for comparisons) for the warp and the NN loss.
    """

    preset: str = option("market", "market: 128x64, 6 levels, NN window 3; fashion: 256x256, 7 levels, NN window 5",
                         choices=tuple(PRESETS))  # fmt: skip
    variant: str = option("full", "baseline: U-Net + L1; dsc: deformable skips + L1; full: deformable skips + NN loss",
                          choices=VARIANTS)  # fmt: skip
    size: tuple[int, int] | None = option(None, "override the preset's image size (tiny runs, other datasets); both "
                                          "sides divisible by 2^(levels-1): 32 for market, 64 for fashion",
                                          parse="size", metavar="HxW")  # fmt: skip
    num_blocks: int | None = option(None, "encoder levels (default: the preset's)")
    nn_kernel: int | None = option(None, "window of the nearest-neighbour loss, odd (default: the preset's)")
    ngf: int = option(64, "generator base width (64 in the paper)")
    ndf: int = option(64, "discriminator base width (64 in the paper)")
    d_layers: int = option(3, "stride-2 convs of the discriminator (3: the 70x70 patch)")
    norm: str = option("keras", "normalisation of both networks. keras: the authors' (keras_contrib "
                       "InstanceNormalization() with axis=None: each sample over all its channels and pixels, scalar "
                       "scale and shift); instance: per channel (torch's InstanceNorm2d, affine); batch",
                       choices=NORMS)  # fmt: skip
    init: str = option("keras", "initial weights. keras: the authors' (Keras defaults: Glorot-uniform convs, zero "
                       "biases, norm scale 1); normal: N(0, 0.02), norm scales N(1, 0.02) (DCGAN/pix2pix)",
                       choices=INITS)  # fmt: skip
    ops: str = option("pydeform", "warp and NN-distance implementation: pydeform's fused kernels, or the pure-torch "
                      "reference (the same function)", choices=OPS, resume="free")  # fmt: skip

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {self.variant!r}")
        if self.ops not in OPS:
            raise ValueError(f"ops must be one of {list(OPS)}, got {self.ops!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {self.norm!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if self.size is not None:
            self.size = tuple(int(s) for s in self.size)  # JSON round trips give lists
        check_ints(self, ("ngf", "ndf", "d_layers"))
        blocks, (height, width) = self.blocks, self.image_size
        if blocks < NUM_SKIP_LEVELS + 1:
            raise ValueError(f"num_blocks must be >= {NUM_SKIP_LEVELS + 1}, got {blocks}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"nn_kernel must be a positive odd int, got {self.kernel}")
        # Every encoder level halves the size exactly, so the U-Net's skips line up.
        factor = 2 ** (blocks - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"size {height}x{width} must be divisible by 2^(num_blocks-1) = {factor} for {blocks} levels"
            )
        if min(height, width) // 2**self.d_layers < 3:
            raise ValueError(
                f"size {height}x{width} is too small for a discriminator with d_layers={self.d_layers}: "
                f"the shorter side must be at least {3 * 2**self.d_layers}"
            )

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return tuple(self.size) if self.size is not None else PRESETS[self.preset].size

    @property
    def blocks(self) -> int:
        """Number of encoder levels n."""
        return self.num_blocks if self.num_blocks is not None else PRESETS[self.preset].num_blocks

    @property
    def kernel(self) -> int:
        """NN-loss window n (3 market, 5 fashion)."""
        return self.nn_kernel if self.nn_kernel is not None else PRESETS[self.preset].nn_kernel

    @property
    def deformable(self) -> bool:
        return self.variant != "baseline"


# ----------------------------------------------------------------------------- layers


class SampleNorm(nn.Module):
    """keras_contrib's `InstanceNormalization()` as the authors' code calls it (default
    axis=None): each sample is normalised over all its channels and pixels at once,
    (x - mean) / (std + eps) with the population std and eps 1e-3 added to the std, then one
    learnt scale and one shift (scalars). Not per-channel instance norm, whatever its name."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        dims = tuple(range(1, x.dim()))
        mean = x.mean(dims, keepdim=True)
        std = (x - mean).square().mean(dims, keepdim=True).sqrt()
        return (x - mean) / (std + self.eps) * self.weight + self.bias


def norm_layer(kind: str, channels: int) -> nn.Module:
    """One of NORMS: "keras" (`SampleNorm`, the authors'), "instance" (per channel, with a
    learnt scale and shift per channel) or "batch"."""
    if kind == "keras":
        return SampleNorm()
    return nn.InstanceNorm2d(channels, affine=True) if kind == "instance" else nn.BatchNorm2d(channels)


def _down(in_channels: int, out_channels: int, norm: str | None) -> nn.Sequential:
    """LeakyReLU(0.2) -> 4x4 stride-2 conv (-> norm): (B, in, h, w) -> (B, out, h/2, w/2)."""
    layers: list[nn.Module] = [nn.LeakyReLU(0.2), nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=norm is None)]
    if norm is not None:
        layers.append(norm_layer(norm, out_channels))
    return nn.Sequential(*layers)


def _up(in_channels: int, out_channels: int, norm: str, dropout: bool) -> nn.Sequential:
    """ReLU -> 4x4 stride-2 transposed conv -> norm (-> dropout 0.5): (B, in, h, w) -> (B, out, 2h, 2w)."""
    layers: list[nn.Module] = [
        nn.ReLU(),
        nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),
        norm_layer(norm, out_channels),
    ]
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module, kind: str) -> None:
    """One of INITS. "keras": the authors' Keras defaults, Glorot-uniform conv kernels (for a
    transposed conv too: its limit sqrt(6 / (fan_in + fan_out)) is symmetric in the two),
    zero biases, norm scale 1 and shift 0. "normal": N(0, 0.02) kernels, norm scales
    N(1, 0.02) (DCGAN/pix2pix)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if kind == "keras":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (SampleNorm, nn.InstanceNorm2d, nn.BatchNorm2d)) and m.weight is not None:
            if kind == "keras":
                nn.init.ones_(m.weight)
            else:
                nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def encoder_widths(ngf: int, num_blocks: int) -> list[int]:
    """Channels of encoder levels 0..n-1: ngf * (1, 2, 4, 8, 8, ...)."""
    return [ngf * min(2**level, 8) for level in range(num_blocks)]


class _Encoder(nn.Module):
    """(B, in_channels, H, W) -> [level l: (B, widths[l], H/2^l, W/2^l) for l = 0..n-1]."""

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1)
        last = len(widths) - 1
        self.blocks = nn.ModuleList(
            _down(widths[i - 1], widths[i], None if i == last else norm) for i in range(1, len(widths))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        features = [self.stem(x)]
        for block in self.blocks:
            features.append(block(features[-1]))
        return features


def _warp_skip(skip: DeformableSkip, features: Tensor, theta: Tensor, masks: Tensor) -> Tensor:
    """The deformable skip under autocast: the warp wants one dtype for all its arguments,
    and in bfloat16 (8 mantissa bits) theta would be off by pixels at 256 px, so bfloat16
    features are warped in float32 (float16 keeps ~0.1 px)."""
    dtype = torch.float32 if features.dtype == torch.bfloat16 else features.dtype
    return skip(features.to(dtype), theta.to(dtype), masks.to(dtype)).to(features.dtype)


# ----------------------------------------------------------------------------- generator


class DeformableGenerator(nn.Module):
    """The Deformable GAN generator (or, with deformable=False, the U-Net baseline).

    Args:
        size: (H, W), divisible by 2^(num_blocks-1).
        num_blocks: encoder levels n (6 for 128x64, 7 for 256x256).
        ngf: width of level 0 (64).
        norm: one of NORMS (`norm_layer`). init: one of INITS (`init_weights`).
        deformable: two encoders + deformable skips at levels 0..3 (True), or one encoder
            on concat(source, source pose, target pose) (False, the baseline).
        ops: "pydeform" or "reference", the multi_affine_warp implementation
            (pydeform.nn.DeformableSkip's impl).
    """

    def __init__(
        self,
        size: tuple[int, int] = (128, 64),
        num_blocks: int = 6,
        ngf: int = 64,
        norm: str = "keras",
        deformable: bool = True,
        ops: str = "pydeform",
        init: str = "keras",
    ) -> None:
        super().__init__()
        self.size, self.num_blocks, self.deformable = tuple(size), num_blocks, deformable
        widths = encoder_widths(ngf, num_blocks)
        if deformable:
            self.appearance = _Encoder(3 + NUM_JOINTS, widths, norm)
            self.pose = _Encoder(NUM_JOINTS, widths, norm)
            self.skips = nn.ModuleList(DeformableSkip(NUM_PARTS, impl=ops) for _ in range(NUM_SKIP_LEVELS))
            skip_widths = [2 * w for w in widths]  # warped appearance + target pose
        else:
            self.encoder = _Encoder(3 + 2 * NUM_JOINTS, widths, norm)
            skip_widths = list(widths)
        # Decoder block i produces level n-2-i with the width of encoder level n-1-i.
        self.decoder = nn.ModuleList()
        channels = 0
        for i, level in enumerate(range(num_blocks - 2, -1, -1)):
            channels += skip_widths[level + 1]
            self.decoder.append(_up(channels, widths[level + 1], norm, dropout=i < 3))
            channels = widths[level + 1]
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels + skip_widths[0], 3, 3, 1, 1), nn.Tanh())
        init_weights(self, init)

    def _check(self, name: str, tensor: Tensor, shape: tuple[int, ...]) -> None:
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")

    def forward(
        self,
        source: Tensor,
        source_pose: Tensor,
        target_pose: Tensor,
        theta: Tensor | None = None,
        masks: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Generate the source person in the target pose.

        source (B, 3, H, W) in [-1, 1]; source_pose, target_pose (B, 18, H, W) heatmaps;
        theta (B, 4, 10, 2, 3): level l's part transforms target -> source on the
        H/2^l x W/2^l pixel grid; masks: 4 tensors (B, 10, H/2^l, W/2^l), l = 0..3 (the
        `theta`, `masks0`..`masks3` of `pydeform.data.PosePairs`). theta and masks are
        required by the deformable generator and ignored by the baseline.
        Returns (B, 3, H, W) in (-1, 1).
        """
        B = source.shape[0]
        H, W = self.size
        self._check("source", source, (B, 3, H, W))
        self._check("source_pose", source_pose, (B, NUM_JOINTS, H, W))
        self._check("target_pose", target_pose, (B, NUM_JOINTS, H, W))
        if self.deformable:
            if theta is None or masks is None:
                raise ValueError("the deformable generator needs theta and masks (the baseline does not)")
            self._check("theta", theta, (B, NUM_SKIP_LEVELS, NUM_PARTS, 2, 3))
            if len(masks) != NUM_SKIP_LEVELS:
                raise ValueError(f"masks must hold {NUM_SKIP_LEVELS} tensors (levels 0..3), got {len(masks)}")
            for level, mask in enumerate(masks):
                self._check(f"masks[{level}]", mask, (B, NUM_PARTS, H >> level, W >> level))
            appearance = self.appearance(torch.cat([source, source_pose], dim=1))
            pose = self.pose(target_pose)
            # Move the source-frame features to the target pose where they are fine enough
            # for the part masks to matter (levels 0..3); deeper levels are near-global.
            warped = [
                _warp_skip(skip, appearance[level], theta[:, level], masks[level])
                for level, skip in enumerate(self.skips)
            ]
            skips = [torch.cat([a, p], dim=1) for a, p in zip(warped + appearance[NUM_SKIP_LEVELS:], pose)]
        else:
            skips = self.encoder(torch.cat([source, source_pose, target_pose], dim=1))
        out = skips[-1]
        for i, block in enumerate(self.decoder):
            out = block(out if i == 0 else torch.cat([out, skips[-1 - i]], dim=1))
        return self.head(torch.cat([out, skips[0]], dim=1))


# ----------------------------------------------------------------------------- discriminator


class PatchDiscriminator(nn.Module):
    """Conditional patch discriminator (pix2pix 70x70 for d_layers = 3).

    Args:
        in_channels: channels of the concatenated condition + image (3 + 18 + 3 + 18 = 42).
        ndf: width of the first conv (64); doubles per layer up to 8 ndf.
        d_layers: 4x4 stride-2 convs; then a 4x4 stride-1 conv and the 1-channel 4x4 conv.
        norm: one of NORMS, on all convs but the first and last. init: one of INITS.
    """

    def __init__(
        self, in_channels: int = 2 * (3 + NUM_JOINTS), ndf: int = 64, d_layers: int = 3, norm: str = "keras",
        init: str = "keras",
    ) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1)]
        channels = ndf
        for i in range(1, d_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < d_layers else 1
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(channels, out, 4, stride, 1, bias=False), norm_layer(norm, out)]
            channels = out
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(channels, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)
        init_weights(self, init)

    def forward(self, source: Tensor, source_pose: Tensor, image: Tensor, target_pose: Tensor) -> Tensor:
        """source, image (B, 3, H, W); source_pose, target_pose (B, 18, H, W).
        Returns logits (B, 1, H/2^d - 2, W/2^d - 2) (for even sizes): real > 0 > fake."""
        return self.net(torch.cat([source, source_pose, image, target_pose], dim=1))


def build_generator(config: DeformGANConfig) -> DeformableGenerator:
    """The generator a config describes."""
    return DeformableGenerator(config.image_size, config.blocks, config.ngf, config.norm,
                               deformable=config.deformable, ops=config.ops, init=config.init)  # fmt: skip


def build_discriminator(config: DeformGANConfig) -> PatchDiscriminator:
    """The discriminator a config describes."""
    return PatchDiscriminator(2 * (3 + NUM_JOINTS), config.ndf, config.d_layers, config.norm, config.init)
