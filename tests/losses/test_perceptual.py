"""Perceptual L1, Gram matrix and style loss against direct computations; the GAN criteria."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pydeform.losses import PerceptualL1Loss, StyleLoss, gan_criterion, gram_matrix, perceptual_l1, style_loss
from pydeform.nets.vgg import IMAGENET_MEAN, IMAGENET_STD


def test_gram_matrix_by_hand():
    # One image, C = 2 channels, H x W = 1 x 3: phi = [[1, 2, 3], [0, -1, 4]]
    phi = torch.tensor([[[[1.0, 2.0, 3.0]], [[0.0, -1.0, 4.0]]]])
    # phi phi^T = [[1+4+9, 0-2+12], [10, 0+1+16]] = [[14, 10], [10, 17]]; / (C H W = 6)
    expected = torch.tensor([[[14.0, 10.0], [10.0, 17.0]]]) / 6
    torch.testing.assert_close(gram_matrix(phi), expected)


def test_gram_matrix_against_numpy_loop():
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    got = gram_matrix(x).numpy()
    a = x.numpy()
    for b in range(3):
        for i in range(5):
            for j in range(5):
                assert got[b, i, j] == pytest.approx(float(np.sum(a[b, i] * a[b, j])) / (5 * 4 * 6), rel=1e-12)
    assert gram_matrix(x).dtype == torch.float64 and gram_matrix(x.half()).dtype == torch.float32


def test_gram_is_float32_under_autocast_and_survives_fp16_overflow():
    # Values whose products sum past float16's 65504: a float16 Gram would be inf.
    x = torch.full((1, 2, 32, 32), 20.0, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(x)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, torch.full((1, 2, 2), 400.0 / 2))
    half = torch.full((1, 2, 32, 32), 20.0, dtype=torch.float16)
    assert torch.isinf((half.flatten(2) @ half.flatten(2).transpose(1, 2)).float()).any()  # the failure avoided
    assert torch.isfinite(gram_matrix(half)).all()


def test_style_loss_is_the_sum_of_squared_frobenius_distances():
    torch.manual_seed(0)
    fake = {"a": torch.randn(2, 3, 4, 4, requires_grad=True), "b": torch.randn(2, 5, 2, 2)}
    real = {"a": torch.randn(2, 3, 4, 4, requires_grad=True), "b": torch.randn(2, 5, 2, 2)}
    expected = 0.0
    for layer in ("a", "b"):
        for i in range(2):
            f, r = fake[layer][i].reshape(fake[layer].shape[1], -1), real[layer][i].reshape(real[layer].shape[1], -1)
            n = f.numel()
            expected += torch.linalg.matrix_norm(f @ f.T / n - r @ r.T / n, "fro").item() ** 2 / 2
    loss = style_loss(fake, real, ["a", "b"])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert fake["a"].grad is not None and real["a"].grad is None  # the target is detached
    assert style_loss(fake, {k: v.detach().clone() for k, v in fake.items()}, ["a"]).item() == 0


def test_perceptual_l1_is_the_mean_absolute_difference():
    fake, real = torch.randn(2, 4, 3, 3, requires_grad=True), torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = perceptual_l1(fake, real)
    assert loss.item() == pytest.approx((fake - real).abs().mean().item())
    loss.backward()
    assert real.grad is None


def test_perceptual_module_matches_the_published_normalisation():
    """PATN: (x + 1) / 2, then (. - mean) / std, then VGG19 features[:4] (relu1_2)."""
    torch.manual_seed(0)
    loss = PerceptualL1Loss(random_weights=True)
    fake, real = torch.rand(2, 3, 16, 8) * 2 - 1, torch.rand(2, 3, 16, 8) * 2 - 1
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    first4 = loss.features.features[:4]

    def direct(x):
        return first4(((x + 1) / 2 - mean) / std)

    assert len(loss.features.features) == 4
    expected = F.l1_loss(direct(fake), direct(real))
    torch.testing.assert_close(loss(fake, real), expected, rtol=1e-5, atol=1e-6)


def test_style_module_uses_the_named_layers():
    torch.manual_seed(0)
    module = StyleLoss(random_weights=True, layers=("relu1_2", "relu2_2"))
    fake, real = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    feats_f, feats_r = module.features(fake), module.features(real)
    expected = sum(((gram_matrix(feats_f[k]) - gram_matrix(feats_r[k])) ** 2).sum() for k in ("relu1_2", "relu2_2"))
    torch.testing.assert_close(module(fake, real), expected)


def test_loss_errors():
    with pytest.raises(ValueError, match="weights"):
        PerceptualL1Loss()
    with pytest.raises(ValueError, match="must match"):
        PerceptualL1Loss(random_weights=True)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 4))
    with pytest.raises(ValueError, match="must match"):
        StyleLoss(random_weights=True, layers=("relu1_2",))(torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gram_matrix(torch.rand(3, 4))
    with pytest.raises(TypeError, match="features"):
        gram_matrix([1, 2])
    with pytest.raises(ValueError, match="same shape"):
        perceptual_l1(torch.rand(1, 2, 3, 3), torch.rand(1, 2, 3, 4))
    with pytest.raises(ValueError, match="at least one"):
        style_loss({}, {}, [])
    with pytest.raises(ValueError, match="missing"):
        style_loss({"a": torch.rand(1, 2, 2, 2)}, {"a": torch.rand(1, 2, 2, 2)}, ["b"])
    with pytest.raises(ValueError, match="differ"):
        style_loss({"a": torch.rand(1, 2, 2, 2)}, {"a": torch.rand(1, 2, 2, 3)}, ["a"])
    with pytest.raises(ValueError, match="kind"):
        gan_criterion("wgan", torch.zeros(1), True)


def test_gan_criteria():
    logits = torch.tensor([[-1.0, 0.5], [2.0, 0.0]])
    p = torch.sigmoid(logits)
    assert gan_criterion("bce", logits, True).item() == pytest.approx(-torch.log(p).mean().item(), rel=1e-6)
    assert gan_criterion("bce", logits, False).item() == pytest.approx(-torch.log(1 - p).mean().item(), rel=1e-6)
    assert gan_criterion("lsgan", logits, True).item() == pytest.approx(((logits - 1) ** 2).mean().item())
    assert gan_criterion("lsgan", logits.half(), False).dtype == torch.float32
    assert gan_criterion("lsgan", logits, False).item() == pytest.approx((logits**2).mean().item())
