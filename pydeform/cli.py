"""The `pydeform` command.

    pydeform train deformgan [--data DIR] --out RUN --steps N [--preset market|fashion]
                             [--variant baseline|dsc|full] [--vgg19 PATH | --random-vgg] ...
    pydeform test deformgan --checkpoint RUN/checkpoint.pt --out DIR [--data DIR]
    pydeform synth pose-pairs --out DIR [--size 128x64] [--identities N] [--seed S]
    pydeform synth placement --out DIR [--size 64x64|144x144] [--train N] [--test M] [--seed S]
    pydeform train stgan [--data DIR|synthetic] --warps N --steps-per-stage S --out RUN [--supervised] ...
    pydeform test stgan --checkpoint RUN/checkpoint.pt --out DIR [--data DIR]
    pydeform pose import-openpose JSON_DIR --out ANNOTATION.csv [--model coco18|body25]
    pydeform pose make-pairs ANNOTATION.csv --out PAIRS.csv [--identity market|deepfashion|REGEX]
    pydeform data deepfashion-inshop ROOT --out DIR [--lists TRAIN TEST] [--crop]

Multi-process training: torchrun --nproc_per_node=K -m pydeform.cli train deformgan ...
(`python -m pydeform.cli` is the same command as `pydeform`).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from pydeform.data.cli import add_data_command
from pydeform.pose.cli import add_pose_command

__all__ = ["main", "build_parser"]


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected HxW like 128x64, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _add_run_flags(p: argparse.ArgumentParser, checkpoint_every: int, zero: str) -> None:
    """The flags every trainer shares: device, output cadence, seed, loader, progress bar.
    zero: when a cadence of 0 still writes (e.g. "only at the end")."""
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--sample-every", type=int, default=200, help=f"steps between sample grids (0: {zero})")
    p.add_argument("--checkpoint-every", type=int, default=checkpoint_every, help=f"steps between checkpoints (0: {zero})")
    p.add_argument("--log-every", type=int, default=10, help="steps between log.jsonl lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_test_flags(p: argparse.ArgumentParser, trainer: str, batch_size: int) -> None:
    """The flags every `pydeform test` command shares."""
    p.add_argument("--checkpoint", required=True, help=f"RUN/checkpoint.pt of `pydeform train {trainer}`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", help="dataset folder (default: the one the checkpoint was trained on)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def _add_train_deformgan(subparsers: argparse._SubParsersAction) -> None:
    from pydeform.models.deformgan import OPS, PRESETS, VARIANTS

    p = subparsers.add_parser(
        "deformgan",
        help="Deformable GAN (Siarohin et al., CVPR 2018)",
        description=(
            "Train the Deformable GAN. Without --data it trains on a synthetic pose-pair set, "
            "written once into $PYDEFORM_CACHE or ~/.cache/pydeform. Writes RUN/log.jsonl, "
            "RUN/samples/*.png (source | target pose | generated | real) and RUN/checkpoint.pt. "
            "Under torchrun it trains with DistributedDataParallel."
        ),
    )
    p.add_argument(
        "--data",
        help="folder in the Deformable GAN layout (<name>-annotation-*.csv, <name>-pairs-*.csv, <name>-dataset/)",
    )
    p.add_argument(
        "--name",
        help="file prefix of the dataset (default: market, or fasion for the fashion preset as the authors "
        "spelt it; 'synth' without --data)",
    )
    p.add_argument("--out", required=True, help="run folder (log, samples, checkpoint)")
    p.add_argument("--steps", type=int, required=True, help="total training steps (a resumed run continues up to it)")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="market",
        help="market: 128x64, 6 levels, NN window 3; fashion: 256x256, 7 levels, NN window 5",
    )
    p.add_argument(
        "--variant", choices=VARIANTS, default="full",
        help="baseline: U-Net + L1; dsc: deformable skips + L1; full: deformable skips + NN loss (default)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="per process (default 4)")
    vgg = p.add_mutually_exclusive_group()
    vgg.add_argument("--vgg19", metavar="PATH", help="torchvision vgg19 state dict for the NN loss (variant full)")
    vgg.add_argument(
        "--random-vgg", action="store_true",
        help="NN loss on random VGG19 features (smoke runs only, not the paper's loss)",
    )
    p.add_argument(
        "--resume", action="store_true",
        help="continue from RUN/checkpoint.pt (same losses as an uninterrupted run)",
    )
    _add_run_flags(p, checkpoint_every=1000, zero="only at the end")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA): torch.autocast + GradScaler")
    p.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default="float16")
    p.add_argument(
        "--ops", choices=OPS, default="pydeform",
        help="warp and NN-distance implementation: pydeform's fused kernels (default), or the pure-torch reference",
    )
    p.add_argument("--size", type=_size, metavar="HxW", help="override the preset's image size (tiny runs)")
    p.add_argument("--ngf", type=int, default=64, help="generator base width (64 in the paper)")
    p.add_argument("--ndf", type=int, default=64, help="discriminator base width (64 in the paper)")
    p.add_argument("--norm", choices=("instance", "batch"), default="instance")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--synth-identities", type=int, default=100, help="people in the synthetic set (without --data)")
    p.set_defaults(run=_run_train_deformgan, parser=p)


def _run_train_deformgan(args: argparse.Namespace) -> int:
    from pydeform.models.deformgan import DeformGANConfig
    from pydeform.train.deformgan import TrainConfig, train

    if args.variant == "full" and args.vgg19 is None and not args.random_vgg:
        args.parser.error(
            "the full variant's nearest-neighbour loss compares VGG19 conv1_2 features, and nothing is "
            "downloaded: pass --vgg19 PATH (a torchvision vgg19 state dict, e.g. vgg19-dcbb9e9d.pth), or "
            "--random-vgg to use randomly initialised features (the loss then compares random filter "
            "responses, not the paper's; for smoke tests), or --variant baseline/dsc (L1, no VGG)"
        )
    try:
        model = DeformGANConfig(
            preset=args.preset, variant=args.variant, size=args.size, ngf=args.ngf, ndf=args.ndf, norm=args.norm,
            ops=args.ops,
        )  # fmt: skip
        config = TrainConfig(
            model=model, out=args.out, data=args.data, name=args.name, steps=args.steps, batch_size=args.batch_size,
            vgg19=args.vgg19, random_vgg=args.random_vgg, resume=args.resume, device=args.device, amp=args.amp,
            amp_dtype=args.amp_dtype, sample_every=args.sample_every, checkpoint_every=args.checkpoint_every,
            log_every=args.log_every, seed=args.seed, workers=args.workers, lr=args.lr,
            synth_identities=args.synth_identities, progress=not args.no_progress,
        )  # fmt: skip
    except ValueError as exc:
        args.parser.error(str(exc))
    result = train(config)
    if "loss_d" in result:
        print("final " + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
    return 0


def _add_test_deformgan(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deformgan",
        help="Deformable GAN",
        description=(
            "Generate the test split with a trained Deformable GAN (eval mode); write the images, "
            "OUT/samples.png and OUT/metrics.json (SSIM, mask-SSIM, L1, PSNR of the generated "
            "images and of the copy-the-source baseline)."
        ),
    )
    _add_test_flags(p, "deformgan", batch_size=8)
    p.add_argument("--name", help="file prefix of the dataset (default: as in training)")
    p.add_argument("--ops", choices=("reference", "pydeform"), help="override the checkpoint's warp implementation")
    p.set_defaults(run=_run_test_deformgan, parser=p)


def _run_test_deformgan(args: argparse.Namespace) -> int:
    from pydeform.train.deformgan import evaluate, format_metrics

    result = evaluate(
        args.checkpoint, args.out, data=args.data, name=args.name, device=args.device,
        batch_size=args.batch_size, workers=args.workers, ops=args.ops, progress=not args.no_progress,
    )  # fmt: skip
    print(format_metrics(result), flush=True)
    print(f"wrote {args.out}/metrics.json and {result['pairs']} images in {args.out}/images", flush=True)
    return 0


def _add_synth_pose_pairs(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pose-pairs",
        help="articulated figures in the Market-1501 layout of the Deformable GAN",
        description=(
            "Write a synthetic pose-pair dataset in the Deformable GAN's Market-1501 format: "
            "<name>-dataset/{train,test}/*.png, <name>-annotation-{train,test}.csv, "
            "<name>-pairs-{train,test}.csv, split by identity. Deterministic for a seed."
        ),
    )
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--size", type=_size, default=(128, 64), metavar="HxW", help="image size (default 128x64)")
    p.add_argument("--identities", type=int, default=100, help="people (default 100; 20%% form the test split)")
    p.add_argument("--images-per-identity", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="market", help="file prefix (default market, as the authors' files)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the dataset of this --name in a non-empty --out (its old images are deleted)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_synth_pose_pairs, parser=p)


def _run_synth_pose_pairs(args: argparse.Namespace) -> int:
    from pydeform.data.synth_pose import write_pose_pairs

    try:
        dataset = write_pose_pairs(
            args.out, args.size, args.identities, args.seed, name=args.name,
            images_per_identity=args.images_per_identity, progress=not args.no_progress, overwrite=args.overwrite,
        )  # fmt: skip
    except (ValueError, FileExistsError, NotADirectoryError) as exc:
        args.parser.error(str(exc))
    images, pairs = dataset.num_images, dataset.num_pairs
    print(
        f"wrote {images['train']} + {images['test']} images, {pairs['train']} + {pairs['test']} pairs "
        f"(train + test) to {args.out}",
        flush=True,
    )
    return 0


def _add_synth_placement(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "placement",
        help="glasses to place on cartoon faces, with the correct ST-GAN warp known",
        description=(
            "Write the synthetic ST-GAN placement task: backgrounds with a face placed by a random "
            "similarity, RGBA glasses in the face's canonical frame, real composites at the correct "
            "placement, and placement-{train,test}.csv with p_true and p_init = p_true + 0.1 N(0, 1). "
            "Deterministic for a seed."
        ),
    )
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--size", type=_size, default=(64, 64), metavar="HxW",
                   help="image size (default 64x64; 144x144 is ST-GAN's glasses size)")
    p.add_argument("--train", type=int, default=2000, help="training samples (default 2000)")
    p.add_argument("--test", type=int, default=500, help="test samples (default 500)")
    p.add_argument("--foregrounds", type=int, default=32, help="glasses objects per split (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_synth_placement, parser=p)


def _run_synth_placement(args: argparse.Namespace) -> int:
    from pydeform.data.synth_placement import write_placement

    try:
        info = write_placement(args.out, args.size, args.train, args.test, args.seed, progress=not args.no_progress,
                               foregrounds=args.foregrounds)  # fmt: skip
    except ValueError as exc:
        args.parser.error(str(exc))
    counts = info["counts"]
    print(f"wrote {counts['train']} + {counts['test']} placement samples (train + test) of size "
          f"{info['size'][0]}x{info['size'][1]} to {args.out}", flush=True)  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- ST-GAN


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints like 32,64,128,256,512, got {text!r}")
    return widths


def _add_train_stgan(subparsers: argparse._SubParsersAction) -> None:
    from pydeform.models.stgan import OPS

    p = subparsers.add_parser(
        "stgan",
        help="ST-GAN (Lin et al., CVPR 2018): warp a foreground onto a background",
        description=(
            "Train ST-GAN in stages: the critic alone, then warp generators 1..N, each stage adding a "
            "generator and freezing the earlier ones (WGAN-GP; --supervised: L2 on the warp parameters). "
            "Without --data it trains on the synthetic placement set, written once into $PYDEFORM_CACHE or "
            "~/.cache/pydeform. Writes RUN/log.jsonl, RUN/samples/*.png (background | initial composite | "
            "composite after each warp | real) and RUN/checkpoint.pt."
        ),
    )
    p.add_argument(
        "--data", default="synthetic",
        help="'synthetic' (default), a folder of `pydeform synth placement`, or a CelebA root (with --glasses)",
    )
    p.add_argument("--glasses", metavar="DIR", help="folder of RGBA glasses PNGs: --data is then a CelebA root")
    p.add_argument("--out", required=True, help="run folder (log, samples, checkpoint)")
    p.add_argument("--warps", type=int, default=5, help="warp steps N, one generator each (default 5)")
    p.add_argument("--steps-per-stage", type=int, required=True, help="training steps of each warp stage")
    p.add_argument("--d-steps", type=int, help="steps of the critic-only stage 0 (default: --steps-per-stage)")
    p.add_argument(
        "--supervised", action="store_true",
        help="pretraining mode: learn to undo perturbations of p_true with an L2 loss (needs data with p_true)",
    )
    p.add_argument(
        "--size", type=_size, metavar="HxW",
        help="image size (default: the data's; 64x64 synthetic, 144x144 CelebA)",
    )
    p.add_argument("--batch-size", type=int, default=20, help="default 20 (ST-GAN's)")
    p.add_argument("--lr-g", type=float, default=1e-5, help="generator Adam lr (default 1e-5, ST-GAN's)")
    p.add_argument("--lr-d", type=float, default=1e-5, help="critic Adam lr (default 1e-5, ST-GAN's)")
    p.add_argument("--d-updates", type=int, default=2, help="critic updates per generator update (default 2)")
    p.add_argument("--gp-weight", type=float, default=10.0, help="gradient penalty weight (default 10)")
    p.add_argument("--dp-weight", type=float, default=1.0, help="weight of mean ||dp||^2 in the generator loss")
    p.add_argument("--history", type=int, default=1000, help="capacity of the history of fakes (0: none)")
    p.add_argument(
        "--init-noise", type=float, default=0.1,
        help="--supervised: std of the fresh perturbation p_init = p_true + s N(0, 1) (0: the data's p_init)",
    )
    p.add_argument(
        "--paired-reals", action="store_true",
        help="critic reals = each sample's own real composite (same background; lower variance, not ST-GAN's "
        "unpaired setting)",
    )
    p.add_argument(
        "--init-from-previous", action="store_true",
        help="start generator k >= 2 as a copy of generator k-1 (ST-GAN's --loadGP prev)",
    )
    p.add_argument(
        "--d-init-noise", type=float, default=0.0,
        help="stage 0: critic fakes at p_init + s N(0, 1) (ST-GAN's critic-only stage used larger perturbations)",
    )
    p.add_argument("--ops", choices=OPS, default="pydeform", help="warp sampler (the same function)")
    p.add_argument("--g-widths", type=_widths, default=(32, 64, 128, 256, 512), help="generator conv filters")
    p.add_argument("--d-widths", type=_widths, default=(32, 64, 128, 256, 512), help="critic conv filters")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt (bit-exact)")
    _add_run_flags(p, checkpoint_every=500, zero="stage ends only")
    p.add_argument("--synth-train", type=int, default=2000, help="synthetic training samples (without --data)")
    p.add_argument("--synth-test", type=int, default=500, help="synthetic test samples (without --data)")
    p.set_defaults(run=_run_train_stgan, parser=p)


def _stgan_size(args: argparse.Namespace) -> tuple[int, int]:
    """--size, else the placement folder's info.json size, else 144x144 (CelebA) or 64x64."""
    import json
    from pathlib import Path

    if args.size is not None:
        return args.size
    if args.glasses is not None:
        return (144, 144)
    info = Path(args.data) / "info.json"
    if args.data != "synthetic" and info.is_file():
        return tuple(json.loads(info.read_text())["size"])
    return (64, 64)


