"""Code losses of MixNMatch (`CrossEntropy` in code/train_first_stage.py of
github.com/Yuheng-Li/MixNMatch): cross-entropy against a one-hot code (torch's
cross_entropy of its argmax) or a soft one, -mean_b sum_k q_bk log softmax(logits)_bk."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["code_cross_entropy"]


def code_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """logits, target (B, K); a target whose every row has a 1 is hard (their test:
    label.max(dim=1)[0].min() == 1), otherwise soft. In float32, outside autocast."""
    if logits.shape != target.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be (B, K)")
    with torch.autocast(logits.device.type, enabled=False):
        logits, target = logits.float(), target.float()
        if bool(target.max(1).values.min() == 1):
            return F.cross_entropy(logits, target.argmax(1))
        return -(logits.log_softmax(1) * target).sum(1).mean()
