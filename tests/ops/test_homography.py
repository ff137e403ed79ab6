import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pydeform import _C
from pydeform.ops import homography_sample, reference

from devices import DEVICES, requires_cuda

PADDINGS = ["zeros", "border"]
COORDS = ["pixel", "normalized"]


def brute_force(x, h, size, padding_mode="zeros", coords="pixel"):
    """The contract of DESIGN.md sections 3 and 4, literally, in numpy loops."""
    x, h = x.detach().double().numpy(), h.detach().double().numpy()
    Bx, C, H, W = x.shape
    B, (Ho, Wo) = max(Bx, h.shape[0]), size

    def to_normalized(v, n):
        return 2 * v / (n - 1) - 1 if n > 1 else 0.0

    def to_pixel(v, n):
        return (v + 1) * (n - 1) / 2

    out = np.zeros((B, C, Ho, Wo))
    for b, i, j in itertools.product(range(B), range(Ho), range(Wo)):
        hb, xb = h[0 if h.shape[0] == 1 else b], x[0 if Bx == 1 else b]
        point = (j, i) if coords == "pixel" else (to_normalized(j, Wo), to_normalized(i, Ho))
        with np.errstate(all="ignore"):
            u, v, w = hb @ np.array([point[0], point[1], 1.0])
            if not abs(w) >= 1e-8 or not np.isfinite([u, v, w]).all():
                continue
            sx, sy = u / w, v / w
            if not np.isfinite([sx, sy]).all():
                continue
            if coords == "normalized":
                sx, sy = to_pixel(sx, W), to_pixel(sy, H)
        sx, sy = (0.0 if W == 1 else sx), (0.0 if H == 1 else sy)
        if padding_mode == "border":
            sx, sy = min(max(sx, 0.0), W - 1.0), min(max(sy, 0.0), H - 1.0)
        if abs(sx) > 1e9 or abs(sy) > 1e9:  # far outside: every tap is outside
            continue
        x0, y0 = math.floor(sx), math.floor(sy)
        for xi, yi in itertools.product((x0, x0 + 1), (y0, y0 + 1)):
            if 0 <= xi < W and 0 <= yi < H:
                out[b, :, i, j] += (1 - abs(sx - xi)) * (1 - abs(sy - yi)) * xb[:, yi, xi]
    return torch.from_numpy(out)


def normalized_to_pixel(h, in_size, out_size):
    """The pixel-coordinate homography equal to normalised h between these image sizes."""
    to_norm_out = reference.pixel_to_normalized_matrix(*out_size, h.dtype)
    to_norm_in = reference.pixel_to_normalized_matrix(*in_size, h.dtype)
    return torch.linalg.inv(to_norm_in) @ h @ to_norm_out


