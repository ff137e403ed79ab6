import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pydeform import _C
from pydeform.ops import multi_affine_warp, reference

from devices import DEVICES, requires_cuda

IDENTITY_CODE = 255


def brute_force(x, theta, mask, include_identity, Ho, Wo):
    """The contract of DESIGN.md section 4, literally, in Python loops: (out, winner code)."""
    x, theta = x.double().numpy(), theta.double().numpy()
    mask = None if mask is None else mask.double().numpy()
    B, C, H, W = x.shape
    K = theta.shape[1]

    def bilinear_zeros(plane, sx, sy):
        if not (math.isfinite(sx) and math.isfinite(sy)):
            return 0.0
        sx, sy = (0.0 if W == 1 else sx), (0.0 if H == 1 else sy)
        x0, y0 = math.floor(sx), math.floor(sy)
        fx, fy = sx - x0, sy - y0
        total = 0.0
        for (dy, wy), (dx, wx) in itertools.product([(0, 1 - fy), (1, fy)], [(0, 1 - fx), (1, fx)]):
            if 0 <= x0 + dx < W and 0 <= y0 + dy < H:
                total += wx * wy * plane[y0 + dy, x0 + dx]
        return total

    out, code = np.zeros((B, C, Ho, Wo)), np.zeros((B, C, Ho, Wo), dtype=np.int64)
    for b, c, i, j in itertools.product(range(B), range(C), range(Ho), range(Wo)):
        candidates = [(x[b, c, i, j], IDENTITY_CODE)] if include_identity else []
        for k in range(K):
            t = theta[b, k]
            sx = t[0, 0] * j + t[0, 1] * i + t[0, 2]
            sy = t[1, 0] * j + t[1, 1] * i + t[1, 2]
            m = 1.0 if mask is None else mask[b, k, i, j]
            candidates.append((m * bilinear_zeros(x[b, c], sx, sy), k))
        best, best_code = candidates[0]
        for value, k in candidates[1:]:
            if value > best:
                best, best_code = value, k
        out[b, c, i, j], code[b, c, i, j] = best, best_code
    return torch.from_numpy(out), torch.from_numpy(code)


def random_theta(B, K, H, W, Ho, Wo, dtype=torch.float64, generator=None, spread=0.25):
    """Output pixel -> input pixel: the output grid stretched onto the input grid, then a
    random linear part and shift, so most samples land inside and some fall outside."""
    stretch = torch.tensor([[(W - 1) / max(Wo - 1, 1), 0.0], [0.0, (H - 1) / max(Ho - 1, 1)]], dtype=torch.float64)
    linear = stretch + spread * torch.randn(B, K, 2, 2, dtype=torch.float64, generator=generator)
    shift = torch.randn(B, K, 2, 1, dtype=torch.float64, generator=generator) * torch.tensor([[W / 4], [H / 4]])
    return torch.cat([linear, shift + 0.37], dim=-1).to(dtype)


def random_mask(B, K, Ho, Wo, kind, dtype=torch.float64, generator=None):
    if kind == "soft":
        return torch.rand(B, K, Ho, Wo, dtype=dtype, generator=generator)
    return (torch.rand(B, K, Ho, Wo, generator=generator) < 0.5).to(dtype)


def warp_with_argmax(x, theta, mask=None, include_identity=False, size=None):
    if mask is not None:
        size = tuple(mask.shape[-2:])
    elif size is None:
        size = tuple(x.shape[-2:])
    return torch.ops.pydeform.multi_affine_warp(x, theta, mask, include_identity, size[0], size[1])


@pytest.mark.parametrize("include_identity", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "soft", "binary"])
def test_matches_brute_force(include_identity, mask_kind):
    B, C, H, W, K = 2, 3, 5, 4, 3
    Ho, Wo = (H, W) if include_identity else (6, 3)
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    theta = random_theta(B, K, H, W, Ho, Wo)
    mask = None if mask_kind is None else random_mask(B, K, Ho, Wo, mask_kind)
    out, argmax = warp_with_argmax(x, theta, mask, include_identity, (Ho, Wo))
    want_out, want_code = brute_force(x, theta, mask, include_identity, Ho, Wo)
    torch.testing.assert_close(out, want_out)
    assert argmax.dtype == torch.uint8
    assert torch.equal(argmax.long(), want_code)


