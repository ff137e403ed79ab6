"""How far does an ST-GAN critic's gradient alone move placements toward the truth?

    python examples/stgan_critic_probe.py RUN/checkpoint.pt [--samples 200] [--iters 20] [--eps 0.01] [--oracle]

Takes the critic of an adversarial checkpoint and the test split it was trained on (which
must have p_true: the synthetic placement set) and, with no generator, moves every sample's
warp parameters uphill on the critic: p <- p + eps * g / ||g||, g = d D(composite(p)) / dp.
Prints the mean cosine between g and p_true - p at the start, and the mean corner error
(pixels) and critic score every 5 iterations. A generator trained on this critic learns from
the same gradients, so this shows how much placement signal the critic holds: if following
it directly barely lowers the error, a generator has little to learn from it.

--oracle scores each composite by minus its pixel distance to the sample's own real
composite instead: the gradient of an ideal critic that knew the answer. It measures the
data, not a critic: how much a gradient through the bilinear warp can say about the
placement at all (none where a misplaced foreground no longer overlaps its true place).
"""
from __future__ import annotations

import argparse

import torch
from torch.nn.functional import cosine_similarity
from torch.utils.data import default_collate

from pydeform.data.synth_placement import CORNERS, corner_error
from pydeform.geometry import composite, params_to_matrix
from pydeform.models.stgan import STGAN, STGANConfig, STGANDiscriminator
from pydeform.train.common import load_checkpoint
from pydeform.train.stgan import open_placement, synthetic_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--eps", type=float, default=0.01, help="step in p per iteration (L2 norm)")
    parser.add_argument("--oracle", action="store_true", help="score by -||composite - real|| instead of the critic")
    args = parser.parse_args()

    state = load_checkpoint(args.checkpoint)
    config = STGANConfig.from_dict(state["config"])
    if not args.oracle:
        if "discriminator" not in state:
            raise SystemExit(f"{args.checkpoint} has no critic (a supervised run?): use --oracle")
        critic = STGANDiscriminator(config.d_widths, config.init_std)
        critic.load_state_dict(state["discriminator"])
        critic.requires_grad_(False)
    warp = STGAN(config).warp
    trained = state["train_config"]
    root = trained["data"] or synthetic_data(config.size, trained["synth_train"], trained["synth_test"], False)
    test = open_placement(root, "test")
    batch = default_collate([test[i] for i in range(min(args.samples, len(test)))])
    if "p_true" not in batch:
        raise SystemExit(f"{root} has no p_true: nothing to measure against")
    h_true = params_to_matrix(batch["p_true"].double())
    corners = torch.tensor(CORNERS, dtype=torch.float64)

    p = batch["p_init"].clone()
    for i in range(args.iters + 1):
        p.requires_grad_(True)
        fake = composite(warp(batch["foreground"], p), batch["background"])
        if args.oracle:
            score = -(fake - batch["real"]).flatten(1).norm(dim=1)
        else:
            score = critic(fake).flatten(1).mean(1)
        (grad,) = torch.autograd.grad(score.sum(), p)
        p = p.detach()
        if i == 0:
            cosine = cosine_similarity(grad, batch["p_true"] - p, dim=1).mean().item()
            print(f"cosine(gradient, p_true - p_init) = {cosine:.3f} over {p.shape[0]} samples")
        if i % 5 == 0:
            error = corner_error(params_to_matrix(p.double()), h_true, corners, config.size).mean().item()
            print(f"iteration {i:3d}: corner error {error:.3f} px, score {score.mean().item():.6e}")
        p = p + args.eps * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)


if __name__ == "__main__":
    main()
