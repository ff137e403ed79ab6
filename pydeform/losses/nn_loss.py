"""The nearest-neighbour loss of the Deformable GAN (Siarohin et al., CVPR 2018, eq. 6)."""
from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from pydeform.nets.vgg import VGG19Features
from pydeform.ops import patch_nn_distance


class NNLoss(nn.Module):
    """Mean over pixels of the L1 distance from each conv1_2 feature of the generated image
    to its nearest neighbour within an n x n window of the real image's features.

    It tolerates small misalignments that a plain L1 loss punishes. The paper uses n = 3 on
    Market-1501 (128x64), n = 5 on DeepFashion (256x256), weight 0.01 beside the cGAN loss.

    Args:
        kernel_size: n. p: 1 (the paper) or 2.
        vgg_weights: torchvision vgg19 state-dict file; required unless random_vgg=True.
        random_vgg: use randomly initialised VGG features (tests and smoke runs only: the
            loss then compares random filter responses, not the paper's features).
        input_range: range of the images (the generator's tanh gives (-1, 1)).
        preprocessing: "imagenet" for torchvision's weights, or "caffe" (BGR, 0..255 minus the
            mean pixel) for Keras/Caffe weights: the authors' input (`content_features_model`
            in pose-gan's gan/layer_utils.py), on which the paper's weight 0.01 was set. (They
            subtract the BGR mean before flipping RGB to BGR, so R and B get each other's
            mean; pydeform uses Keras's own order.)
    On the CPU, features that autocast made bfloat16/float16 are compared in float32 (the CPU
    kernels are float32/float64).
    """

    def __init__(
        self,
        kernel_size: int = 3,
        p: int = 1,
        vgg_weights: str | os.PathLike | None = None,
        random_vgg: bool = False,
        input_range: tuple[float, float] = (-1.0, 1.0),
        preprocessing: str = "imagenet",
    ) -> None:
        super().__init__()
        if vgg_weights is None and not random_vgg:
            raise ValueError(
                "NNLoss needs VGG19 weights: pass vgg_weights=PATH (a torchvision vgg19 state dict) "
                "or random_vgg=True to run on random features"
            )
        self.kernel_size, self.p = kernel_size, p
        self.features = VGG19Features(vgg_weights, ("relu1_2",), random_weights=random_vgg, input_range=input_range,
                                      preprocessing=preprocessing)  # fmt: skip

    def feature_pair(self, generated: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """relu1_2 of (generated, real), the real one without gradient."""
        if generated.shape != real.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} must match")
        fake, target = self.features(generated)["relu1_2"], self.features(real.detach())["relu1_2"]
        if fake.device.type == "cpu" and fake.dtype not in (torch.float32, torch.float64):
            fake, target = fake.float(), target.float()
        return fake, target

    def forward(self, generated: Tensor, real: Tensor) -> Tensor:
        """generated, real: (B, 3, H, W). Returns a scalar; gradients flow to `generated`."""
        return patch_nn_distance(*self.feature_pair(generated, real), self.kernel_size, self.p)[0].mean()
