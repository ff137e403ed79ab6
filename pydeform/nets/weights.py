"""Reading weight files strictly: every key and every shape, or a clear error."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["load_state_file", "load_strict", "file_sha256"]


def load_state_file(path: Path, what: str, kind: str = "state-dict file", map_location: object = "cpu") -> object:
    """torch.load(path) with weights_only=True (zip or legacy pickle format), on the CPU by
    default; a file that does not load is a ValueError naming it as a `kind`, with the first
    line of torch's reason."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # not a torch file, or a pickle of more than tensors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a readable {kind} ({first})") from error


def load_strict(module: nn.Module, state: object, path: Path, what: str, prefix_filter: str | None = None) -> None:
    """Load `state` into `module` after checking every key and shape; BatchNorm's
    `num_batches_tracked` counters may be absent (older files), nothing else may.
    prefix_filter: only keys starting with it are compared (e.g. "features." of a
    torchvision classifier file); the others are ignored."""
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    if prefix_filter is not None:
        state = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix_filter)}
    own = module.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a {what} weight file: missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, value in state.items():
        if not isinstance(value, Tensor) or value.shape != own[key].shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{path}: {key} has shape {shape}, expected {tuple(own[key].shape)}")
    module.load_state_dict(dict(state), strict=False)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
