"""The evaluation protocols of the pose-transfer papers, and the metrics a model's `test`
command adds to SSIM.

`--protocol patn`: the Pose-Transfer (Zhu et al. 2019) / Deformable GAN (Siarohin et al.
2018) scripts. SSIM as skimage's `compare_ssim(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)` with data_range = max - min of each generated image; IS of the
generated images (the OpenAI TF code: its graph resizes bilinearly as TF 1 does, hence
resize "torch-fidelity"); mask-SSIM and mask-IS on images times the masks when masks are
given. DeepFashion images (256 x 176) are padded with white to 256 x 256 (40 columns each
side) before SSIM and IS, as Pose-Transfer's evaluation did (undocumented there); masks are
padded with 0.

`--protocol gfla`: GFLA (Ren et al. 2020), followed by DPTN and PIDM. FID of the generated
images against statistics of real images (the training set, in those papers), with
pytorch-fid's Inception input (resize "pytorch-fid"), and LPIPS (AlexNet, v0.1) of each
generated image against its target, at the images' own size.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from pydeform.metrics.distribution import FeatureStats, feature_stats, fid, inception_score
from pydeform.metrics.folders import _same_size_runs, folder_outputs, folder_stats, inception_outputs, list_images, read_image
from pydeform.metrics.image import ssim
from pydeform.metrics.lpips import LPIPS
from pydeform.nets.inception import InceptionV3FID
from pydeform.nets.weights import file_sha256

__all__ = ["PROTOCOLS", "pad_deepfashion", "pair_folders", "real_stats_from", "pose_transfer_metrics",
           "generation_metrics"]

PROTOCOLS = {"patn": "torch-fidelity", "gfla": "pytorch-fid"}  # protocol -> its Inception resize
FASHION_SIZE, FASHION_PADDED = (256, 176), 256
FASHION_PAD = (FASHION_PADDED - FASHION_SIZE[1]) // 2  # columns each side (PATN's addBounding: 40)


def pad_deepfashion(images: Tensor, value: float = 255) -> Tensor:
    """(B, C, 256, 176) -> (B, C, 256, 256), `value` (white) in 40 columns each side; other
    sizes pass unchanged."""
    if tuple(images.shape[-2:]) != FASHION_SIZE:
        return images
    return F.pad(images, (FASHION_PAD, FASHION_PAD), value=value)


def pair_folders(generated: str | os.PathLike, targets: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Generated images paired with the target of the same file stem (extensions may differ);
    a generated `<source>___<target>` name (what `pydeform test` and the Deformable GAN's
    authors write) pairs with `<target>`."""
    gen = list_images(generated)
    by_stem = {p.stem: p for p in list_images(targets)}
    stems = [p.stem if p.stem in by_stem else p.stem.split("___")[-1] for p in gen]
    missing = [p.name for p, stem in zip(gen, stems) if stem not in by_stem]
    if missing:
        raise ValueError(f"{len(missing)} generated image(s) have no target of the same name in {targets}: "
                         f"{missing[:3]}")
    return [(p, by_stem[stem]) for p, stem in zip(gen, stems)]


def real_stats_from(source: str | os.PathLike, net: InceptionV3FID, cache_dir: str | os.PathLike | None = None,
                    batch_size: int = 50, progress: bool = True) -> FeatureStats:
    """FID statistics from a `.npz` (mu, sigma[, count]) or computed from an image folder."""
    source = Path(source)
    if source.suffix == ".npz":
        return FeatureStats.load(source)
    if not source.is_dir():
        raise FileNotFoundError(f"real statistics: {source} is neither a .npz file nor an image folder")
    return folder_stats(source, net, cache_dir, batch_size, progress)


def _weights_record(path: Path | None) -> dict | None:
    return None if path is None else {"path": str(path), "sha256": file_sha256(path)}


def _lpips_record(model: LPIPS) -> dict:
    return {"net": model.net, **{k: _weights_record(v) for k, v in model.weight_paths.items()}}