def _run_train_stgan(args: argparse.Namespace) -> int:
    from pydeform.models.stgan import STGANConfig
    from pydeform.train.stgan import TrainConfig, train

    if args.supervised and args.glasses is not None:
        args.parser.error("--supervised learns p_true, which CelebA (--glasses) does not have; train adversarially")
    try:
        model = STGANConfig(
            size=_stgan_size(args), warps=args.warps, ops=args.ops, g_widths=args.g_widths, d_widths=args.d_widths
        )
        config = TrainConfig(
            model=model, out=args.out, data=args.data, glasses=args.glasses, supervised=args.supervised,
            steps_per_stage=args.steps_per_stage, d_steps=args.d_steps, batch_size=args.batch_size,
            lr_g=args.lr_g, lr_d=args.lr_d, d_updates=args.d_updates, gp_weight=args.gp_weight,
            dp_weight=args.dp_weight, history=args.history, init_noise=args.init_noise,
            paired_reals=args.paired_reals, init_from_previous=args.init_from_previous,
            d_init_noise=args.d_init_noise, resume=args.resume,
            device=args.device, sample_every=args.sample_every, checkpoint_every=args.checkpoint_every,
            log_every=args.log_every, seed=args.seed, workers=args.workers, synth_train=args.synth_train,
            synth_test=args.synth_test, progress=not args.no_progress,
        )  # fmt: skip
    except ValueError as exc:
        args.parser.error(str(exc))
    result = train(config)
    print("final " + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
    return 0


def _add_test_stgan(subparsers: argparse._SubParsersAction) -> None:
    from pydeform.models.stgan import OPS

    p = subparsers.add_parser(
        "stgan",
        help="ST-GAN",
        description=(
            "Apply a trained ST-GAN to the test split: OUT/images/*.png (final composites), OUT/samples.png and "
            "OUT/metrics.json (mean corner error in pixels before warping and after each warp, where the data "
            "has p_true)."
        ),
    )
    _add_test_flags(p, "stgan", batch_size=50)
    p.add_argument("--glasses", metavar="DIR", help="glasses PNGs, with --data a CelebA root")
    p.add_argument("--ops", choices=OPS, help="override the checkpoint's warp sampler")
    p.set_defaults(run=_run_test_stgan, parser=p)


def _run_test_stgan(args: argparse.Namespace) -> int:
    from pydeform.train.stgan import evaluate, format_metrics

    if args.glasses is not None and args.data is None:
        args.parser.error("--glasses needs --data (the CelebA root)")
    result = evaluate(
        args.checkpoint, args.out, data=args.data, glasses=args.glasses, device=args.device,
        batch_size=args.batch_size, workers=args.workers, ops=args.ops, progress=not args.no_progress,
    )  # fmt: skip
    print(format_metrics(result), flush=True)
    print(f"wrote {args.out}/metrics.json and {result['samples']} composites in {args.out}/images", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `pydeform` argument parser: `train MODEL ...`, `test MODEL ...`."""
    parser = argparse.ArgumentParser(prog="pydeform", description="pydeform: deformation-based image generation")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train a model", description="Train a model.")
    train_models = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    _add_train_deformgan(train_models)
    _add_train_stgan(train_models)
    test = commands.add_parser("test", help="generate a test split and measure it", description="Test a trained model.")
    test_models = test.add_subparsers(dest="model", required=True, metavar="MODEL")
    _add_test_deformgan(test_models)
    _add_test_stgan(test_models)
    synth = commands.add_parser("synth", help="write a synthetic dataset", description="Write a synthetic dataset.")
    kinds = synth.add_subparsers(dest="kind", required=True, metavar="KIND")
    _add_synth_pose_pairs(kinds)
    _add_synth_placement(kinds)
    add_pose_command(commands)
    add_data_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pydeform` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