def test_matches_brute_force_on_degenerate_sides():
    # A side of length 1 samples at 0 on that axis (DESIGN.md section 3), in and out.
    for (H, W), (Ho, Wo) in [((1, 5), (3, 4)), ((4, 1), (2, 3)), ((1, 1), (2, 2)), ((3, 4), (1, 1))]:
        x = torch.randn(2, 2, H, W, dtype=torch.float64)
        theta = random_theta(2, 3, H, W, Ho, Wo)
        mask = random_mask(2, 3, Ho, Wo, "soft")
        out, argmax = warp_with_argmax(x, theta, mask)
        want_out, want_code = brute_force(x, theta, mask, False, Ho, Wo)
        torch.testing.assert_close(out, want_out)
        assert torch.equal(argmax.long(), want_code)


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid")  # the reference on 1-pixel sides
@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    B=st.integers(1, 3), C=st.integers(1, 9), H=st.integers(1, 20), W=st.integers(1, 20),
    Ho=st.integers(1, 20), Wo=st.integers(1, 20), K=st.integers(1, 12),
    include_identity=st.booleans(), mask_kind=st.sampled_from([None, "soft", "binary", "size"]),
    seed=st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_matches_reference_on_random_cases(B, C, H, W, Ho, Wo, K, include_identity, mask_kind, seed):
    g = torch.Generator().manual_seed(seed)
    if include_identity or mask_kind is None:
        Ho, Wo = H, W  # without mask or size the output has the input's size
    x = torch.randn(B, C, H, W, dtype=torch.float64, generator=g)
    theta = random_theta(B, K, H, W, Ho, Wo, generator=g)
    mask = random_mask(B, K, Ho, Wo, mask_kind, generator=g) if mask_kind in ("soft", "binary") else None
    size = (Ho, Wo) if mask_kind == "size" else None
    out = multi_affine_warp(x, theta, mask, include_identity, size)
    torch.testing.assert_close(out, reference.multi_affine_warp(x, theta, mask, include_identity, size))
    # Gradients too: random theta keeps sample points off integer coordinates.
    xg, tg = x.clone().requires_grad_(), theta.clone().requires_grad_()
    mg = mask.clone().requires_grad_() if mask is not None else None
    inputs = (xg, tg) + ((mg,) if mg is not None else ())
    weights = torch.randn(out.shape, dtype=torch.float64, generator=g)
    got, want = (
        torch.autograd.grad((op(xg, tg, mg, include_identity, size) * weights).sum(), inputs)
        for op in (multi_affine_warp, reference.multi_affine_warp)
    )
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("include_identity", [False, True])
def test_many_tiles_and_channel_blocks_match_reference(include_identity):
    # Outputs wider and taller than one CPU tile (4 x 64), channels not a multiple of 8.
    B, C, H, W, K = 2, 11, 20, 70, 5
    Ho, Wo = (H, W) if include_identity else (13, 135)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(B, C, H, W, dtype=torch.float64, generator=g, requires_grad=True)
    theta = random_theta(B, K, H, W, Ho, Wo, generator=g).requires_grad_()
    mask = random_mask(B, K, Ho, Wo, "binary", generator=g)
    mask[:, 0] = 1
    mask.requires_grad_()
    out = multi_affine_warp(x, theta, mask, include_identity)
    want = reference.multi_affine_warp(x, theta, mask, include_identity)
    torch.testing.assert_close(out, want)
    weights = torch.randn(out.shape, dtype=torch.float64, generator=g)
    got = torch.autograd.grad((out * weights).sum(), (x, theta, mask))
    for a, b in zip(got, torch.autograd.grad((want * weights).sum(), (x, theta, mask))):
        torch.testing.assert_close(a, b)


def test_255_parts():
    B, C, H, W, K = 1, 2, 3, 4, 255
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    theta = random_theta(B, K, H, W, 2, 3, spread=1.0)
    mask = random_mask(B, K, 2, 3, "soft")
    out, argmax = warp_with_argmax(x, theta, mask)
    want_out, want_code = brute_force(x, theta, mask, False, 2, 3)
    torch.testing.assert_close(out, want_out)
    assert torch.equal(argmax.long(), want_code) and want_code.max() > 128  # codes up to 254


