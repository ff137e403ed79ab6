"""pydeform.pose: COCO-18 pose geometry in pure Python (DESIGN.md sections 5 and 6).

- keypoints: the `Keypoints` structure, joint names and the annotation CSV format.
- render: Gaussian joint heatmaps and the Variational U-Net stickman.
- parts: the Deformable GAN's 10 per-part affine transforms and masks, and their
  rescaling to a feature map's resolution; `affine_tls`, the original's torso/head estimator.
- openpose: OpenPose JSON (COCO-18 or BODY_25) -> the annotation CSV (`pydeform pose import-openpose`).
- pairs: the published pair rule, annotation CSV -> from,to pairs (`pydeform pose make-pairs`).
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
from pydeform.pose.parts import NUM_PARTS, PART_NAMES, affine_tls, at_resolution, part_transforms, torso_scale
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
    "affine_tls",
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
