"""The nearest-neighbour loss of the Deformable GAN (Siarohin et al., CVPR 2018, eq. 6)."""
from __future__ import annotations

import os

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
    """

    def __init__(
        self,
        kernel_size: int = 3,
        p: int = 1,
        vgg_weights: str | os.PathLike | None = None,
        random_vgg: bool = False,
        input_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        if vgg_weights is None and not random_vgg:
            raise ValueError(
                "NNLoss needs VGG19 weights: pass vgg_weights=PATH (a torchvision vgg19 state dict) "
                "or random_vgg=True to run on random features"
            )
        self.kernel_size, self.p = kernel_size, p
        self.features = VGG19Features(vgg_weights, ("relu1_2",), random_weights=random_vgg, input_range=input_range)

    def forward(self, generated: Tensor, real: Tensor) -> Tensor:
        """generated, real: (B, 3, H, W). Returns a scalar; gradients flow to `generated`."""
        if generated.shape != real.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} must match")
        fake_features = self.features(generated)["relu1_2"]
        real_features = self.features(real.detach())["relu1_2"]
        return patch_nn_distance(fake_features, real_features, self.kernel_size, self.p)[0].mean()
