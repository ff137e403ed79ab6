import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pydeform import _C
from pydeform.ops import patch_nn_distance, reference

from devices import DEVICES, requires_cuda


def brute_force(x, y, n, p):
    """The contract of DESIGN.md section 4, literally, in numpy loops."""
    x, y = x.double().numpy(), y.double().numpy()
    B, C, H, W = x.shape
    r = n // 2
    dist, index = np.zeros((B, H, W)), np.zeros((B, H, W), dtype=np.int64)
    for b, i, j in itertools.product(range(B), range(H), range(W)):
        best, best_q = np.inf, -1
        for di, dj in itertools.product(range(-r, r + 1), range(-r, r + 1)):
            if 0 <= i + di < H and 0 <= j + dj < W:
                d = (np.abs(x[b, :, i, j] - y[b, :, i + di, j + dj]) ** p).sum()
                if d < best:
                    best, best_q = d, (di + r) * n + (dj + r)
        dist[b, i, j], index[b, i, j] = best, best_q
    return torch.from_numpy(dist), torch.from_numpy(index)


@pytest.mark.parametrize("n,p", [(1, 1), (3, 1), (3, 2), (5, 2), (7, 1)])
def test_matches_brute_force(n, p):
    x, y = torch.randn(2, 3, 6, 5, dtype=torch.float64), torch.randn(2, 3, 6, 5, dtype=torch.float64)
    dist, index = patch_nn_distance(x, y, n, p)
    want_dist, want_index = brute_force(x, y, n, p)
    torch.testing.assert_close(dist, want_dist)
    assert torch.equal(index, want_index)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    B=st.integers(1, 3), C=st.integers(1, 64), H=st.integers(1, 40), W=st.integers(1, 40),
    half_n=st.integers(0, 4), p=st.sampled_from([1, 2]),
)  # fmt: skip
def test_matches_reference_on_random_shapes(B, C, H, W, half_n, p):
    n = 2 * half_n + 1  # 1..9, often larger than the image
    x, y = torch.randn(B, C, H, W, dtype=torch.float64), torch.randn(B, C, H, W, dtype=torch.float64)
    dist, index = patch_nn_distance(x, y, n, p)
    want_dist, want_index = reference.patch_nn_distance(x, y, n, p)
    torch.testing.assert_close(dist, want_dist)
    assert torch.equal(index, want_index)


def test_float32_matches_float64():
    x, y = torch.randn(2, 16, 20, 24), torch.randn(2, 16, 20, 24)
    dist32, _ = patch_nn_distance(x, y, 5, 1)
    dist64, _ = patch_nn_distance(x.double(), y.double(), 5, 1)
    torch.testing.assert_close(dist32.double(), dist64, rtol=1e-5, atol=1e-4)


def test_ties_go_to_the_smallest_in_image_index():
    n, r, H, W = 5, 2, 4, 6
    x, y = torch.zeros(1, 2, H, W), torch.ones(1, 2, H, W)  # every neighbour costs the same
    dist, index = patch_nn_distance(x, y, n, 1)
    assert torch.all(dist == 2)
    for i, j in itertools.product(range(H), range(W)):
        assert index[0, i, j] == (max(-r, -i) + r) * n + (max(-r, -j) + r)


def test_identical_inputs_pick_the_centre():
    x = torch.randn(2, 4, 9, 7)
    dist, index = patch_nn_distance(x, x.clone(), 3, 2)
    assert torch.all(dist == 0) and torch.all(index == 4)


def test_kernel_larger_than_image_and_huge_kernel():
    x, y = torch.randn(1, 3, 4, 3, dtype=torch.float64), torch.randn(1, 3, 4, 3, dtype=torch.float64)
    d_full, i_full = patch_nn_distance(x, y, 9, 1)
    want_d, want_i = brute_force(x, y, 9, 1)
    torch.testing.assert_close(d_full, want_d)
    assert torch.equal(i_full, want_i)
    # A kernel of a million pixels a side scans only the image: same minima, index in its own n.
    d_huge, i_huge = patch_nn_distance(x, y, 1_000_001, 1)
    torch.testing.assert_close(d_huge, want_d)
    r_small, r_huge = 4, 500_000
    di, dj = i_full // 9 - r_small, i_full % 9 - r_small
    assert torch.equal(i_huge, (di + r_huge) * 1_000_001 + (dj + r_huge))


def test_scratch_that_cannot_be_allocated_raises_memory_error_in_threads():
    # A kernel covering a 2 x 2^20 image needs (2^21 + 1) x 3 x 2^20 floats of scratch per row:
    # the allocation fails inside the OpenMP loop, which must raise, not end the process. In a
    # subprocess, so that an abort cannot take the test session with it.
    import subprocess
    import sys

    script = (
        "import torch\nfrom pydeform.ops import patch_nn_distance\ntorch.set_num_threads(2)\n"
        "x = torch.randn(2, 1, 1, 2**20)\n"
        "try:\n    patch_nn_distance(x, x, 2**21 + 1)\nexcept MemoryError:\n    print('MemoryError')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0 and done.stdout.strip() == "MemoryError", done.stderr[-500:]


def test_nan_propagates_to_dist():
    x, y = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5)
    y[0, 1, 2, 2] = float("nan")
    dist, index = patch_nn_distance(x, y, 3, 1)
    assert torch.isnan(dist[0, 1:4, 1:4]).all()  # every pixel that sees the NaN
    assert torch.isfinite(dist[0, 0, :]).all()
    assert ((index >= 0) & (index < 9)).all()