def pose_transfer_metrics(generated: str | os.PathLike, targets: str | os.PathLike, protocol: str, *,
                          inception: InceptionV3FID | None = None, lpips: LPIPS | None = None,
                          real_stats: FeatureStats | None = None, masks: str | os.PathLike | None = None,
                          pad: bool = True, batch_size: int = 50, progress: bool = True) -> dict:
    """All the metrics of `protocol` ("patn" or "gfla") for a folder of generated images
    paired by name with targets -> a JSON-ready report (protocol, count, weight files and
    their SHA-256, metrics)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pairs = pair_folders(generated, targets)
    report: dict = {"protocol": protocol, "count": len(pairs), "generated": str(generated), "targets": str(targets),
                    "metrics": {}}
    if protocol == "patn":
        if inception is None:
            raise ValueError("protocol patn needs the Inception network (IS): pass --inception PATH")
        if len(pairs) < 10:
            raise ValueError(f"protocol patn computes IS over 10 splits and needs at least 10 images, got {len(pairs)}")
        mask_paths = None
        if masks is not None:
            by_stem = {p.stem: p for p in list_images(masks)}
            missing = [g.name for g, _ in pairs if g.stem not in by_stem]
            if missing:
                raise ValueError(f"{len(missing)} generated image(s) have no mask of the same name in {masks}: {missing[:3]}")
            mask_paths = [by_stem[g.stem] for g, _ in pairs]
        report.update(_patn(pairs, mask_paths, inception, pad, batch_size, progress, report["metrics"]))
        report["inception"] = {"resize": inception.resize, "weights": _weights_record(inception.weights_path)}
    else:
        if inception is None or lpips is None or real_stats is None:
            raise ValueError("protocol gfla needs the Inception network, real statistics (--real-stats) and LPIPS "
                             "(--lpips-backbone, --lpips-linear)")
        if lpips.net != "alex":
            raise ValueError(f"protocol gfla uses LPIPS with AlexNet, got net={lpips.net!r}")
        features, _ = folder_outputs(inception, [g for g, _ in pairs], batch_size, progress, desc="generated")
        report["metrics"]["fid"] = fid(feature_stats(features), real_stats)
        report["real_stats_count"] = real_stats.count
        report["metrics"]["lpips"] = _lpips_folder(lpips, pairs, batch_size, progress)
        report["inception"] = {"resize": inception.resize, "weights": _weights_record(inception.weights_path)}
        report["lpips"] = _lpips_record(lpips)
    return report


def _read_pair(g: Path, t: Path) -> tuple[Tensor, Tensor]:
    gen, target = read_image(g), read_image(t)
    if gen.shape != target.shape:
        raise ValueError(f"{g.name}: generated image {tuple(gen.shape)} and target {tuple(target.shape)} differ in size")
    return gen, target


def _patn(pairs, mask_paths, inception, pad, batch_size, progress, metrics) -> dict:
    """One pass in batches: SSIM per pair, Inception logits of the (masked) generated images."""
    ssims, mask_ssims, logits, masked_logits = [], [], [], []
    padded = False
    with torch.inference_mode(), tqdm(total=len(pairs), desc="patn", unit="img", disable=not progress) as bar:
        for start in range(0, len(pairs), batch_size):
            generated, masked = [], []
            for index in range(start, min(start + batch_size, len(pairs))):
                gen, target = _read_pair(*pairs[index])
                size = tuple(gen.shape[-2:])
                mask = None
                if mask_paths is not None:
                    mask = (read_image(mask_paths[index])[:1] > 127).to(torch.uint8)
                    if tuple(mask.shape[-2:]) != size:
                        raise ValueError(f"{mask_paths[index].name}: mask size {tuple(mask.shape[-2:])} differs from "
                                         f"the image's {size}")
                if pad and size == FASHION_SIZE:
                    padded = True
                    gen, target = pad_deepfashion(gen), pad_deepfashion(target)
                    mask = None if mask is None else pad_deepfashion(mask, value=0)
                ssims.append(ssim(gen[None].double(), target[None].double()).item())
                generated.append(gen)
                if mask is not None:
                    mask_ssims.append(ssim((gen * mask)[None].double(), (target * mask)[None].double()).item())
                    masked.append(gen * mask)
            for images, out in ((generated, logits), (masked, masked_logits)):
                if images:
                    out.append(inception_outputs(inception, [images], progress=False)[1])
            bar.update(len(generated))
    metrics["ssim"] = float(np.mean(ssims))
    metrics["is_mean"], metrics["is_std"] = inception_score(np.concatenate(logits))
    if mask_paths is not None:
        metrics["mask_ssim"] = float(np.mean(mask_ssims))
        metrics["mask_is_mean"], metrics["mask_is_std"] = inception_score(np.concatenate(masked_logits))
    return {"padded_176_to_256": padded}


def _lpips_input(images: Tensor, device: torch.device) -> Tensor:
    """uint8 (B, 3, H, W) -> [-1, 1] float, channels_last (faster convolutions on the CPU; see
    benchmarks/metrics.py)."""
    x = images.to(device).float() / 127.5 - 1
    return x.contiguous(memory_format=torch.channels_last)


def _lpips_folder(model: LPIPS, pairs: Sequence[tuple[Path, Path]], batch_size: int, progress: bool) -> float:
    """Mean LPIPS over the pairs; images to [-1, 1] as x / 127.5 - 1."""
    device = model.in_scale.device
    values = []
    with torch.inference_mode(), tqdm(total=len(pairs), desc="lpips", unit="img", disable=not progress) as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = [_read_pair(g, t) for g, t in pairs[start:start + batch_size]]
            for run in _same_size_runs([torch.stack(pair) for pair in chunk]):  # (n, 2, 3, H, W)
                x, y = (_lpips_input(run[:, i], device) for i in (0, 1))
                values.append(model(x, y).double().cpu())
            bar.update(len(chunk))
    return float(torch.cat(values).mean())


def _to_uint8(images: Tensor, name: str, truncate: bool) -> Tensor:
    """[-1, 1] images -> 0..255 uint8, as when they are saved to files (rounded, or truncated
    as the Deformable GAN's test script did); uint8 images are taken as they are."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor in [-1, 1], got {getattr(images, 'shape', type(images))}")
    if images.dtype == torch.uint8:  # already 8-bit values (as read from files)
        return images
    values = images.detach().float()
    # Saving clamps a generator's small overshoot; values far outside are another range (0..255 floats?).
    if values.numel() and not bool(values.abs().max() <= 2):
        raise ValueError(f"{name} must be in [-1, 1] (or uint8), got values in [{float(values.min()):.4g}, "
                         f"{float(values.max()):.4g}]")  # fmt: skip
    values = (values.clamp(-1, 1) + 1) * 127.5
    return (values.floor() if truncate else values.round()).to(torch.uint8)


def generation_metrics(generated: Tensor, targets: Tensor | None = None, *,
                       inception_weights: str | os.PathLike | None = None,
                       lpips_backbone: str | os.PathLike | None = None,
                       lpips_linear: str | os.PathLike | None = None,
                       real_stats: FeatureStats | str | os.PathLike | None = None,
                       resize: str = "torch-fidelity", batch_size: int = 50, truncate: bool = False,
                       device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """FID, IS and LPIPS of generated images, for a model's `test` command (beside SSIM).

    generated, targets: (N, 3, H, W) uint8, or in [-1, 1] and quantised to uint8 first as saved images are
    (rounded; `truncate=True`: 255 (x + 1) / 2 truncated, as the Deformable GAN's test script).
    Each metric needs its files: IS the Inception weights; FID those and `real_stats`
    (FeatureStats, a .npz or an image folder); LPIPS (AlexNet) both LPIPS files and targets.
    Returns {"is_mean", "is_std", "fid", "lpips" (those computed), "weights": {name: sha256},
    "skipped": {metric: reason}}.
    """
    gen = _to_uint8(generated, "generated", truncate)
    out: dict = {"weights": {}, "skipped": {}}
    if inception_weights is None:
        out["skipped"]["is"] = out["skipped"]["fid"] = "no Inception weights (pass the FID Inception weight file: --inception)"
    else:
        net = InceptionV3FID(inception_weights, resize=resize).to(device)
        out["weights"]["inception"] = file_sha256(Path(inception_weights))
        chunks = (list(gen[i:i + batch_size]) for i in range(0, len(gen), batch_size))
        features, logits = inception_outputs(net, chunks, len(gen), progress, desc="generated")
        if len(gen) >= 10:
            out["is_mean"], out["is_std"] = inception_score(logits)
        else:
            out["skipped"]["is"] = f"IS uses 10 splits and needs at least 10 images, got {len(gen)}"
        if real_stats is None:
            out["skipped"]["fid"] = "no real statistics (pass a .npz or a folder of real images: --real-stats)"
        else:
            stats = real_stats if isinstance(real_stats, FeatureStats) else real_stats_from(real_stats, net, None, batch_size, progress)
            out["fid"] = fid(feature_stats(features), stats)
    if lpips_backbone is None or lpips_linear is None:
        out["skipped"]["lpips"] = "no LPIPS weights (pass the torchvision alexnet file and lpips v0.1 alex.pth: --lpips-backbone, --lpips-linear)"
    elif targets is None:
        out["skipped"]["lpips"] = "no target images"
    else:
        tgt = _to_uint8(targets, "targets", truncate)
        if tgt.shape != gen.shape:
            raise ValueError(f"targets must have the shape of generated {tuple(gen.shape)}, got {tuple(tgt.shape)}")
        model = LPIPS("alex", lpips_backbone, lpips_linear).to(device)
        out["weights"]["lpips_backbone"] = file_sha256(Path(lpips_backbone))
        out["weights"]["lpips_linear"] = file_sha256(Path(lpips_linear))
        values = []
        with torch.inference_mode():
            for i in range(0, len(gen), batch_size):
                x, y = _lpips_input(gen[i:i + batch_size], device), _lpips_input(tgt[i:i + batch_size], device)
                values.append(model(x, y).double().cpu())
        out["lpips"] = float(torch.cat(values).mean())
    return out
