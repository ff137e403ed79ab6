"""One ST-GAN training iteration with pydeform's homography_sample against the same model
on the pure-torch reference sampler and on kornia's warp_perspective, at the shape of
ST-GAN's glasses experiment (batch 20, 144x144, the published widths).

    python benchmarks/stgan_step.py [--device cpu|cuda|all] [--repeats 5] [--json out.json]

The model is the one `pydeform train stgan` trains, built with `ops` = "pydeform",
"reference" or "kornia" (`pydeform.models.stgan.warp_sampler`); everything but the warp
sampler is identical. Columns:

- fwd_ms: the placement forward (no autograd): every warp step of the stage (generators
  and warps of the foreground) and the composites, as at test time;
- fwd_bwd_ms: one training iteration of the trainer (`pydeform.train.stgan._train_step`):
  one generator update (forward, critic score, backward through the warp, Adam) and 2
  critic updates with the gradient penalty (their updateD = 2), history of fakes included;
- peak_mb: peak memory of one training iteration (benchmarks/_common.py).

Case: stage 1 of 1 (one generator: 2 warps of the foreground per iteration, the initial
and the updated one). WARPS = 5 times stage 5 of 5 instead (ST-GAN's glasses model: 4
frozen generators and the 5th trained, 6 warps per iteration).
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Impl, Session, devices, measure, parse_args, print_table  # noqa: E402

from pydeform.models.stgan import OPS, STGANConfig  # noqa: E402
from pydeform.train.common import seed_everything  # noqa: E402
from pydeform.train.stgan import TrainConfig, _build_networks, _set_trainable, _train_step  # noqa: E402

BATCH, SIZE = 20, (144, 144)  # ST-GAN's glasses: batchSize 20, 144x144 crops
WARPS = 1  # the stage timed: generator WARPS trained, the earlier ones frozen


def make_batch(device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random backgrounds, RGBA foregrounds, reals in [0, 1] and ST-GAN's 0.1 N(0, 1) p_init."""
    return {
        "background": torch.rand(BATCH, 3, *SIZE, generator=generator).to(device),
        "foreground": torch.rand(BATCH, 4, *SIZE, generator=generator).to(device),
        "real": torch.rand(BATCH, 3, *SIZE, generator=generator).to(device),
        "p_init": (0.1 * torch.randn(BATCH, 8, generator=generator)).to(device),
    }


def impl_for(ops: str, warps: int, batch: dict[str, torch.Tensor], device: torch.device) -> Impl:
    config = TrainConfig(model=STGANConfig(size=SIZE, warps=warps, ops=ops), batch_size=BATCH, device=device.type)
    seed_everything(config.seed)  # the same weights for every ops
    networks = _build_networks(config, device)
    _set_trainable(networks.model, warps)
    stage = warps

    def forward():
        with torch.no_grad():
            return networks.model(batch["background"], batch["foreground"], batch["p_init"], steps=stage)

    def training_iteration():
        return _train_step(networks, config, stage, batch, batch["real"])

    return Impl(ops, forward, training_iteration)


def main() -> None:
    warps = WARPS
    args = parse_args(__doc__.splitlines()[0])
    session = Session()
    records = []
    generator = torch.Generator().manual_seed(0)
    name = f"st-gan glasses 20x144x144 stage {warps}/{warps}"
    for device in devices(args.device):
        print(f"\n{device.type}:")
        batch = make_batch(device, generator)
        records += measure(name, device, [impl_for(ops, warps, batch, device) for ops in OPS], args.repeats)
    print("\nAgainst the reference:")
    print_table(records)
    print("\nAgainst kornia:")
    print_table(records, baseline="kornia")
    session.finish(records, args.json)


if __name__ == "__main__":
    main()