def test_non_contiguous_inputs():
    base_x, base_y = torch.randn(2, 12, 10, 3), torch.randn(2, 10, 12, 3)
    x = base_x.permute(0, 3, 1, 2)  # (2, 3, 12, 10), channels last in memory
    y = base_y.permute(0, 3, 2, 1)
    assert not x.is_contiguous() and not y.is_contiguous()
    dist, index = patch_nn_distance(x, y, 3, 1)
    want_dist, want_index = reference.patch_nn_distance(x.contiguous(), y.contiguous(), 3, 1)
    torch.testing.assert_close(dist, want_dist)
    assert torch.equal(index, want_index)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("n", [3, 7])
def test_gradcheck(n, p):
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: patch_nn_distance(a, b, n, p)[0], (x, y))


@pytest.mark.parametrize("p", [1, 2])
def test_gradients_match_reference(p):
    x = torch.randn(2, 8, 11, 9, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 8, 11, 9, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 11, 9, dtype=torch.float64)
    got = torch.autograd.grad((patch_nn_distance(x, y, 5, p)[0] * weights).sum(), (x, y))
    want = torch.autograd.grad((reference.patch_nn_distance(x, y, 5, p)[0] * weights).sum(), (x, y))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_gradient_only_where_required():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    y = torch.randn(1, 2, 6, 6)
    patch_nn_distance(x, y)[0].sum().backward()
    assert x.grad is not None and y.grad is None


def test_opcheck():
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.pydeform.patch_nn_distance.default, (x, y, 3, 1))
    torch.library.opcheck(torch.ops.pydeform.patch_nn_distance.default, (x.detach(), y.detach(), 5, 2))


def test_torch_compile_fullgraph():
    def loss(a, b):
        return patch_nn_distance(a * 2, b, 3, 1)[0].mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = torch.randn(2, 4, 8, 8)
    value = compiled(x, y)
    (grad,) = torch.autograd.grad(value, x)
    torch.testing.assert_close(value, loss(x, y))
    torch.testing.assert_close(grad, torch.autograd.grad(loss(x, y), x)[0])


def test_torch_compile_inductor():
    """The default backend too: inductor generates code around the opaque op."""

    def loss(a, b):
        return patch_nn_distance(torch.relu(a) * 2, b, 3, 1)[0].mean()

    x, y = torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 8, 8)
    value = torch.compile(loss, fullgraph=True)(x, y)
    torch.testing.assert_close(value, loss(x, y))
    torch.testing.assert_close(torch.autograd.grad(value, x)[0], torch.autograd.grad(loss(x, y), x)[0])


def test_backward_op_never_trusts_index():
    x, y = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    index = torch.tensor([-5, 0, 8, 9, 10**12, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]).view(1, 4, 4)
    grad_x, grad_y = torch.ops.pydeform.patch_nn_distance_backward(torch.ones(1, 4, 4), x, y, index, 3, 1, True, True)
    # Out of range (-5, 10**12) or pointing outside the image (0 and 8 at the top row: 0 goes
    # up-left, 8 goes down-right which is inside; 9 is out of range) contributes nothing.
    assert torch.all(grad_x[0, :, 0, 0] == 0) and torch.all(grad_x[0, :, 0, 1] == 0)
    assert torch.all(grad_x[0, :, 0, 3] == 0) and torch.all(grad_x[0, :, 1, 0] == 0)
    torch.testing.assert_close(grad_x[0, :, 0, 2], torch.sign(x[0, :, 0, 2] - y[0, :, 1, 3]))


