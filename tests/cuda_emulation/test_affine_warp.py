"""multi_affine_warp's CUDA launchers in emulation against the CPU kernels: the forward, the
grad_x scatter (atomics), the grad_theta block reduction with its partials and combine pass,
grad_mask; with and without mask and identity; up to K = 255; four dtypes."""
import pytest
import torch

from cuda_emulation.emulation import DTYPES, affine_backward, affine_forward, assert_close, cpu_dtype

# (B, C, H, W, K, Ho, Wo): channels beyond one 8-channel chunk, output sizes that are not
# multiples of the 256-thread block, a row, a column, more than one pixel tile (Ho * Wo > 256).
CASES = [
    (2, 3, 7, 9, 2, 7, 9),
    (1, 11, 5, 6, 3, 9, 13),
    (2, 2, 1, 13, 2, 1, 13),
    (1, 2, 12, 1, 3, 12, 1),
    (1, 2, 17, 19, 2, 17, 19),
    (3, 1, 4, 5, 2, 4, 5),
]


def _theta(B, K, H, W, dtype):
    """Near-identity maps with shifts of a few pixels: samples inside, across and outside."""
    theta = torch.zeros(B, K, 2, 3)
    theta[:, :, 0, 0] = theta[:, :, 1, 1] = 1
    theta += 0.15 * torch.randn(B, K, 2, 3)
    theta[..., 0, 2] += 0.3 * W * torch.randn(B, K)
    theta[..., 1, 2] += 0.3 * H * torch.randn(B, K)
    return theta.to(dtype)


def _check(emu, case, dtype, use_mask, identity, P=None):
    B, C, H, W, K, Ho, Wo = case
    x = torch.randn(B, C, H, W).to(dtype)
    theta = _theta(B, K, H, W, dtype)
    mask = torch.rand(B, K, Ho, Wo).to(dtype) if use_mask else None
    out, argmax = affine_forward(emu, x, theta, mask, identity, Ho, Wo)
    c = cpu_dtype(dtype)
    xc, thc, mc = x.to(c), theta.to(c), mask.to(c) if use_mask else None
    cpu_out, cpu_argmax = torch.ops.pydeform.multi_affine_warp(xc, thc, mc, identity, Ho, Wo)
    assert torch.equal(argmax, cpu_argmax), f"argmax differs for {case}"
    assert_close("affine out", out, cpu_out, dtype)

    grad_out = torch.randn(B, C, Ho, Wo).to(dtype)
    grad_x, grad_theta, grad_mask = affine_backward(emu, grad_out, x, theta, mask, cpu_argmax, identity, P)
    cpu_grad_x, cpu_grad_theta, cpu_grad_mask = torch.ops.pydeform.multi_affine_warp_backward(
        grad_out.to(c), xc, thc, mc, cpu_argmax, identity, True, True, use_mask
    )
    assert_close("affine grad_x", grad_x, cpu_grad_x, dtype, scale=4)
    # grad_theta sums over every pixel and channel, weighted by pixel coordinates.
    assert_close("affine grad_theta", grad_theta, cpu_grad_theta, dtype, scale=C * Ho * Wo)
    if use_mask:
        assert_close("affine grad_mask", grad_mask, cpu_grad_mask, dtype, scale=C)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("use_mask,identity", [(True, False), (False, True), (True, True)])
def test_forward_and_backward_match_cpu(emu, grid_cap, dtype, use_mask, identity):
    for case in CASES:
        if identity and case[2:4] != case[5:7]:
            continue
        _check(emu, case, dtype, use_mask, identity)


@pytest.mark.parametrize("P", [1, 2, 3])
def test_fewer_theta_partitions_than_tiles(emu, P):
    """P pixel tiles per part below ceil(Ho * Wo / 256): each block strides over several tiles."""
    _check(emu, (1, 2, 23, 29, 2, 23, 29), torch.float32, True, False, P)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_255_parts(emu, dtype):
    _check(emu, (1, 2, 4, 5, 255, 4, 5), dtype, True, True)


def test_deterministic_parts_run_to_run(emu):
    """The forward, grad_theta and grad_mask are deterministic on CUDA: bit-identical reruns."""
    B, C, H, W, K = 2, 3, 11, 13, 3
    x, theta, mask = torch.randn(B, C, H, W), _theta(B, K, H, W, torch.float32), torch.rand(B, K, H, W)
    out, argmax = affine_forward(emu, x, theta, mask, False, H, W)
    g = torch.randn(out.shape)
    first = affine_backward(emu, g, x, theta, mask, argmax, False)
    for _ in range(2):
        assert all(torch.equal(a, b) for a, b in zip((out, argmax), affine_forward(emu, x, theta, mask, False, H, W)))
        again = affine_backward(emu, g, x, theta, mask, argmax, False)
        assert torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])


def test_non_finite_and_huge_parameters(emu):
    """NaN, infinite and huge theta entries: such parts sample 0 (or lose), as on the CPU; under
    UBSan (float-cast-overflow) this also checks that no coordinate reaches an integer cast
    unclamped."""
    B, C, H, W, K = 1, 2, 5, 6, 4
    x, theta, mask = torch.randn(B, C, H, W), _theta(B, K, H, W, torch.float32), torch.rand(B, K, H, W)
    theta[0, 0, 0, 2] = float("nan")
    theta[0, 1, 1, 0] = float("inf")
    theta[0, 2, 0, 0] = 3e38
    out, argmax = affine_forward(emu, x, theta, mask, True, H, W)
    cpu_out, cpu_argmax = torch.ops.pydeform.multi_affine_warp(x, theta, mask, True, H, W)
    assert torch.equal(argmax, cpu_argmax)
    assert_close("affine out", out, cpu_out, torch.float32)
    g = torch.randn(out.shape)
    for got, want in zip(
        affine_backward(emu, g, x, theta, mask, cpu_argmax, True),
        torch.ops.pydeform.multi_affine_warp_backward(g, x, theta, mask, cpu_argmax, True, True, True, True),
    ):
        assert_close("affine grad (non-finite theta)", got, want, torch.float32, scale=C * H * W)
