"""Conditional GAN losses and the Deformable GAN's generator objective.

The adversarial terms are the non-saturating GAN of Goodfellow et al. written as binary
cross-entropy on logits (numerically stable; the discriminators return logits, not
probabilities). The generator objective per variant (Siarohin et al., CVPR 2018):

    baseline, dsc:  L_cGAN + 100 * L1(generated, target)            (pix2pix's weight)
    full:           L_cGAN + 0.01 * L_NN(generated, target)         (docs/contracts.md)
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydeform.losses.nn_loss import NNLoss

__all__ = ["discriminator_loss", "generator_adversarial_loss", "gan_criterion", "GAN_CRITERIA", "DeformGANLoss"]

GAN_CRITERIA = ("bce", "lsgan")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-log D(real) - log(1 - D(fake)), each averaged over its logits (any shape).
    Computed in float32 so that fp16 logits under autocast do not lose the loss."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss -log D(fake), averaged over the logits (any shape)."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def gan_criterion(kind: str, prediction: Tensor, real: bool) -> Tensor:
    """pix2pix's `GANLoss` (as PATN uses it): the mean over the elements of `prediction`
    (any shape) of BCE against the label 1 (real) or 0 (fake) for "bce" (`--no_lsgan`; the
    prediction is a logit: the sigmoid is applied here, numerically stable), or of the
    squared difference to that label for "lsgan" (MSELoss). float32."""
    if kind not in GAN_CRITERIA:
        raise ValueError(f"kind must be one of {list(GAN_CRITERIA)}, got {kind!r}")
    prediction = prediction.float()
    label = torch.full_like(prediction, 1.0 if real else 0.0)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(prediction, label)
    return F.mse_loss(prediction, label)


class _ReferenceNNLoss(NNLoss):
    """NNLoss with the pure-torch patch_nn_distance (`ops="reference"`): the same features
    and mean, so the two implementations can be compared on the same model."""

    def forward(self, generated: Tensor, real: Tensor) -> Tensor:
        from pydeform.ops.reference import patch_nn_distance

        return patch_nn_distance(*self.feature_pair(generated, real), self.kernel_size, self.p)[0].mean()


class DeformGANLoss(nn.Module):
    """The Deformable GAN generator's objective for one variant.

    Args:
        variant: "baseline" or "dsc" (cGAN + L1) or "full" (cGAN + NN loss).
        nn_kernel: the NN loss's window n (3 Market-1501, 5 DeepFashion).
        vgg_weights: torchvision vgg19 state dict for the NN loss ("full" only).
        random_vgg: accept random VGG features instead ("full" only; smoke runs).
        vgg_preprocessing: "imagenet" (torchvision's weights) or "caffe" (`NNLoss`).
        l1_weight, nn_weight, gan_weight: the terms' weights (100, 0.01, 1).
        ops: "pydeform" or "reference", the patch_nn_distance implementation.
    """

    def __init__(
        self,
        variant: str = "full",
        nn_kernel: int = 3,
        vgg_weights: str | os.PathLike | None = None,
        random_vgg: bool = False,
        l1_weight: float = 100.0,
        nn_weight: float = 0.01,
        gan_weight: float = 1.0,
        ops: str = "pydeform",
        vgg_preprocessing: str = "imagenet",
    ) -> None:
        super().__init__()
        if variant not in ("baseline", "dsc", "full"):
            raise ValueError(f"variant must be 'baseline', 'dsc' or 'full', got {variant!r}")
        if ops not in ("reference", "pydeform"):
            raise ValueError(f"ops must be 'reference' or 'pydeform', got {ops!r}")
        self.variant, self.gan_weight = variant, gan_weight
        if variant == "full":
            loss_class = _ReferenceNNLoss if ops == "reference" else NNLoss
            self.nn_loss: nn.Module | None = loss_class(nn_kernel, 1, vgg_weights, random_vgg,
                                                        preprocessing=vgg_preprocessing)  # fmt: skip
            self.content_name, self.content_weight = "nn", nn_weight
        else:
            self.nn_loss = None
            self.content_name, self.content_weight = "l1", l1_weight

    def forward(self, fake_logits: Tensor, generated: Tensor, target: Tensor) -> dict[str, Tensor]:
        """fake_logits: D's logits on the generated image (any shape); generated, target:
        (B, 3, H, W) in [-1, 1]. Returns {"total", "gan", "l1" or "nn"}: scalars, the
        unweighted terms and their weighted sum "total" (float32)."""
        gan = generator_adversarial_loss(fake_logits)
        if self.nn_loss is not None:
            content = self.nn_loss(generated, target).float()
        else:
            content = (generated.float() - target.float()).abs().mean()
        total = self.gan_weight * gan + self.content_weight * content
        return {"total": total, "gan": gan, self.content_name: content}
