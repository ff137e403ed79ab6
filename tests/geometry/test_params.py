"""ST-GAN parameterisation and composition, against closed forms, scipy's expm and warping twice."""
import numpy as np
import pytest
import scipy.linalg
import torch

from pydeform.geometry import compose_homographies, compose_params, params_to_generator, params_to_matrix
from pydeform.ops import reference

EYE = torch.eye(3, dtype=torch.float64)


def stgan_generator(p):
    """ST-GAN's vec2mtrx generator, transcribed literally (1-based names) from
    github.com/chenhsuanlin/spatial-transformer-GAN, glasses/warp.py."""
    p1, p2, p3, p4, p5, p6, p7, p8 = p
    return np.array([[p3, p2, p1], [p6, -p3 - p7, p5], [p4, p8, p7]])


def test_generator_is_stgan_sl3_basis():
    p = torch.randn(5, 8, dtype=torch.float64)
    g = params_to_generator(p)
    for b in range(5):
        np.testing.assert_array_equal(g[b].numpy(), stgan_generator(p[b].numpy()))
    torch.testing.assert_close(g.diagonal(dim1=1, dim2=2).sum(-1), torch.zeros(5, dtype=torch.float64))


def test_affine_generator_layout():
    p = torch.randn(4, 6, dtype=torch.float64)
    g = params_to_generator(p)
    torch.testing.assert_close(g[:, :2].reshape(4, 6), p)
    assert torch.equal(g[:, 2], torch.zeros(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("n", [8, 6])
def test_matrix_is_the_exponential(n):
    p = torch.randn(6, n, dtype=torch.float64) * 0.5
    h = params_to_matrix(p)
    g = params_to_generator(p)
    for b in range(6):
        np.testing.assert_allclose(h[b].numpy(), scipy.linalg.expm(g[b].numpy()), rtol=1e-12, atol=1e-12)


def test_translation_closed_form():
    tx, ty = 0.3, -1.7
    want = torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)
    homography = params_to_matrix(torch.tensor([[tx, 0, 0, 0, ty, 0, 0, 0]], dtype=torch.float64))
    affine = params_to_matrix(torch.tensor([[0, 0, tx, 0, 0, ty]], dtype=torch.float64))
    torch.testing.assert_close(homography[0], want, rtol=0, atol=1e-14)
    torch.testing.assert_close(affine[0], want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("n", [8, 6])
def test_small_params_are_first_order(n):
    # exp(G) = I + G + O(|G|^2): at scale 1e-4 the remainder is ~1e-8.
    p = torch.randn(8, n, dtype=torch.float64) * 1e-4
    torch.testing.assert_close(params_to_matrix(p), EYE + params_to_generator(p), rtol=0, atol=1e-7)


def test_affine_bottom_row_and_determinants():
    pa = torch.randn(8, 6, dtype=torch.float64)
    ha = params_to_matrix(pa)
    torch.testing.assert_close(ha[:, 2], EYE[2].expand(8, 3), rtol=0, atol=1e-15)
    # det exp(A) = exp(tr A): 1 for the traceless homography generator, exp(p0 + p4) for the affine one.
    torch.testing.assert_close(torch.linalg.det(ha), torch.exp(pa[:, 0] + pa[:, 4]))
    ph = torch.randn(8, 8, dtype=torch.float64)
    torch.testing.assert_close(torch.linalg.det(params_to_matrix(ph)), torch.ones(8, dtype=torch.float64))


def test_negated_params_invert():
    p = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(params_to_matrix(-p) @ params_to_matrix(p), EYE.expand(4, 3, 3))


@pytest.mark.parametrize("n", [8, 6])
def test_gradcheck(n):
    p = (torch.randn(2, n, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(params_to_matrix, (p,))


def test_stgan_translation_is_in_normalized_coordinates():
    # p0 = 2/(W-1) is one pixel in x; output -> input, so output column j samples input column j + 1.
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    p = torch.zeros(1, 8, dtype=torch.float64)
    p[0, 0] = 2 / (7 - 1)
    out = reference.homography_sample(x, params_to_matrix(p), coords="normalized")
    torch.testing.assert_close(out[..., :-1], x[..., 1:])
    torch.testing.assert_close(out[..., -1], torch.zeros_like(out[..., -1]))


def test_compose_params_adds_and_matches_matrices_when_generators_commute():
    p = torch.randn(3, 8, dtype=torch.float64) * 0.3
    torch.testing.assert_close(compose_params(p, 0.5 * p), 1.5 * p)
    # p and 0.5 p commute: exp(1.5 A) = exp(A) exp(0.5 A).
    by_matrices = compose_homographies(params_to_matrix(p), params_to_matrix(0.5 * p))
    torch.testing.assert_close(params_to_matrix(compose_params(p, 0.5 * p)), by_matrices)
    # In general they agree to first order only: the difference is ~ |p| |dp| / 2 (the commutator).
    q, dq = torch.randn(3, 8, dtype=torch.float64) * 1e-3, torch.randn(3, 8, dtype=torch.float64) * 1e-3
    diff = params_to_matrix(compose_params(q, dq)) - compose_homographies(params_to_matrix(q), params_to_matrix(dq))
    assert 0 < diff.abs().max() < 1e-5


def test_compose_homographies_equals_warping_twice():
    # A linear image stays exact under bilinear sampling, and an affine first warp keeps it
    # linear, so away from the borders the two-step warp is exact, not just close.
    H, W = 24, 30
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    x = torch.stack([0.3 * xs - 0.7 * ys + 2.0, -0.2 * xs + 0.5 * ys])[None]
    c, s = np.cos(0.1), np.sin(0.1)
    h_first = torch.tensor([[[c, -s, 1.5], [s, c, -0.5], [0, 0, 1]]], dtype=torch.float64)  # affine
    h_second = torch.tensor([[[1.02, 0.03, 0.4], [-0.02, 0.97, 0.8], [4e-4, -3e-4, 1.0]]], dtype=torch.float64)
    twice = reference.homography_sample(reference.homography_sample(x, h_first, size=(22, 28)), h_second, size=(20, 25))
    once = reference.homography_sample(x, compose_homographies(h_first, h_second), size=(20, 25))
    wrong = reference.homography_sample(x, compose_homographies(h_second, h_first), size=(20, 25))
    m = 4  # border pixels, where zero padding enters either route
    torch.testing.assert_close(once[..., m:-m, m:-m], twice[..., m:-m, m:-m], rtol=0, atol=1e-10)
    assert (wrong[..., m:-m, m:-m] - twice[..., m:-m, m:-m]).abs().max() > 0.1


def test_compose_homographies_broadcasts():
    a, b = torch.randn(4, 3, 3), torch.randn(1, 3, 3)
    torch.testing.assert_close(compose_homographies(a, b), a @ b)
    torch.testing.assert_close(compose_homographies(b, a), b @ a)


def test_validation():
    with pytest.raises(ValueError, match="^p must have shape"):
        params_to_matrix(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="^p must have shape"):
        params_to_matrix(torch.zeros(8))
    with pytest.raises(TypeError, match="^p must have a floating dtype"):
        params_to_matrix(torch.zeros(2, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="^p must be a torch.Tensor"):
        params_to_generator([[0.0] * 8])
    with pytest.raises(ValueError, match="^dp must have shape"):
        compose_params(torch.zeros(2, 8), torch.zeros(2, 6))
    with pytest.raises(TypeError, match="^dp has dtype"):
        compose_params(torch.zeros(2, 8), torch.zeros(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="^h_second has batch 3"):
        compose_homographies(torch.zeros(2, 3, 3), torch.zeros(3, 3, 3))
    with pytest.raises(ValueError, match="^h_first must have shape"):
        compose_homographies(torch.zeros(3, 3), torch.zeros(1, 3, 3))
