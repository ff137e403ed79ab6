"""LPIPS v0.1 (Zhang et al., CVPR 2018), in torch without torchvision.

The facts follow the `lpips` package (richzhang/PerceptualSimilarity: `lpips/lpips.py`,
`lpips/pretrained_networks.py`):
- inputs in [-1, 1] pass the scaling layer (x - shift) / scale with
  shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450);
- five backbone activations: AlexNet relu1..relu5 (torchvision `alexnet().features`
  indices [0:2], [2:5], [5:8], [8:10], [10:12]) or VGG16 relu1_2, relu2_2, relu3_3, relu4_3,
  relu5_3 (`vgg16().features` [0:4], [4:9], [9:16], [16:23], [23:30]);
- each activation is unit-normalised over its channels (f / (|f|_2 + 1e-10)), the squared
  difference is weighted per channel by a non-negative 1 x 1 conv `lin{l}` (no bias),
  averaged over the pixels, and the five layers are summed.

Weights (nothing is downloaded; both files load strictly, unlike the `lpips` package's
`strict=False`):
- backbone: a torchvision `alexnet` / `vgg16` state-dict file (only `features.*` keys are
  used; every one of them must be there): `alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`;
- linear heads: the `lpips` package's v0.1 files `lpips/weights/v0.1/alex.pth` / `vgg.pth`
  (keys `lin0.model.1.weight` .. `lin4.model.1.weight`, the legacy pickle format).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydeform.nets.weights import load_state_file, load_strict

__all__ = ["LPIPS", "LPIPS_NETS"]

LPIPS_NETS = ("alex", "vgg")
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10

# ("C", out, kernel, stride, padding) conv + ReLU, ("M",) 3x3/2 max-pool (AlexNet) or 2x2/2 (VGG).
_ALEX = [("C", 64, 11, 4, 2), ("M",), ("C", 192, 5, 1, 2), ("M",), ("C", 384, 3, 1, 1), ("C", 256, 3, 1, 1),
         ("C", 256, 3, 1, 1)]
_VGG16 = [("C", 64, 3, 1, 1), ("C", 64, 3, 1, 1), ("M",), ("C", 128, 3, 1, 1), ("C", 128, 3, 1, 1), ("M",)] + \
    [("C", 256, 3, 1, 1)] * 3 + [("M",)] + [("C", 512, 3, 1, 1)] * 3 + [("M",)] + [("C", 512, 3, 1, 1)] * 3
# The features index after which each of the five activations is taken (exclusive slice ends).
_TAPS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
# The smallest image side for which every tapped activation exists (AlexNet: the stride-4 conv
# and two 3x3/2 pools before relu5; VGG16: four 2x2 pools before relu5_3).
MIN_SIZE = {"alex": 31, "vgg": 16}
_SOURCES = {
    "alex": ("torchvision alexnet", "alexnet-owt-7be5be79.pth", "lpips/weights/v0.1/alex.pth"),
    "vgg": ("torchvision vgg16", "vgg16-397923af.pth", "lpips/weights/v0.1/vgg.pth"),
}


def _features(net: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _ALEX if net == "alex" else _VGG16:
        if item[0] == "M":
            layers.append(nn.MaxPool2d(3, 2) if net == "alex" else nn.MaxPool2d(2, 2))
        else:
            _, out, kernel, stride, padding = item
            layers += [nn.Conv2d(channels, out, kernel, stride, padding), nn.ReLU()]
            channels = out
    assert len(layers) == _TAPS[net][-1]
    return nn.Sequential(*layers)


class _Linear(nn.Module):
    """`lpips.NetLinLayer` with dropout: model = (Dropout, 1x1 conv without bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class _Backbone(nn.Module):
    def __init__(self, net: str) -> None:
        super().__init__()
        self.features = _features(net)


class _Heads(nn.Module):
    def __init__(self, net: str) -> None:
        super().__init__()
        for index, channels in enumerate(CHANNELS[net]):
            self.add_module(f"lin{index}", _Linear(channels))


class LPIPS(nn.Module):
    """LPIPS v0.1 distance.

    Args:
        net: "alex" (the GFLA/DPTN/PIDM pose-transfer protocol) or "vgg".
        backbone_weights: torchvision alexnet / vgg16 state-dict file.
        linear_weights: the lpips package's v0.1 `alex.pth` / `vgg.pth`.
        random_weights: explicitly accept random weights for what is not given (tests).
        input_range: the range of the images passed in (mapped to [-1, 1]).

    `forward(x, y)`: two (B, 3, H, W) batches -> (B,) distances; `per_layer(x, y)`: (B, 5).
    """

    def __init__(self, net: str = "alex", backbone_weights: str | os.PathLike | None = None,
                 linear_weights: str | os.PathLike | None = None, *, random_weights: bool = False,
                 input_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"net must be one of {LPIPS_NETS}, got {net!r}")
        source, backbone_file, linear_file = _SOURCES[net]
        if not random_weights and (backbone_weights is None or linear_weights is None):
            raise ValueError(
                f"LPIPS({net!r}) needs two weight files (nothing is downloaded): backbone_weights=PATH to a {source} "
                f"state dict ({backbone_file}, from torchvision's model zoo) and linear_weights=PATH to the lpips "
                f"package's {linear_file} (pip download lpips, or github.com/richzhang/PerceptualSimilarity). "
                "Pass random_weights=True to accept random weights (tests only)."
            )
        low, high = input_range
        if not high > low:
            raise ValueError(f"input_range must be (low, high) with high > low, got {input_range}")
        self.net = net
        self.backbone = _Backbone(net)
        self.heads = _Heads(net)
        if random_weights:  # the trained heads are non-negative; random ones are made non-negative too
            for head in self._linears():
                head.weight.data.abs_()
        self.weight_paths: dict[str, Path | None] = {"backbone": None, "linear": None}
        if backbone_weights is not None:
            path = Path(backbone_weights)
            load_strict(self.backbone, load_state_file(path, f"LPIPS backbone ({source})"), path, source, "features.")
            self.weight_paths["backbone"] = path
        if linear_weights is not None:
            path = Path(linear_weights)
            load_strict(self.heads, load_state_file(path, f"LPIPS linear heads ({linear_file})"), path,
                        f"lpips v0.1 {net} linear-head")
            self.weight_paths["linear"] = path
        # x in input_range -> [-1, 1] -> (. - shift) / scale, folded into one affine map.
        shift, scale = torch.tensor(_SHIFT).view(1, 3, 1, 1), torch.tensor(_SCALE).view(1, 3, 1, 1)
        self.register_buffer("in_scale", 2 / (high - low) / scale, persistent=False)
        self.register_buffer("in_shift", ((-1 - 2 * low / (high - low)) - shift) / scale, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _linears(self) -> list[nn.Conv2d]:
        return [getattr(self.heads, f"lin{i}").model[1] for i in range(5)]

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # a fixed metric (no dropout)

    def activations(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) in input_range -> the five backbone activations."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point in input_range, got {images.dtype} (scale uint8 images "
                            "to the range first)")  # fmt: skip
        if min(images.shape[-2:]) < MIN_SIZE[self.net]:
            raise ValueError(f"LPIPS ({self.net}) needs images of at least {MIN_SIZE[self.net]}x{MIN_SIZE[self.net]} "
                             f"pixels, got {images.shape[-2]}x{images.shape[-1]}")  # fmt: skip
        h = images.to(self.in_scale.dtype) * self.in_scale + self.in_shift
        out, start = [], 0
        for end in _TAPS[self.net]:
            for index in range(start, end):
                h = self.backbone.features[index](h)
            out.append(h)
            start = end
        return out

    def per_layer(self, x: Tensor, y: Tensor) -> Tensor:
        """(B, 3, H, W) pairs -> (B, 5): each layer's spatially averaged weighted distance."""
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape != y.shape:
            raise ValueError(f"x and y must be tensors of one shape, got {getattr(x, 'shape', type(x))} "
                             f"and {getattr(y, 'shape', type(y))}")
        both = self.activations(torch.cat([x, y]))
        layers = []
        for f, lin in zip(both, self._linears()):
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS)
            a, b = f.chunk(2)
            layers.append(F.conv2d((a - b) ** 2, lin.weight).mean(dim=(1, 2, 3)))
        return torch.stack(layers, dim=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.per_layer(x, y).sum(dim=1)