def test_float32_matches_float64():
    x = torch.randn(2, 16, 20, 24)
    theta = random_theta(2, 10, 20, 24, 15, 30, dtype=torch.float32)
    mask = random_mask(2, 10, 15, 30, "binary", dtype=torch.float32)
    out32 = multi_affine_warp(x, theta, mask)
    out64 = multi_affine_warp(x.double(), theta.double(), mask.double())
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)


def test_all_zero_masks_tie_and_the_first_part_gets_the_gradient():
    B, C, H, W, K = 2, 3, 6, 5, 4
    x = torch.randn(B, C, H, W, dtype=torch.float64, requires_grad=True)
    theta = random_theta(B, K, H, W, H, W).requires_grad_()
    mask = torch.zeros(B, K, H, W, dtype=torch.float64, requires_grad=True)
    out, argmax = warp_with_argmax(x, theta, mask)
    assert torch.all(out == 0) and torch.all(argmax == 0)
    weights = torch.randn(B, C, H, W, dtype=torch.float64)
    grad_x, grad_theta, grad_mask = torch.autograd.grad((out * weights).sum(), (x, theta, mask))
    # d out / d mask_0 = the bilinear value of part 0; mask 0 stops the gradient to x and theta.
    values = reference.multi_affine_warp(x.detach(), theta.detach()[:, :1])
    torch.testing.assert_close(grad_mask[:, 0], (weights * values).sum(1))
    assert torch.all(grad_mask[:, 1:] == 0) and torch.all(grad_x == 0) and torch.all(grad_theta == 0)
    want = torch.autograd.grad((reference.multi_affine_warp(x, theta, mask) * weights).sum(), (x, theta, mask))
    for a, b in zip((grad_x, grad_theta, grad_mask), want):
        torch.testing.assert_close(a, b)


def test_identity_wins_ties_and_gets_the_gradient():
    B, C, H, W, K = 1, 2, 5, 6, 3
    x = torch.full((B, C, H, W), 2.0, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64).expand(B, K, 2, 3).clone().requires_grad_()
    out, argmax = warp_with_argmax(x, theta, None, True)
    assert torch.all(out == 2) and torch.all(argmax == IDENTITY_CODE)
    grad_x, grad_theta = torch.autograd.grad(out.sum(), (x, theta))
    assert torch.all(grad_x == 1) and torch.all(grad_theta == 0)


def test_later_parts_win_only_when_strictly_larger():
    x = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)
    same = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.25]], dtype=torch.float64)
    theta = torch.stack([same, same, same + torch.tensor([[0, 0, 1.0], [0, 0, 0]])]).unsqueeze(0)
    out, argmax = warp_with_argmax(x, theta, size=(2, 2))
    # Parts 0 and 1 tie everywhere (0 wins); part 2 samples one column further right: larger.
    assert torch.all(argmax == 2)
    torch.testing.assert_close(out, brute_force(x, theta, None, False, 2, 2)[0])


def gradcheck_case(seed):
    g = torch.Generator().manual_seed(seed)
    B, C, H, W, K, Ho, Wo = 2, 2, 5, 6, 3, 4, 5
    # Positive x and samples near the image: candidates are rarely 0 (a tie).
    x = 0.5 + torch.rand(B, C, H, W, dtype=torch.float64, generator=g)
    theta = random_theta(B, K, H, W, Ho, Wo, generator=g, spread=0.1)
    theta[..., 2] = 0.37 + 0.5 * torch.randn(B, K, 2, dtype=torch.float64, generator=g)
    mask = 0.2 + 0.8 * torch.rand(B, K, Ho, Wo, dtype=torch.float64, generator=g)
    return x, theta, mask


def test_gradcheck():
    x, theta, mask = gradcheck_case(seed=3)
    Ho, Wo = mask.shape[-2:]
    # The data keep the max away from near-ties and the samples away from integer coordinates,
    # where the op is not differentiable and finite differences would straddle a kink.
    K = theta.shape[1]
    candidates = torch.stack([reference.multi_affine_warp(x, theta[:, k : k + 1], mask[:, k : k + 1]) for k in range(K)])
    top2 = candidates.topk(2, dim=0).values
    assert (top2[0] - top2[1]).min() > 1e-3
    i, j = torch.meshgrid(torch.arange(Ho, dtype=torch.float64), torch.arange(Wo, dtype=torch.float64), indexing="ij")
    points = theta[..., 0, None, None] * j + theta[..., 1, None, None] * i + theta[..., 2, None, None]
    assert ((points - points.round()).abs() > 1e-3).all()
    assert torch.autograd.gradcheck(
        lambda a, t, m: multi_affine_warp(a, t, m), (x.requires_grad_(), theta.requires_grad_(), mask.requires_grad_())
    )


