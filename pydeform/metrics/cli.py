"""`pydeform metrics ...`: the image metrics of the papers on folders of images.

    pydeform metrics pose-transfer --generated DIR --targets DIR --protocol patn|gfla
        [--real-stats DIR_OR_NPZ] [--masks DIR] [--inception PATH]
        [--lpips-backbone PATH --lpips-linear PATH] [--out report.json] ...
    pydeform metrics fid DIR_OR_NPZ DIR_OR_NPZ --inception PATH [--kid] [--save-stats NPZ]
    pydeform metrics is DIR --inception PATH [--splits 10]

Each prints a JSON report (protocol, image count, weight files and their SHA-256, metrics)
and writes it to --out when given.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from pydeform.errors import user_errors

__all__ = ["add_metrics_command"]


def _add_common(p: argparse.ArgumentParser, resize_default: str | None) -> None:
    p.add_argument("--inception", metavar="PATH", help="FID Inception weights: pytorch-fid's "
                   "pt_inception-2015-12-05-6726825d.pth or torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
    p.add_argument("--resize", choices=("torch-fidelity", "pytorch-fid"), default=resize_default,
                   help="Inception input resizing" + (" (default: the protocol's)" if resize_default is None else ""))
    p.add_argument("--batch-size", type=int, default=50, help="images per Inception pass (default 50; the last batch is kept)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run the networks")
    p.add_argument("--cache", metavar="DIR", help="folder of cached statistics (keyed by image content and settings)")
    p.add_argument("--out", metavar="JSON", help="write the report here too")
    p.add_argument("--random-weights", action="store_true",
                   help="use random weights where no file is given (tests and smoke runs; the numbers mean nothing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _inception(args: argparse.Namespace, resize: str):
    from pydeform.nets import InceptionV3FID

    if args.inception is None and not args.random_weights:
        raise ValueError("--inception PATH is required (the FID Inception weight file; nothing is downloaded)")
    return InceptionV3FID(args.inception, resize=resize, random_weights=args.random_weights).to(args.device)


def _finish(args: argparse.Namespace, report: dict) -> int:
    if args.random_weights:
        report["random_weights"] = True
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def _check_device(args: argparse.Namespace) -> None:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")


def _run_pose_transfer(args: argparse.Namespace) -> int:
    from pydeform.metrics.lpips import LPIPS
    from pydeform.metrics.protocols import PROTOCOLS, pose_transfer_metrics, real_stats_from

    _check_device(args)
    net = _inception(args, args.resize or PROTOCOLS[args.protocol])
    lpips = real = None
    progress = not args.no_progress
    if args.protocol == "gfla":
        if args.real_stats is None:
            raise ValueError("--protocol gfla needs --real-stats DIR_OR_NPZ (the training set's images or statistics)")
        if (args.lpips_backbone is None or args.lpips_linear is None) and not args.random_weights:
            raise ValueError("--protocol gfla needs --lpips-backbone PATH (torchvision alexnet) and --lpips-linear PATH "
                             "(lpips v0.1 alex.pth)")
        lpips = LPIPS("alex", args.lpips_backbone, args.lpips_linear, random_weights=args.random_weights).to(args.device)
        real = real_stats_from(args.real_stats, net, args.cache, args.batch_size, progress)
    elif args.real_stats is not None:
        raise ValueError("--real-stats is used by --protocol gfla only")
    report = pose_transfer_metrics(args.generated, args.targets, args.protocol, inception=net, lpips=lpips,
                                   real_stats=real, masks=args.masks, pad=not args.no_pad,
                                   batch_size=args.batch_size, progress=progress)
    return _finish(args, report)


def _run_fid(args: argparse.Namespace) -> int:
    from pydeform.metrics.distribution import feature_stats, fid, kid
    from pydeform.metrics.folders import folder_outputs, list_images
    from pydeform.metrics.protocols import _weights_record, real_stats_from

    _check_device(args)
    progress = not args.no_progress
    if args.kid or not all(str(s).endswith(".npz") for s in (args.a, args.b)):
        net = _inception(args, args.resize)
        report: dict = {"metric": "fid", "resize": args.resize, "inception": _weights_record(net.weights_path), "sets": []}
    else:  # two statistics files: no network
        net, report = None, {"metric": "fid", "sets": []}
    if args.kid:
        if any(str(source).endswith(".npz") for source in (args.a, args.b)):
            raise ValueError("--kid needs the features of both sets: pass image folders, not .npz statistics")
        sets = [list_images(source) for source in (args.a, args.b)]
        if min(map(len, sets)) < args.kid_subset_size:
            raise ValueError(f"KID subsets of {args.kid_subset_size} need at least {args.kid_subset_size} images per "
                             f"set, got {len(sets[0])} and {len(sets[1])}: pass a smaller --kid-subset-size")
        features = []
        for source, paths in zip((args.a, args.b), sets):
            features.append(folder_outputs(net, paths, args.batch_size, progress, desc=Path(source).name)[0])
            report["sets"].append({"source": source, "count": len(paths)})
        stats = [feature_stats(f) for f in features]
        report["kid_mean"], report["kid_std"] = kid(features[0], features[1], subset_size=args.kid_subset_size)
        report["kid_subset_size"] = args.kid_subset_size
    else:
        stats = [real_stats_from(s, net, args.cache, args.batch_size, progress) for s in (args.a, args.b)]
        report["sets"] = [{"source": s, "count": st.count} for s, st in zip((args.a, args.b), stats)]
    report["fid"] = fid(stats[0], stats[1])
    if args.save_stats:
        stats[0].save(args.save_stats)
        report["saved_stats"] = args.save_stats
    return _finish(args, report)


def _run_is(args: argparse.Namespace) -> int:
    from pydeform.metrics.distribution import inception_score
    from pydeform.metrics.folders import folder_outputs, list_images
    from pydeform.metrics.protocols import _weights_record

    _check_device(args)
    net = _inception(args, args.resize)
    paths = list_images(args.folder)
    _, logits = folder_outputs(net, paths, args.batch_size, not args.no_progress, desc="IS")
    mean, std = inception_score(logits, splits=args.splits)
    report = {"metric": "is", "source": args.folder, "count": len(paths), "splits": args.splits, "resize": args.resize,
              "inception": _weights_record(net.weights_path), "is_mean": mean, "is_std": std}
    return _finish(args, report)


def _user_input(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A metrics command reads only the user's folders and weight files: its ValueErrors and
    OSErrors are theirs to fix (one line on the command line)."""

    def checked(args: argparse.Namespace) -> int:
        with user_errors():
            return run(args)

    return checked


