"""WGAN-GP (Gulrajani et al., NeurIPS 2017) as ST-GAN trains with it (`glasses/train_STGAN.py`
of github.com/chenhsuanlin/spatial-transformer-GAN):

    loss_D = mean D(fake) - mean D(real) + gp_weight * mean_b (||grad_x D(x_hat_b)|| - 1)^2
    loss_G = -mean D(fake) + dp_weight * mean_b ||dp_b||^2

with x_hat = alpha real + (1 - alpha) fake, alpha ~ U(0, 1) per sample, gp_weight 10 and
dp_weight 1 (their gradlambda, dplambda). D returns a score map; "D(x)" of the gradient is
the sum of a sample's scores, as tf.gradients of the map does.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["gradient_penalty", "mixed_gradient_penalty", "wgan_discriminator_loss", "wgan_generator_loss"]

# Inside the square root, once: keeps the norm differentiable at 0. ST-GAN adds its 1e-8 to every
# squared element (reduce_sum(g**2 + 1e-8)), i.e. D * 1e-8; the difference is negligible.
GRAD_EPS = 1e-8


def _check_pair(real: Tensor, fake: Tensor) -> None:
    for name, t in (("real", real), ("fake", fake)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() < 2:
            raise TypeError(f"{name} must be a floating tensor (B, ...), got {getattr(t, 'shape', type(t).__name__)}")
    if real.shape != fake.shape:
        raise ValueError(f"fake has shape {tuple(fake.shape)} but real has {tuple(real.shape)}")


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, alpha: Tensor | None = None
) -> Tensor:
    """Per-sample (||grad_x sum D(x_hat)|| - 1)^2 at x_hat = alpha real + (1 - alpha) fake.

    real, fake: (B, ...) the same shape; alpha: (B,) in [0, 1], default U(0, 1) from
    torch's global generator. The norm is sqrt(sum of squares + 1e-8). The graph is kept
    (create_graph), so the penalty trains the discriminator. Returns (B,).
    """
    _check_pair(real, fake)
    batch = real.shape[0]
    if alpha is None:
        alpha = torch.rand(batch, dtype=real.dtype, device=real.device)
    if alpha.shape != (batch,):
        raise ValueError(f"alpha must have shape ({batch},), got {tuple(alpha.shape)}")
    alpha = alpha.view(batch, *([1] * (real.dim() - 1)))
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    norm = (grad.flatten(1).square().sum(dim=1) + GRAD_EPS).sqrt()
    return (norm - 1).square()


def wgan_discriminator_loss(
    discriminator: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    gp_weight: float = 10.0,
    alpha: Tensor | None = None,
) -> dict[str, Tensor]:
    """The critic's WGAN-GP loss on a batch of real and fake images (B, ...).

    Returns {"total": mean D(fake) - mean D(real) + gp_weight * mean penalty,
    "wasserstein": mean D(real) - mean D(fake) (the critic's distance estimate),
    "gp": mean penalty}; fake is detached (the critic's step does not train the generator).
    """
    _check_pair(real, fake)
    fake = fake.detach()
    scores = discriminator(torch.cat([real, fake]))
    real_score, fake_score = scores[: real.shape[0]].mean(), scores[real.shape[0] :].mean()
    penalty = gradient_penalty(discriminator, real, fake, alpha).mean()
    return {
        "total": fake_score - real_score + gp_weight * penalty,
        "wasserstein": (real_score - fake_score).detach(),
        "gp": penalty.detach(),
    }


def wgan_generator_loss(fake_scores: Tensor, dp: Tensor | None = None, dp_weight: float = 1.0) -> dict[str, Tensor]:
    """The generator's loss: -mean D(fake) (+ dp_weight * mean_b ||dp_b||^2 when the warp
    update dp (B, 8) is given, ST-GAN's penalty on large updates).

    Returns {"total", "adv": -mean D(fake), "dp": mean ||dp||^2 (0 without dp)}.
    """
    adversarial = -fake_scores.mean()
    dp_norm = dp.square().sum(dim=1).mean() if dp is not None else torch.zeros_like(adversarial)
    return {"total": adversarial + dp_weight * dp_norm, "adv": adversarial.detach(), "dp": dp_norm.detach()}


def mixed_gradient_penalty(
    critic: Callable[..., Sequence[Tensor]], real: Sequence[Tensor], fake: Sequence[Tensor],
    alphas: Sequence[Tensor] | None = None, constant: float = 1.0,
) -> Tensor:  # fmt: skip
    """MixNMatch's gradient penalty for critics of several inputs (`cal_gradient_penalty(...,
    type='mixed')` in code/utils.py of github.com/Yuheng-Li/MixNMatch): each input j is
    interpolated on its own, x_hat_j = alpha_j real_j + (1 - alpha_j) fake_j with its own
    alpha_j (B,) ~ U(0, 1) per sample; the critic returns several score tensors; the penalty
    sums, over every (output i, input j) pair where output i depends on input j,

        mean_b (||grad_{x_hat_j} sum_b out_i + 1e-16|| - constant)^2

    (the 1e-16 is added to every gradient entry before the norm, as in their code). `alphas`
    default to torch.rand from the global generator. Graph kept (trains the critic)."""
    if len(real) != len(fake) or not real:
        raise ValueError(f"real and fake must be non-empty sequences of equal length, got {len(real)} and {len(fake)}")
    inputs = []
    for j, (r, f) in enumerate(zip(real, fake)):
        if r.shape != f.shape:
            raise ValueError(f"input {j}: real {tuple(r.shape)} and fake {tuple(f.shape)} differ")
        alpha = torch.rand(r.shape[0], device=r.device, dtype=r.dtype) if alphas is None else alphas[j]
        if alpha.shape != (r.shape[0],):
            raise ValueError(f"alphas[{j}] must have shape ({r.shape[0]},), one per sample, got {tuple(alpha.shape)}")
        alpha = alpha.view(-1, *([1] * (r.dim() - 1)))
        inputs.append((alpha * r.detach() + (1 - alpha) * f.detach()).requires_grad_(True))
    outputs = critic(*inputs)
    penalty = torch.zeros((), device=real[0].device)
    for out in outputs:
        grads = torch.autograd.grad(out.sum(), inputs, create_graph=True, retain_graph=True, allow_unused=True)
        for grad in grads:
            if grad is not None:
                norm = (grad.reshape(grad.shape[0], -1) + 1e-16).norm(2, dim=1)
                penalty = penalty + ((norm - constant) ** 2).mean()
    return penalty