def test_gradcheck_identity_without_mask():
    x, theta, _ = gradcheck_case(seed=5)
    H, W = x.shape[-2:]
    theta = random_theta(2, 3, H, W, H, W, generator=torch.Generator().manual_seed(5))
    assert torch.autograd.gradcheck(
        lambda a, t: multi_affine_warp(a, t, include_identity=True), (x.requires_grad_(), theta.requires_grad_())
    )


def test_gradient_only_where_required():
    x = torch.randn(1, 2, 6, 6)
    theta = random_theta(1, 3, 6, 6, 6, 6, dtype=torch.float32)
    mask = torch.rand(1, 3, 6, 6)
    for wanted in itertools.product([False, True], repeat=3):
        if not any(wanted):
            continue
        inputs = [t.clone().requires_grad_(w) for t, w in zip((x, theta, mask), wanted)]
        multi_affine_warp(*inputs).sum().backward()
        for t, w in zip(inputs, wanted):
            assert (t.grad is not None) == w


def test_backward_is_deterministic_and_independent_of_thread_count():
    x = torch.randn(2, 8, 24, 20, requires_grad=True)
    theta = random_theta(2, 10, 24, 20, 24, 20, dtype=torch.float32).requires_grad_()
    mask = torch.rand(2, 10, 24, 20, requires_grad=True)
    weights = torch.randn(2, 8, 24, 20)
    threads = torch.get_num_threads()
    grads = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            grads.append(torch.autograd.grad((multi_affine_warp(x, theta, mask) * weights).sum(), (x, theta, mask)))
    finally:
        torch.set_num_threads(threads)
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_theta_samples_zeros(bad):
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    theta = random_theta(2, 3, 6, 5, 6, 5)
    mask = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    broken = theta.clone()
    broken[0, 1, 0, 0] = bad  # part 1 of item 0: x coordinate undefined
    broken[1, :, 1, 2] = bad  # every part of item 1
    theta_g = broken.clone().requires_grad_()
    out = multi_affine_warp(x, theta_g, mask)
    # The same as moving those parts far outside the image, where they sample 0.
    away = theta.clone()
    away[0, 1, :, 2] = 1e6
    away[1, :, :, 2] = 1e6
    torch.testing.assert_close(out, reference.multi_affine_warp(x, away, mask))
    assert torch.all(out[1] == 0)
    grad_x, grad_theta = torch.autograd.grad(out.sum(), (x, theta_g))
    assert torch.isfinite(grad_x).all() and torch.isfinite(grad_theta).all()
    assert torch.all(grad_theta[0, 1] == 0) and torch.all(grad_theta[1] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_theta_reads_nothing_out_of_bounds(dtype):
    x = torch.randn(1, 2, 4, 5, dtype=dtype, requires_grad=True)
    huge = 1e300 if dtype == torch.float64 else 3e38
    theta = torch.tensor(
        [[[huge, 0, 0.5], [0, 1, 0.5]], [[1, 0, -huge], [0, 1, 0]], [[-huge, huge, 0], [huge, -huge, huge]],
         [[1e18, 0, 0], [0, 1e18, 0]]],
        dtype=dtype,
    ).unsqueeze(0).requires_grad_()  # fmt: skip
    out = multi_affine_warp(x, theta, size=(3, 6))
    want, _ = brute_force(x.detach(), theta.detach(), None, False, 3, 6)
    torch.testing.assert_close(out.double(), want)
    grad_x, grad_theta = torch.autograd.grad(out.sum(), (x, theta))
    assert torch.isfinite(grad_x).all() and torch.isfinite(grad_theta).all()


def test_nan_in_x_propagates_like_the_reference():
    # 0 * NaN is NaN: a NaN in x reaches even parts whose mask is 0 where they sample it.
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    x[0, 1, 2, 2] = float("nan")
    theta = random_theta(2, 4, 6, 5, 6, 5)
    mask = random_mask(2, 4, 6, 5, "binary")
    out = multi_affine_warp(x, theta, mask)
    want = reference.multi_affine_warp(x, theta, mask)
    torch.testing.assert_close(out, want, equal_nan=True)
    assert torch.isnan(out).any() and not torch.isnan(out[1]).any()


def test_non_contiguous_inputs():
    x = torch.randn(2, 9, 11, 3).permute(0, 3, 1, 2)  # (2, 3, 9, 11), channels last in memory
    theta = random_theta(2, 4, 9, 11, 7, 8).transpose(2, 3).contiguous().transpose(2, 3)
    mask = torch.rand(2, 7, 8, 4, dtype=torch.float64).permute(0, 3, 1, 2)
    assert not x.is_contiguous() and not theta.is_contiguous() and not mask.is_contiguous()
    x = x.double()
    out = multi_affine_warp(x, theta, mask)
    torch.testing.assert_close(out, reference.multi_affine_warp(x.contiguous(), theta.contiguous(), mask.contiguous()))


@pytest.mark.parametrize("mask_kind,include_identity", [("soft", False), (None, True), (None, False)])
def test_opcheck(mask_kind, include_identity):
    x, theta, mask = gradcheck_case(seed=3)
    H, W = x.shape[-2:]
    if mask_kind is None:
        mask, (Ho, Wo) = None, ((H, W) if include_identity else (3, 7))
        theta = random_theta(2, 3, H, W, Ho, Wo)
    else:
        mask.requires_grad_()
        Ho, Wo = mask.shape[-2:]
    args = (x.requires_grad_(), theta.requires_grad_(), mask, include_identity, Ho, Wo)
    torch.library.opcheck(torch.ops.pydeform.multi_affine_warp.default, args)


def test_torch_compile_fullgraph():
    def loss(a, t, m):
        return multi_affine_warp(a * 2, t, m).square().mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 10, 8, requires_grad=True)
    theta = random_theta(2, 5, 10, 8, 6, 7, dtype=torch.float32).requires_grad_()
    mask = torch.rand(2, 5, 6, 7, requires_grad=True)
    value = compiled(x, theta, mask)
    grads = torch.autograd.grad(value, (x, theta, mask))
    torch.testing.assert_close(value, loss(x, theta, mask))
    for got, want in zip(grads, torch.autograd.grad(loss(x, theta, mask), (x, theta, mask))):
        torch.testing.assert_close(got, want)


