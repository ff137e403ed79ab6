"""`pydeform data ...`: preparing published datasets.

    pydeform data deepfashion-inshop ROOT --out DIR [--lists TRAIN TEST] [--crop] [--prefix P] [--overwrite]
"""
from __future__ import annotations

import argparse

__all__ = ["add_data_command"]


def add_data_command(commands: argparse._SubParsersAction) -> None:
    """Add `data` and its sub-commands to the top-level sub-parsers of `pydeform.cli`."""
    data = commands.add_parser("data", help="prepare a published dataset", description="Prepare a published dataset.")
    kinds = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    p = kinds.add_parser(
        "deepfashion-inshop",
        help="DeepFashion In-shop tree -> flat train/test folders the published CSVs name",
        description=(
            "Copy the In-shop Clothes images (ROOT/img/<GENDER>/<Category>/<id_item>/<file>, 256x256) into "
            "DIR/train and DIR/test under the flat names of the published annotation and pair CSVs "
            "(fashionWOMENBlouses_Shirtsid0000063504_1front.jpg). The split comes from --lists (Pose-Transfer's "
            "train.lst/test.lst, or the annotation or pairs CSVs) or else In-shop's Eval/list_eval_partition.txt. "
            "Reports listed images the tree lacks, and tree images no list names."
        ),
    )
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--out", required=True, metavar="DIR", help="e.g. data/fasion-dataset (gets train/ and test/)")
    p.add_argument("--lists", nargs=2, metavar=("TRAIN", "TEST"), default=None,
                   help="the train and test lists: .lst files, or the published annotation or pairs CSVs")
    p.add_argument("--crop", action="store_true", help="write 256x176 crops (columns 40:216), Pose-Transfer's layout")
    p.add_argument("--jpeg-quality", type=int, default=75, help="with --crop (default 75, PIL's default)")
    p.add_argument("--prefix", default=None, help="flat-name prefix (default: the lists', else 'fashion')")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_deepfashion_inshop, parser=p)


def _run_deepfashion_inshop(args: argparse.Namespace) -> int:
    from pydeform.data.deepfashion import convert_inshop

    try:
        report = convert_inshop(args.root, args.out, args.lists, crop=args.crop, prefix=args.prefix,
                                jpeg_quality=args.jpeg_quality, overwrite=args.overwrite,
                                progress=not args.no_progress)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, OSError) as exc:
        args.parser.error(str(exc))
    print(f"wrote {report.written['train']} train + {report.written['test']} test images to {args.out}")
    for split, names in report.missing.items():
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            print(f"{len(names)} {split} images named by the lists are not in the tree: {shown}")
    if report.unlisted:
        shown = ", ".join(report.unlisted[:5]) + (", ..." if len(report.unlisted) > 5 else "")
        print(f"{len(report.unlisted)} tree images are in no list: {shown}")
    return 0
