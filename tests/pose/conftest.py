"""Hand-made poses for the pose tests, in a 128 x 128 image, (x, y) pixels."""
import numpy as np
import pytest

# A person standing, facing the camera (their right side on the image's left).
STANDING = np.array(
    [
        [64, 20], [64, 32], [54, 32], [50, 48], [48, 62], [74, 32], [78, 48], [80, 62], [58, 64],
        [56, 86], [55, 108], [70, 64], [72, 86], [73, 108], [67, 17], [61, 17], [70, 19], [58, 19],
    ],
    dtype=np.float64,
)  # fmt: skip

# Another pose: right arm raised, left arm out, legs apart, slightly turned.
STRIDING = np.array(
    [
        [60, 24], [60, 36], [50, 37], [38, 30], [30, 16], [71, 35], [84, 44], [96, 40], [54, 68],
        [44, 88], [40, 110], [67, 67], [74, 90], [84, 110], [63, 21], [57, 21], [66, 23], [54, 23],
    ],
    dtype=np.float64,
)  # fmt: skip


@pytest.fixture
def standing() -> np.ndarray:
    return STANDING.copy()


@pytest.fixture
def striding() -> np.ndarray:
    return STRIDING.copy()
