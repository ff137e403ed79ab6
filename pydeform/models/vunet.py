"""The Variational U-Net (Esser, Sutter & Ommer, CVPR 2018), after the official TF1 code
(github.com/CompVis/vunet: nn.py, models.py, main.py). The networks only; the training
recipe is `pydeform.train.vunet`.

Where the paper and the code differ, this follows the code (marked "code, not paper"):

- every conv is weight-normalised, g * conv(x, V / ||V||) + b with V ~ N(0, 0.05), and
  initialised from data: one forward pass over the first batches sets g and b so that
  each layer's outputs have zero mean and unit variance (`data_dependent_init`; nn.py,
  itself from PixelCNN++);
- ELU everywhere, no normalisation layers; pre-activation residual blocks
  x + conv3x3(dropout(elu(cat(x, nin(elu(skip)))))) (nn.residual_block);
- stride-2 3x3 convs down with TensorFlow's 'SAME' padding (0 before, 1 after); subpixel
  upsampling (3x3 conv to 4C, then TensorFlow's depth_to_space);
- n_scales = 1 + log2(size) - bottleneck_factor; 32 filters doubling to a cap of 128; two
  residual blocks per scale; the appearance encoder runs on the part crops, which are
  2^box_factor times smaller, so it has box_factor fewer scales and starts at
  32 * 2^box_factor filters (main.py define_models);
- latents only at the two coarsest scales, Gaussians with a FIXED unit variance (code, not
  paper: the paper's figure suggests a learned variance; models.latent_sample uses
  stddev 1), so the KL per scale is 0.5 * sum (mu_p - mu_q)^2 (models.latent_kl);
- the prior p(z | pose) is autoregressive over the four sub-lattices of a 2x2
  space-to-depth, in TensorFlow's order (0,0), (0,1), (1,0), (1,1) (dec_down with
  nn.split_groups/merge_groups; code, not paper); in training it is fed the posterior
  samples (teacher forcing);
- the output is a linear weight-normalised 3x3 conv (dec_parameters), no tanh.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydeform.options import ModelConfig, option

__all__ = [
    "NUM_PARTS",
    "PRESETS",
    "ResidualBlock",
    "VUNet",
    "VUNetConfig",
    "WNConv2d",
    "data_dependent_init",
    "depth_to_space",
    "latent_kl",
    "merge_groups",
    "space_to_depth",
    "split_groups",
]

NUM_PARTS = 8  # part crops, 3 channels each (pydeform.pose.vunet_parts)


@dataclass(frozen=True)
class Preset:
    size: int
    box_factor: int
    bottleneck_factor: int
    batch_size: int


# main.py's configs: deepfashion.yaml (256, box factor 2, bottleneck factor 2, batch 8 -- the
# yaml omits the two factors, main.py's defaults are 2) and market.yaml (128, 1, 1, batch 16).
PRESETS = {
    "market": Preset(128, 1, 1, 16),
    "deepfashion": Preset(256, 2, 2, 8),
}


@dataclass
class VUNetConfig(ModelConfig):
    """The networks' settings (fixed for a run)."""

    preset: str = option("market", "market: 128x128 images, box factor 1, bottleneck factor 1 (batch 16); "
                         "deepfashion: 256x256, 2, 2 (batch 8)", choices=tuple(PRESETS))  # fmt: skip
    size: int | None = option(None, "square image side (default: the preset's); images are resized to it")
    box_factor: int | None = option(None, "part crops are size / 2^box_factor square (default: the preset's)")
    bottleneck_factor: int | None = option(None, "n_scales = 1 + log2(size) - bottleneck_factor (default: the "
                                           "preset's)")  # fmt: skip
    n_filters: int = option(32, "filters at the finest decoder scale (doubling per scale)")
    max_filters: int = option(128, "filter cap")
    latent_scales: int = option(2, "number of coarsest scales with latents")
    dropout: float = option(0.1, "dropout in every residual block (drop_prob of the configs)")

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}, got {self.preset!r}")
        preset = PRESETS[self.preset]
        for name in ("size", "box_factor", "bottleneck_factor"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset, name))
        for name, minimum in (("size", 4), ("box_factor", 0), ("bottleneck_factor", 0), ("n_filters", 1),
                              ("max_filters", 1), ("latent_scales", 1)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two, got {self.size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.box_factor >= self.n_scales:
            raise ValueError(f"box_factor {self.box_factor} leaves the appearance encoder no scale "
                             f"(n_scales = {self.n_scales})")  # fmt: skip
        if self.latent_scales > self.n_scales - self.box_factor:
            raise ValueError(f"latent_scales {self.latent_scales} exceeds the encoder's "
                             f"{self.n_scales - self.box_factor} scales")  # fmt: skip

    @property
    def n_scales(self) -> int:
        return 1 + int(round(math.log2(self.size))) - self.bottleneck_factor

    @property
    def box_size(self) -> int:
        return self.size // 2**self.box_factor


# ----------------------------------------------------------------------------- TensorFlow's layouts


def space_to_depth(x: Tensor, block: int = 2) -> Tensor:
    """TensorFlow's tf.space_to_depth in NCHW: output channel (dy * block + dx) * C + c
    holds input pixel (block*i + dy, block*j + dx) of channel c (the position is the outer
    index). torch's pixel_unshuffle puts the channel outer (c * block^2 + ...)."""
    b, c, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"space_to_depth: spatial size {h}x{w} is not divisible by {block}")
    x = x.view(b, c, h // block, block, w // block, block)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(b, block * block * c, h // block, w // block)


def depth_to_space(x: Tensor, block: int = 2) -> Tensor:
    """The inverse of `space_to_depth` (TensorFlow's tf.depth_to_space in NCHW)."""
    b, c4, h, w = x.shape
    if c4 % (block * block):
        raise ValueError(f"depth_to_space: {c4} channels are not divisible by {block * block}")
    c = c4 // (block * block)
    x = x.view(b, block, block, c, h, w)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(b, c, h * block, w * block)


def split_groups(x: Tensor) -> list[Tensor]:
    """nn.split_groups: the 4 sub-lattices (0,0), (0,1), (1,0), (1,1) of a 2x2 grid, each
    (B, C, H/2, W/2)."""
    return list(space_to_depth(x, 2).chunk(4, dim=1))


def merge_groups(groups: list[Tensor]) -> Tensor:
    """nn.merge_groups: the inverse of `split_groups`."""
    return depth_to_space(torch.cat(groups, dim=1), 2)


def latent_kl(q: Tensor, p: Tensor) -> Tensor:
    """models.latent_kl for unit-variance Gaussians: 0.5 * sum over (C, H, W) of
    (mu_p - mu_q)^2, averaged over the batch. q, p: (B, C, H, W) means."""
    return 0.5 * (p - q).square().flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------- layers


class WNConv2d(nn.Module):
    """A weight-normalised conv, g * conv(x, V / ||V||) + b (nn.conv2d / nn.dense of the
    original; a 1x1 conv is its `nin`). V ~ N(0, 0.05), g = 1, b = 0 until
    `data_dependent_init`. 3x3 convs use TensorFlow's 'SAME' padding: 1 on each side at
    stride 1, 0 before and 1 after at stride 2 (even inputs)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) * 0.05)
        self.g = nn.Parameter(torch.ones(out_channels))
        self.b = nn.Parameter(torch.zeros(out_channels))
        self.kernel_size, self.stride = kernel_size, stride
        total = max(kernel_size - stride, 0)  # TF 'SAME' on an input divisible by the stride
        self.padding = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)
        self.init_mode = False

    def forward(self, x: Tensor) -> Tensor:
        # tf.nn.l2_normalize over (kh, kw, in): x / sqrt(max(sum x^2, 1e-12)).
        norm = self.v.square().flatten(1).sum(1).clamp_min(1e-12).rsqrt()
        weight = self.v * norm.view(-1, 1, 1, 1)
        if any(self.padding):
            x = F.pad(x, self.padding)
        y = F.conv2d(x, weight, stride=self.stride)
        if self.init_mode:
            with torch.no_grad():
                mean = y.mean(dim=(0, 2, 3))
                var = y.var(dim=(0, 2, 3), unbiased=False)  # tf.nn.moments: the biased variance
                self.g.copy_(1.0 / torch.sqrt(var + 1e-10))
                self.b.copy_(-mean * self.g)
        return y * self.g.view(1, -1, 1, 1) + self.b.view(1, -1, 1, 1)


@contextmanager
def data_dependent_init(module: nn.Module) -> Iterator[None]:
    """Inside the context, a forward pass of `module` sets every WNConv2d's g and b from
    its outputs on that batch (layer by layer, each seeing its inputs' initialised
    layers, as TensorFlow's init pass did) and returns the initialised outputs."""
    layers = [m for m in module.modules() if isinstance(m, WNConv2d)]
    for layer in layers:
        layer.init_mode = True
    try:
        with torch.no_grad():
            yield
    finally:
        for layer in layers:
            layer.init_mode = False


class ResidualBlock(nn.Module):
    """nn.residual_block (not gated): x + conv3x3(dropout(elu([x, nin(elu(a))]))); without
    a skip input a: x + conv3x3(dropout(elu(x)))."""

    def __init__(self, channels: int, skip_channels: int | None, dropout: float) -> None:
        super().__init__()
        self.nin = WNConv2d(skip_channels, channels, 1) if skip_channels else None
        self.conv = WNConv2d(2 * channels if skip_channels else channels, channels, 3)
        self.dropout = dropout

    def forward(self, x: Tensor, a: Tensor | None = None) -> Tensor:
        if (a is None) != (self.nin is None):
            raise ValueError("ResidualBlock: a skip input is needed exactly when the block was built with one")
        residual = x if a is None else torch.cat([x, self.nin(F.elu(a))], dim=1)
        residual = F.dropout(F.elu(residual), self.dropout, self.training)
        return x + self.conv(residual)


class Upsample(nn.Module):
    """nn.upsample 'subpixel': 3x3 conv to 4C, then TensorFlow's depth_to_space."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = WNConv2d(in_channels, 4 * out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return depth_to_space(self.conv(x), 2)


# ----------------------------------------------------------------------------- the U-Nets


def _up_channels(n_scales: int, n_filters: int, max_filters: int) -> list[int]:
    channels = [n_filters]
    for _ in range(n_scales - 1):
        channels.append(min(2 * channels[-1], max_filters))
    return channels


class UpPass(nn.Module):
    """models.enc_up / dec_up: nin to n_filters, per scale two residual blocks (each output
    kept), a stride-2 conv to min(2 n, max) filters between scales. Returns the 2 * n_scales
    activations, finest first."""

    def __init__(self, in_channels: int, n_scales: int, n_filters: int, max_filters: int, dropout: float) -> None:
        super().__init__()
        self.channels = _up_channels(n_scales, n_filters, max_filters)
        self.nin = WNConv2d(in_channels, n_filters, 1)
        self.blocks = nn.ModuleList(
            nn.ModuleList(ResidualBlock(c, None, dropout) for _ in range(2)) for c in self.channels
        )
        self.downs = nn.ModuleList(WNConv2d(a, b, 3, stride=2) for a, b in zip(self.channels, self.channels[1:]))

    def forward(self, x: Tensor) -> list[Tensor]:
        hs, h = [], self.nin(x)
        for level, blocks in enumerate(self.blocks):
            for block in blocks:
                h = block(h)
                hs.append(h)
            if level < len(self.downs):
                h = self.downs[level](h)
        return hs


class EncoderDown(nn.Module):
    """models.enc_down: from the coarsest scale up, a residual block with the up pass's skip,
    then at the latent scales the posterior mean (a 3x3 conv), a sample, and a residual
    block whose skip is [up pass skip, z]. The original breaks out of the loop after the
    last latent scale, after one more (unused) upsampling; that upsampling is left out here
    (its output never reaches a loss)."""

    def __init__(self, channels: list[int], latent_scales: int, dropout: float) -> None:
        super().__init__()
        down = channels[::-1][:latent_scales]  # coarsest first
        self.nin = WNConv2d(down[0], down[0], 1)
        self.first = nn.ModuleList(ResidualBlock(c, c, dropout) for c in down)
        self.params = nn.ModuleList(WNConv2d(c, c, 3) for c in down)
        self.second = nn.ModuleList(ResidualBlock(c, 2 * c, dropout) for c in down)
        self.ups = nn.ModuleList(Upsample(a, b) for a, b in zip(down, channels[::-1][1:latent_scales]))

    def forward(self, hs: list[Tensor], sample: bool) -> tuple[list[Tensor], list[Tensor]]:
        """hs: the up pass's activations. Returns (posterior means qs, latents zs),
        coarsest first; zs = qs + N(0, 1) noise when `sample`, else the means."""
        gs = list(hs)
        h = self.nin(gs[-1])
        qs, zs = [], []
        for level in range(len(self.first)):
            h = self.first[level](h, gs.pop())
            q = self.params[level](h)
            z = q + torch.randn_like(q) if sample else q
            qs.append(q)
            zs.append(z)
            h = self.second[level](h, torch.cat([gs.pop(), z], dim=1))
            if level < len(self.ups):
                h = self.ups[level](h)
        return qs, zs


class _PriorScale(nn.Module):
    """dec_down's prior at one latent scale: a residual block on h, space-to-depth, then
    four groups; group i's mean is a 3x3 conv of the features, and the features of group
    i+1 are a residual block with group i's latent as skip input."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.pre = ResidualBlock(channels, None, dropout)
        self.params = nn.ModuleList(WNConv2d(4 * channels, channels, 3) for _ in range(4))
        self.feedback = nn.ModuleList(ResidualBlock(4 * channels, channels, dropout) for _ in range(3))

    def forward(self, h: Tensor, z_posterior: Tensor | None) -> tuple[Tensor, Tensor]:
        """Returns (prior mean, prior sample) at h's resolution; with z_posterior the
        groups are conditioned on its sub-lattices (training, transfer), else on the prior's
        own samples."""
        posterior_groups = split_groups(z_posterior) if z_posterior is not None else None
        features = space_to_depth(self.pre(h), 2)
        means, samples = [], []
        for i in range(4):
            mean = self.params[i](features)
            means.append(mean)
            sample = mean + torch.randn_like(mean) if posterior_groups is None else mean
            samples.append(sample)
            if i < 3:
                feedback = posterior_groups[i] if posterior_groups is not None else sample
                features = self.feedback[i](features, feedback)
        return merge_groups(means), merge_groups(samples)


class DecoderDown(nn.Module):
    """models.dec_down: from the coarsest scale, a residual block with the stickman up
    pass's skip; at the latent scales the prior (autoregressive over the sub-lattices, or a
    plain 3x3 conv where the map is 1 pixel high), then h = nin([h, z]) and a residual block
    with the next skip; elsewhere a second residual block; subpixel upsampling between
    scales; the output conv to 3 channels (dec_parameters)."""

    def __init__(self, channels: list[int], latent_scales: int, dropout: float, coarsest_height: int) -> None:
        super().__init__()
        down = channels[::-1]
        self.latent_scales = latent_scales
        self.nin = WNConv2d(down[0], down[0], 1)
        self.first = nn.ModuleList(ResidualBlock(c, c, dropout) for c in down)
        self.second = nn.ModuleList(ResidualBlock(c, c, dropout) for c in down)
        self.priors = nn.ModuleList()
        for level in range(latent_scales):
            c = down[level]
            if coarsest_height << level == 1:  # "no spatial correlations"
                self.priors.append(WNConv2d(c, c, 3))
            else:
                self.priors.append(_PriorScale(c, dropout))
        self.mix = nn.ModuleList(WNConv2d(2 * c, c, 1) for c in down[:latent_scales])
        self.ups = nn.ModuleList(Upsample(a, b) for a, b in zip(down, down[1:]))
        self.out = WNConv2d(down[-1], 3, 3)

    def forward(self, hs: list[Tensor], zs: list[Tensor] | None) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """hs: the stickman up pass's activations; zs: latents for the latent scales
        (coarsest first) -- posterior samples in training, posterior means for transfer --
        or None to sample from the prior. Returns (image, prior means, prior samples)."""
        gs = list(hs)
        h = self.nin(gs[-1])
        ps, prior_zs = [], []
        for level in range(len(self.first)):
            h = self.first[level](h, gs.pop())
            if level < self.latent_scales:
                given = zs[level] if zs is not None else None
                prior = self.priors[level]
                if isinstance(prior, _PriorScale):
                    p, z_prior = prior(h, given)
                else:
                    p = prior(h)
                    z_prior = p + torch.randn_like(p)
                ps.append(p)
                prior_zs.append(z_prior)
                z = given if given is not None else z_prior
                h = self.mix[level](torch.cat([h, z], dim=1))
            h = self.second[level](h, gs.pop())
            if level < len(self.ups):
                h = self.ups[level](h)
        return self.out(h), ps, prior_zs


class VUNet(nn.Module):
    """The Variational U-Net: an appearance encoder on the part crops (posterior q(z | x)),
    a stickman U-Net decoder with the autoregressive prior p(z | pose).

    Inputs: stickman (B, 3, S, S) in [-1, 1] (`pydeform.pose.vunet_stickman`), crops
    (B, 24, S/2^bf, S/2^bf) in [-1, 1] (`pydeform.pose.vunet_part_crops`).
    """

    def __init__(self, config: VUNetConfig) -> None:
        super().__init__()
        self.config = config
        n = config.n_scales
        self.dec_up = UpPass(3, n, config.n_filters, config.max_filters, config.dropout)
        enc_scales = n - config.box_factor
        self.enc_up = UpPass(3 * NUM_PARTS, enc_scales, config.n_filters * 2**config.box_factor, config.max_filters,
                             config.dropout)  # fmt: skip
        latent = config.latent_scales  # the scales where encoder and decoder meet must have equal widths
        if list(self.enc_up.channels[-latent:]) != list(self.dec_up.channels[-latent:]):
            raise ValueError(f"the encoder's and decoder's {latent} latent scales have different widths "
                             f"({list(self.enc_up.channels[-latent:])} and {list(self.dec_up.channels[-latent:])}): "
                             "raise max_filters, lower n_filters or box_factor, or use fewer latent scales")  # fmt: skip
        self.enc_down = EncoderDown(self.enc_up.channels, config.latent_scales, config.dropout)
        coarsest = config.size >> (n - 1)
        self.dec_down = DecoderDown(self.dec_up.channels, config.latent_scales, config.dropout, coarsest)

    def _check(self, stickman: Tensor | None, crops: Tensor | None) -> None:
        s, b = self.config.size, self.config.box_size
        if stickman is not None and (stickman.dim() != 4 or tuple(stickman.shape[1:]) != (3, s, s)):
            raise ValueError(f"stickman must be (B, 3, {s}, {s}), got {tuple(stickman.shape)}")
        if crops is not None and (crops.dim() != 4 or tuple(crops.shape[1:]) != (3 * NUM_PARTS, b, b)):
            raise ValueError(f"crops must be (B, {3 * NUM_PARTS}, {b}, {b}), got {tuple(crops.shape)}")

    def encode(self, crops: Tensor, sample: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        """Posterior means and latents (samples when `sample`), coarsest scale first."""
        self._check(None, crops)
        return self.enc_down(self.enc_up(crops), sample)

    def decode(self, stickman: Tensor, zs: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """(image, prior means, prior samples); zs None samples the appearance from the prior."""
        self._check(stickman, None)
        return self.dec_down(self.dec_up(stickman), zs)

    def forward(self, stickman: Tensor, crops: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The training pass (main.py train_forward_pass): posterior samples from the crops,
        decoded with the stickman, the prior fed the posterior samples.
        Returns (image (B, 3, S, S), posterior means qs, prior means ps)."""
        qs, zs = self.encode(crops, sample=True)
        image, ps, _ = self.decode(stickman, zs)
        return image, qs, ps

    def transfer(self, crops: Tensor, stickman: Tensor) -> Tensor:
        """main.py transfer_pass: the posterior MEANS of `crops`, decoded with `stickman`."""
        qs, _ = self.encode(crops, sample=False)
        return self.decode(stickman, qs)[0]

    def sample(self, stickman: Tensor) -> Tensor:
        """main.py test_forward_pass: an appearance drawn from the prior p(z | stickman)."""
        return self.decode(stickman, None)[0]

    def kl(self, qs: list[Tensor], ps: list[Tensor]) -> Tensor:
        """The KL of main.py: the sum over latent scales of `latent_kl`."""
        return sum((latent_kl(q, p) for q, p in zip(qs, ps)), torch.zeros((), device=qs[0].device))
