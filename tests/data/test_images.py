"""Reading images for the datasets: 8-bit RGB from any PNG depth, errors that name the file."""
import numpy as np
import pytest
from PIL import Image

from pydeform.data._images import read_rgb


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)  # -> 0, 1, 128 (32768 / 257 = 127.5), 255
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # how PIL opens a 16-bit greyscale PNG
    rgb = np.asarray(read_rgb(path))
    assert rgb.shape == (1, 4, 3) and rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb == rgb[..., :1]).all()  # grey in all three channels
    colour = tmp_path / "rgb.png"
    pixels = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(colour)
    assert np.array_equal(np.asarray(read_rgb(colour)), pixels)  # 8-bit images unchanged


def test_a_truncated_image_is_named(tmp_path):
    path = tmp_path / "cut.png"
    Image.new("RGB", (32, 32), "red").save(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(OSError, match="cut.png: cannot read the image"):
        read_rgb(path)
