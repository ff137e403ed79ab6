"""One Deformable GAN training step (discriminator + generator update, forward and backward,
Adam steps) with pydeform's fused kernels against the same model on the pure-torch reference
ops, on the Market-1501 and DeepFashion presets.

    python benchmarks/deformgan_step.py [--device cpu|cuda|all] [--repeats 3] [--json out.json] [--check]

Model: the full variant (deformable skips + NN loss + GAN loss) at the paper's widths (ngf =
ndf = 64); the only difference between the two is `ops` ("pydeform" or "reference"), which
picks the multi_affine_warp of the four deformable skips and the patch_nn_distance of the NN
loss. The NN loss runs on randomly initialised VGG19 features (no weights are downloaded;
the cost is the same as with trained ones). Batch: 4 pairs for market (the trainer's default),
2 for fashion (as benchmarks/nn_loss.py), taken from a small synthetic pose-pair set written
at the preset's size, so theta and masks are those of real poses.

fwd_ms: the step's forward passes only (generator, discriminator on real and fake, the
generator's losses), under no_grad. fwd_bwd_ms: the whole training step,
`DeformGANRecipe.train_step` of `pydeform.train.deformgan`. peak_mb: the step's peak above what was in use
before it (networks and optimiser states already allocated).

Targets (issue 5): on a 2-core CPU, fashion preset, >= 1.5x faster per step and >= 2x lower
peak memory than the reference.
"""
from __future__ import annotations

import os
import sys
import tempfile

import torch
from torch.utils.data import default_collate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Impl, Session, devices, measure, parse_args, print_table, report_targets  # noqa: E402

from pydeform.data import PosePairs  # noqa: E402
from pydeform.data.synth_pose import write_pose_pairs  # noqa: E402
from pydeform.models.deformgan import DeformGANConfig  # noqa: E402
from pydeform.train.common import DistInfo, seed_everything  # noqa: E402
from pydeform.train.deformgan import DeformGANRecipe, TrainConfig  # noqa: E402
from pydeform.train.engine import Run  # noqa: E402

CASES = {"market": 4, "fashion": 2}  # preset -> batch size


def pose_batch(preset: str, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The first `batch_size` training pairs of a tiny synthetic set at the preset's size."""
    size = DeformGANConfig(preset=preset).image_size
    with tempfile.TemporaryDirectory() as root:
        write_pose_pairs(root, size, identities=3, seed=0, name="synth", images_per_identity=3, progress=False)
        pairs = PosePairs(root, "synth", "train")
        batch = default_collate([pairs[i] for i in range(batch_size)])
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def impl_for(ops: str, preset: str, batch: dict[str, torch.Tensor], device: torch.device) -> Impl:
    # norm/init of the recorded figures (the defaults before the authors' keras norm and init)
    model = DeformGANConfig(preset=preset, variant="full", ops=ops, norm="instance", init="normal")
    config = TrainConfig(model=model, random_vgg=True, device=device.type)
    networks = DeformGANRecipe(config)
    seed_everything(config.seed)  # the same weights for both
    networks.build(Run(config, DistInfo(0, 1, 0, device)), None)
    masks = [batch[f"masks{level}"] for level in range(4)]
    inputs = (batch["source"], batch["source_pose"], batch["target_pose"], batch["theta"], masks)

    def forward():
        with torch.no_grad():
            fake = networks.generator(*inputs)
            networks.discriminator(batch["source"], batch["source_pose"], batch["target"], batch["target_pose"])
            logits = networks.discriminator(batch["source"], batch["source_pose"], fake, batch["target_pose"])
            return networks.loss_fn(logits, fake, batch["target"])["total"]

    return Impl(ops, forward, lambda: networks.train_step(0, {"train": batch}))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    session = Session()
    records, checks = [], []
    for device in devices(args.device):
        print(f"\n{device.type}:")
        for preset, batch_size in CASES.items():
            batch = pose_batch(preset, batch_size, device)
            H, W = batch["source"].shape[-2:]
            case = f"{preset} step B={batch_size} {H}x{W}"
            impls = [impl_for(ops, preset, batch, device) for ops in ("pydeform", "reference")]
            mine, ref = measure(case, device, impls, args.repeats)
            records += [mine, ref]
            if device.type == "cpu" and preset == "fashion":
                speedup, memory = ref.fwd_bwd_ms / mine.fwd_bwd_ms, ref.peak_mb / mine.peak_mb
                threads = torch.get_num_threads()
                checks += [
                    (f"cpu fashion step ({threads} threads): {speedup:.2f}x faster >= 1.5x", speedup >= 1.5),
                    (f"cpu fashion step: peak memory {memory:.2f}x lower >= 2x", memory >= 2),
                ]
    print_table(records)
    session.finish(records, args.json)
    report_targets(checks, args.check)


if __name__ == "__main__":
    main()
