"""composite against a hand computation."""
import pytest
import torch

from pydeform.geometry import composite


def test_hand_computation():
    # One image, 1 x 3 pixels: alpha 0 (background), 0.25, 1 (foreground).
    fg = torch.tensor(
        [[[[0.2, 0.2, 0.2]], [[0.4, 0.4, 0.4]], [[0.6, 0.6, 0.6]], [[0.0, 0.25, 1.0]]]], dtype=torch.float64
    )
    bg = torch.tensor([[[[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]], [[0.5, 0.5, 0.5]]]], dtype=torch.float64)
    want = torch.tensor(
        [[[[1.0, 0.2 * 0.25 + 0.75, 0.2]], [[0.0, 0.1, 0.4]], [[0.5, 0.6 * 0.25 + 0.5 * 0.75, 0.6]]]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(composite(fg, bg), want)


def test_background_broadcasts_over_batch():
    fg, bg = torch.rand(3, 4, 5, 6), torch.rand(1, 3, 5, 6)
    torch.testing.assert_close(composite(fg, bg), composite(fg, bg.expand(3, 3, 5, 6)))


def test_validation():
    fg, bg = torch.rand(2, 4, 5, 6), torch.rand(2, 3, 5, 6)
    with pytest.raises(ValueError, match=r"^fg_rgba must have shape \(B, 4, H, W\)"):
        composite(fg[:, :3], bg)
    with pytest.raises(ValueError, match=r"^bg must have shape \(2 or 1, 3, 5, 6\)"):
        composite(fg, bg[..., :4])
    with pytest.raises(ValueError, match="^bg must have shape"):
        composite(fg, torch.rand(3, 3, 5, 6))
    with pytest.raises(TypeError, match="^bg has dtype"):
        composite(fg, bg.double())
    with pytest.raises(TypeError, match="^fg_rgba must be a torch.Tensor"):
        composite(fg.numpy(), bg)
