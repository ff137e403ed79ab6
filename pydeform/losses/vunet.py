"""The Variational U-Net's perceptual loss (CompVis/vunet deeploss.py VGG19Features,
main.py likelihood_loss):

    loss = 5.0 * sum_k (w_k * mean |Phi_k(x) - Phi_k(y)| + g_k * mean |G_k(x) - G_k(y)|)

over Phi_0 = the preprocessed input ("input_1") and VGG19 relu1_2, relu2_2, relu3_2, relu4_2,
relu5_2 (Keras' block{1..5}_conv2, whose outputs include the ReLU); G_k = F^T F / (4 h w),
the Gram matrix of layer k's (h w, c) features. The configs use w_k = 1 and g_k = 0, the
*_retrain configs g = (0, 0.05, 0.05, 0, 0, 0). main.py multiplies the whole of
make_loss_op (feature and Gram terms) by 5.0, and so does this loss.

The original's preprocessing is Keras' Caffe one (BGR, [0, 255] minus the mean pixel), so
the input term is on the 0..255 scale, which sets the balance with the KL term; that is the
default here (weights: a Caffe/Keras VGG19 converted to torchvision's key layout).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from pydeform.losses.perceptual import gram_matrix
from pydeform.nets.vgg import VGG19Features

__all__ = ["VUNET_LAYERS", "VUNetPerceptualLoss", "gram"]

VUNET_LAYERS = ("input", "relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")


def gram(features: Tensor) -> Tensor:
    """deeploss.grams: (B, C, H, W) -> (B, C, C) = F^T F / (4 H W), that is PATN's
    `gram_matrix` (F^T F / (C H W), float32 under autocast) scaled by C / 4."""
    return gram_matrix(features) * (features.shape[1] / 4.0)


class VUNetPerceptualLoss(nn.Module):
    """See the module docstring. x, y in [-1, 1]; returns (loss, per-layer terms (6,))."""

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        random_weights: bool = False,
        preprocessing: str = "caffe",
        feature_weights: tuple[float, ...] = (1.0,) * 6,
        gram_weights: tuple[float, ...] = (0.0,) * 6,
        scale: float = 5.0,
    ) -> None:
        super().__init__()
        if len(feature_weights) != len(VUNET_LAYERS) or len(gram_weights) != len(VUNET_LAYERS):
            raise ValueError(f"feature_weights and gram_weights need {len(VUNET_LAYERS)} values each "
                             f"({', '.join(VUNET_LAYERS)}), got {len(feature_weights)} and {len(gram_weights)}")  # fmt: skip
        self.vgg = VGG19Features(weights, VUNET_LAYERS[1:], random_weights=random_weights, input_range=(-1.0, 1.0),
                                 preprocessing=preprocessing)  # fmt: skip
        self.feature_weights, self.gram_weights, self.scale = tuple(feature_weights), tuple(gram_weights), scale

    def _features(self, images: Tensor) -> list[Tensor]:
        pre = self.vgg.preprocess(images)
        h, out = pre, [pre]
        wanted = {self.vgg_index(name): name for name in VUNET_LAYERS[1:]}
        for index, module in enumerate(self.vgg.features):
            h = module(h)
            if index in wanted:
                out.append(h)
        return out

    @staticmethod
    def vgg_index(name: str) -> int:
        from pydeform.nets.vgg import LAYERS

        return LAYERS[name]

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        fx = self._features(torch.cat([x, y]).float())
        terms = []
        for k, f in enumerate(fx):
            a, b = f.chunk(2)
            term = self.feature_weights[k] * (a - b).abs().mean()
            if self.gram_weights[k] > 0:
                term = term + self.gram_weights[k] * (gram(a) - gram(b)).abs().mean()
            terms.append(term)
        terms = torch.stack(terms)
        return self.scale * terms.sum(), terms