def random_homographies(batch, coords, in_size, out_size, spread=0.15, dtype=torch.float64):
    """Near-identity output -> input homographies (a bit of zoom-out so that some points fall
    outside the image), in the requested coordinates; w stays within 1 +- 0.5."""
    h = torch.eye(3, dtype=dtype) * 1.2 + spread * torch.randn(batch, 3, 3, dtype=dtype)
    h[:, 2, :2] = h[:, 2, :2].clamp(-0.2, 0.2)
    h[:, 2, 2] = 1.0
    if coords == "pixel" and min(in_size) > 1 and min(out_size) > 1:
        h = normalized_to_pixel(h, in_size, out_size)
    elif coords == "pixel":
        h[:, :2, 2] *= 3  # pixel offsets
    return h


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("coords", COORDS)
@pytest.mark.parametrize("Bx,Bh", [(2, 2), (1, 3), (3, 1)])
def test_matches_brute_force(padding_mode, coords, Bx, Bh):
    x = torch.randn(Bx, 3, 5, 7, dtype=torch.float64)
    h = random_homographies(Bh, coords, (5, 7), (6, 4))
    out = homography_sample(x, h, (6, 4), padding_mode, coords)
    torch.testing.assert_close(out, brute_force(x, h, (6, 4), padding_mode, coords))


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("coords", COORDS)
@pytest.mark.parametrize("in_size,out_size", [((1, 5), (3, 4)), ((4, 1), (2, 3)), ((3, 4), (1, 1)), ((1, 1), (2, 2))])
def test_sides_of_one_pixel_match_brute_force(padding_mode, coords, in_size, out_size):
    x = torch.randn(2, 2, *in_size, dtype=torch.float64)
    h = random_homographies(2, coords, in_size, out_size)
    out = homography_sample(x, h, out_size, padding_mode, coords)
    torch.testing.assert_close(out, brute_force(x, h, out_size, padding_mode, coords))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    B=st.integers(1, 3), C=st.integers(1, 5), H=st.integers(1, 24), W=st.integers(1, 24),
    Ho=st.integers(1, 24), Wo=st.integers(1, 24), broadcast=st.sampled_from(["none", "x", "h"]),
    padding_mode=st.sampled_from(PADDINGS), coords=st.sampled_from(COORDS),
)  # fmt: skip
def test_matches_reference_on_random_shapes(B, C, H, W, Ho, Wo, broadcast, padding_mode, coords):
    x = torch.randn(1 if broadcast == "x" else B, C, H, W, dtype=torch.float64, requires_grad=True)
    h = random_homographies(1 if broadcast == "h" else B, coords, (H, W), (Ho, Wo)).requires_grad_()
    out = homography_sample(x, h, (Ho, Wo), padding_mode, coords)
    want = reference.homography_sample(x, h, (Ho, Wo), padding_mode, coords)
    torch.testing.assert_close(out, want)
    weights = torch.rand_like(out)
    got_grads = torch.autograd.grad((out * weights).sum(), (x, h))
    want_grads = torch.autograd.grad((want * weights).sum(), (x, h))
    for got, expected in zip(got_grads, want_grads):
        torch.testing.assert_close(got, expected)


def test_identity_and_integer_shift_are_exact():
    x = torch.randn(2, 3, 6, 8)
    eye = torch.eye(3).expand(2, 3, 3)
    assert torch.equal(homography_sample(x, eye), x)
    torch.testing.assert_close(homography_sample(x, eye, coords="normalized"), x)
    # Output (j, i) reads input (j + 2, i - 1).
    shift = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    want = torch.zeros_like(x)
    want[:, :, 1:, :-2] = x[:, :, :-1, 2:]
    assert torch.equal(homography_sample(x, shift), want)
    # Border padding repeats the edge instead: clamp the source rows / columns.
    rows, cols = (torch.arange(6) - 1).clamp(0, 5), (torch.arange(8) + 2).clamp(0, 7)
    assert torch.equal(homography_sample(x, shift, padding_mode="border"), x[:, :, rows][:, :, :, cols])