def test_backward_op_never_trusts_argmax():
    x = torch.randn(1, 2, 4, 4)
    theta = random_theta(1, 3, 4, 4, 4, 4, dtype=torch.float32)
    mask = torch.rand(1, 3, 4, 4)
    argmax = torch.full((1, 2, 4, 4), 200, dtype=torch.uint8)
    argmax[0, 0, 0, 0] = IDENTITY_CODE  # the identity, but the call has none
    argmax[0, 1, 1, 1] = 2
    grad_x, grad_theta, grad_mask = torch.ops.pydeform.multi_affine_warp_backward(
        torch.ones(1, 2, 4, 4), x, theta, mask, argmax, False, True, True, True
    )
    assert torch.all(grad_theta[0, :2] == 0) and torch.all(grad_mask[0, :2] == 0)
    nonzero = grad_mask[0, 2] != 0
    assert nonzero.sum() <= 1 and not nonzero[0, 0]
    assert torch.isfinite(grad_x).all() and grad_x[0, 0].abs().sum() == 0


X = torch.randn(2, 3, 6, 5)
T = random_theta(2, 4, 6, 5, 6, 5, dtype=torch.float32)
M = torch.rand(2, 4, 6, 5)


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        ((X[0], T), {}, ValueError, "x must have 4 dimensions"),
        (([[1.0]], T), {}, TypeError, "x must be a torch.Tensor"),
        ((X, "theta"), {}, TypeError, "theta must be a torch.Tensor"),
        ((X, T[0]), {}, ValueError, "theta must have 4 dimensions"),
        ((X, T[:1]), {}, ValueError, r"theta must have shape \(B, K, 2, 3\) with B = 2"),
        ((X, torch.zeros(2, 4, 3, 3)), {}, ValueError, r"theta must have shape \(B, K, 2, 3\)"),
        ((X, torch.zeros(2, 4, 2, 2)), {}, ValueError, r"theta must have shape \(B, K, 2, 3\)"),
        ((X, torch.zeros(2, 256, 2, 3)), {}, ValueError, "K = 256 parts; at most 255"),
        ((X, T, M[:, :3]), {}, ValueError, r"mask must have shape \(B, K, Ho, Wo\) = \(2, 4, 6, 5\)"),
        ((X, T, M[:1]), {}, ValueError, "mask must have shape"),
        ((X, T, M[0]), {}, ValueError, "mask must have 4 dimensions"),
        ((X, T, M.double()), {}, TypeError, "mask has dtype torch.float64 but x has dtype torch.float32"),
        ((X, T.double()), {}, TypeError, "theta has dtype torch.float64 but x"),
        ((X.double(), T.double(), M), {}, TypeError, "mask has dtype torch.float32 but x"),
        ((X, T.to("meta")), {}, ValueError, "theta is on device meta"),
        ((X, T), {"size": (4, 5), "include_identity": True}, ValueError, r"include_identity needs the output size \(4, 5\)"),
        ((X, T, torch.rand(2, 4, 3, 3)), {"include_identity": True}, ValueError, "include_identity needs the output size"),
        ((X, T), {"include_identity": 1}, TypeError, "include_identity must be a bool"),
        ((X, T, M), {"size": (6, 4)}, ValueError, r"size \(6, 4\) differs from the output size of mask \(6, 5\)"),
        ((X, T), {"size": (0, 5)}, ValueError, "size must be positive"),
        ((X, T), {"size": (4, -1)}, ValueError, "size must be positive"),
        ((X, T), {"size": (4,)}, TypeError, r"size must be a pair of ints \(height, width\)"),
        ((X, T), {"size": 4}, TypeError, "size must be a pair of ints"),
        ((X, T), {"size": "ab"}, TypeError, "size must be a pair of ints"),
        ((X, T), {"size": (4.0, 5)}, TypeError, r"size\[0\] must be an int"),
        ((torch.zeros(2, 0, 6, 5), T), {}, ValueError, "x must not be empty"),  # (B = 0 is allowed)
        ((X, torch.zeros(2, 0, 2, 3)), {}, ValueError, "K = 0 parts: that needs include_identity"),
        ((X, T, torch.zeros(2, 4, 0, 5)), {}, ValueError, "mask must not be empty"),
        ((X.long(), T), {}, TypeError, "x has dtype torch.int64"),
        ((X.half(), T.half()), {}, TypeError, "on cpu pydeform supports float32, float64"),
    ],
)  # fmt: skip
def test_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        multi_affine_warp(*args, **kwargs)


