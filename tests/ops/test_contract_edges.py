"""Edge cases of the op contracts (docs/contracts.md, "Common to the three ops"), for the fused
ops and their reference twins alike: integral p and NumPy sizes, empty batches, K = 0 with the
identity, and the clear error of a double backward."""
import numpy as np
import pytest
import torch

from pydeform.ops import homography_sample, multi_affine_warp, patch_nn_distance, reference


def _identity_theta(B, K, dtype=torch.float32):
    theta = torch.zeros(B, K, 2, 3, dtype=dtype)
    theta[:, :, 0, 0] = theta[:, :, 1, 1] = 1
    return theta


def test_patch_nn_integral_float_and_numpy_arguments():
    x, y = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 6, 7)
    for p in (1, 2):
        expected = patch_nn_distance(x, y, 3, p)
        for same in (float(p), np.int64(p)):
            got = patch_nn_distance(x, y, np.int32(3), same)
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    for bad in (1.5, 3, True, "1"):
        with pytest.raises(ValueError, match="p must be 1"):
            patch_nn_distance(x, y, 3, bad)


def test_numpy_sizes():
    x = torch.randn(2, 3, 6, 7)
    h = torch.eye(3).expand(2, 3, 3)
    for size in ((np.int64(5), np.int32(4)), np.array([5, 4])):
        assert homography_sample(x, h, size=size).shape == (2, 3, 5, 4)
        assert multi_affine_warp(x, _identity_theta(2, 2), size=size).shape == (2, 3, 5, 4)
    with pytest.raises(TypeError, match="int"):
        homography_sample(x, h, size=(5.0, 4))


@pytest.mark.parametrize("op", ["patch_nn", "affine", "homography_x", "homography_h"])
def test_empty_batch(op):
    x = torch.randn(0, 3, 6, 7, requires_grad=True)
    if op == "patch_nn":
        out, ref = patch_nn_distance(x, x.detach(), 3)[0], reference.patch_nn_distance(x, x.detach(), 3)[0]
    elif op == "affine":
        theta = _identity_theta(0, 2)
        out, ref = multi_affine_warp(x, theta), reference.multi_affine_warp(x, theta)
    elif op == "homography_x":  # x's batch is 0, h broadcasts
        h = torch.eye(3)[None].requires_grad_()
        out, ref = homography_sample(x, h), reference.homography_sample(x, h)
    else:  # h's batch is 0, x broadcasts
        x = torch.randn(1, 3, 6, 7, requires_grad=True)
        h = torch.zeros(0, 3, 3, requires_grad=True)
        out, ref = homography_sample(x, h), reference.homography_sample(x, h)
    assert out.shape == ref.shape and out.shape[0] == 0
    out.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.any()


def test_no_parts_with_identity_is_x():
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    theta = torch.zeros(2, 0, 2, 3, requires_grad=True)
    mask = torch.zeros(2, 0, 6, 7, requires_grad=True)
    out = multi_affine_warp(x, theta, mask, include_identity=True)
    assert torch.equal(out, x) and torch.equal(reference.multi_affine_warp(x, theta, mask, True), x)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, theta, mask), grad_out)
    assert torch.equal(grads[0], grad_out) and grads[1].shape == theta.shape and grads[2].shape == mask.shape
    for op in (multi_affine_warp, reference.multi_affine_warp):
        with pytest.raises(ValueError, match="K = 0 parts: that needs include_identity"):
            op(x, theta)


@pytest.mark.parametrize("op", ["patch_nn_distance", "multi_affine_warp", "homography_sample"])
def test_double_backward_says_it_is_not_supported(op):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    if op == "patch_nn_distance":
        out = patch_nn_distance(x, torch.randn_like(x))[0]
    elif op == "multi_affine_warp":
        out = multi_affine_warp(x, _identity_theta(1, 2, torch.float64) + 0.1)
    else:
        out = homography_sample(x, torch.eye(3, dtype=torch.float64)[None] + 0.01)
    (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=f"{op} supports first derivatives only"):
        grad.sum().backward()