@pytest.mark.parametrize("shift, axis", [((6, -0.75), 0), ((-6, -0.75), 0), ((-0.75, 4), 1), ((-0.75, -4), 1)])
def test_border_padding_has_no_coordinate_gradient_on_the_border(shift, axis):
    # W = 7, H = 5: along `axis` every sample point lies on the border (0 or W-1 / H-1) or
    # beyond it, along the other at fractional positions. grid_sample's derivative is 0 on
    # the border as beyond it, so the row of h that moves that coordinate gets no gradient.
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    h = torch.tensor([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]], [0.0, 0.0, 1.0]], dtype=torch.float64)
    h = h.expand(2, 3, 3).clone().requires_grad_(True)
    weights = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    got = homography_sample(x, h, padding_mode="border")
    want = reference.homography_sample(x, h, padding_mode="border")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got_grads = torch.autograd.grad((got * weights).sum(), (x, h))
    want_grads = torch.autograd.grad((want * weights).sum(), (x, h))
    assert torch.equal(got_grads[1][:, axis], torch.zeros(2, 3, dtype=torch.float64))
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_projective_scale_does_not_matter():
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    h = random_homographies(1, "pixel", (9, 11), (9, 11))
    torch.testing.assert_close(homography_sample(x, h * -3.5), homography_sample(x, h))


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_matches_kornia_warp_perspective(padding_mode):
    """Conventions verified: kornia's M maps an input (src) pixel to an output (dst) pixel, x is
    the column, y the row, and pixel centres sit at integers 0..W-1 (kornia's pixel-space warp
    is the same with align_corners True or False away from the border); so kornia(x, h^-1) is
    homography_sample(x, h) in pixel coordinates, with h^-1 inverted back inside kornia.
    Compared where the sample point lies at least a pixel inside the image (kornia's border
    handling and its homogeneous division differ at the edges)."""
    kornia_transform = pytest.importorskip("kornia.geometry.transform")
    x = torch.randn(3, 2, 20, 30, dtype=torch.float64)
    h = random_homographies(3, "pixel", (20, 30), (18, 25))
    out = homography_sample(x, h, (18, 25), padding_mode)
    want = kornia_transform.warp_perspective(
        x, torch.linalg.inv(h), (18, 25), mode="bilinear", padding_mode=padding_mode, align_corners=True
    )
    ys, xs = torch.meshgrid(torch.arange(18.0).double(), torch.arange(25.0).double(), indexing="ij")
    uvw = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3) @ h.transpose(1, 2)
    sx, sy = uvw[..., 0] / uvw[..., 2], uvw[..., 1] / uvw[..., 2]
    interior = ((sx >= 1) & (sx <= 28) & (sy >= 1) & (sy <= 18)).view(3, 1, 18, 25).expand_as(out)
    assert interior.float().mean() > 0.3  # the comparison covers a good part of the image
    torch.testing.assert_close(out[interior], want[interior], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("coords", COORDS)
@pytest.mark.parametrize("Bx,Bh", [(2, 2), (1, 2), (2, 1)])
def test_gradcheck(padding_mode, coords, Bx, Bh):
    # Random near-identity homographies: w stays near 1 and sample points are never integers.
    x = torch.randn(Bx, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    h = random_homographies(Bh, coords, (4, 5), (3, 6)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, m: homography_sample(a, m, (3, 6), padding_mode, coords), (x, h))


def test_gradient_only_where_required():
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    h = random_homographies(2, "pixel", (6, 6), (6, 6), dtype=torch.float32)
    homography_sample(x, h).sum().backward()
    assert x.grad is not None and h.grad is None
    x, h = x.detach(), h.requires_grad_()
    homography_sample(x, h).sum().backward()
    assert h.grad is not None and torch.count_nonzero(h.grad) > 0


def test_broadcast_gradients_are_sums_over_the_batch():
    x1 = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    hs = random_homographies(4, "pixel", (7, 6), (5, 8)).requires_grad_()
    weights = torch.randn(4, 2, 5, 8, dtype=torch.float64)
    got = torch.autograd.grad((homography_sample(x1, hs, (5, 8)) * weights).sum(), (x1, hs))
    x4 = x1.detach().expand(4, 2, 7, 6).clone().requires_grad_()
    want = torch.autograd.grad((homography_sample(x4, hs, (5, 8)) * weights).sum(), (x4, hs))
    torch.testing.assert_close(got[0], want[0].sum(0, keepdim=True))
    torch.testing.assert_close(got[1], want[1])
    # N images under one homography: the homography's gradient sums over the images.
    xs = torch.randn(3, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    h1 = hs[:1].detach().requires_grad_()
    got = torch.autograd.grad((homography_sample(xs, h1, (5, 8)) * weights[:3]).sum(), (xs, h1))
    h3 = h1.detach().expand(3, 3, 3).clone().requires_grad_()
    want = torch.autograd.grad((homography_sample(xs, h3, (5, 8)) * weights[:3]).sum(), (xs, h3))
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1].sum(0, keepdim=True))


def test_float32_matches_float64():
    x = torch.rand(3, 4, 30, 40, dtype=torch.float64, requires_grad=True)
    h = random_homographies(3, "normalized", (30, 40), (20, 50)).requires_grad_()
    x32, h32 = x.detach().float().requires_grad_(), h.detach().float().requires_grad_()
    out = homography_sample(x, h, (20, 50), coords="normalized")
    out32 = homography_sample(x32, h32, (20, 50), coords="normalized")
    torch.testing.assert_close(out32.double(), out, rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad(out.sum(), (x, h))
    grads32 = torch.autograd.grad(out32.sum(), (x32, h32))
    torch.testing.assert_close(grads32[0].double(), grads[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads32[1].double(), grads[1], rtol=1e-4, atol=1e-2)


def test_non_contiguous_inputs_and_output_gradient():
    x = torch.randn(2, 9, 8, 3, dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_()  # (2, 3, 9, 8)
    h = random_homographies(2, "pixel", (9, 8), (7, 10)).transpose(1, 2).contiguous().transpose(1, 2)
    h = h.detach().requires_grad_()
    assert not x.is_contiguous() and not h.is_contiguous()
    weights = torch.randn(2, 3, 10, 7, dtype=torch.float64)
    # The gradient reaching the op is transposed (non-contiguous); out.sum()'s is expanded.
    for loss in (lambda out: (out.transpose(2, 3) * weights).sum(), lambda out: out.sum()):
        got_out = homography_sample(x, h, (7, 10))
        want_out = reference.homography_sample(x, h, (7, 10))
        torch.testing.assert_close(got_out, want_out)
        got = torch.autograd.grad(loss(got_out), (x, h))
        want = torch.autograd.grad(loss(want_out), (x, h))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_opcheck():
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    h = random_homographies(2, "pixel", (6, 5), (4, 7)).requires_grad_()
    op = torch.ops.pydeform.homography_sample.default
    torch.library.opcheck(op, (x, h, 4, 7, "zeros", "pixel"))
    torch.library.opcheck(op, (x[:1], h, 4, 7, "border", "normalized"))
    torch.library.opcheck(op, (x.detach(), h[:1].detach(), 6, 5, "zeros", "normalized"))
    x_channels_last = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(op, (x_channels_last, h.transpose(1, 2), 3, 3, "border", "pixel"))
    grad_out = torch.randn(2, 3, 4, 7, dtype=torch.float64)
    backward = torch.ops.pydeform.homography_sample_backward.default
    torch.library.opcheck(backward, (grad_out, x.detach(), h.detach(), 4, 7, "border", "pixel", True, True, False))
    strided_grad = grad_out.transpose(2, 3).contiguous().transpose(2, 3)
    arguments = (strided_grad, x_channels_last.detach(), h.detach(), 4, 7, "zeros", "normalized", True, False, True)
    torch.library.opcheck(backward, arguments)


def test_torch_compile_fullgraph():
    def loss(image, hom):
        out = homography_sample(image * 2, hom, (12, 9), padding_mode="border", coords="normalized")
        return (out[:, :3] * out[:, 3:]).mean()  # an RGBA composite, as in ST-GAN

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    x = torch.rand(2, 4, 10, 8, requires_grad=True)
    h = random_homographies(2, "normalized", (10, 8), (12, 9), dtype=torch.float32).requires_grad_()
    value = compiled(x, h)
    grads = torch.autograd.grad(value, (x, h))
    torch.testing.assert_close(value, loss(x, h))
    for got, want in zip(grads, torch.autograd.grad(loss(x, h), (x, h))):
        torch.testing.assert_close(got, want)


def _gradients(x, h, size=None, padding_mode="zeros", coords="pixel"):
    x, h = x.detach().requires_grad_(), h.detach().requires_grad_()
    out = homography_sample(x, h, size, padding_mode, coords)
    return torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(), (x, h))


def test_deterministic_gradients_are_bit_identical():
    x = torch.rand(3, 4, 40, 50)
    h = random_homographies(3, "normalized", (40, 50), (45, 35), dtype=torch.float32)
    default = _gradients(x, h, (45, 35), coords="normalized")
    threads = torch.get_num_threads()
    try:
        torch.use_deterministic_algorithms(True)
        runs = [_gradients(x, h, (45, 35), coords="normalized") for _ in range(3)]
        torch.set_num_threads(1)
        runs.append(_gradients(x, h, (45, 35), coords="normalized"))
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    for run in runs:
        assert torch.equal(run[0], runs[0][0]) and torch.equal(run[1], runs[0][1])
    # On the CPU the default mode is deterministic too: the same bits.
    assert torch.equal(default[0], runs[0][0]) and torch.equal(default[1], runs[0][1])


def _degenerate_homographies(height, width):
    """Homographies whose sample points are partly or wholly undefined, at infinity or huge.
    Both sides even, so that no normalised coordinate is exactly 0: a point like 0 * 1e30
    would hinge on the last bit of the coordinate (ill-conditioned, not a test of the op)."""
    inf, nan = float("inf"), float("nan")
    return {
        "w = 0 everywhere": [[1, 0, 0], [0, 1, 0], [0, 0, 0]],
        "tiny w": [[1, 0, 0], [0, 1, 0], [0, 0, 1e-9]],
        "w just above the cut": [[1, 0, 0], [0, 1, 0], [0, 0, 2e-8]],
        "line at infinity through the image": [[1, 0, 0], [0, 1, 0], [1, 0, -(width // 2)]],
        "points at infinity": [[1, 0, 0], [0, 1, 0], [1, 1, -(height // 2 + width // 2)]],
        "nan entry": [[1, 0, 0], [0, nan, 0], [0, 0, 1]],
        "inf entry": [[1, 0, inf], [0, 1, 0], [0, 0, 1]],
        "inf in the bottom row": [[1, 0, 0], [0, 1, 0], [0, -inf, 1]],
        "huge": [[1e30, 0, 0], [0, 1e30, 0], [0, 0, 1]],
        "huge translation": [[1, 0, -1e30], [0, 1, 3e29], [0, 0, 1]],
        "huge and scaled": [[1e30, 0, 0], [0, 1e30, 0], [0, 0, 1e30]],
        "u / w overflows float32": [[1e38, 0, 0], [0, 1e38, 0], [0, 0, 1e-7]],
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("coords", COORDS)
@pytest.mark.parametrize("name", list(_degenerate_homographies(6, 8)))
def test_degenerate_homographies(name, coords, padding_mode, dtype):
    x = torch.randn(1, 2, 6, 8, dtype=dtype, requires_grad=True)
    h = torch.tensor(_degenerate_homographies(6, 8)[name], dtype=dtype).view(1, 3, 3).requires_grad_()
    out = homography_sample(x, h, padding_mode=padding_mode, coords=coords)
    assert torch.isfinite(out).all()
    if dtype == torch.float64:  # in float32, 1 / w ~ 5e7 magnifies rounding: the reference is the yardstick
        torch.testing.assert_close(out, brute_force(x, h, (6, 8), padding_mode, coords))
    want = reference.homography_sample(x, h, padding_mode=padding_mode, coords=coords)
    torch.testing.assert_close(out, want)
    grad_x, grad_h = torch.autograd.grad(out.sum(), (x, h))
    assert torch.isfinite(grad_x).all() and torch.isfinite(grad_h).all()
    if name in ("w = 0 everywhere", "tiny w", "nan entry", "inf entry", "inf in the bottom row"):
        assert torch.all(out == 0) and torch.all(grad_x == 0) and torch.all(grad_h == 0)


@pytest.mark.parametrize(
    "x,h,kwargs,error,match",
    [
        (torch.randn(3, 4, 4), torch.eye(3)[None], {}, ValueError, "x must have 4 dimensions"),
        (torch.randn(1, 3, 4, 4), torch.eye(3), {}, ValueError, "h must have 3 dimensions"),
        (torch.randn(1, 3, 4, 4), torch.zeros(1, 3, 4), {}, ValueError, r"h must have shape \(B, 3, 3\)"),
        (torch.randn(1, 3, 4, 4), torch.zeros(1, 2, 3), {}, ValueError, r"h must have shape \(B, 3, 3\)"),
        (torch.randn(2, 3, 4, 4), torch.eye(3).repeat(3, 1, 1), {}, ValueError, "h has batch size 3 but x has 2"),
        (torch.randn(1, 3, 4, 4), torch.eye(3, dtype=torch.float64)[None], {}, TypeError, "h has dtype"),
        (torch.ones(1, 3, 4, 4, dtype=torch.int64), torch.ones(1, 3, 3, dtype=torch.int64), {}, TypeError, "x has dtype"),
        (torch.randn(1, 3, 4, 4).half(), torch.eye(3)[None].half(), {}, TypeError, "on cpu pydeform supports float32, float64"),
        (torch.randn(1, 3, 4, 4, device="meta"), torch.eye(3, device="meta")[None], {}, ValueError, "device meta"),
        (torch.randn(1, 3, 0, 4), torch.eye(3)[None], {}, ValueError, "x must not be empty"),  # (B = 0 is allowed)
        (torch.randn(1, 0, 4, 4), torch.eye(3)[None], {}, ValueError, "x must not be empty"),
        (torch.randn(2, 3, 4, 4), torch.zeros(0, 3, 3), {}, ValueError, "h has batch size 0 but x has 2"),
        ([[1.0]], torch.eye(3)[None], {}, TypeError, "x must be a torch.Tensor"),
        (torch.randn(1, 3, 4, 4), np.eye(3)[None], {}, TypeError, "h must be a torch.Tensor"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"padding_mode": "reflection"}, ValueError, "padding_mode must be one of"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"coords": "normalised"}, ValueError, "coords must be one of"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"size": (0, 5)}, ValueError, r"size\[0\] \(height\) must be >= 1"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"size": (5, -1)}, ValueError, r"size\[1\] \(width\) must be >= 1"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"size": (5,)}, ValueError, "size must be a pair"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"size": 5}, ValueError, "size must be a pair"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"size": "ab"}, ValueError, "size must be a pair"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"size": (5.0, 4)}, TypeError, r"size\[0\] \(height\) must be an int"),
        (torch.randn(1, 3, 4, 4), torch.eye(3)[None], {"size": (5, True)}, TypeError, r"size\[1\] \(width\) must be an int"),
    ],
)  # fmt: skip
def test_errors(x, h, kwargs, error, match):
    with pytest.raises(error, match=match):
        homography_sample(x, h, **kwargs)


def test_ops_recheck_their_arguments():
    x, h = torch.randn(1, 2, 4, 4), torch.eye(3)[None]
    with pytest.raises(ValueError, match="size"):
        torch.ops.pydeform.homography_sample(x, h, 0, 4, "zeros", "pixel")
    with pytest.raises(ValueError, match="padding_mode"):
        torch.ops.pydeform.homography_sample(x, h, 4, 4, "wrap", "pixel")
    with pytest.raises(ValueError, match="grad_out must have shape"):
        torch.ops.pydeform.homography_sample_backward(
            torch.ones(1, 2, 3, 4), x, h, 4, 4, "zeros", "pixel", True, True, False
        )


def test_compiled_module_rechecks_its_arguments():
    x, h, out = torch.randn(1, 1, 2, 2), torch.eye(3)[None], torch.empty(1, 1, 2, 2)
    pointers = [x.data_ptr(), h.data_ptr(), out.data_ptr()]
    flags = [False, False]
    with pytest.raises(ValueError, match="equal or one of them 1"):
        _C.homography_forward_cpu(*pointers, 2, 3, 1, 2, 2, 2, 2, *flags, 0, 1)
    with pytest.raises(ValueError, match="positive"):
        _C.homography_forward_cpu(*pointers, 1, 1, 1, 2, -2, 2, 2, *flags, 0, 1)
    with pytest.raises(ValueError, match="float32 and float64"):
        _C.homography_forward_cpu(*pointers, 1, 1, 1, 2, 2, 2, 2, *flags, 2, 1)
    with pytest.raises(ValueError, match="null pointer for h"):
        _C.homography_forward_cpu(pointers[0], 0, pointers[2], 1, 1, 1, 2, 2, 2, 2, *flags, 0, 1)
    grad_x, grad_h, partials = torch.zeros(1, 1, 2, 2), torch.empty(1, 3, 3), torch.empty(9)
    backward = [out.data_ptr(), 4, 4, 2, 1, x.data_ptr(), h.data_ptr(), grad_x.data_ptr(), grad_h.data_ptr()]
    needed = _C.homography_grad_h_partials_cpu(1, 1, 1, 2, 2)
    assert needed >= 9
    with pytest.raises(ValueError, match="grad_h_partials is too small"):
        _C.homography_backward_cpu(*backward, partials.data_ptr(), needed - 1, 1, 1, 1, 2, 2, 2, 2, *flags, False, 0, 1)
    with pytest.raises(ValueError, match="non-negative"):
        bad_strides = [out.data_ptr(), 4, -4, 2, 1, *backward[5:]]
        _C.homography_backward_cpu(*bad_strides, partials.data_ptr(), needed, 1, 1, 1, 2, 2, 2, 2, *flags, False, 0, 1)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_items_are_independent(device):
    x = torch.randn(3, 2, 12, 10, device=device)
    h = random_homographies(3, "pixel", (12, 10), (9, 11), dtype=torch.float32).to(device)
    out = homography_sample(x, h, (9, 11))
    for b in range(3):
        assert torch.equal(out[b : b + 1], homography_sample(x[b : b + 1], h[b : b + 1], (9, 11)))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("coords", COORDS)
@pytest.mark.parametrize("Bx,Bh", [(3, 3), (1, 3), (3, 1)])
def test_cuda_matches_cpu(dtype, padding_mode, coords, Bx, Bh):
    x = torch.rand(Bx, 4, 37, 45, dtype=torch.float64)
    h = random_homographies(Bh, coords, (37, 45), (41, 33))
    xc, hc = x.to("cuda", dtype).requires_grad_(), h.to("cuda", dtype).requires_grad_()
    out = homography_sample(xc, hc, (41, 33), padding_mode, coords)
    # In half precision the inputs themselves are rounded: compare with the CPU on those.
    xr, hr = xc.detach().double().cpu().requires_grad_(), hc.detach().double().cpu().requires_grad_()
    want = homography_sample(xr, hr, (41, 33), padding_mode, coords)
    tol = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(out.double().cpu(), want, rtol=tol, atol=tol)
    weights = torch.rand_like(want)
    got = torch.autograd.grad((out.double() * weights.cuda()).sum(), (xc, hc))
    expected = torch.autograd.grad((want * weights).sum(), (xr, hr))
    torch.testing.assert_close(got[0].double().cpu(), expected[0], rtol=tol, atol=tol * 10)
    scale = expected[1].abs().max().item()
    torch.testing.assert_close(got[1].double().cpu(), expected[1], rtol=tol, atol=tol * scale)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("Bx,Bh", [(3, 3), (1, 3)])
def test_cuda_deterministic_mode(dtype, Bx, Bh):
    x = torch.rand(Bx, 3, 64, 80, device="cuda", dtype=dtype)
    h = random_homographies(Bh, "normalized", (64, 80), (70, 60), dtype=torch.float32).to("cuda", dtype)
    default = _gradients(x, h, (70, 60), coords="normalized")
    try:
        torch.use_deterministic_algorithms(True)
        runs = [_gradients(x, h, (70, 60), coords="normalized") for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(False)
    for run in runs:
        assert torch.equal(run[0], runs[0][0]) and torch.equal(run[1], runs[0][1])
    # grad_h never uses atomics; grad_x differs from the atomic scatter by summation order only.
    assert torch.equal(default[1], runs[0][1])
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(default[0], runs[0][0], rtol=tol, atol=tol)


@requires_cuda
def test_cuda_gradcheck_opcheck_and_device_mismatch():
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    h = random_homographies(2, "pixel", (5, 6), (4, 7)).cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, m: homography_sample(a, m, (4, 7), "border"), (x, h))
    torch.library.opcheck(torch.ops.pydeform.homography_sample.default, (x, h, 4, 7, "zeros", "normalized"))
    with pytest.raises(ValueError, match="h is on cpu but x is on cuda"):
        homography_sample(x, h.detach().cpu())
