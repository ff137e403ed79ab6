"""The `pydeform` command.

    pydeform train MODEL --out RUN [--config RUN/config.json] [flags]    (MODEL: pydeform train --help)
    pydeform test MODEL --checkpoint RUN/checkpoint.pt --out DIR [flags]
    pydeform synth pose-pairs --out DIR [--size 128x64] [--identities N] [--seed S]
    pydeform synth placement --out DIR [--size 64x64|144x144] [--train N] [--test M] [--seed S]
    pydeform pose import-openpose JSON_DIR --out ANNOTATION.csv [--model coco18|body25]
    pydeform pose make-pairs ANNOTATION.csv --out PAIRS.csv [--identity market|deepfashion|REGEX]
    pydeform data deepfashion-inshop ROOT --out DIR [--lists TRAIN TEST] [--crop]
    pydeform synth factors --out DIR [--count N] [--size S] [--seed S]
    pydeform metrics pose-transfer|fid|is ...
    pydeform mix --checkpoint CK --background A.png --shape B.png --texture C.png [--pose D.png]
                 [--mode code|feature] --out OUT.png                                     (MixNMatch)
    pydeform factors train --data DIR --out DIR [--steps N]       (the factor classifier, a measuring tool)

The flags of `train` and `test` are generated from each family's config dataclass
(`pydeform.options`): a flag per field, with its type, default and help. Multi-process
training: torchrun --nproc_per_node=K -m pydeform.cli train MODEL ... (`python -m
pydeform.cli` is the same command as `pydeform`).

Errors in the user's settings or files print as one line (`pydeform: error: ...`, exit 1;
usage errors exit 2); a bug keeps its traceback.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydeform.data.cli import add_data_command
from pydeform.errors import is_user_error
from pydeform.metrics.cli import add_metrics_command
from pydeform.options import Option, flatten_dict, from_flat, options, parse_text
from pydeform.pose.cli import add_pose_command

__all__ = ["main", "build_parser", "FAMILIES"]

# The model families: command name -> "module:Recipe". Adding a family is a line here.
FAMILIES = {
    "deformgan": "pydeform.train.deformgan:DeformGANRecipe",
    "stgan": "pydeform.train.stgan:STGANRecipe",
    "patn": "pydeform.train.patn:PATNRecipe",
    "vunet": "pydeform.train.vunet:VUNetRecipe",
    "finegan": "pydeform.train.finegan:FineGANRecipe",
    "mixnmatch": "pydeform.train.mixnmatch:MixNMatchRecipe",
}
NOT_FROM_CONFIG_FILE = ("resume", "overwrite", "changes")  # per invocation, never inherited from a config.json


def _recipe(name: str) -> Any:
    module, attribute = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_text(Option("size", tuple, None, "", "", None, None, "size", False, None, "free", True), text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ----------------------------------------------------------------------------- generated flags


def _show(opt: Option, value: Any) -> str:
    if opt.parse == "size":
        return f"{value[0]}x{value[1]}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _add_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """A flag per option of `config_class`. Defaults are left out of the namespace
    (argparse.SUPPRESS), so that only the flags given override a --config file."""
    groups: dict[str, Any] = {}
    for opt in options(config_class):
        if not opt.cli:
            continue
        if not opt.help:
            raise TypeError(f"{config_class.__name__}: option {opt.name} has no help text")
        if opt.group is not None and opt.group not in groups:
            groups[opt.group] = parser.add_mutually_exclusive_group()
        target = parser if opt.group is None else groups[opt.group]
        text = opt.help
        if opt.required:
            text += " (required)"
        elif opt.default is not None and opt.base_type is not bool:
            text += f" (default: {_show(opt, opt.default)})"
        kwargs: dict[str, Any] = dict(dest=opt.name, default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        if opt.base_type is bool:
            kwargs["action"] = "store_false" if opt.default else "store_true"
        else:
            def convert(value: str, opt: Option = opt) -> Any:
                try:
                    return parse_text(opt, value)
                except ValueError as exc:
                    raise argparse.ArgumentTypeError(str(exc)) from None

            convert.__name__ = opt.name  # argparse names it in its messages
            kwargs.update(type=convert, choices=opt.choices, metavar=opt.metavar)
        target.add_argument(opt.flag, **kwargs)


def _given(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    return {opt.name: getattr(args, opt.name) for opt in options(config_class) if hasattr(args, opt.name)}


def _config(parser: argparse.ArgumentParser, config_class: type, args: argparse.Namespace) -> Any:
    """The config: a --config file's settings (if any), overridden by the flags given."""
    values: dict[str, Any] = {}
    names = {opt.name for opt in options(config_class)}
    config_file = getattr(args, "config_file", None)
    if config_file is not None:
        try:
            saved = flatten_dict(json.loads(Path(config_file).read_text()))
        except (OSError, ValueError) as exc:
            parser.error(f"--config {config_file}: {exc}")
        unknown = sorted(set(saved) - names - set(NOT_FROM_CONFIG_FILE))
        if unknown:
            parser.error(f"--config {config_file}: not settings of this model: {', '.join(unknown)}")
        values = {k: v for k, v in saved.items() if k not in NOT_FROM_CONFIG_FILE}
    values.update(_given(args, config_class))
    missing = [opt.flag for opt in options(config_class) if opt.required and opt.name not in values]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    build = getattr(config_class, "from_flat", None) or functools.partial(from_flat, config_class)
    try:
        return build(values)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _run_train(args: argparse.Namespace) -> int:
    from pydeform.train.engine import train

    recipe = _recipe(args.family)
    config = _config(args.parser, recipe.config_class, args)
    result = train(recipe(config))
    print("final " + " ".join(f"{k}={_number(v)}" for k, v in result.items()), flush=True)
    return 0


