"""homography_sample's CUDA launchers in emulation against the CPU kernels: the forward, the
backward in its atomic mode (scatter + grad_h block reduction) and its deterministic mode
(owned rows), both paddings and coordinate systems, broadcast batches, strided gradients."""
import pytest
import torch

from cuda_emulation.emulation import DTYPES, assert_close, cpu_dtype, homography_backward, homography_forward

# (Bx, Bh, C, H, W, Ho, Wo): broadcast x or h, output sizes that are not multiples of the
# 256-thread block, more than one block of pixels, a row, a column.
CASES = [
    (2, 2, 3, 9, 11, 7, 13),
    (1, 3, 2, 8, 9, 10, 7),
    (3, 1, 2, 6, 7, 5, 6),
    (1, 1, 2, 17, 19, 18, 17),
    (2, 2, 1, 1, 12, 1, 15),
    (2, 1, 2, 11, 1, 9, 1),
]


def _homographies(Bh, H, W, normalized, dtype):
    """Near-identity homographies with some perspective: samples inside, across and outside,
    plus one with w = 0 on a line of output pixels (no sample, no gradient there)."""
    h = torch.eye(3).repeat(Bh, 1, 1) + 0.1 * torch.randn(Bh, 3, 3)
    if normalized:
        h[:, :2, 2] += 0.3 * torch.randn(Bh, 2)
    else:
        h[:, 0, 2] += 0.3 * W * torch.randn(Bh)
        h[:, 1, 2] += 0.3 * H * torch.randn(Bh)
        h[:, 2, :2] *= 0.05
    if Bh > 1 and not normalized:
        # w = j - i: exactly 0 on the diagonal. (Not in normalised coordinates, where w is near 0
        # instead and FMA contraction decides on which side of 1e-8 it falls.)
        h[-1, 2] = torch.tensor([1.0, -1.0, 0.0])
    return h.to(dtype)


def _check(emu, case, dtype, border, normalized, deterministic, grad_layout="contiguous"):
    Bx, Bh, C, H, W, Ho, Wo = case
    B = max(Bx, Bh)
    x = torch.randn(Bx, C, H, W).to(dtype)
    h = _homographies(Bh, H, W, normalized, dtype)
    out = homography_forward(emu, x, h, Ho, Wo, border, normalized)
    c = cpu_dtype(dtype)
    xc, hc = x.to(c), h.to(c)
    padding, coords = ("border" if border else "zeros"), ("normalized" if normalized else "pixel")
    cpu_out = torch.ops.pydeform.homography_sample(xc, hc, Ho, Wo, padding, coords)
    assert_close("homography out", out, cpu_out, dtype)

    if grad_layout == "expanded":  # as from out.sum(): every stride 0
        grad_out = torch.ones(1).to(dtype).expand(B, C, Ho, Wo)
    elif grad_layout == "channels_last":
        grad_out = torch.randn(B, C, Ho, Wo).to(dtype).contiguous(memory_format=torch.channels_last)
    else:
        grad_out = torch.randn(B, C, Ho, Wo).to(dtype)
    grad_x, grad_h = homography_backward(emu, grad_out, x, h, border, normalized, deterministic)
    cpu_grad_x, cpu_grad_h = torch.ops.pydeform.homography_sample_backward(
        grad_out.to(c), xc, hc, Ho, Wo, padding, coords, True, True, False
    )
    assert_close("homography grad_x", grad_x, cpu_grad_x, dtype, scale=4 * B)
    # grad_h sums pixel-coordinate-weighted terms over every output pixel and channel.
    scale = B * C * Ho * Wo * (1 if normalized else max(Ho, Wo, H, W))
    assert_close("homography grad_h", grad_h, cpu_grad_h, dtype, scale=scale)
    return grad_x, grad_h


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("border,normalized", [(False, False), (True, True)], ids=["zeros-pixel", "border-normalized"])
def test_forward_and_backward_match_cpu(emu, grid_cap, dtype, deterministic, border, normalized):
    for case in CASES:
        _check(emu, case, dtype, border, normalized, deterministic)


@pytest.mark.parametrize("border,normalized", [(True, False), (False, True)], ids=["border-pixel", "zeros-normalized"])
@pytest.mark.parametrize("grad_layout", ["expanded", "channels_last"])
def test_other_modes_and_gradient_layouts(emu, border, normalized, grad_layout):
    for deterministic in (False, True):
        _check(emu, (2, 2, 3, 9, 11, 7, 13), torch.float32, border, normalized, deterministic, grad_layout)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
def test_run_to_run(emu, deterministic):
    """grad_h is deterministic in both modes, grad_x in the deterministic mode: bit-identical reruns.
    (The emulation runs threads in a fixed order, so its atomics are reproducible too; on a GPU
    the atomic mode's grad_x may differ in the last bits.)"""
    Bx, Bh, C, H, W, Ho, Wo = 1, 3, 2, 8, 9, 21, 17
    x, h = torch.randn(Bx, C, H, W), _homographies(Bh, H, W, False, torch.float32)
    out = homography_forward(emu, x, h, Ho, Wo, False, False)
    g = torch.randn(out.shape)
    first = homography_backward(emu, g, x, h, False, False, deterministic)
    for _ in range(2):
        assert torch.equal(out, homography_forward(emu, x, h, Ho, Wo, False, False))
        again = homography_backward(emu, g, x, h, False, False, deterministic)
        assert torch.equal(first[1], again[1])
        if deterministic:
            assert torch.equal(first[0], again[0])


@pytest.mark.parametrize("border", [False, True], ids=["zeros", "border"])
def test_non_finite_and_huge_homographies(emu, border):
    """NaN, infinite and huge entries, and w = 0 everywhere: no sample there (0, no gradient), as
    on the CPU; under UBSan (float-cast-overflow) no coordinate reaches an integer cast unclamped."""
    x = torch.randn(1, 2, 5, 6)
    h = torch.eye(3).repeat(5, 1, 1)
    h[0, 0, 2] = float("nan")
    h[1, 1, 1] = float("inf")
    h[2, 0, 0] = 3e38
    h[3, 2] = 0  # w = 0
    h[4, 2, 2] = 1e-7  # w small but defined: huge, finite sample points
    h[4, 2, :2] = 0
    out = homography_forward(emu, x, h, 5, 6, border, False)
    padding = "border" if border else "zeros"
    assert_close("homography out", out, torch.ops.pydeform.homography_sample(x, h, 5, 6, padding, "pixel"), torch.float32)
    g = torch.randn(out.shape)
    want = torch.ops.pydeform.homography_sample_backward(g, x, h, 5, 6, padding, "pixel", True, True, False)
    for deterministic in (False, True):
        got = homography_backward(emu, g, x, h, border, False, deterministic)
        assert_close("homography grad_x (non-finite h)", got[0], want[0], torch.float32, scale=8)
        assert_close("homography grad_h (non-finite h)", got[1], want[1], torch.float32, scale=1e3)
