"""Perceptual (feature L1) and style (Gram matrix) losses on VGG19 features.

- `perceptual_l1(fake_features, real_features)`: mean |phi(fake) - phi(real)|, the real
  features detached. PATN's `L1_plus_perceptualLoss` (tengteng95/Pose-Transfer,
  losses/L1_plus_perceptualLoss.py) compares VGG19 `features[:4]` (conv1_1, relu, conv1_2,
  relu: relu1_2, `--perceptual_layers 3`) of images mapped from [-1, 1] to [0, 1] and
  normalised with the ImageNet mean and std, with `F.l1_loss` (`--percep_is_l1 1`):
  `PerceptualL1Loss` is that, through `pydeform.nets.VGG19Features`.
- `gram_matrix(features)`: phi phi^T / (C H W) per image, always computed in float32
  (autocast off), so that the sums of H W products cannot overflow float16 under AMP.
- `style_loss(fake, real, layers)`: sum over layers of the squared Frobenius distance
  ||G(phi_l(fake)) - G(phi_l(real))||_F^2, averaged over the batch (the nested residual
  attention paper's style loss, Zhong & Tan 2021; Pose-Transfer's own GramMSELoss divides by
  C^2 as well: an MSE over the entries). `StyleLoss` is that on VGG19 features.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydeform.nets.vgg import VGG19Features

__all__ = ["gram_matrix", "perceptual_l1", "style_loss", "PerceptualL1Loss", "StyleLoss"]


def _check_features(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be (B, C, H, W) features, got {tuple(x.shape)}")
    return x


def gram_matrix(features: Tensor) -> Tensor:
    """features (B, C, H, W) -> Gram matrices (B, C, C) = phi phi^T / (C H W) in float32
    (float64 stays float64), with autocast disabled."""
    _check_features(features, "features")
    b, c, h, w = features.shape
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    with torch.autocast(features.device.type, enabled=False):
        flat = features.reshape(b, c, h * w).to(dtype)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def perceptual_l1(fake_features: Tensor, real_features: Tensor) -> Tensor:
    """Mean absolute difference of two feature maps of the same shape, the real ones
    detached (no gradient reaches the target), in float32."""
    _check_features(fake_features, "fake_features")
    _check_features(real_features, "real_features")
    if fake_features.shape != real_features.shape:
        raise ValueError(f"fake_features {tuple(fake_features.shape)} and real_features "
                         f"{tuple(real_features.shape)} must have the same shape")  # fmt: skip
    return F.l1_loss(fake_features.float(), real_features.detach().float())


def style_loss(fake_features: dict[str, Tensor], real_features: dict[str, Tensor], layers: Sequence[str]) -> Tensor:
    """Sum over `layers` of ||G(fake_l) - G(real_l)||_F^2 (Gram matrices of `gram_matrix`),
    averaged over the batch; the real features are detached. float32."""
    if not layers:
        raise ValueError("layers must name at least one feature layer")
    total = None
    for layer in layers:
        if layer not in fake_features or layer not in real_features:
            raise ValueError(f"layer {layer!r} is missing from the features (have {sorted(fake_features)})")
        fake, real = _check_features(fake_features[layer], layer), _check_features(real_features[layer], layer)
        if fake.shape != real.shape:
            raise ValueError(f"layer {layer!r}: fake {tuple(fake.shape)} and real {tuple(real.shape)} differ")
        diff = gram_matrix(fake) - gram_matrix(real.detach())
        term = diff.pow(2).sum(dim=(1, 2)).mean()
        total = term if total is None else total + term
    return total


class PerceptualL1Loss(nn.Module):
    """PATN's perceptual term: L1 between VGG19 relu1_2 features of generated and real
    images in [-1, 1]. weights: a torchvision vgg19 state dict; random_weights: accept
    random features (tests, smoke runs)."""

    def __init__(self, weights: str | os.PathLike | None = None, random_weights: bool = False,
                 layer: str = "relu1_2") -> None:  # fmt: skip
        super().__init__()
        self.layer = layer
        self.features = VGG19Features(weights, (layer,), random_weights)

    def forward(self, generated: Tensor, real: Tensor) -> Tensor:
        if generated.shape != real.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} must match")
        with torch.no_grad():
            target = self.features(real)[self.layer]
        return perceptual_l1(self.features(generated)[self.layer], target)


class StyleLoss(nn.Module):
    """`style_loss` on VGG19 features of generated and real images in [-1, 1]."""

    def __init__(self, weights: str | os.PathLike | None = None, random_weights: bool = False,
                 layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4")) -> None:  # fmt: skip
        super().__init__()
        self.layers = tuple(layers)
        self.features = VGG19Features(weights, self.layers, random_weights)

    def forward(self, generated: Tensor, real: Tensor) -> Tensor:
        if generated.shape != real.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} must match")
        with torch.no_grad():
            target = self.features(real)
        return style_loss(self.features(generated), target, self.layers)