def _run_test(args: argparse.Namespace) -> int:
    recipe = _recipe(args.family)
    config = _config(args.parser, recipe.eval_config_class, args)
    result = recipe.evaluate(config)
    print(recipe.summary(result), flush=True)
    print(f"wrote {config.out}/metrics.json and the images in {config.out}/images", flush=True)
    return 0


def _add_families(train: argparse._SubParsersAction, test: argparse._SubParsersAction) -> None:
    for name in FAMILIES:
        recipe = _recipe(name)
        p = train.add_parser(name, help=recipe.description, description=inspect.cleandoc(recipe.config_class.__doc__))
        p.add_argument("--config", dest="config_file", metavar="JSON",
                       help="start from a run's config.json (its settings count as given); the flags given override it")  # fmt: skip
        _add_flags(p, recipe.config_class)
        p.set_defaults(run=_run_train, parser=p, family=name)
        p = test.add_parser(name, help=recipe.description,
                            description=inspect.cleandoc(recipe.eval_config_class.__doc__))  # fmt: skip
        _add_flags(p, recipe.eval_config_class)
        p.set_defaults(run=_run_test, parser=p, family=name)


# ----------------------------------------------------------------------------- synthetic data


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
    p.add_argument("--images-per-identity", type=int, default=6, help="poses of each person (default 6)")
    p.add_argument("--seed", type=int, default=0, help="the set is a function of the seed (default 0)")
    p.add_argument("--name", default="market", help="file prefix (default market, as the authors' files)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the dataset of this --name in a non-empty --out (its old images are deleted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    p.add_argument("--seed", type=int, default=0, help="the set is a function of the seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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


def _add_synth_factors(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "factors",
        help="objects of known shape, pose and texture on known backgrounds, in the CUB layout (FineGAN, MixNMatch)",
        description=(
            "Write a CUB-layout dataset with known factors: 20 backgrounds, 10 shapes in 3 families at a random "
            "pose, 20 textures (each tied to one shape family; backgrounds loosely tied to textures). Writes "
            "images/, masks/, images.txt, bounding_boxes.txt, train_test_split.txt, factors.csv and info.json. "
            "Deterministic for a seed."
        ),
    )
    p.add_argument("--out", required=True, help="folder to write into (new or empty)")
    p.add_argument("--count", type=int, default=2000, help="images (default 2000; the last 20%% form the test split)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--bg-tie", type=float, default=0.6, help="probability that the background class equals the "
                   "texture class (default 0.6)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="the set is a function of the seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_synth_factors, parser=p)


def _run_synth_factors(args: argparse.Namespace) -> int:
    from pydeform.data.synth_factors import write_factors

    try:
        info = write_factors(args.out, args.count, args.size, seed=args.seed, bg_tie=args.bg_tie,
                             progress=not args.no_progress)  # fmt: skip
    except ValueError as exc:
        args.parser.error(str(exc))
    counts = info["counts"]
    print(f"wrote {counts['train']} + {counts['test']} images (train + test) of {info['size']}x{info['size']} "
          f"with their factors to {args.out}", flush=True)  # fmt: skip
    return 0


def _add_mix(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "mix", help="MixNMatch: the background of one image, the shape of a second, the texture of a third",
        description=(
            "Mix real images with a MixNMatch checkpoint (its EMA generator and encoders): background and its z "
            "from --background, shape from --shape, texture from --texture, the parent stage's z (pose) from --pose "
            "(default: the shape image). --mode feature takes the shape's pixel-exact shape and pose from the "
            "stage-2 feature extractor. Images are resized to 128x128, as MixNMatch's eval.py does."
        ),
    )  # fmt: skip
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a mixnmatch OUT/checkpoint.pt")
    p.add_argument("--background", required=True, metavar="A.png", help="background source image")
    p.add_argument("--shape", required=True, metavar="B.png", help="shape source image")
    p.add_argument("--texture", required=True, metavar="C.png", help="texture source image")
    p.add_argument("--pose", metavar="D.png", help="pose (z) source image for code mode (default: the shape image)")
    p.add_argument("--mode", choices=("code", "feature"), default="code", help="code (default) or feature mode")
    p.add_argument("--out", required=True, metavar="OUT.png", help="where to write the mixed image")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    p.set_defaults(run=_run_mix, parser=p)


def _run_mix(args: argparse.Namespace) -> int:
    from pydeform.train.mixnmatch import mix

    path = mix(args.checkpoint, args.background, args.shape, args.texture, args.out, pose=args.pose, mode=args.mode,
               device=args.device)  # fmt: skip
    print(f"wrote {path}", flush=True)
    return 0


def _add_factors(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("factors", help="the factor classifier of the synthetic factor set (a measuring tool)",
                            description="The factor classifier: reads background, shape and texture classes.")  # fmt: skip
    kinds = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = kinds.add_parser(
        "train", help="train it on a factor set's training split; its test accuracy goes into OUT/metrics.json",
        description="Train the factor classifier on the training split of a `pydeform synth factors` set (FineGAN's "
        "object crops, random crops and flips) and measure it on the test split. Writes OUT/checkpoint.pt and "
        "OUT/metrics.json.",
    )  # fmt: skip
    t.add_argument("--data", required=True, metavar="DIR", help="a `pydeform synth factors` folder")
    t.add_argument("--out", required=True, metavar="DIR", help="where to write checkpoint.pt and metrics.json")
    t.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    t.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    t.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(run=_run_factors_train, parser=t)


def _run_factors_train(args: argparse.Namespace) -> int:
    from pydeform.train.factors import train_classifier

    try:
        metrics = train_classifier(args.data, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                   device=args.device, progress=not args.no_progress)  # fmt: skip
    except ValueError as exc:
        if getattr(exc, "_pydeform_user_error", False):
            raise
        args.parser.error(str(exc))
    cells = ", ".join(f"{f} {100 * a:.1f}% (chance {100 * metrics['chance'][f]:.1f}%)" for f, a in metrics["accuracy"].items())
    print(f"test accuracy: {cells}; wrote {args.out}/checkpoint.pt", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `pydeform` argument parser: `train MODEL ...`, `test MODEL ...`, `synth KIND ...`."""
    parser = argparse.ArgumentParser(prog="pydeform", description="pydeform: deformation-based image generation")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train a model", description="Train a model family.")
    test = commands.add_parser("test", help="generate a test split and measure it", description="Test a trained model.")
    _add_families(train.add_subparsers(dest="model", required=True, metavar="MODEL"),
                  test.add_subparsers(dest="model", required=True, metavar="MODEL"))  # fmt: skip
    synth = commands.add_parser("synth", help="write a synthetic dataset", description="Write a synthetic dataset.")
    kinds = synth.add_subparsers(dest="kind", required=True, metavar="KIND")
    _add_synth_pose_pairs(kinds)
    _add_synth_placement(kinds)
    _add_synth_factors(kinds)
    add_pose_command(commands)
    add_data_command(commands)
    add_metrics_command(commands)
    _add_mix(commands)
    _add_factors(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pydeform` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get("PYDEFORM_TRACEBACK"):
            raise
        print(f"pydeform: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
