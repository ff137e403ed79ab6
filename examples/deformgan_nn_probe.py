"""Why the Deformable GAN's full variant fails on random VGG features: the size of each loss
term's gradient at the generator, and the NN weight chosen on a validation split.

    python examples/deformgan_nn_probe.py grads OUT.json [--data DIR] [--checkpoint CKPT] [--batches 4]
    python examples/deformgan_nn_probe.py split DATA_DIR VAL_DIR [--val-fraction 0.2]
    python examples/deformgan_nn_probe.py train VAL_DIR RUN --nn-weight W [--steps 300]
    python examples/deformgan_nn_probe.py validate RUN/checkpoint.pt OUT VAL_EVAL_DIR

The README's table: DATA_DIR = `write_pose_pairs(DIR, (128, 64), 100, 0, name="synth")`
(the ablation's synthetic set), `split`, then `train` for W = 0.01, 1, 10 (300 steps) and
`validate` on VAL_DIR with its test pairs cut to a seeded 96 (numpy default_rng(0)).

`grads`: for a few training batches, the L2 norm over all generator parameters of the
gradient of each term, unweighted and at its weight: the adversarial term (weight 1), the
NN loss on random VGG19 relu1_2 features (paper weight 0.01) and, for comparison, the L1
term the `dsc` variant trains with (weight 100). It also reports the NN weight that would
give the NN term the L1 term's gradient norm. With --checkpoint, the generator and
discriminator of a run (any variant, same widths) replace the initial ones.

`split`: a validation set from the TRAINING split only: DATA_DIR's training identities are
divided by identity into VAL_DIR's train (the rest) and test (the held-out fraction) splits,
pairs re-made with the published rule. Training on VAL_DIR and testing on its "test" split
measures validation, never the real test split.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pydeform.data.pose_pairs import PosePairs
from pydeform.models.deformgan import DeformGANConfig
from pydeform.pose import read_annotations, write_annotations
from pydeform.pose.pairs import make_pairs, write_pairs
from pydeform.train.common import DistInfo
from pydeform.train.deformgan import DeformGANRecipe, TrainConfig, _generator_inputs
from pydeform.train.engine import Run


def _grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def grads(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    model = DeformGANConfig(variant="full", ngf=args.width, ndf=args.width)
    config = TrainConfig(model=model, random_vgg=True, data=args.data, name=args.name, device="cpu")
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    state = None
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        state = {k: v for k, v in state.items() if k in ("generator", "discriminator")}
    networks = DeformGANRecipe(config)
    networks.build(Run(config, info), None)
    if state:
        networks.generator.load_state_dict(state["generator"])
        networks.discriminator.load_state_dict(state["discriminator"])
    loss_nn = networks.loss_fn  # the full variant's loss: random VGG19 features drawn as a run draws them
    params = [p for p in networks.generator.parameters() if p.requires_grad]
    data = PosePairs(args.data, args.name, "train")
    loader = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))
    rows = []
    for i, batch in enumerate(loader):
        if i == args.batches:
            break
        fake = networks.generator(*_generator_inputs(batch))
        logits = networks.discriminator(batch["source"], batch["source_pose"], fake, batch["target_pose"])
        parts = loss_nn(logits, fake, batch["target"])
        l1 = (fake - batch["target"]).abs().mean()
        row = {
            "gan": float(parts["gan"]), "nn": float(parts["nn"]), "l1": float(l1),
            "grad_gan": _grad_norm(parts["gan"], params),
            "grad_nn": _grad_norm(parts["nn"], params),
            "grad_l1": _grad_norm(l1, params),
        }
        row["grad_nn_at_0.01"] = 0.01 * row["grad_nn"]
        row["grad_l1_at_100"] = 100 * row["grad_l1"]
        row["nn_weight_matching_l1_at_100"] = row["grad_l1_at_100"] / row["grad_nn"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    result = {"checkpoint": args.checkpoint, "width": args.width, "batches": rows, "mean": mean}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("mean", json.dumps(mean), flush=True)
    return 0


def split(args: argparse.Namespace) -> int:
    src, dst = Path(args.data), Path(args.val_dir)
    name = args.name
    poses = read_annotations(src / f"{name}-annotation-train.csv")
    people = sorted({n.split("_")[0] for n in poses})
    held = set(people[len(people) - max(1, round(len(people) * args.val_fraction)):])
    (dst / f"{name}-dataset").mkdir(parents=True, exist_ok=False)
    for split_name, keep in (("train", lambda p: p not in held), ("test", lambda p: p in held)):
        chosen = {n: k for n, k in poses.items() if keep(n.split("_")[0])}
        folder = dst / f"{name}-dataset" / split_name
        folder.mkdir()
        for image in chosen:
            shutil.copyfile(src / f"{name}-dataset" / "train" / image, folder / image)
        annotation = dst / f"{name}-annotation-{split_name}.csv"
        write_annotations(annotation, chosen)
        pairs, counts = make_pairs(annotation, identity=r"^(\d+)_", drop_distractors=False)
        write_pairs(dst / f"{name}-pairs-{split_name}.csv", pairs)
        print(split_name, counts, flush=True)
    return 0


def train_run(args: argparse.Namespace) -> int:
    from pydeform.train.deformgan import train

    config = TrainConfig(model=DeformGANConfig(variant="full", ngf=args.width, ndf=args.width), out=args.run,
                         data=args.val_dir, name=args.name, steps=args.steps, batch_size=4, random_vgg=True,
                         nn_weight=args.nn_weight, sample_every=0, checkpoint_every=50, log_every=5, workers=0,
                         progress=False)
    print(train(config), flush=True)
    return 0


def validate(args: argparse.Namespace) -> int:
    from pydeform.train.deformgan import evaluate

    result = evaluate(args.checkpoint, args.out, data=args.val_eval_dir, name=args.name, batch_size=8, workers=0,
                      progress=False)
    print(json.dumps({"step": result.get("step"), "generated": result["generated"],
                      "copy_source": result["copy_source"]}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("grads")
    p.add_argument("out")
    p.add_argument("--data", required=True)
    p.add_argument("--name", default="market")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--width", type=int, default=32)
    p.set_defaults(run=grads)
    p = commands.add_parser("split")
    p.add_argument("data")
    p.add_argument("val_dir")
    p.add_argument("--name", default="market")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.set_defaults(run=split)
    p = commands.add_parser("train")
    p.add_argument("val_dir")
    p.add_argument("run")
    p.add_argument("--nn-weight", type=float, required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--name", default="synth")
    p.set_defaults(run=train_run)
    p = commands.add_parser("validate")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("val_eval_dir")
    p.add_argument("--name", default="synth")
    p.set_defaults(run=validate)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
