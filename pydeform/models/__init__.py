"""The model families. `deformgan`: the Deformable GAN generator and discriminator;
`stgan`: ST-GAN's warp generators and critic."""
from pydeform.models.deformgan import (
    NUM_SKIP_LEVELS,
    OPS,
    PRESETS,
    VARIANTS,
    DeformableGenerator,
    DeformGANConfig,
    PatchDiscriminator,
    Preset,
    build_discriminator,
    build_generator,
)
from pydeform.models.stgan import STGAN, STGANConfig, STGANDiscriminator, WarpGenerator

__all__ = [
    "NUM_SKIP_LEVELS",
    "OPS",
    "PRESETS",
    "VARIANTS",
    "DeformGANConfig",
    "DeformableGenerator",
    "PatchDiscriminator",
    "STGAN",
    "STGANConfig",
    "STGANDiscriminator",
    "WarpGenerator",
    "Preset",
    "build_discriminator",
    "build_generator",
]
