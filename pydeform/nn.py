"""Neural-network modules built on the fused ops."""
from __future__ import annotations

from torch import Tensor, nn

from pydeform.ops import multi_affine_warp, reference
from pydeform.ops._validate import check_image, check_int

__all__ = ["DeformableSkip", "IMPLS"]

# The fused kernel, or the pure-torch reference (affine_grid + grid_sample per part) that the
# benchmarks and tests compare it with.
IMPLS = {"pydeform": multi_affine_warp, "reference": reference.multi_affine_warp}


class DeformableSkip(nn.Module):
    """The deformable skip connection of the Deformable GAN (Siarohin et al., CVPR 2018).

    Moves an encoder feature map of the source image into the target pose: each body part's
    affine transform warps the features, its mask (in the target frame) keeps the part's
    region, and the max over the parts combines them. The torso mask is all ones in the
    original, so it is the fallback everywhere; there is no identity candidate.

    Args:
        num_parts: K, the number of body parts (10 in the Deformable GAN), at most 255.
        impl: "pydeform" (the fused multi_affine_warp) or "reference" (pure torch, the same
            values; for comparisons).

    Forward:
        features: (B, C, h, w) source features at this encoder level.
        theta: (B, K, 2, 3) per part, maps a target (output) pixel (x, y, 1) of this level's
            grid to the source (input) pixel it samples; transforms fitted at the image's
            resolution must be rescaled to the level's pixel grid first.
        masks: (B, K, h, w) part masks at this level's resolution, in the target frame.
        Returns (B, C, h, w): max over k of masks[:, k] * warp_k(features), bilinear sampling
        with zeros outside, differentiable in features, theta and masks.
    """

    def __init__(self, num_parts: int = 10, impl: str = "pydeform") -> None:
        super().__init__()
        check_int("num_parts", num_parts, minimum=1)
        if num_parts > 255:
            raise ValueError(f"num_parts must be at most 255, got {num_parts}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {sorted(IMPLS)}, got {impl!r}")
        self.num_parts, self.impl = num_parts, impl

    def forward(self, features: Tensor, theta: Tensor, masks: Tensor) -> Tensor:
        check_image("features", features)
        check_image("theta", theta)
        check_image("masks", masks)
        B, _, h, w = features.shape
        K = self.num_parts
        if theta.shape != (B, K, 2, 3):
            raise ValueError(f"theta must have shape (B, num_parts, 2, 3) = ({B}, {K}, 2, 3), got {tuple(theta.shape)}")
        if masks.shape != (B, K, h, w):
            raise ValueError(
                f"masks must have shape (B, num_parts, h, w) = ({B}, {K}, {h}, {w}), the features' resolution, "
                f"got {tuple(masks.shape)}"
            )
        for name, t in (("theta", theta), ("masks", masks)):
            if t.dtype != features.dtype or t.device != features.device:
                raise TypeError(
                    f"{name} must have the dtype and device of features ({features.dtype}, {features.device}), "
                    f"got ({t.dtype}, {t.device})"
                )
        return IMPLS[self.impl](features, theta, masks)

    def extra_repr(self) -> str:
        return f"num_parts={self.num_parts}, impl={self.impl!r}"
