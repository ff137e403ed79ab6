"""patch_nn_distance's CUDA launchers in emulation against the CPU kernels: the tiled forward
(n = 1, 3, 5, 7, 9), the generic forward (n = 11), grad_x and grad_y, four dtypes."""
import pytest
import torch

from cuda_emulation.emulation import DTYPES, assert_close, cpu_dtype, patch_nn_backward, patch_nn_forward

# (B, C, H, W): tile-sized, not multiples of the 32 x 8 tile, a row or a column, one pixel,
# and a batch beyond the capped grid.
SHAPES = [(1, 2, 8, 32), (2, 3, 13, 37), (1, 2, 1, 19), (3, 1, 11, 1), (1, 1, 1, 1), (5, 2, 9, 33)]


def _inputs(shape, dtype):
    x, y = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
    if dtype in (torch.float16, torch.bfloat16):
        # Equal candidate costs tie on both sides (the smallest index wins); keep some exact ties.
        y[..., ::3] = x[..., ::3]
    return x, y


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("n", [1, 3, 5, 7, 9, 11])
def test_forward_and_backward_match_cpu(emu, grid_cap, n, p, dtype):
    for shape in SHAPES:
        x, y = _inputs(shape, dtype)
        dist, index = patch_nn_forward(emu, x, y, n, p)
        xc, yc = x.to(cpu_dtype(dtype)), y.to(cpu_dtype(dtype))
        cpu_dist, cpu_index = torch.ops.pydeform.patch_nn_distance(xc, yc, n, p)
        assert torch.equal(index, cpu_index), f"index differs for n={n} p={p} shape={shape}"
        assert_close("patch_nn dist", dist, cpu_dist, dtype, scale=shape[1])

        grad_dist = torch.randn(dist.shape).to(dtype)
        grad_x, grad_y = patch_nn_backward(emu, grad_dist, x, y, cpu_index, n, p)
        cpu_grad_x, cpu_grad_y = torch.ops.pydeform.patch_nn_distance_backward(
            grad_dist.to(cpu_dtype(dtype)), xc, yc, cpu_index, n, p, True, True
        )
        assert_close("patch_nn grad_x", grad_x, cpu_grad_x, dtype, scale=4)
        assert_close("patch_nn grad_y", grad_y, cpu_grad_y, dtype, scale=4 * n * n)


def test_grad_x_alone_and_grad_y_alone(emu):
    x, y = _inputs((2, 3, 10, 35), torch.float32)
    _, index = patch_nn_forward(emu, x, y, 3, 1)
    g = torch.randn(index.shape)
    both = patch_nn_backward(emu, g, x, y, index, 3, 1)
    assert torch.equal(patch_nn_backward(emu, g, x, y, index, 3, 1, need_y=False)[0], both[0])
    assert torch.equal(patch_nn_backward(emu, g, x, y, index, 3, 1, need_x=False)[1], both[1])


def test_deterministic_run_to_run(emu):
    x, y = _inputs((2, 3, 13, 37), torch.float32)
    first = patch_nn_forward(emu, x, y, 5, 2)
    g = torch.randn(first[0].shape)
    grads = patch_nn_backward(emu, g, x, y, first[1], 5, 2)
    for _ in range(2):
        again = patch_nn_forward(emu, x, y, 5, 2)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        assert all(torch.equal(a, b) for a, b in zip(grads, patch_nn_backward(emu, g, x, y, first[1], 5, 2)))


def test_launch_counters(emu):
    """The tiled forward runs one block per 32 x 8 tile and batch item."""
    before = emu.counters()
    x, y = _inputs((2, 1, 9, 33), torch.float32)
    patch_nn_forward(emu, x, y, 3, 1)
    after = emu.counters()
    assert after["launches"] - before["launches"] == 1
    assert after["blocks"] - before["blocks"] == 2 * 2 * 2


@pytest.mark.parametrize("dtype, eps", [(torch.bfloat16, 2.0**-9), (torch.float16, 2.0**-12)], ids=str)
def test_grad_y_sums_in_float32_across_offset_groups(emu, dtype, eps):
    # n = 65 on a 1 x 40 row: 65 visited offsets, three groups of 32. Every x pixel picks y pixel
    # 20, with x > y so each adds -grad_dist. Group 0 (x pixels 21..39) sums 1 + eps, which the
    # half type cannot hold; group 1 adds -1. In float32 the sum is eps; rounded between the
    # groups (the contract forbids it) it would be 0.
    W, n, target = 40, 65, 20
    x, y = torch.full((1, 1, 1, W), 2.0).to(dtype), torch.zeros(1, 1, 1, W).to(dtype)
    r = n // 2
    index = torch.tensor([[[r * n + (target - j + r) for j in range(W)]]])  # di = 0, dj = target - j
    grad_dist = torch.zeros(1, 1, W)
    grad_dist[0, 0, 39], grad_dist[0, 0, 38], grad_dist[0, 0, target] = 1.0, eps, -1.0
    _, grad_y = patch_nn_backward(emu, grad_dist.to(dtype), x, y, index, n, 1)
    assert grad_y[0, 0, 0, target].item() == -eps
    assert torch.count_nonzero(grad_y) == 1
