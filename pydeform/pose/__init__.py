"""pydeform.pose: COCO-18 pose geometry in pure Python (DESIGN.md sections 5 and 6).

- keypoints: the `Keypoints` structure, joint names and the annotation CSV format.
- render: Gaussian joint heatmaps and the Variational U-Net stickman.
- parts: the Deformable GAN's 10 per-part affine transforms and masks, and their
  rescaling to a feature map's resolution.
"""
from pydeform.pose.keypoints import (
    JOINT,
    JOINT_NAMES,
    MIRROR,
    MISSING,
    NUM_JOINTS,
    Keypoints,
    KeypointsLike,
    read_annotations,
    write_annotations,
)
from pydeform.pose.parts import NUM_PARTS, PART_NAMES, at_resolution, part_transforms, torso_scale
from pydeform.pose.render import heatmaps, stickman, stickman_thickness, vunet_stickman, vunet_thickness

__all__ = [
    "JOINT",
    "JOINT_NAMES",
    "MIRROR",
    "MISSING",
    "NUM_JOINTS",
    "NUM_PARTS",
    "PART_NAMES",
    "Keypoints",
    "KeypointsLike",
    "at_resolution",
    "heatmaps",
    "part_transforms",
    "read_annotations",
    "stickman",
    "stickman_thickness",
    "torso_scale",
    "vunet_stickman",
    "vunet_thickness",
    "write_annotations",
]