def add_metrics_command(commands: argparse._SubParsersAction) -> None:
    """Add `metrics pose-transfer|fid|is` to the top-level subparsers of `pydeform`."""
    metrics = commands.add_parser("metrics", help="FID, KID, IS, LPIPS, SSIM of image folders",
                                  description="The image metrics of the papers, on folders of images.")
    kinds = metrics.add_subparsers(dest="metric", required=True, metavar="METRIC")

    p = kinds.add_parser("pose-transfer", help="a pose-transfer evaluation protocol (patn or gfla)",
                         description="Generated images paired by file name with targets, scored as a paper did. "
                                     "patn: SSIM, IS (and mask-SSIM, mask-IS with --masks), DeepFashion padded "
                                     "176 -> 256; gfla: FID against --real-stats and LPIPS (AlexNet).")
    p.add_argument("--generated", required=True, metavar="DIR", help="folder of generated images")
    p.add_argument("--targets", required=True, metavar="DIR", help="folder of target images, paired by file name")
    p.add_argument("--protocol", required=True, choices=("patn", "gfla"), help="patn: SSIM, IS, masks (Pose-Transfer / Deformable GAN scripts); gfla: FID and LPIPS")
    p.add_argument("--real-stats", metavar="DIR_OR_NPZ", help="gfla: real images or their statistics (.npz)")
    p.add_argument("--masks", metavar="DIR", help="patn: body masks by file name (white = body)")
    p.add_argument("--lpips-backbone", metavar="PATH", help="gfla: torchvision alexnet state dict")
    p.add_argument("--lpips-linear", metavar="PATH", help="gfla: the lpips package's v0.1 alex.pth")
    p.add_argument("--no-pad", action="store_true", help="patn: do not pad 256x176 images to 256x256")
    _add_common(p, None)
    p.set_defaults(run=_user_input(_run_pose_transfer))

    p = kinds.add_parser("fid", help="FID (and KID) of two image folders or statistics files",
                         description="FID between two sets: image folders or .npz statistics (mu, sigma[, count]).")
    p.add_argument("a", metavar="DIR_OR_NPZ")
    p.add_argument("b", metavar="DIR_OR_NPZ")
    p.add_argument("--kid", action="store_true", help="also KID (both sets must be folders)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="images per KID subset (default 1000, torch-fidelity's)")
    p.add_argument("--save-stats", metavar="NPZ", help="write the first set's statistics here")
    _add_common(p, "torch-fidelity")
    p.set_defaults(run=_user_input(_run_fid))

    p = kinds.add_parser("is", help="Inception Score of an image folder",
                         description="Inception Score (10 splits in file-name order, no shuffle).")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--splits", type=int, default=10, help="splits of the Inception Score (default 10)")
    _add_common(p, "torch-fidelity")
    p.set_defaults(run=_user_input(_run_is))
