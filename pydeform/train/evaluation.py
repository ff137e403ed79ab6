"""What every `pydeform test MODEL` shares: its settings (`EvalConfig`, which a family's
test config subclasses) and the FID/IS/LPIPS of the generated test split (`ImageMetrics`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pydeform.errors import user_errors
from pydeform.options import option
from pydeform.train.common import check_minimum, require_device, require_folder

__all__ = ["EvalConfig", "ImageMetrics", "format_image_metrics"]


@dataclass
class EvalConfig:
    """The settings every `pydeform test MODEL` has; a family's EvalConfig subclasses it."""

    checkpoint: str = option(None, "the OUT/checkpoint.pt of a training run", required=True, metavar="PATH")
    out: str = option(None, "output folder: images/, samples.png, metrics.json", required=True, metavar="DIR")
    data: str | None = option(None, "dataset folder (default: the one the checkpoint was trained on)", metavar="DIR")
    device: str = option("cpu", "where to run", choices=("cpu", "cuda"))
    batch_size: int = option(8, "images per forward pass")
    workers: int = option(0, "data loader processes")
    progress: bool = option(True, "no progress bar", flag="--no-progress")
    inception: str | None = option(None, "FID Inception weights (pt_inception-2015-12-05-6726825d.pth) for IS and FID",
                                   metavar="PATH")  # fmt: skip
    real_stats: str | None = option(None, "real images for FID: a .npz of `pydeform metrics fid --save-stats`, or a "
                                    "folder of images", metavar="PATH")  # fmt: skip
    lpips_backbone: str | None = option(None, "torchvision alexnet state dict, for LPIPS", metavar="PATH")
    lpips_linear: str | None = option(None, "the lpips package's v0.1 alex.pth, for LPIPS", metavar="PATH")

    def __post_init__(self) -> None:
        check_minimum(self, ("batch_size",), 1)
        check_minimum(self, ("workers",), 0)

    def check_machine(self) -> None:
        """What only the machine that runs the test can say, before anything is read: a CUDA
        GPU for --device cuda, and an OUT that is not a file (user errors)."""
        require_device(self.device)
        require_folder(self.out, "results")


class ImageMetrics:
    """FID, IS and LPIPS of a test split (`pydeform.metrics.generation_metrics`), for every
    family's `test`, from the weight files an EvalConfig names (`files`: inception,
    real_stats, lpips_backbone, lpips_linear). `add` each batch of generated (and target)
    images as uint8 (B, 3, H, W): they are kept only when some weight file is named, so a
    test without them costs nothing and still says what was skipped and why."""

    FILES = ("inception", "real_stats", "lpips_backbone", "lpips_linear")

    def __init__(self, device: str = "cpu", progress: bool = False, **files: str | None) -> None:
        unknown = set(files) - set(self.FILES)
        if unknown:
            raise TypeError(f"unknown weight files {sorted(unknown)}; expected some of {self.FILES}")
        self.files, self.device, self.progress = files, device, progress
        self.wanted = any(files.get(name) for name in ("inception", "lpips_backbone", "lpips_linear"))
        self.generated: list[Tensor] = []
        self.targets: list[Tensor] = []

    def add(self, generated: Tensor, targets: Tensor | None = None) -> None:
        if self.wanted or not self.generated:
            self.generated.append(generated.cpu())
            if targets is not None:
                self.targets.append(targets.cpu())

    def result(self) -> dict[str, Any]:
        from pydeform.metrics import generation_metrics

        files = self.files
        with user_errors():
            return generation_metrics(
                torch.cat(self.generated), torch.cat(self.targets) if self.targets else None,
                inception_weights=files.get("inception"), lpips_backbone=files.get("lpips_backbone"),
                lpips_linear=files.get("lpips_linear"), real_stats=files.get("real_stats"), device=self.device,
                progress=self.progress,
            )  # fmt: skip


def format_image_metrics(metrics: dict[str, Any]) -> str:
    """One line of the FID/IS/LPIPS computed, one per metric skipped, with the reason."""
    shown = [f"IS {metrics['is_mean']:.3f} +- {metrics['is_std']:.3f}"] if "is_mean" in metrics else []
    shown += [f"{name.upper()} {metrics[name]:.4f}" for name in ("fid", "lpips") if name in metrics]
    lines = ["   ".join(shown)] if shown else []
    lines += [f"{name} skipped: {reason}" for name, reason in metrics.get("skipped", {}).items()]
    return "\n".join(lines)
