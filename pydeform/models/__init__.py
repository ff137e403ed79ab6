"""The model families. `deformgan`: the Deformable GAN generator and discriminator."""
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

__all__ = [
    "NUM_SKIP_LEVELS",
    "OPS",
    "PRESETS",
    "VARIANTS",
    "DeformGANConfig",
    "DeformableGenerator",
    "PatchDiscriminator",
    "Preset",
    "build_discriminator",
    "build_generator",
]