def test_ops_check_their_arguments_when_called_directly():
    with pytest.raises(ValueError, match="height must be >= 1"):
        torch.ops.pydeform.multi_affine_warp(X, T, None, False, 0, 5)
    with pytest.raises(ValueError, match="mask must have shape"):
        torch.ops.pydeform.multi_affine_warp(X, T, M, False, 6, 6)
    out, argmax = torch.ops.pydeform.multi_affine_warp(X, T, M, False, 6, 5)
    with pytest.raises(ValueError, match="argmax uint8"):
        torch.ops.pydeform.multi_affine_warp_backward(out, X, T, M, argmax.long(), False, True, True, True)
    with pytest.raises(ValueError, match="need_mask needs a mask"):
        torch.ops.pydeform.multi_affine_warp_backward(out, X, T, None, argmax, False, True, True, True)


def test_compiled_module_rechecks_its_arguments():
    x, theta = torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 3)
    out, argmax = torch.empty(1, 1, 2, 2), torch.empty(1, 1, 2, 2, dtype=torch.uint8)
    packed = torch.empty(_C.affine_warp_cpu_packed_numel(1, 1, 2, 2))
    p = [x.data_ptr(), theta.data_ptr(), 0, out.data_ptr(), argmax.data_ptr(), packed.data_ptr()]
    with pytest.raises(ValueError, match="at most 255 parts"):
        _C.affine_warp_forward_cpu(*p, 1, 1, 2, 2, 256, 2, 2, False, 0, 1)
    with pytest.raises(ValueError, match="include_identity needs the output size"):
        _C.affine_warp_forward_cpu(*p, 1, 1, 2, 2, 1, 1, 2, True, 0, 1)
    with pytest.raises(ValueError, match="positive"):
        _C.affine_warp_forward_cpu(*p, 1, 1, -2, 2, 1, 2, 2, False, 0, 1)
    with pytest.raises(ValueError, match="null pointer for theta"):
        _C.affine_warp_forward_cpu(p[0], 0, *p[2:], 1, 1, 2, 2, 1, 2, 2, False, 0, 1)
    with pytest.raises(ValueError, match="null pointer for packed"):
        _C.affine_warp_forward_cpu(*p[:5], 0, 1, 1, 2, 2, 1, 2, 2, False, 0, 1)
    with pytest.raises(ValueError, match="float32 and float64"):
        _C.affine_warp_forward_cpu(*p, 1, 1, 2, 2, 1, 2, 2, False, 2, 1)
    grad = torch.empty(1, 1, 2, 3)
    g = [out.data_ptr(), x.data_ptr(), theta.data_ptr(), 0, argmax.data_ptr(), 0]
    with pytest.raises(ValueError, match="grad_mask needs mask"):
        _C.affine_warp_backward_cpu(*g, 0, grad.data_ptr(), 0, packed.data_ptr(), 1, 1, 2, 2, 1, 2, 2, False, 1, 0, 1)
    with pytest.raises(ValueError, match="theta_partials"):
        _C.affine_warp_backward_cpu(*g, grad.data_ptr(), 0, grad.data_ptr(), packed.data_ptr(), 1, 1, 2, 2, 1, 2, 2,
                                    False, 3, 0, 1)  # fmt: skip
    with pytest.raises(ValueError, match="needs the packed workspace"):
        _C.affine_warp_backward_cpu(*g[:5], x.data_ptr(), 0, 0, 0, 0, 1, 1, 2, 2, 1, 2, 2, False, 1, 0, 1)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_items_are_independent(device):
    x = torch.randn(3, 5, 12, 10, device=device)
    theta = random_theta(3, 4, 12, 10, 9, 11, dtype=torch.float32).to(device)
    mask = random_mask(3, 4, 9, 11, "binary", dtype=torch.float32).to(device)
    out = multi_affine_warp(x, theta, mask)
    for b in range(3):
        torch.testing.assert_close(out[b : b + 1], multi_affine_warp(x[b : b + 1], theta[b : b + 1], mask[b : b + 1]))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("include_identity", [False, True])
