"""What the pose-transfer families (Deformable GAN, PATN, ...) share on top of the engine:
the cached synthetic pose-pair set and the test protocol's image conversion and metrics.

- `synthetic_pose_pairs(size, identities)`: the synthetic set (`pydeform.data.synth_pose`)
  written once into cache_dir()/synth-pose-{H}x{W}-seed0[-n{identities}], file prefix "synth".
- `to_uint8_values`, `metric_sums`, `image_name`, `format_metrics`: the Deformable GAN
  authors' test protocol (their test.py), which PATN's scripts (tool/getMetrics_*.py) follow
  for SSIM and mask-SSIM as well: generated images truncated to 8 bits, SSIM with a Gaussian
  window on [0, 255], mask-SSIM with the target's body mask, L1 on [-1, 1], PSNR. PATN's
  DeepFashion script also pads both images with 40 white columns each side before SSIM and
  mask-SSIM (`pad_fashion`), which `test patn` does for its fashion preset.
- `PoseTestConfig`, `PoseScores`: pose kept, measured as the Variational U-Net's Table 2
  does it, by detecting the keypoints again in the generated images (a detector checkpoint
  the user names, `pydeform.metrics.detector`): PCKh@0.5 and the mean keypoint error
  against the target pose, the same column for every family.
"""
from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pydeform.errors import mark_user_error, user_errors
from pydeform.options import option
from pydeform.pose import stickman
from pydeform.train.common import DistInfo, render_pose, save_image_grid, synthetic_set, to_device
from pydeform.train.evaluation import EvalConfig, ImageMetrics, format_image_metrics

__all__ = [
    "test_pose_pairs",
    "check_image_size",
    "pose_picture",
    "pose_sample_rows",
    "pose_rows",
    "PoseTestConfig",
    "PoseScores",
    "SYNTH_NAME",
    "SYNTH_SEED",
    "synthetic_pose_pairs",
    "pose_pair_folder",
    "to_uint8_values",
    "metric_sums",
    "image_name",
    "format_metrics",
    "METRIC_NAMES",
]

SYNTH_NAME = "synth"  # file prefix of the synthetic set
SYNTH_SEED = 0  # the synthetic set does not change with the training seed
METRIC_NAMES = ("ssim", "mask_ssim", "l1", "psnr")


def synthetic_pose_pairs(
    size: tuple[int, int], identities: int = 100, progress: bool = True, info: DistInfo | None = None
) -> Path:
    """The synthetic pose-pair set for images of `size` (file prefix "synth"), written once
    into cache_dir()/synth-pose-{H}x{W}-seed0[-n{identities}]-{digest} (`synthetic_set`)."""
    from pydeform.data import synth_pose

    suffix = "" if identities == 100 else f"-n{identities}"
    write = lambda tmp: synth_pose.write_pose_pairs(tmp, size, identities, SYNTH_SEED, name=SYNTH_NAME,  # noqa: E731
                                                    progress=progress)  # fmt: skip
    return synthetic_set("pose-pair", f"synth-pose-{size[0]}x{size[1]}-seed{SYNTH_SEED}{suffix}", synth_pose, write, info)


def pose_pair_folder(
    data: str | os.PathLike | None, name: str | None, preset_name: str, size: tuple[int, int], identities: int,
    progress: bool, info: DistInfo | None = None,
) -> tuple[Path, str]:
    """The folder and file prefix of a pose-pair set: `data` with `name` (default the
    preset's `preset_name`), or without a folder the synthetic set of `size` (prefix
    "synth"). Training passes its settings; testing the ones given, else the checkpoint's."""
    if data is None:
        return synthetic_pose_pairs(size, identities, progress, info), name or SYNTH_NAME
    return Path(data), name or preset_name


def check_image_size(size: tuple[int, int], expected: tuple[int, int], where: str, preset: str, hint: str = "") -> None:
    """Refuse a dataset (`where`) whose images are not the model's size."""
    if tuple(size) != tuple(expected):
        raise ValueError(f"{where} holds {size[0]}x{size[1]} images but the model expects {expected[0]}x{expected[1]} "
                         f"(preset {preset!r}; set --size to match){hint}")  # fmt: skip


