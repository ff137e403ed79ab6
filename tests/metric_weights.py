"""Weight files with the exact key layouts of the real ones and random values, for the metric
tests (no weights can be downloaded), and torch-fidelity's Inception module loaded by path."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch


def write_inception_weights(path: Path, seed: int = 0, batches_tracked: bool = False) -> dict:
    """A random state dict in the layout of torch-fidelity's weights-inception-2015-12-05 file
    (no num_batches_tracked; batches_tracked=True adds them, as a torchvision state_dict has);
    BatchNorm statistics are random too, so that folding them into the convolutions is tested.
    He-normal convolutions keep the outputs sensitive to the input through the 94 layers."""
    from pydeform.nets import InceptionV3FID

    torch.manual_seed(seed)
    state = InceptionV3FID(random_weights=True).state_dict()
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.endswith("running_var") or key.endswith("bn.weight"):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            value.copy_(torch.randn(value.shape, generator=g) * 0.1)
        elif key.endswith("conv.weight"):  # He-normal: the signal neither vanishes nor explodes with depth
            fan_in = value[0].numel()
            value.copy_(torch.randn(value.shape, generator=g) * (2 / fan_in) ** 0.5)
        elif key.startswith("fc."):
            value.copy_(torch.randn(value.shape, generator=g) * 0.02)  # logits of order 1
    if not batches_tracked:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return state


def torch_fidelity_inception():
    """torch-fidelity's `feature_extractor_inceptionv3` module, loaded from its file without
    running the package's __init__ (which imports torchvision), or None when torch-fidelity
    is not installed (`pip install --no-deps torch-fidelity`). sys.modules is restored."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    saved = {k: v for k, v in sys.modules.items() if k == "torch_fidelity" or k.startswith("torch_fidelity.")}
    package = types.ModuleType("torch_fidelity")
    package.__path__ = [str(root)]
    sys.modules["torch_fidelity"] = package
    try:
        return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    finally:
        for key in [k for k in sys.modules if k == "torch_fidelity" or k.startswith("torch_fidelity.")]:
            del sys.modules[key]
        sys.modules.update(saved)
