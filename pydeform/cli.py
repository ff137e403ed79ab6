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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeform.data.cli import add_data_command
from pydeform.errors import is_user_error
from pydeform.metrics.cli import add_metrics_command
from pydeform.options import Option, flatten_dict, from_flat, option, options, parse_text
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
    if config_file is None and getattr(args, "resume", False) and hasattr(args, "out"):
        run_config = Path(args.out) / "config.json"
        if run_config.is_file():  # --resume continues the run in OUT with its own settings
            config_file = run_config
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
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns; one line is enough
        print("final " + " ".join(f"{k}={_number(v)}" for k, v in result.items()), flush=True)
    return 0


def _run_test(args: argparse.Namespace) -> int:
    recipe = _recipe(args.family)
    config = _config(args.parser, recipe.eval_config_class, args)
    config.check_machine()
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


# ----------------------------------------------------------------------------- other commands
# Each is a settings dataclass (its flags generated like train's) whose run() does the work
# and returns the line to print.


@dataclass
class SynthPosePairs:
    """Write a synthetic pose-pair dataset in the Deformable GAN's Market-1501 format:
    <name>-dataset/{train,test}/*.png, <name>-annotation-{train,test}.csv,
    <name>-pairs-{train,test}.csv, split by identity. Deterministic for a seed."""

    out: str = option(None, "folder to write into", required=True, metavar="DIR")
    size: tuple[int, int] = option((128, 64), "image size", parse="size", metavar="HxW")
    identities: int = option(100, "people (20% form the test split)")
    images_per_identity: int = option(6, "poses of each person")
    seed: int = option(0, "the set is a function of the seed")
    name: str = option("market", "file prefix (market: as the authors' files)")
    shared_background: bool = option(False, "one background per person for all their images, not one per image")
    overwrite: bool = option(False, "replace the dataset of this --name in a non-empty --out (its old images are "
                             "deleted)")  # fmt: skip
    progress: bool = option(True, "no progress bar", flag="--no-progress")

    def run(self) -> str:
        from pydeform.data.synth_pose import write_pose_pairs

        dataset = write_pose_pairs(self.out, self.size, self.identities, self.seed, name=self.name,
                                   images_per_identity=self.images_per_identity, progress=self.progress,
                                   shared_background=self.shared_background,
                                   overwrite=self.overwrite)  # fmt: skip
        images, pairs = dataset.num_images, dataset.num_pairs
        return (f"wrote {images['train']} + {images['test']} images, {pairs['train']} + {pairs['test']} pairs "
                f"(train + test) to {self.out}")  # fmt: skip


@dataclass
class SynthPlacement:
    """Write the synthetic ST-GAN placement task: backgrounds with a face placed by a random
    similarity, RGBA glasses in the face's canonical frame, real composites at the correct
    placement, and placement-{train,test}.csv with p_true and p_init = p_true + 0.1 N(0, 1).
    Deterministic for a seed."""

    out: str = option(None, "folder to write into", required=True, metavar="DIR")
    size: tuple[int, int] = option((64, 64), "image size (144x144 is ST-GAN's glasses size)", parse="size",
                                   metavar="HxW")  # fmt: skip
    train: int = option(2000, "training samples")
    test: int = option(500, "test samples")
    foregrounds: int = option(32, "glasses objects per split")
    seed: int = option(0, "the set is a function of the seed")
    progress: bool = option(True, "no progress bar", flag="--no-progress")

    def run(self) -> str:
        from pydeform.data.synth_placement import write_placement

        info = write_placement(self.out, self.size, self.train, self.test, self.seed, progress=self.progress,
                               foregrounds=self.foregrounds)  # fmt: skip
        counts = info["counts"]
        return (f"wrote {counts['train']} + {counts['test']} placement samples (train + test) of size "
                f"{info['size'][0]}x{info['size'][1]} to {self.out}")  # fmt: skip


@dataclass
class SynthFactors:
    """Write a CUB-layout dataset with known factors: 20 backgrounds, 10 shapes in 3 families
    at a random pose, 20 textures (each tied to one shape family; backgrounds loosely tied to
    textures). Writes images/, masks/, images.txt, bounding_boxes.txt, train_test_split.txt,
    factors.csv and info.json. Deterministic for a seed."""

    out: str = option(None, "folder to write into (new or empty)", required=True, metavar="DIR")
    count: int = option(2000, "images (the last 20% form the test split)")
    size: int = option(128, "image side in pixels")
    bg_tie: float = option(0.6, "probability that the background class equals the texture class")
    seed: int = option(0, "the set is a function of the seed")
    progress: bool = option(True, "no progress bar", flag="--no-progress")

    def run(self) -> str:
        from pydeform.data.synth_factors import write_factors

        info = write_factors(self.out, self.count, self.size, seed=self.seed, bg_tie=self.bg_tie, progress=self.progress)
        counts = info["counts"]
        return (f"wrote {counts['train']} + {counts['test']} images (train + test) of {info['size']}x{info['size']} "
                f"with their factors to {self.out}")  # fmt: skip


