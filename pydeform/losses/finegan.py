"""FineGAN's losses, as `code/trainer.py` of github.com/kkanshul/finegan computes them
(train_Dnet, train_Gnet); MixNMatch's first stage keeps them. Scores are sigmoid
probabilities; BCE is torch's binary_cross_entropy (log clamped at -100), computed in
float32 outside autocast.

Background discriminator (stage 0), on 24x24 patch scores, w = the patch weights
(`pydeform.models.finegan.background_patch_weights`: 1 background, 0 touches the box),
N = all patches:

    real   = mean(BCE(rf_real, 1) * w) * N / sum(w)     (just the mean when sum(w) = 0)
    fake   = mean(BCE(rf_fake, 0))
    class  = mean(BCE(cls_real, w))                      (label 1: background)
    loss_D0 = bg_weight * (real + fake) + class          (bg_weight 10: cfg.TRAIN.BG_LOSS_WT)

Child discriminator (stage 2): loss_D2 = BCE(rf_real, 1) + BCE(rf_fake, 0) (means).

Generator (one backward, stepped by G's Adam, D1's Adam at G's rate and an Adam on D2's
jointConv and code head):

    bg_weight * BCE(rf_D0(fake bg), 1) + BCE(cls_D0(fake bg), 1)        background
    + CE(D1 logits(Pf * Pm), p)                                        parent info
    + BCE(rf_D2(C), 1) + CE(D2 logits(Cf * Cm), c)                     child adversarial + info

The parent discriminator has no adversarial loss (its real/fake head is unused).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bce", "background_d_loss", "child_d_loss", "finegan_g_loss", "BG_LOSS_WEIGHT"]

BG_LOSS_WEIGHT = 10.0  # cfg.TRAIN.BG_LOSS_WT


def bce(scores: Tensor, target: Tensor | float, reduction: str = "mean") -> Tensor:
    """binary_cross_entropy(scores, target) in float32, outside autocast."""
    with torch.autocast(scores.device.type, enabled=False):
        scores = scores.float()
        target = torch.full_like(scores, float(target)) if not isinstance(target, Tensor) else target.float()
        return F.binary_cross_entropy(scores, target, reduction=reduction)


def background_d_loss(
    class_real: Tensor, rf_real: Tensor, rf_fake: Tensor, weights: Tensor, bg_weight: float = BG_LOSS_WEIGHT
) -> dict[str, Tensor]:
    """The background discriminator's loss (see the module docstring); all (B, 1, 24, 24).
    Returns {"total", "real", "fake", "class"}."""
    if not (class_real.shape == rf_real.shape == rf_fake.shape == weights.shape):
        raise ValueError(f"shapes differ: class_real {tuple(class_real.shape)}, rf_real {tuple(rf_real.shape)}, "
                         f"rf_fake {tuple(rf_fake.shape)}, weights {tuple(weights.shape)}")  # fmt: skip
    weights = weights.float()
    real = (bce(rf_real, 1.0, "none") * weights).mean()
    kept = weights.sum()
    real = torch.where(kept > 0, real * weights.numel() / kept.clamp_min(1e-12), real)
    fake = bce(rf_fake, 0.0)
    classify = bce(class_real, weights)
    return {"total": bg_weight * (real + fake) + classify, "real": real, "fake": fake, "class": classify}


def child_d_loss(rf_real: Tensor, rf_fake: Tensor) -> dict[str, Tensor]:
    """The child discriminator's loss: BCE(real, 1) + BCE(fake, 0). Returns {"total", "real", "fake"}."""
    real, fake = bce(rf_real, 1.0), bce(rf_fake, 0.0)
    return {"total": real + fake, "real": real, "fake": fake}


def finegan_g_loss(
    bg_class_fake: Tensor, bg_rf_fake: Tensor, parent_logits: Tensor, parent: Tensor, child_rf_fake: Tensor,
    child_logits: Tensor, child: Tensor, bg_weight: float = BG_LOSS_WEIGHT,
) -> dict[str, Tensor]:  # fmt: skip
    """The generator's loss (see the module docstring). parent, child: (B,) code indices.
    Returns {"total", "background", "parent_info", "child_adv", "child_info"}."""
    background = bg_weight * bce(bg_rf_fake, 1.0) + bce(bg_class_fake, 1.0)
    with torch.autocast(parent_logits.device.type, enabled=False):
        parent_info = F.cross_entropy(parent_logits.float(), parent.long())
        child_info = F.cross_entropy(child_logits.float(), child.long())
    child_adv = bce(child_rf_fake, 1.0)
    total = background + parent_info + child_adv + child_info
    return {"total": total, "background": background, "parent_info": parent_info, "child_adv": child_adv,
            "child_info": child_info}  # fmt: skip
