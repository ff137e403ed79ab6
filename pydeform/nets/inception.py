"""The Inception-v3 of FID and IS (the TensorFlow graph `inception-2015-12-05` of Salimans et
al. 2016 and Heusel et al. 2017), defined here so pydeform needs no torchvision.

Module and branch names follow pytorch-fid (`src/pytorch_fid/inception.py`, mseitzer) and
torch-fidelity (`torch_fidelity/feature_extractor_inceptionv3.py`, toshas), which both take
them from torchvision's Inception3. Their weight files therefore load strictly:
`pt_inception-2015-12-05-6726825d.pth` (pytorch-fid) and
`weights-inception-2015-12-05-6726825d.pth` (torch-fidelity). Nothing is downloaded.

The TensorFlow quirks both packages keep, kept here:
- BatchNorm eps 1e-3;
- the average pools of the A, C and E_1 blocks exclude the zero padding
  (`count_include_pad=False`); the last E block (Mixed_7c) max-pools instead;
- a 1008-way classifier `fc` (1000 ImageNet classes plus 8 unused).

Two input resizings, named by what they match (`resize=`):
- "torch-fidelity": TensorFlow 1.x bilinear resize to 299 x 299 (no half-pixel offset:
  source = destination * in / out), then (x - 128) / 128 on 0..255 values.
- "pytorch-fid": `F.interpolate(bilinear, align_corners=False)` of x / 255, then 2 x - 1.

Inference folds each BatchNorm into its convolution (the state dict keeps the separate
`conv`/`bn` entries of the weight files), runs the 1 x 1 convolutions that read one input as
one convolution, applies the average-pool branches' 1 x 1 convolution before the pool (the
same linear map; the pool then runs over fewer channels), and runs channels_last.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydeform.nets.weights import load_state_file, load_strict

__all__ = ["InceptionV3FID", "resize_tf1_bilinear", "RESIZE_MODES", "INCEPTION_WEIGHT_FILES"]

RESIZE_MODES = ("torch-fidelity", "pytorch-fid")
INPUT_SIZE = 299
INCEPTION_WEIGHT_FILES = (
    "pt_inception-2015-12-05-6726825d.pth (pytorch-fid: "
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth) or "
    "weights-inception-2015-12-05-6726825d.pth (torch-fidelity: "
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth)"
)


def resize_tf1_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """TensorFlow 1.x `resize_bilinear(align_corners=False)`: output pixel i samples source
    position i * in / out (no half-pixel offset), linear between floor and floor + 1, the
    upper tap clamped to the last pixel. x: (B, C, H, W) float -> (B, C, size[0], size[1]).

    Positions are computed in float32 as in torch-fidelity's
    `interpolate_bilinear_2d_like_tensorflow1x(method="slow")`, which is bit-exact with TF.
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    out = x
    for dim, (n_in, n_out) in ((2, (x.shape[2], size[0])), (3, (x.shape[3], size[1]))):
        pos = torch.arange(n_out, dtype=torch.float32, device=x.device) * torch.tensor(n_in / n_out, dtype=torch.float32)
        lo = pos.long()
        hi = (lo + 1).clamp_max(n_in - 1)
        frac = (pos - lo.float()).to(x.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = n_out
        a, b = out.index_select(dim, lo.to(x.device)), out.index_select(dim, hi.to(x.device))
        out = a + (b - a) * frac.view(shape)
    return out


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU; the BatchNorm is folded into the
    convolution at inference (the network is always in eval mode)."""

    def __init__(self, in_channels: int, out_channels: int, **conv_args) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_args)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def folded(self) -> tuple[Tensor, Tensor]:
        """(weight, bias) of the convolution with the BatchNorm folded in."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.folded()
        c = self.conv
        return F.relu(F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups))


