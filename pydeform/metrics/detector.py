"""A small COCO-18 keypoint detector, the measuring tool of "pose kept" (PCKh of generated
images against the target pose, as the paper's Table 2 measures it with a pretrained pose
estimator, which cannot be downloaded here).

It is trained on the TRAINING images of a pose-pair set (which know their keypoints) and
nothing else; its own PCKh on the real test images is reported before it measures
anything. Network: a dilated fully convolutional net to 18 maps at 1/8 resolution, a
spatial soft-argmax per joint (x, y in input pixels) and a presence logit per joint
(global average of a second head). Loss: L1 of the soft-argmax coordinates of present
joints (in units of the image height) + binary cross-entropy of presence.

    python -m pydeform.metrics.detector train --data DIR --name synth --out det.pt --steps 3000
    python -m pydeform.metrics.detector score --checkpoint det.pt --data DIR --name synth

A checkpoint holds {"kind": "pydeform.keypoint_detector", "size", "state", "steps"}.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pydeform.data._images import to_rgb
from pydeform.metrics.keypoints import keypoint_error, pckh
from pydeform.nets.weights import load_state_file
from pydeform.pose.keypoints import NUM_JOINTS, read_annotations

__all__ = [
    "KIND",
    "KeypointDetector",
    "KeypointImages",
    "detect",
    "load_detector",
    "score_detector",
    "train_detector",
]  # fmt: skip

KIND = "pydeform.keypoint_detector"


class KeypointDetector(nn.Module):
    """images (B, 3, H, W) in [-1, 1] -> (xy (B, 18, 2) pixels, presence logits (B, 18))."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width

        def conv(a: int, b: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, 3, stride, padding=dilation, dilation=dilation),
                                 nn.BatchNorm2d(b), nn.ReLU(inplace=True))  # fmt: skip

        self.body = nn.Sequential(conv(3, w // 2, 2), conv(w // 2, w, 2), conv(w, w), conv(w, 2 * w, 2),
                                  conv(2 * w, 2 * w), conv(2 * w, 2 * w, dilation=2), conv(2 * w, 2 * w, dilation=4),
                                  conv(2 * w, 2 * w))  # fmt: skip
        self.maps = nn.Conv2d(2 * w, NUM_JOINTS, 1)
        self.presence = nn.Conv2d(2 * w, NUM_JOINTS, 1)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        features = self.body(images)
        maps = self.maps(features)
        b, j, h, w = maps.shape
        weights = maps.flatten(2).softmax(-1).view(b, j, h, w)
        # map cell centres back to input pixels (a stride-s cell i covers input rows s i .. s i + s - 1)
        ys = (torch.arange(h, device=images.device, dtype=maps.dtype) + 0.5) * (height / h) - 0.5
        xs = (torch.arange(w, device=images.device, dtype=maps.dtype) + 0.5) * (width / w) - 0.5
        x = (weights.sum(2) * xs).sum(-1)
        y = (weights.sum(3) * ys).sum(-1)
        return torch.stack([x, y], -1), self.presence(features).mean((2, 3))


class KeypointImages(Dataset):
    """The images of a pose-pair split with their keypoints: items (image (3, H, W) in
    [-1, 1], keypoints (18, 2) float32, -1 missing)."""

    def __init__(self, root: str | os.PathLike, name: str, split: str) -> None:
        root = Path(root)
        self.folder = root / f"{name}-dataset" / split
        annotation = root / f"{name}-annotation-{split}.csv"
        if not annotation.is_file() or not self.folder.is_dir():
            raise FileNotFoundError(f"{annotation} or {self.folder} not found")
        self.annotations = read_annotations(annotation)
        present = set(os.listdir(self.folder))
        self.names = sorted(n for n in self.annotations if n in present)
        if not self.names:
            raise ValueError(f"{annotation}: no image of it is in {self.folder}")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        with Image.open(self.folder / self.names[i]) as image:
            pixels = np.asarray(to_rgb(image), dtype=np.float32)
        return (torch.from_numpy(pixels.copy()).permute(2, 0, 1) / 127.5 - 1,
                torch.from_numpy(self.annotations[self.names[i]].xy.astype(np.float32)))  # fmt: skip


@torch.no_grad()
def detect(model: KeypointDetector, images: Tensor, threshold: float = 0.0) -> Tensor:
    """(B, 18, 2) keypoints of images in [-1, 1]; a joint whose presence logit is below
    `threshold` is -1 (missing). Eval mode."""
    was = model.training
    model.eval()
    xy, presence = model(images)
    model.train(was)
    return torch.where((presence >= threshold)[..., None], xy, torch.full_like(xy, -1.0))


def train_detector(data: str | os.PathLike, name: str, out: str | os.PathLike, steps: int = 3000,
                   batch_size: int = 16, lr: float = 1e-3, width: int = 32, seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Train on the TRAIN split of a pose-pair set; save the checkpoint to `out`."""
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps and batch_size must be >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    torch.manual_seed(seed)
    dataset = KeypointImages(data, name, "train")
    size = tuple(dataset[0][0].shape[-2:])
    model = KeypointDetector(width)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    step, last = 0, {}
    model.train()
    while step < steps:
        for images, target in loader:
            rate = lr * (0.1 if step >= 0.8 * steps else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = rate
            xy, presence = model(images)
            present = (target != -1).all(-1)
            coords = ((xy - target).abs().sum(-1) * present).sum() / present.sum().clamp_min(1) / size[0]
            visible = F.binary_cross_entropy_with_logits(presence, present.float())
            loss = coords + 0.1 * visible
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            last = {"step": step, "coords": coords.item(), "presence": visible.item()}
            if progress and (step % 100 == 0 or step == steps):
                print(f"detector step {step}: coords {last['coords']:.4f} presence {last['presence']:.4f}", flush=True)
            if step >= steps:
                break
    torch.save({"kind": KIND, "size": size, "width": width, "state": model.state_dict(), "steps": steps,
                "data": str(data), "name": name}, out)  # fmt: skip
    return last


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu") -> KeypointDetector:
    """A detector checkpoint the user names (`train_detector`'s output)."""
    state = load_state_file(Path(path), "keypoint detector")
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise ValueError(f"{path} is not a keypoint detector checkpoint")
    model = KeypointDetector(state["width"]).to(device)
    model.load_state_dict(state["state"])
    model.eval()
    model.size = tuple(state["size"])
    return model


def score_detector(model: KeypointDetector, images: Tensor, target: Tensor, batch_size: int = 32) -> dict[str, float]:
    """PCKh@0.5 and the mean keypoint error (pixels) of detections on `images` against `target`."""
    detected = torch.cat([detect(model, images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    correct, counted = pckh(detected.numpy(), target.numpy())
    total, joints = keypoint_error(detected.numpy(), target.numpy())
    return {"pckh": correct / max(counted, 1), "keypoint_error": total / max(joints, 1), "joints": counted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pydeform.metrics.detector", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on the train split of a pose-pair set")
    t.add_argument("--data", required=True)
    t.add_argument("--name", default="synth")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch-size", type=int, default=16)
    s = sub.add_parser("score", help="PCKh of the detector on a split's real images")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--name", default="synth")
    s.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    if args.command == "train":
        print(train_detector(args.data, args.name, args.out, args.steps, args.batch_size))
    else:
        model = load_detector(args.checkpoint)
        items = KeypointImages(args.data, args.name, args.split)
        images, target = map(torch.stack, zip(*(items[i] for i in range(len(items)))))
        print(score_detector(model, images, target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
