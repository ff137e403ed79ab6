"""`pydeform pose ...`: keypoint tooling for every pose-transfer family.

    pydeform pose import-openpose JSON_DIR --out ANNOTATION.csv [--model coco18|body25]
                                  [--min-confidence 0.1] [--image-ext .jpg]
    pydeform pose make-pairs ANNOTATION.csv --out PAIRS.csv [--identity market|deepfashion|REGEX]
                             [--require Rsho,Lsho,Rhip,Lhip] [--min-joints N] [--max-pairs N] [--seed S]
"""
from __future__ import annotations

import argparse

__all__ = ["add_pose_command"]


def add_pose_command(commands: argparse._SubParsersAction) -> None:
    """Add `pose` and its sub-commands to the top-level sub-parsers of `pydeform.cli`."""
    pose = commands.add_parser("pose", help="keypoint tooling (OpenPose import, pair lists)",
                               description="Keypoint tooling for the pose-transfer families.")
    tools = pose.add_subparsers(dest="tool", required=True, metavar="TOOL")

    p = tools.add_parser(
        "import-openpose",
        help="OpenPose *_keypoints.json files -> annotation CSV",
        description=(
            "Read OpenPose's per-image <stem>_keypoints.json (--write_json), keep the most confident person, "
            "convert BODY_25 to COCO-18 where asked, mark joints below --min-confidence -1, and write the "
            "annotation CSV (name:keypoints_y:keypoints_x) that every family reads."
        ),
    )
    p.add_argument("json_dir", metavar="JSON_DIR")
    p.add_argument("--out", required=True, metavar="ANNOTATION.csv", help="the annotation CSV to write")
    p.add_argument("--model", choices=("coco18", "body25"), default="coco18",
                   help="OpenPose model that wrote the files: COCO (18 joints) or BODY_25 (default coco18)")
    p.add_argument("--min-confidence", type=float, default=0.1, help="joints below it are missing (default 0.1)")
    p.add_argument("--image-ext", default=".jpg", help="image file extension for <stem> (default .jpg)")
    p.set_defaults(run=_run_import_openpose, parser=p)

    p = tools.add_parser(
        "make-pairs",
        help="annotation CSV -> from,to pairs of one identity (the published rule)",
        description=(
            "Drop images missing a shoulder or hip, then write all ordered pairs of images of the same identity. "
            "The identity comes from the file name: 'market' (the id before the first '_'; also drops Market's "
            "0000/-1 distractors), 'deepfashion' (the name up to its last '_'), or a regular expression whose "
            "first group is the identity."
        ),
    )
    p.add_argument("annotation", metavar="ANNOTATION.csv")
    p.add_argument("--out", required=True, metavar="PAIRS.csv", help="the pairs CSV to write")
    p.add_argument("--identity", default="market", help="market (default), deepfashion, or a regular expression")
    p.add_argument("--require", default="Rsho,Lsho,Rhip,Lhip",
                   help="comma-separated joints an image must have (default Rsho,Lsho,Rhip,Lhip; '' for none)")
    p.add_argument("--min-joints", type=int, default=0, help="and at least this many joints (default 0)")
    p.add_argument("--keep-distractors", action="store_true", help="with --identity market: keep 0000/-1 images")
    p.add_argument("--max-pairs", type=int, default=None, help="keep a seeded random subset of this many pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of --max-pairs' subset (default 0)")
    p.set_defaults(run=_run_make_pairs, parser=p)


def _run_import_openpose(args: argparse.Namespace) -> int:
    from pydeform.pose.openpose import import_openpose

    try:
        counts = import_openpose(args.json_dir, args.out, model=args.model, min_confidence=args.min_confidence,
                                 image_ext=args.image_ext)
    except (ValueError, FileNotFoundError) as exc:
        args.parser.error(str(exc))
    print(f"wrote {counts['images']} rows to {args.out} ({counts['no_person']} images without a person, "
          f"{counts['joints_missing']} missing joints in all)", flush=True)
    return 0


def _run_make_pairs(args: argparse.Namespace) -> int:
    from pydeform.pose.pairs import make_pairs, write_pairs

    required = tuple(j.strip() for j in args.require.split(",") if j.strip())
    drop = False if args.keep_distractors else None
    try:
        pairs, counts = make_pairs(args.annotation, identity=args.identity, required=required,
                                   min_joints=args.min_joints, drop_distractors=drop, max_pairs=args.max_pairs,
                                   seed=args.seed)
        write_pairs(args.out, pairs)
    except (ValueError, FileNotFoundError) as exc:
        args.parser.error(str(exc))
    print(f"{counts['kept']} of {counts['images']} images kept, {counts['identities']} identities, "
          f"{counts['pairs']} pairs -> {args.out}", flush=True)
    return 0