@pytest.mark.parametrize(
    "x,y,kwargs,error,match",
    [
        (torch.randn(3, 4, 4), torch.randn(3, 4, 4), {}, ValueError, "x must have 4 dimensions"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 5), {}, ValueError, "y must have the shape of x"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4).double(), {}, TypeError, "y has dtype"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), {"kernel_size": 4}, ValueError, "kernel_size must be odd"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), {"kernel_size": 0}, ValueError, "kernel_size must be >= 1"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), {"kernel_size": -3}, ValueError, "kernel_size must be >= 1"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), {"kernel_size": 3.0}, TypeError, "kernel_size must be an int"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), {"kernel_size": 2**31 + 1}, ValueError, "below 2\\*\\*31"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), {"p": 3}, ValueError, "p must be 1"),
        (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), {"p": True}, ValueError, "p must be 1"),
        (torch.ones(1, 3, 4, 4, dtype=torch.int64), torch.ones(1, 3, 4, 4, dtype=torch.int64), {}, TypeError, "x has dtype"),
        (torch.randn(1, 3, 4, 4, dtype=torch.complex64), torch.randn(1, 3, 4, 4, dtype=torch.complex64), {}, TypeError, "x has dtype"),
        (torch.randn(1, 3, 4, 4).half(), torch.randn(1, 3, 4, 4).half(), {}, TypeError, "on cpu pydeform supports float32, float64"),
        (torch.randn(1, 0, 4, 4), torch.randn(1, 0, 4, 4), {}, ValueError, "x must not be empty"),  # (B = 0 is allowed)
        (torch.randn(1, 3, 0, 4), torch.randn(1, 3, 0, 4), {}, ValueError, "x must not be empty"),
        ([[1.0]], torch.randn(1, 3, 4, 4), {}, TypeError, "x must be a torch.Tensor"),
        (torch.randn(1, 3, 4, 4).to_sparse(), torch.randn(1, 3, 4, 4), {}, TypeError, "x must be a dense"),
        (torch.randn(1, 3, 4, 4, device="meta"), torch.randn(1, 3, 4, 4, device="meta"), {}, ValueError, "device meta"),
    ],
)  # fmt: skip
def test_errors(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        patch_nn_distance(x, y, **kwargs)


def test_compiled_module_rechecks_its_arguments():
    x = torch.randn(1, 1, 2, 2)
    out = torch.empty(1, 2, 2)
    idx = torch.empty(1, 2, 2, dtype=torch.int64)
    args = [x.data_ptr(), x.data_ptr(), out.data_ptr(), idx.data_ptr(), 1, 1, 2, 2]
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        _C.patch_nn_forward_cpu(*args, 2, 1, 0, 1)
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        _C.patch_nn_forward_cpu(*args, 3, 5, 0, 1)
    with pytest.raises(ValueError, match="float32 and float64"):
        _C.patch_nn_forward_cpu(*args, 3, 1, 2, 1)
    with pytest.raises(ValueError, match="positive"):
        _C.patch_nn_forward_cpu(*args[:4], 1, 1, -2, 2, 3, 1, 0, 1)
    with pytest.raises(ValueError, match="null pointer for y"):
        _C.patch_nn_forward_cpu(args[0], 0, *args[2:], 3, 1, 0, 1)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [3, 5, 11])
@pytest.mark.parametrize("p", [1, 2])
def test_cuda_matches_cpu(dtype, n, p):
    x, y = torch.randn(2, 16, 37, 45, dtype=torch.float64), torch.randn(2, 16, 37, 45, dtype=torch.float64)
    want_dist, want_index = patch_nn_distance(x, y, n, p)
    xc = x.to("cuda", dtype).requires_grad_()
    yc = y.to("cuda", dtype).requires_grad_()
    dist, index = patch_nn_distance(xc, yc, n, p)
    tol = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 5e-2, torch.bfloat16: 5e-1}[dtype]
    if dtype in (torch.float32, torch.float64):
        assert torch.equal(index.cpu(), want_index)
        torch.testing.assert_close(dist.double().cpu(), want_dist, rtol=tol, atol=tol)
    # In half precision the inputs themselves are rounded: compare with the CPU on those.
    x_r, y_r = xc.detach().double().cpu(), yc.detach().double().cpu()
    ref_dist, ref_index = patch_nn_distance(x_r, y_r, n, p)
    torch.testing.assert_close(dist.double().cpu(), ref_dist, rtol=tol, atol=tol * 16)
    weights = torch.rand_like(ref_dist)
    (dist.double() * weights.cuda()).sum().backward()
    xr, yr = x_r.requires_grad_(), y_r.requires_grad_()
    want_gx, want_gy = torch.autograd.grad((patch_nn_distance(xr, yr, n, p)[0] * weights).sum(), (xr, yr))
    if dtype == torch.float64:
        torch.testing.assert_close(xc.grad.cpu(), want_gx)
        torch.testing.assert_close(yc.grad.cpu(), want_gy)


@requires_cuda
def test_cuda_gradcheck_and_opcheck():
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, device="cuda", requires_grad=True)
    y = torch.randn(2, 3, 9, 7, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: patch_nn_distance(a, b, 5, 1)[0], (x, y))
    torch.library.opcheck(torch.ops.pydeform.patch_nn_distance.default, (x, y, 3, 2))


@pytest.mark.parametrize("device", DEVICES)
def test_batch_items_are_independent(device):
    x, y = torch.randn(3, 5, 12, 10, device=device), torch.randn(3, 5, 12, 10, device=device)
    dist, index = patch_nn_distance(x, y, 3, 2)
    for b in range(3):
        d_b, i_b = patch_nn_distance(x[b : b + 1], y[b : b + 1], 3, 2)
        torch.testing.assert_close(dist[b : b + 1], d_b)
        assert torch.equal(index[b : b + 1], i_b)
