"""The factor classifier: a tool (like an Inception network) that reads the background,
shape and texture class of an object image of the synthetic factor set (`pydeform synth
factors`). It is trained on the set's training split only, with FineGAN's object
preprocessing (1.5x box crop, random 128 crop and flip), and its own accuracy on the test
split is measured and stored with it, so that it is reported before anything it measures.

    pydeform factors train --out DIR [--data DIR] [--steps N]   -> DIR/checkpoint.pt, DIR/metrics.json

Network: the 128x128 image averaged down to 64x64, four conv3x3 stride-2 + BN + ReLU blocks
(32, 64, 128, 128 channels: 32 -> 4), global average pooling to 128 features (the
"penultimate features", used for the FID-like distance when no Inception weights are given),
and one linear head per factor. Adam lr 1e-3, batch 32, cross-entropy summed over factors.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pydeform.data.cub import CUBObjects, augment, centre_object
from pydeform.data.synth_factors import FACTORS, read_factors
from pydeform.errors import user_errors
from pydeform.train.common import atomic_write, load_checkpoint, save_checkpoint, seed_everything

__all__ = ["FactorClassifier", "FactorReader", "train_classifier", "load_classifier", "factor_labels", "KIND"]

KIND = "pydeform.factor-classifier"


class FactorClassifier(nn.Module):
    """(B, 3, 128, 128) in [-1, 1] -> ({factor: logits}, features (B, width * 4))."""

    def __init__(self, classes: dict[str, int], width: int = 32) -> None:
        super().__init__()
        chain = [3, width, width * 2, width * 4, width * 4]
        layers: list[nn.Module] = []
        for a, b in zip(chain[:-1], chain[1:]):
            layers += [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(chain[-1], n) for name, n in classes.items()})

    def forward(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        x = F.avg_pool2d(x, 2) if x.shape[-1] >= 128 else x
        features = self.body(x).mean((2, 3))
        return {name: head(features) for name, head in self.heads.items()}, features


class FactorReader:
    """A trained classifier in eval mode: predict(images) -> {factor: (B,) class};
    features(images) -> (B, D); classes {factor: count}; accuracy: its test accuracy."""

    def __init__(self, net: FactorClassifier, classes: dict[str, int], accuracy: dict[str, float]) -> None:
        self.net, self.classes, self.accuracy = net.eval(), classes, accuracy

    @torch.no_grad()
    def predict(self, images: Tensor) -> dict[str, Tensor]:
        logits, _ = self.net(images.float())
        return {k: v.argmax(1) for k, v in logits.items()}

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        return self.net(images.float())[1]


def factor_labels(root: str | os.PathLike, records: list) -> dict[str, list[int]]:
    """{factor: [class of each record]} from ROOT/factors.csv, matched by id."""
    rows = {r["id"]: r for r in read_factors(root)}
    missing = [r.id for r in records if r.id not in rows]
    if missing:
        raise ValueError(f"{Path(root) / 'factors.csv'} has no factors for ids {missing[:5]}")
    return {f: [rows[r.id][f] for r in records] for f in FACTORS}


def _labelled(root: Path, split: str) -> tuple[CUBObjects, Tensor]:
    dataset = CUBObjects(root, split)
    labels = factor_labels(root, dataset.records)
    return dataset, torch.tensor([labels[f] for f in FACTORS]).T  # (N, 3)


def _accuracy(net: FactorClassifier, dataset: CUBObjects, labels: Tensor, device: torch.device) -> dict[str, float]:
    net.eval()
    correct = torch.zeros(len(FACTORS))
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=64, shuffle=False):
            logits, _ = net(centre_object(batch["object"]).to(device))
            truth = labels[batch["index"]]
            for k, f in enumerate(FACTORS):
                correct[k] += (logits[f].argmax(1).cpu() == truth[:, k]).sum()
    net.train()
    return {f: float(correct[k] / len(dataset)) for k, f in enumerate(FACTORS)}


def train_classifier(data: str | os.PathLike, out: str | os.PathLike, steps: int = 600, batch_size: int = 32,
                     lr: float = 1e-3, seed: int = 0, device: str = "cpu", progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train on the training split, measure on the test split; writes OUT/checkpoint.pt and
    OUT/metrics.json ({"accuracy": {factor: test accuracy}, "chance": ...}). Returns metrics."""
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps and batch_size must be >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    root = Path(data)
    with user_errors():
        info = json.loads((root / "info.json").read_text()) if (root / "info.json").is_file() else None
        if info is None:
            raise FileNotFoundError(f"{root / 'info.json'} not found: the factor classifier needs a `pydeform synth factors` set")
        classes = {f: int(info["classes"][f]) for f in FACTORS}
        train_set, train_labels = _labelled(root, "train")
        test_set, test_labels = _labelled(root, "test")
    seed_everything(seed)
    torch_device = torch.device(device)
    net = FactorClassifier(classes).to(torch_device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=len(train_set) >= batch_size,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    bar = tqdm(total=steps, desc="factor classifier", unit="step", disable=not progress)
    step = 0
    while step < steps:
        for batch in loader:
            images, _, _ = augment(batch)
            truth = train_labels[batch["index"]].to(torch_device)
            logits, _ = net(images.to(torch_device))
            loss = sum(F.cross_entropy(logits[f], truth[:, k]) for k, f in enumerate(FACTORS))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            if step >= steps:
                break
    bar.close()
    accuracy = _accuracy(net, test_set, test_labels, torch_device)
    metrics = {"accuracy": accuracy, "chance": {f: 1.0 / n for f, n in classes.items()}, "steps": steps,
               "train_images": len(train_set), "test_images": len(test_set), "data": str(root)}  # fmt: skip
    out = Path(out)
    save_checkpoint({"kind": KIND, "classes": classes, "state": net.state_dict(), "metrics": metrics}, out / "checkpoint.pt")
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    return metrics


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> FactorReader:
    """A FactorReader from a checkpoint of `train_classifier` (a folder or its checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    state = load_checkpoint(path)
    if state.get("kind") != KIND:
        raise ValueError(f"{path} is not a factor classifier checkpoint (kind {state.get('kind')!r})")
    net = FactorClassifier(state["classes"])
    net.load_state_dict(state["state"])
    return FactorReader(net.to(device), state["classes"], state["metrics"]["accuracy"])
