"""ST-GAN (Lin et al., "ST-GAN: Spatial Transformer Generative Adversarial Networks for
Image Compositing", CVPR 2018): place an RGBA foreground on a background by a sequence of
homography updates, each predicted by its own generator.

Architecture (as published; `glasses/graph.py` of github.com/chenhsuanlin/spatial-transformer-GAN):

- Warp: 8 parameters p in ST-GAN's sl(3) basis -> exp of the traceless generator
  (`pydeform.geometry.params_to_matrix`), output -> input in normalized coordinates. Warps
  compose by adding parameters: p_k = p_{k-1} + dp_k (`compose_params`).
- Generator k (`WarpGenerator`) sees concat(background, foreground warped by the CURRENT
  p_{k-1}) (3 + 4 = 7 channels). Five 4x4 stride-2 convs + ReLU with 32/64/128/256/512
  filters, each followed by concatenating an average-pooled copy of the 7-channel input
  at the block's output size; fc 256 + ReLU; fc 8 -> dp_k.
- Discriminator (`STGANDiscriminator`): five 4x4 stride-2 convs + LeakyReLU(0.2)
  (32..512), then a 3x3 stride-1 conv to a 1-channel score map (WGAN critic: no sigmoid).
- All weights N(0, 0.01), biases 0 (their stdGP = stdD = 0.01), no normalisation.

Sizes: the convs use TensorFlow's "SAME" padding as the authors' code, so a stride-2 conv
maps a side n to ceil(n / 2) (144 -> 72 -> 36 -> 18 -> 9 -> 5; 64 -> 32 -> ... -> 2). The
pooled copy of the input follows that size exactly as their `downsample` does: zero-pad an
odd side by one at the end, then 2x2 average pooling. So the fc input is
(512 + 7) x ceil(H / 32) x ceil(W / 32): 519 x 2 x 2 at 64x64, 519 x 5 x 5 at 144x144.

The warp itself runs on one of three samplers (`ops`), which compute the same function:
"pydeform" (the fused `pydeform.ops.homography_sample`), "reference" (its pure-torch twin,
grid_sample) and "kornia" (`kornia.geometry.transform.warp_perspective` with the matrix
converted to kornia's input -> output pixel convention).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydeform.geometry import composite, compose_params, normalized_to_pixel, params_to_matrix, to_kornia
from pydeform.options import ModelConfig, option

__all__ = [
    "OPS",
    "WARP_DIM",
    "STGANConfig",
    "WarpGenerator",
    "STGANDiscriminator",
    "STGAN",
    "WarpSteps",
    "warp_sampler",
    "same_size",
]

OPS = ("pydeform", "reference", "kornia")
WARP_DIM = 8  # homography parameters
IN_CHANNELS = 3 + 4  # background RGB + warped foreground RGBA


@dataclass
class STGANConfig(ModelConfig):
    """Everything needed to rebuild the networks (saved in checkpoints).

    size: (H, W) of backgrounds and foregrounds (144x144 in the glasses experiment).
    warps: generators N (warp steps). ops: the warp sampler, one of OPS.
    g_widths / d_widths: filters of the stride-2 convs of generator / discriminator.
    fc: width of the generator's hidden fully connected layer. init_std: the N(0, std)
    of every weight (biases 0).
    """

    size: tuple[int, int] = option((144, 144), "image size (default: the data's; 64x64 synthetic, 144x144 CelebA)",
                                   parse="size", metavar="HxW")  # fmt: skip
    warps: int = option(5, "warp steps N, one generator each")
    ops: str = option("pydeform", "warp sampler (the same function)", choices=OPS, resume="free")
    g_widths: tuple[int, ...] = option((32, 64, 128, 256, 512), "generator conv filters", parse="ints")
    d_widths: tuple[int, ...] = option((32, 64, 128, 256, 512), "critic conv filters", parse="ints")
    fc: int = option(256, "width of the generator's hidden fully connected layer")
    init_std: float = option(0.01, "std of the N(0, std) initial weights")

    def __post_init__(self) -> None:
        if isinstance(self.size, str) or not isinstance(self.size, Sequence) or len(self.size) != 2:
            raise ValueError(f"size must be a (height, width) pair, got {self.size!r}")
        self.size = tuple(self.size)  # JSON round trips give lists
        self.g_widths, self.d_widths = tuple(self.g_widths), tuple(self.d_widths)
        for name, value in (("size[0]", self.size[0]), ("size[1]", self.size[1]), ("warps", self.warps), ("fc", self.fc)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if min(self.size) < 2:
            raise ValueError(f"size must be at least 2x2, got {self.size[0]}x{self.size[1]}")
        for name in ("g_widths", "d_widths"):
            widths = getattr(self, name)
            if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
                raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {widths!r}")
        if self.ops not in OPS:
            raise ValueError(f"ops must be one of {list(OPS)}, got {self.ops!r}")
        if not (isinstance(self.init_std, (int, float)) and math.isfinite(self.init_std) and self.init_std > 0):
            raise ValueError(f"init_std must be a positive number, got {self.init_std!r}")


# ----------------------------------------------------------------------------- layers


def same_size(n: int, blocks: int) -> int:
    """A side n after `blocks` stride-2 convs with "SAME" padding: ceil(n / 2) each time."""
    for _ in range(blocks):
        n = -(-n // 2)
    return n


class _SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: output side ceil(n / stride), the extra
    pixel of an odd total padding at the bottom/right (as the authors' convs)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for n, k, s in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1]):  # W, then H
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride)


def _halve(x: Tensor) -> Tensor:
    """2x2 average pooling to ceil(H / 2) x ceil(W / 2), an odd side zero-padded at the
    end first (the authors' `downsample`), so it matches a stride-2 SAME conv's output."""
    return F.avg_pool2d(F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2)), 2)


def _init_weights(module: nn.Module, std: float) -> None:
    # ST-GAN: every weight N(0, stdGP or stdD = 0.01), every bias 0 (createVariable in graph.py).
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- networks


class WarpGenerator(nn.Module):
    """One ST-GAN warp step: (background, currently warped foreground) -> dp (B, 8).

    Args:
        size: (H, W) of the images.
        widths: filters of the stride-2 conv blocks (32, 64, 128, 256, 512).
        fc: hidden fully connected width (256).
        init_std: std of the N(0, std) weights (0.01).
    """

    def __init__(
        self,
        size: tuple[int, int] = (144, 144),
        widths: Sequence[int] = (32, 64, 128, 256, 512),
        fc: int = 256,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        self.size = tuple(size)
        channels, convs = IN_CHANNELS, []
        for width in widths:
            convs.append(_SameConv(channels, width, 4, 2))
            channels = width + IN_CHANNELS  # + the pooled copy of the input
        self.convs = nn.ModuleList(convs)
        flat = channels * same_size(self.size[0], len(widths)) * same_size(self.size[1], len(widths))
        self.fc = nn.Sequential(nn.Linear(flat, fc), nn.ReLU(), nn.Linear(fc, WARP_DIM))
        _init_weights(self, init_std)

    def forward(self, background: Tensor, warped_foreground: Tensor) -> Tensor:
        """background (B, 3, H, W), warped_foreground (B, 4, H, W) (RGBA) -> dp (B, 8)."""
        _check_images(self.size, background=background, warped_foreground=warped_foreground)
        image = torch.cat([background, warped_foreground], dim=1)
        features = image
        for conv in self.convs:
            image = _halve(image)
            features = torch.cat([F.relu(conv(features)), image], dim=1)
        return self.fc(features.flatten(1))


class STGANDiscriminator(nn.Module):
    """ST-GAN's critic: image (B, 3, H, W) -> score map (B, 1, ceil(H/32), ceil(W/32))
    for 5 blocks (higher = more real; a WGAN critic, no sigmoid)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256, 512), init_std: float = 0.01) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [_SameConv(channels, width, 4, 2), nn.LeakyReLU(0.2)]
            channels = width
        layers.append(_SameConv(channels, 1, 3, 1))
        self.net = nn.Sequential(*layers)
        _init_weights(self, init_std)

    def forward(self, image: Tensor) -> Tensor:
        """image (B, 3, H, W) -> scores (B, 1, h, w)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
        return self.net(image)


def _check_images(size: tuple[int, int], **images: Tensor) -> None:
    batch = None
    for (name, image), channels in zip(images.items(), (3, 4)):
        want = (channels, *size)
        if not isinstance(image, Tensor) or image.dim() != 4 or tuple(image.shape[1:]) != want:
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"{name} must have shape (B, {want[0]}, {want[1]}, {want[2]}), got {got}")
        if batch is not None and image.shape[0] != batch:
            raise ValueError(f"{name} has batch {image.shape[0]} but the background has {batch}")
        batch = image.shape[0]


# ----------------------------------------------------------------------------- warping


def warp_sampler(ops: str) -> Callable[[Tensor, Tensor], Tensor]:
    """fn(image (B, C, H, W), h (B, 3, 3)) -> (B, C, H, W): bilinear warp, zeros outside,
    with h output -> input in normalized coordinates, on the chosen sampler:

    - "pydeform": `pydeform.ops.homography_sample(..., coords="normalized")`, the fused op;
    - "reference": `pydeform.ops.reference.homography_sample`, its pure-torch twin;
    - "kornia": `kornia.geometry.transform.warp_perspective` with
      M = to_kornia(normalized_to_pixel(h)) (input -> output pixels, coords.py).
    """
    if ops == "pydeform":
        from pydeform.ops import homography_sample

        return lambda image, h: homography_sample(image, h, coords="normalized")
    if ops == "reference":
        from pydeform.ops import reference

        return lambda image, h: reference.homography_sample(image, h, coords="normalized")
    if ops == "kornia":
        from kornia.geometry.transform import warp_perspective

        def kornia_warp(image: Tensor, h: Tensor) -> Tensor:
            size = tuple(image.shape[-2:])
            m = to_kornia(normalized_to_pixel(h, size))
            return warp_perspective(image, m, size, mode="bilinear", padding_mode="zeros", align_corners=True)

        return kornia_warp
    raise ValueError(f"ops must be one of {list(OPS)}, got {ops!r}")


@dataclass
class WarpSteps:
    """The result of applying warp steps: params[k] = p_k (B, 8), p_0 = p_init;
    updates[k - 1] = dp_k (B, 8); warped[k] = the foreground warped by p_k (B, 4, H, W);
    composites[k] = warped[k] over the background (B, 3, H, W); k = 0..steps."""

    params: list[Tensor]
    updates: list[Tensor]
    warped: list[Tensor]
    composites: list[Tensor]


class STGAN(nn.Module):
    """The N warp generators of ST-GAN and the warp that connects them.

    Args:
        config: an STGANConfig (size, warps, ops, widths, init).
    """

    def __init__(self, config: STGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generators = nn.ModuleList(
            WarpGenerator(config.size, config.g_widths, config.fc, config.init_std) for _ in range(config.warps)
        )
        self._sampler = warp_sampler(config.ops)

    def warp(self, foreground: Tensor, p: Tensor) -> Tensor:
        """foreground (B, 4, H, W) warped by ST-GAN parameters p (B, 8)."""
        return self._sampler(foreground, params_to_matrix(p))

    def forward(
        self, background: Tensor, foreground: Tensor, p_init: Tensor, steps: int | None = None, frozen: int = 0
    ) -> WarpSteps:
        """Apply warp steps 1..steps (default: all N): p_k = p_{k-1} + G_k(background,
        foreground warped by p_{k-1}).

        background (B, 3, H, W), foreground (B, 4, H, W) RGBA in the canonical frame,
        p_init (B, 8). frozen: the first `frozen` steps run without autograd (their
        generators are not trained), so only the later steps build a graph.
        Returns WarpSteps with p_0..p_steps and the warped foregrounds and composites.
        """
        steps = self.config.warps if steps is None else steps
        if not 0 <= steps <= self.config.warps:
            raise ValueError(f"steps must be in 0..{self.config.warps}, got {steps}")
        if not 0 <= frozen <= steps:
            raise ValueError(f"frozen must be in 0..steps={steps}, got {frozen}")
        _check_images(self.config.size, background=background, foreground=foreground)
        if p_init.shape != (background.shape[0], WARP_DIM):
            raise ValueError(f"p_init must have shape ({background.shape[0]}, {WARP_DIM}), got {tuple(p_init.shape)}")
        p = p_init
        warped = self.warp(foreground, p)
        result = WarpSteps([p], [], [warped], [composite(warped, background)])
        for k, generator in enumerate(self.generators[:steps]):
            with torch.set_grad_enabled(torch.is_grad_enabled() and k >= frozen):
                dp = generator(background, warped)
                p = compose_params(p, dp)
                warped = self.warp(foreground, p)
            result.params.append(p)
            result.updates.append(dp)
            result.warped.append(warped)
            result.composites.append(composite(warped, background))
        return result
