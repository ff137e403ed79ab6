import math

import pytest
import torch

from pydeform.nn import DeformableSkip
from pydeform.ops import multi_affine_warp, reference


def generator_inputs(B=2, C=6, h=16, w=12, K=10, dtype=torch.float64):
    """Features after a ReLU, near-identity part transforms, binary masks with the torso (part 0)
    all ones, as the Deformable GAN feeds its skip connections."""
    g = torch.Generator().manual_seed(0)
    features = torch.rand(B, C, h, w, dtype=dtype, generator=g)
    angle = (torch.rand(B, K, generator=g, dtype=dtype) - 0.5) * math.radians(30)
    cos, sin = angle.cos(), angle.sin()
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shift = torch.randn(B, K, 2, 1, generator=g, dtype=dtype)
    theta = torch.cat([linear, shift + 0.3], dim=-1)
    masks = (torch.rand(B, K, h, w, generator=g) < 0.3).to(dtype)
    masks[:, 0] = 1
    return features, theta, masks


def test_is_the_op_without_identity_at_the_features_resolution():
    features, theta, masks = generator_inputs()
    skip = DeformableSkip()
    out = skip(features, theta, masks)
    assert out.shape == features.shape
    torch.testing.assert_close(out, reference.multi_affine_warp(features, theta, masks))
    torch.testing.assert_close(out, multi_affine_warp(features, theta, masks, include_identity=False))


def test_identity_torso_alone_returns_the_features():
    features, theta, masks = generator_inputs(K=3)
    theta[:, 0] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=theta.dtype)  # torso: no motion
    masks[:, 1:] = 0  # the other parts are empty
    torch.testing.assert_close(DeformableSkip(num_parts=3)(features, theta, masks), features)


def test_gradients_reach_features_theta_and_masks():
    features, theta, masks = (t.requires_grad_() for t in generator_inputs(K=4))
    DeformableSkip(num_parts=4)(features, theta, masks).square().sum().backward()
    for t in (features, theta, masks):
        assert t.grad is not None and t.grad.abs().sum() > 0
    want = torch.autograd.grad(
        reference.multi_affine_warp(features, theta, masks).square().sum(), (features, theta, masks)
    )
    for t, w in zip((features, theta, masks), want):
        torch.testing.assert_close(t.grad, w)


def test_float32_module_in_a_graph_and_repr():
    features, theta, masks = (t.float() for t in generator_inputs())
    skip = DeformableSkip()
    conv = torch.nn.Conv2d(6, 6, 3, padding=1)
    out = conv(skip(conv(features), theta, masks))
    assert out.shape == features.shape and torch.isfinite(out).all()
    assert repr(skip) == "DeformableSkip(num_parts=10, impl='pydeform')"
    assert list(skip.parameters()) == []


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda f, t, m: (f[0], t, m), ValueError, "features must have 4 dimensions"),
        (lambda f, t, m: (f.numpy(), t, m), TypeError, "features must be a torch.Tensor"),
        (lambda f, t, m: (f, t[:, :9], m), ValueError, r"theta must have shape \(B, num_parts, 2, 3\) = \(2, 10, 2, 3\)"),
        (lambda f, t, m: (f, t[:1], m), ValueError, "theta must have shape"),
        (lambda f, t, m: (f, t, m[:, :9]), ValueError, r"masks must have shape \(B, num_parts, h, w\) = \(2, 10, 16, 12\)"),
        (lambda f, t, m: (f, t, m[..., :8, :6]), ValueError, "the features' resolution"),
        (lambda f, t, m: (f, t, m.float()), TypeError, "masks must have the dtype and device of features"),
        (lambda f, t, m: (f, t.float(), m), TypeError, "theta must have the dtype and device of features"),
        (lambda f, t, m: (f, t, m[:, :, :0]), ValueError, "masks must not be empty"),
    ],
)  # fmt: skip
def test_errors(change, error, match):
    with pytest.raises(error, match=match):
        DeformableSkip()(*change(*generator_inputs()))


@pytest.mark.parametrize("num_parts,error", [(0, ValueError), (256, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_num_parts(num_parts, error):
    with pytest.raises(error, match="num_parts"):
        DeformableSkip(num_parts)


def test_reference_impl_gives_the_same_values_and_gradients():
    inputs = [t.requires_grad_() for t in generator_inputs()]
    fused, ref = DeformableSkip(impl="pydeform")(*inputs), DeformableSkip(impl="reference")(*inputs)
    torch.testing.assert_close(fused, ref)
    for a, b in zip(torch.autograd.grad(fused.sum(), inputs), torch.autograd.grad(ref.sum(), inputs)):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="impl must be one of"):
        DeformableSkip(impl="cuda")