def pose_picture(batch: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
    """The target pose of a sample grid in [-1, 1]: the stickman of the target keypoints where
    the items carry them (clearer than heatmaps with sigma 6 px on small images), else the
    coloured heatmaps."""
    if "target_kp" in batch:
        return stickman(batch["target_kp"], size).to(batch["source"].device) * 2 - 1
    return render_pose(batch["target_pose"])


@torch.no_grad()
def pose_sample_rows(generator: torch.nn.Module, generate: Callable[[dict[str, Tensor]], Tensor],
                     batch: dict[str, Tensor], autocast: Any) -> list[list[Tensor]]:  # fmt: skip
    """Rows of source | target pose | generate(batch) | real target, one per pair, with the
    generator in eval mode (no dropout) so that grids of different steps compare."""
    was_training = generator.training
    generator.eval()
    with autocast:
        fake = generate(batch).float()
    generator.train(was_training)
    return pose_rows(batch, fake)


def pose_rows(batch: dict[str, Tensor], fake: Tensor) -> list[list[Tensor]]:
    """Rows of source | target pose | fake | real target, one per pair of `fake`."""
    pose = pose_picture(batch, tuple(fake.shape[-2:]))
    return [[batch["source"][b], pose[b], fake[b], batch["target"][b]] for b in range(fake.shape[0])]


def to_uint8_values(images: Tensor, truncate: bool) -> Tensor:
    """[-1, 1] -> float values in {0, ..., 255}. The authors' evaluation truncated the
    generated images (255 (x + 1) / 2, cast to uint8); dataset images are already 8-bit
    values, which rounding recovers exactly."""
    values = (images.float().clamp(-1, 1) + 1) * 127.5
    return (values.floor() if truncate else values.round()).clamp(0, 255)


def metric_sums(prediction: Tensor, target: Tensor, mask: Tensor | None, pad_fashion: bool = False) -> dict[str, float]:
    """Sums over the batch of the test metrics: prediction, target (B, 3, H, W) 8-bit
    values as floats; mask (B, 1, H, W), or None for no mask-SSIM. SSIM and mask-SSIM on
    [0, 255] with the prediction's range, L1 on [-1, 1], PSNR with peak 255. `pad_fashion`:
    SSIM and mask-SSIM of 256x176 images padded back to 256x256 with white columns, the mask
    with 0 (PATN's DeepFashion script, `addBounding` in tool/getMetrics_fashion.py;
    `pydeform.metrics.protocols.pad_deepfashion`, as `pydeform metrics --protocol patn`)."""
    metrics = importlib.import_module("pydeform.metrics")
    protocols = importlib.import_module("pydeform.metrics.protocols")

    def pad(x: Tensor, value: float) -> Tensor:
        return protocols.pad_deepfashion(x, value) if pad_fashion else x

    values = {"ssim": metrics.ssim(pad(prediction, 255.0), pad(target, 255.0))}
    if mask is not None:
        values["mask_ssim"] = metrics.mask_ssim(pad(prediction, 255.0), pad(target, 255.0), pad(mask, 0.0))
    values.update(l1=metrics.l1(prediction / 127.5 - 1, target / 127.5 - 1), psnr=metrics.psnr(prediction, target, 255.0))
    return {name: float(value.double().sum()) for name, value in values.items()}


def image_name(batch: dict[str, Any], offset: int, index: int) -> str:
    """<source>___<target>.png as the authors named generated images, else <index>.png."""
    if "source_name" in batch and "target_name" in batch:
        return f"{Path(batch['source_name'][offset]).stem}___{Path(batch['target_name'][offset]).stem}.png"
    return f"{index:06d}.png"


@dataclass
class PoseTestConfig(EvalConfig):
    """The settings of every pose-transfer family's `test`."""

    detector: str | None = option(None, "keypoint detector checkpoint (python -m pydeform.metrics.detector): adds "
                                  "PCKh@0.5 and the mean keypoint error of the generated images against the target "
                                  "pose", metavar="PATH")  # fmt: skip


class PoseScores:
    """PCKh@0.5 and the mean keypoint error (pixels) of the keypoints a detector finds in
    generated images, against the target pose, at the dataset's own image size (the
    Pose-Transfer evaluation's `calPCKH`, `pydeform.metrics.pckh`)."""

    def __init__(self, detector: str, device: str | torch.device) -> None:
        from pydeform.metrics.detector import load_detector

        with user_errors():
            self.model = load_detector(detector, device)
        self.path, self.sums = str(detector), [0, 0, 0.0, 0]  # PCKh correct, counted; error sum, joints

    def add(self, images: Tensor, batch: dict[str, Any]) -> None:
        """images (B, 3, h, w) in [-1, 1], resized to the target's size when they differ."""
        from pydeform.metrics.detector import detect
        from pydeform.metrics.keypoints import keypoint_error, pckh

        target = batch.get("target_kp_native", batch["target_kp"]).cpu().numpy()
        size = batch.get("target_native", batch["target"]).shape[-2:]
        if tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        detected = detect(self.model, images.clamp(-1, 1)).cpu().numpy()
        correct, counted = pckh(detected, target)
        total, joints = keypoint_error(detected, target)
        for index, value in enumerate((correct, counted, total, joints)):
            self.sums[index] += value

    def result(self) -> dict[str, Any]:
        correct, counted, total, joints = self.sums
        return {"pckh": correct / max(counted, 1), "keypoint_error": total / max(joints, 1), "joints": counted,
                "detector": self.path}  # fmt: skip


def format_pose(pose: dict[str, Any]) -> str:
    return (f"pose: PCKh@0.5 {pose['pckh']:.4f}, mean keypoint error {pose['keypoint_error']:.2f} px "
            f"({pose['joints']} target joints)")  # fmt: skip


def test_pose_pairs(
    test_set: Dataset,
    out: Path,
    generate: Callable[[dict[str, Any]], Tensor],
    sample_rows: Callable[[dict[str, Tensor], Tensor], list[list[Tensor]]],
    *,
    desc: str,
    device: str = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    progress: bool = True,
    detector: str | None = None,
    pad_fashion: bool = False,
    **image_metric_files: str | None,
) -> dict[str, Any]:
    """The test protocol of every pose-transfer family: the test pairs in order, through
    generate(batch) -> (B, 3, H, W) in [-1, 1] (no grad; a family measures what else it
    wants inside it). Writes out/images/<source>___<target>.png (truncated to 8 bits: the
    images that are scored) and out/samples.png (sample_rows of the first batch, at most 4
    pairs). Returns {"generated", "copy_source"} (means of `metric_sums` over the pairs),
    "image_metrics" (FID/IS/LPIPS against the targets when weight files are named, else
    what was skipped and why, see `pydeform.train.evaluation.ImageMetrics`), "pairs" and, with a
    `detector` checkpoint, "pose" and "copy_source_pose" (`PoseScores`). `pad_fashion`:
    see `metric_sums` (recorded as "ssim_pad_columns" when it pads)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=workers)
    sums: dict[str, dict[str, float]] = {"generated": {}, "copy_source": {}}
    image_metrics = ImageMetrics(device, progress, **image_metric_files)
    # Pose kept: the generated images, and copying the source as the baseline that keeps none.
    poses = {key: PoseScores(detector, device) for key in ("generated", "copy_source")} if detector else {}
    count, batches = 0, iter(tqdm(loader, desc=desc, unit="batch", disable=not progress))
    with torch.no_grad():
        while True:
            with user_errors():  # an image the loader cannot read is the data's fault
                batch = next(batches, None)
            if batch is None:
                break
            batch = to_device(batch, torch.device(device))
            fake = generate(batch)
            if count == 0:
                if min(fake.shape[-2:]) < 11:
                    raise mark_user_error(ValueError(
                        f"the test scores SSIM with an 11x11 window: images of {fake.shape[-2]}x{fake.shape[-1]} "
                        "pixels are too small (train at 11x11 or more)"
                    ))  # fmt: skip
                first = {k: v[:4] for k, v in batch.items() if isinstance(v, Tensor)}
                save_image_grid(sample_rows(first, fake[:4]), out / "samples.png")
            generated = to_uint8_values(fake, truncate=True)
            pixels = generated.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for offset, image in enumerate(pixels):
                Image.fromarray(image).save(out / "images" / image_name(batch, offset, count + offset))
            target, mask = to_uint8_values(batch["target"], truncate=False), batch["target_mask"].float()
            source = to_uint8_values(batch["source"], truncate=False)
            image_metrics.add(generated.to(torch.uint8), target.to(torch.uint8))
            if poses:
                poses["generated"].add(generated / 127.5 - 1, batch)  # the 8-bit images written and scored
                poses["copy_source"].add(batch["source"], batch)
            for key, prediction in (("generated", generated), ("copy_source", source)):
                for metric, value in metric_sums(prediction, target, mask, pad_fashion).items():
                    sums[key][metric] = sums[key].get(metric, 0.0) + value
            count += fake.shape[0]
    if count == 0:
        raise ValueError("the test split is empty")
    result = {
        "generated": {k: v / count for k, v in sums["generated"].items()},
        "copy_source": {k: v / count for k, v in sums["copy_source"].items()},
        "image_metrics": image_metrics.result(),
        "pairs": count,
        **({"ssim_pad_columns": importlib.import_module("pydeform.metrics.protocols").FASHION_PAD}
           if pad_fashion else {}),  # fmt: skip
    }
    if poses:
        result["pose"], result["copy_source_pose"] = poses["generated"].result(), poses["copy_source"].result()
    return result


def format_metrics(result: dict[str, Any]) -> str:
    """A small table of an evaluation's metrics: generated vs copy-the-source, then FID/IS/LPIPS
    or what was skipped."""
    lines = [f"{'':12s}" + "".join(f"{n:>11s}" for n in METRIC_NAMES)]
    for key in ("generated", "copy_source"):
        values = result[key]
        cells = (f"{values[n]:11.4f}" if math.isfinite(values[n]) else f"{values[n]:>11}" for n in METRIC_NAMES)
        lines.append(f"{key:12s}" + "".join(cells))
    if "image_metrics" in result:
        lines.append(format_image_metrics(result["image_metrics"]))
    if "pose" in result:
        lines.append(format_pose(result["pose"]))
    if "copy_source_pose" in result:
        lines.append(f"copy the source {format_pose(result['copy_source_pose'])}")
    lines.append(f"{result['pairs']} test pairs, checkpoint step {result['step']}")
    return "\n".join(lines)
