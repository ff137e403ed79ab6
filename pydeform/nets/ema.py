"""An exponential moving average of a network's parameters, as FineGAN keeps one of its
generator (`copy_G_params`, `load_params` and `avg_p.mul_(0.999).add_(0.001, p)` in
code/trainer.py of github.com/kkanshul/finegan): parameters only, buffers (BatchNorm
statistics) are the live network's."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ParameterEMA"]


class ParameterEMA:
    """avg <- decay * avg + (1 - decay) * p after each update, starting from the
    parameters at construction. `copy_into(net)` writes the averages into a network of the
    same architecture; `averaged(net)` returns a deep copy of `net` with them (eval mode)."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.params = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = list(model.parameters())
        if len(params) != len(self.params):
            raise ValueError(f"the model has {len(params)} parameters, the average {len(self.params)}")
        for avg, p in zip(self.params, params):
            avg.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    @torch.no_grad()
    def copy_into(self, model: nn.Module) -> nn.Module:
        params = list(model.parameters())
        if len(params) != len(self.params) or any(a.shape != p.shape for a, p in zip(self.params, params)):
            raise ValueError("the model's parameters do not match the average's")
        for avg, p in zip(self.params, params):
            p.copy_(avg)
        return model

    def averaged(self, model: nn.Module) -> nn.Module:
        return self.copy_into(copy.deepcopy(model)).eval()

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "params": [p.clone() for p in self.params]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved: list[Tensor] = state["params"]
        if len(saved) != len(self.params) or any(a.shape != b.shape for a, b in zip(saved, self.params)):
            raise ValueError("the saved average does not match the model's parameters")
        self.decay = float(state["decay"])
        for avg, s in zip(self.params, saved):
            avg.copy_(s)