def test_cuda_matches_cpu(dtype, include_identity):
    B, C, H, W, K = 2, 19, 33, 27, 10
    Ho, Wo = (H, W) if include_identity else (29, 40)
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    theta = random_theta(B, K, H, W, Ho, Wo)
    mask = random_mask(B, K, Ho, Wo, "binary")
    mask[:, 0] = 1  # the torso: all ones
    xc, tc, mc = (t.to("cuda", dtype).requires_grad_() for t in (x, theta, mask))
    out = multi_affine_warp(xc, tc, mc, include_identity)
    assert out.dtype == dtype
    # Compare with the CPU in float64 on the inputs as rounded to `dtype`.
    xr, tr, mr = (t.detach().double().cpu().requires_grad_() for t in (xc, tc, mc))
    want = multi_affine_warp(xr, tr, mr, include_identity)
    tol = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    torch.testing.assert_close(out.double().cpu(), want, rtol=tol, atol=tol)
    weights = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad((out.double() * weights.cuda()).sum(), (xc, tc, mc))
    want_grads = torch.autograd.grad((want * weights).sum(), (xr, tr, mr))
    for got, ref in zip(grads, want_grads):
        assert got.dtype == dtype
        scale = ref.abs().max().item() + 1
        torch.testing.assert_close(got.double().cpu(), ref, rtol=tol * 10, atol=tol * 10 * scale)


@requires_cuda
def test_cuda_gradcheck_opcheck_and_determinism():
    x, theta, mask = (t.cuda() for t in gradcheck_case(seed=3))
    inputs = (x.requires_grad_(), theta.requires_grad_(), mask.requires_grad_())
    assert torch.autograd.gradcheck(lambda a, t, m: multi_affine_warp(a, t, m), inputs)
    torch.library.opcheck(torch.ops.pydeform.multi_affine_warp.default, (*inputs, False, 4, 5))
    weights = torch.randn(2, 2, 4, 5, dtype=torch.float64, device="cuda")
    first = torch.autograd.grad((multi_affine_warp(*inputs) * weights).sum(), inputs[1:])
    second = torch.autograd.grad((multi_affine_warp(*inputs) * weights).sum(), inputs[1:])
    for a, b in zip(first, second):  # grad_theta and grad_mask: no atomics
        assert torch.equal(a, b)
