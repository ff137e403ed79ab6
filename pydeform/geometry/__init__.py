"""pydeform.geometry: pure-torch homography toolkit (no compiled code).

Convention (docs/contracts.md): a homography h (B, 3, 3) maps an OUTPUT point
(x, y, 1) to an INPUT point, in "pixel" coordinates (centres at integers) or "normalized"
ones (grid_sample align_corners=True). See coords.py for kornia's and OpenCV's conventions.
"""
from pydeform.geometry.composite import composite
from pydeform.geometry.coords import (
    from_kornia,
    from_opencv,
    invert_homography,
    normalized_to_pixel,
    normalized_to_pixel_matrix,
    pixel_to_normalized,
    pixel_to_normalized_matrix,
    to_kornia,
    to_opencv,
)
from pydeform.geometry.fit import homography_from_points
from pydeform.geometry.params import compose_homographies, compose_params, params_to_generator, params_to_matrix

__all__ = [
    "composite",
    "compose_homographies",
    "compose_params",
    "from_kornia",
    "from_opencv",
    "homography_from_points",
    "invert_homography",
    "normalized_to_pixel",
    "normalized_to_pixel_matrix",
    "params_to_generator",
    "params_to_matrix",
    "pixel_to_normalized",
    "pixel_to_normalized_matrix",
    "to_kornia",
    "to_opencv",
]