def _avg_pool_no_pad(x: Tensor) -> Tensor:
    # TensorFlow's average pool leaves the padding out of the average.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _pointwise(x: Tensor, convs: list[BasicConv2d], pooled: BasicConv2d | None = None) -> list[Tensor]:
    """The 1 x 1 branches that read the same input, as one convolution (x is read once).
    `pooled`: the branch_pool conv of an average-pool branch. A 1 x 1 convolution is linear per
    pixel, so averaging its output without the bias equals applying it to the averaged input,
    as TensorFlow does, and the pool then runs over its fewer output channels."""
    folded = [c.folded() for c in convs + ([pooled] if pooled is not None else [])]
    weight = torch.cat([w for w, _ in folded])
    bias = torch.cat([b if pooled is None or i < len(convs) else torch.zeros_like(b) for i, (_, b) in enumerate(folded)])
    outputs = list(F.conv2d(x, weight, bias).split([w.shape[0] for w, _ in folded], dim=1))
    if pooled is not None:
        outputs[-1] = _avg_pool_no_pad(outputs[-1]) + folded[-1][1].view(1, -1, 1, 1)
    return [F.relu(h) for h in outputs]


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1, b5, b3, pool = _pointwise(x, [self.branch1x1, self.branch5x5_1, self.branch3x3dbl_1], self.branch_pool)
        return torch.cat([b1, self.branch5x5_2(b5), self.branch3x3dbl_3(self.branch3x3dbl_2(b3)), pool], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1, b7, d, pool = _pointwise(x, [self.branch1x1, self.branch7x7_1, self.branch7x7dbl_1], self.branch_pool)
        b7 = self.branch7x7_3(self.branch7x7_2(b7))
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([b1, b7, d, pool], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3, b7 = _pointwise(x, [self.branch3x3_1, self.branch7x7x3_1])
        b3 = self.branch3x3_2(b3)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b (average pool without the padding) and Mixed_7c (`max_pool=True`: the
    TensorFlow graph max-pools in its last block)."""

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        heads = [self.branch1x1, self.branch3x3_1, self.branch3x3dbl_1]
        if self.max_pool:  # a max pool does not commute with the convolution
            b1, b3, d = _pointwise(x, heads)
            pool = self.branch_pool(F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
        else:
            b1, b3, d, pool = _pointwise(x, heads, self.branch_pool)
        d = self.branch3x3dbl_2(d)
        return torch.cat([b1, self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), pool], 1)


class InceptionV3FID(nn.Module):
    """The FID/IS Inception-v3.

    Args:
        weights: path to `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid) or
            `weights-inception-2015-12-05-6726825d.pth` (torch-fidelity); loaded strictly
            (every key, every shape; BatchNorm's `num_batches_tracked` may be absent).
            Required unless `random_weights=True`.
        resize: "torch-fidelity" or "pytorch-fid" (see the module docstring).
        random_weights: explicitly accept random weights (tests, benchmarks).

    `forward(images)`: images (B, 3, H, W), uint8 or float with values in 0..255 ->
    (features (B, 2048) float32, logits (B, 1008) float32): the pool features of FID/KID and
    the unbiased logits (fc without its bias) of the Inception Score.
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, resize: str = "torch-fidelity",
                 random_weights: bool = False) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if weights is None and not random_weights:
            raise ValueError(
                f"InceptionV3FID needs the FID Inception weights: pass weights=PATH to {INCEPTION_WEIGHT_FILES}; "
                "nothing is downloaded. Pass random_weights=True to accept random weights (tests only)."
            )
        self.resize = resize
        # With a weight file, the layers are built on the meta device (no random initialisation
        # of 24M parameters to overwrite), then allocated and filled from the file.
        with torch.device("meta" if weights is not None else "cpu"):
            self._build()
        self.weights_path: Path | None = None
        if weights is not None:
            self.to_empty(device="cpu")
            for name, buffer in self.named_buffers():
                if name.endswith("num_batches_tracked"):
                    buffer.zero_()
            self.load_weights(weights)
        self.requires_grad_(False)
        self.eval()

    def _build(self) -> None:
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a pytorch-fid / torch-fidelity weight file strictly (see the class docstring)."""
        path = Path(path)
        load_strict(self, load_state_file(path, f"Inception weights (expected {INCEPTION_WEIGHT_FILES})"), path, "FID Inception")
        self.weights_path = path

    def train(self, mode: bool = True) -> "InceptionV3FID":
        return super().train(False)  # a fixed feature extractor: BatchNorm uses its running statistics

    def _prepare(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor with values in 0..255, got {getattr(images, 'shape', type(images))}")
        x = images.to(self.fc.weight.dtype)
        if self.resize == "torch-fidelity":
            x = resize_tf1_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
            return (x - 128) / 128
        x = F.interpolate(x / 255, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = self._prepare(images).contiguous(memory_format=torch.channels_last)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        features = x.mean(dim=(2, 3))
        logits = features @ self.fc.weight.t()
        return features.float(), logits.float()

