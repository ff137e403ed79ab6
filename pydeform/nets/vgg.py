"""VGG19 feature extractor (Simonyan & Zisserman 2015) for perceptual, style and
nearest-neighbour losses, defined here so pydeform needs no torchvision.

The module indices match torchvision's `vgg19().features`, so a torchvision state dict
(`features.N.weight`, `features.N.bias`) loads as it is. Weights come from a file the user
names; nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from pydeform.nets.weights import load_state_file

# Output channels per conv, "M" = 2x2 max-pool: VGG19, configuration E of the paper.
_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]

# ImageNet statistics the pretrained weights expect (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The Caffe/Keras VGG19 (keras.applications.vgg19.preprocess_input): BGR in [0, 255] minus
# this per-channel mean, in B, G, R order.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESSING = ("imagenet", "caffe")


def _layer_names() -> dict[str, int]:
    """'conv1_1', 'relu1_1', ..., 'pool5' -> index in the features Sequential."""
    names, block, conv, index = {}, 1, 1, 0
    for item in _CONFIG:
        if item == "M":
            names[f"pool{block}"] = index
            block, conv, index = block + 1, 1, index + 1
        else:
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            conv, index = conv + 1, index + 2
    return names


LAYERS = _layer_names()


class VGG19Features(nn.Module):
    """Frozen VGG19 convolutional features.

    Args:
        weights: path to a torchvision-layout state dict of vgg19 (classifier keys are
            ignored). Required unless `random_weights=True`.
        layers: names of the activations `forward` returns, e.g. ("relu1_2",); the network
            is cut after the deepest one.
        random_weights: explicitly accept randomly initialised weights (tests, smoke runs).
            Losses on random features still compare images, but not as the papers did.
        input_range: the range of the images passed in.
        preprocessing: "imagenet" (torchvision's weights: RGB mapped to [0, 1], normalised
            with the ImageNet mean and std) or "caffe" (Caffe/Keras weights, e.g. the Keras
            VGG19 that the Variational U-Net used, converted to this layout: RGB -> BGR in
            [0, 255] minus `CAFFE_MEAN_BGR`).
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        layers: tuple[str, ...] = ("relu1_2",),
        random_weights: bool = False,
        input_range: tuple[float, float] = (-1.0, 1.0),
        preprocessing: str = "imagenet",
    ) -> None:
        super().__init__()
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
        self.preprocessing = preprocessing
        unknown = [name for name in layers if name not in LAYERS]
        if not layers or unknown:
            raise ValueError(f"layers must be VGG19 layer names like 'relu1_2', got {list(layers)}")
        if weights is None and not random_weights:
            raise ValueError(
                "VGG19Features needs pretrained weights: pass weights=PATH to a torchvision vgg19 "
                "state dict (nothing is downloaded), or random_weights=True to accept random features"
            )
        self.layers = tuple(layers)
        depth = max(LAYERS[name] for name in layers) + 1
        modules: list[nn.Module] = []
        in_channels = 3
        for item in _CONFIG:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                in_channels = item
        self.features = nn.Sequential(*modules[:depth])
        if weights is not None:
            self._load(Path(weights))
        low, high = input_range
        if preprocessing == "imagenet":
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
            # x_normalised = (x - low) / (high - low) then (. - mean) / std, folded into one affine map.
            scale, shift = 1.0 / ((high - low) * std), (-low / (high - low) - mean) / std
        else:  # applied after the RGB -> BGR flip: 255 (x - low) / (high - low) - mean_bgr
            scale = torch.full((3,), 255.0 / (high - low))
            shift = -low * 255.0 / (high - low) - torch.tensor(CAFFE_MEAN_BGR)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        state = load_state_file(path, "VGG19 weights")
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
        wanted = {k: v for k, v in state.items() if k.startswith("features.")}
        own = self.state_dict()
        missing = [k for k in own if k not in wanted]
        if missing:
            raise ValueError(f"{path} is not a torchvision vgg19 state dict: missing {missing[:4]}")
        for key in own:
            if wanted[key].shape != own[key].shape:
                raise ValueError(f"{path}: {key} has shape {tuple(wanted[key].shape)}, expected {tuple(own[key].shape)}")
        self.load_state_dict({k: wanted[k] for k in own})

    def train(self, mode: bool = True) -> "VGG19Features":
        return super().train(False)  # always a fixed feature extractor

    def preprocess(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) in `input_range` -> the network's input (see `preprocessing`)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if self.preprocessing == "caffe":
            images = images.flip(1)
        return images * self.scale.to(images.dtype) + self.shift.to(images.dtype)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images (B, 3, H, W) in `input_range` -> {layer name: (B, C_l, H_l, W_l)}."""
        h = self.preprocess(images)
        wanted = {LAYERS[name]: name for name in self.layers}
        out = {}
        for index, module in enumerate(self.features):
            h = module(h)
            if index in wanted:
                out[wanted[index]] = h
        return out