@dataclass
class Mix:
    """Mix real images with a MixNMatch checkpoint (its EMA generator and encoders):
    background and its z from --background, shape from --shape, texture from --texture, the
    parent stage's z (pose) from --pose (default: the shape image). --mode feature takes the
    shape's pixel-exact shape and pose from the stage-2 feature extractor. Images are resized
    to 128x128, as MixNMatch's eval.py does."""

    checkpoint: str = option(None, "a mixnmatch OUT/checkpoint.pt", required=True, metavar="PATH")
    background: str = option(None, "background source image", required=True, metavar="A.png")
    shape: str = option(None, "shape source image", required=True, metavar="B.png")
    texture: str = option(None, "texture source image", required=True, metavar="C.png")
    pose: str | None = option(None, "pose (z) source image for code mode (default: the shape image)", metavar="D.png")
    mode: str = option("code", "code or feature mode", choices=("code", "feature"))
    out: str = option(None, "where to write the mixed image", required=True, metavar="OUT.png")
    device: str = option("cpu", "where to run", choices=("cpu", "cuda"))

    def run(self) -> str:
        from pydeform.train.mixnmatch import mix

        path = mix(self.checkpoint, self.background, self.shape, self.texture, self.out, pose=self.pose,
                   mode=self.mode, device=self.device)  # fmt: skip
        return f"wrote {path}"


@dataclass
class FactorsTrain:
    """Train the factor classifier on the training split of a `pydeform synth factors` set
    (FineGAN's object crops, random crops and flips) and measure it on the test split. Writes
    OUT/checkpoint.pt and OUT/metrics.json."""

    data: str = option(None, "a `pydeform synth factors` folder", required=True, metavar="DIR")
    out: str = option(None, "where to write checkpoint.pt and metrics.json", required=True, metavar="DIR")
    steps: int = option(600, "training steps")
    batch_size: int = option(32, "images per step")
    seed: int = option(0, "seed")
    device: str = option("cpu", "where to train", choices=("cpu", "cuda"))
    progress: bool = option(True, "no progress bar", flag="--no-progress")

    def run(self) -> str:
        from pydeform.train.factors import train_classifier

        metrics = train_classifier(self.data, self.out, steps=self.steps, batch_size=self.batch_size, seed=self.seed,
                                   device=self.device, progress=self.progress)  # fmt: skip
        cells = ", ".join(f"{f} {100 * a:.1f}% (chance {100 * metrics['chance'][f]:.1f}%)"
                          for f, a in metrics["accuracy"].items())  # fmt: skip
        return f"test accuracy: {cells}; wrote {self.out}/checkpoint.pt"


def _add_command(subparsers: argparse._SubParsersAction, name: str, command: type, help: str) -> None:
    p = subparsers.add_parser(name, help=help, description=inspect.cleandoc(command.__doc__))
    _add_flags(p, command)
    p.set_defaults(run=_run_command, parser=p, command_class=command)


def _run_command(args: argparse.Namespace) -> int:
    command = _config(args.parser, args.command_class, args)
    try:
        message = command.run()
    except (ValueError, FileExistsError, NotADirectoryError) as exc:
        if is_user_error(exc):  # found at run time (a file's content): one line, exit 1
            raise
        args.parser.error(str(exc))  # the settings' fault: usage, exit 2
    print(message, flush=True)
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
    _add_command(kinds, "pose-pairs", SynthPosePairs, "articulated figures in the Market-1501 layout of the Deformable GAN")
    _add_command(kinds, "placement", SynthPlacement, "glasses to place on cartoon faces, with the correct ST-GAN warp known")
    _add_command(kinds, "factors", SynthFactors, "objects of known shape, pose and texture on known backgrounds, in the "
                 "CUB layout (FineGAN, MixNMatch)")  # fmt: skip
    add_pose_command(commands)
    add_data_command(commands)
    add_metrics_command(commands)
    _add_command(commands, "mix", Mix, "MixNMatch: the background of one image, the shape of a second, the texture of "
                 "a third")  # fmt: skip
    factors = commands.add_parser("factors", help="the factor classifier of the synthetic factor set (a measuring tool)",
                                  description="The factor classifier: reads background, shape and texture classes.")  # fmt: skip
    _add_command(factors.add_subparsers(dest="action", required=True, metavar="ACTION"), "train", FactorsTrain,
                 "train it on a factor set's training split; its test accuracy goes into OUT/metrics.json")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pydeform` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        resumable = " (a training run keeps its last checkpoint: continue it with --resume)" if args.command == "train" else ""
        print(f"pydeform: interrupted{resumable}", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get("PYDEFORM_TRACEBACK"):
            raise
        print(f"pydeform: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
