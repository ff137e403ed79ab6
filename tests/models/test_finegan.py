"""FineGAN networks, codes, patch labels, losses and the EMA, against direct computations."""

import pytest
import torch
import torch.nn.functional as F

from pydeform.losses.finegan import background_d_loss, child_d_loss, finegan_g_loss
from pydeform.models.finegan import (
    BackgroundDiscriminator,
    FineGANConfig,
    FineGANGenerator,
    StageDiscriminator,
    background_patch_weights,
    composite,
    init_weights,
    one_hot,
    tie_codes,
)
from pydeform.nets.ema import ParameterEMA

TINY = dict(z_dim=8, backgrounds=6, parents=3, children=6, gf_dim=4, df_dim=4, residual=1)


def tiny_generator(seed=0):
    torch.manual_seed(seed)
    g = FineGANGenerator(FineGANConfig(**TINY))
    g.apply(init_weights)
    return g


def test_tied_codes_and_refusal():
    parent, background = tie_codes(torch.arange(6), 6, 3)
    assert parent.tolist() == [0, 0, 1, 1, 2, 2]
    assert background.tolist() == list(range(6))
    parent, _ = tie_codes(torch.tensor([0, 9, 10, 199]), 200, 20)  # CUB: 10 children per parent
    assert parent.tolist() == [0, 0, 1, 19]
    with pytest.raises(ValueError, match="multiple of parents"):
        tie_codes(torch.arange(3), 7, 3)
    with pytest.raises(ValueError, match="multiple of parents"):
        FineGANConfig(**{**TINY, "children": 7})
    with pytest.raises(ValueError, match="out of range"):
        tie_codes(torch.tensor([6]), 6, 3)
    with pytest.raises(ValueError, match="out of range"):
        one_hot(torch.tensor([-1]), 3)
    with pytest.raises(ValueError, match="gf_dim"):
        FineGANConfig(**{**TINY, "gf_dim": 6})
    with pytest.raises(ValueError, match="z_dim"):
        FineGANConfig(**{**TINY, "z_dim": 0})


def test_generator_shapes_compositing_and_tied_default():
    g = tiny_generator().eval()
    z = torch.randn(3, 8)
    c = one_hot(torch.tensor([0, 3, 5]), 6)
    out = g(z, c)
    assert out.background.shape == out.parent.shape == out.child.shape == (3, 3, 128, 128)
    assert out.background_small.shape == (3, 3, 126, 126)
    assert out.parent_mask.shape == out.child_mask.shape == (3, 1, 128, 128)
    assert out.parent_features.shape == (3, 2, 128, 128)
    B, Pf, Pm, Cf, Cm = out.background, out.parent_foreground, out.parent_mask, out.child_foreground, out.child_mask
    P = Pf * Pm + B * (1 - Pm)
    torch.testing.assert_close(out.parent, P)
    torch.testing.assert_close(out.child, Cf * Cm + P * (1 - Cm))
    torch.testing.assert_close(out.parent_masked, Pf * Pm)
    torch.testing.assert_close(out.child_masked, Cf * Cm)
    torch.testing.assert_close(out.background_small, F.interpolate(B, size=(126, 126), mode="bilinear", align_corners=True))
    # the default p and b are the tied codes of c
    explicit = g(z, c, one_hot(torch.tensor([0, 1, 2]), 3), c)
    torch.testing.assert_close(explicit.child, out.child)
    other = g(z, c, one_hot(torch.tensor([2, 2, 2]), 3), c)
    assert not torch.allclose(other.parent[0], out.parent[0])
    assert all(m.min() >= 0 and m.max() <= 1 for m in (Pm, Cm))
    with pytest.raises(ValueError, match="c must be"):
        g(z, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="p must be"):
        g(z, c, torch.zeros(3, 4), c)


def test_composite_by_hand():
    fg, mask, bg = torch.tensor([[[[1.0, -1.0]]]]), torch.tensor([[[[0.25, 1.0]]]]), torch.tensor([[[[0.0, 0.5]]]])
    image, masked = composite(fg, mask, bg)
    assert image.flatten().tolist() == [0.25, -1.0]
    assert masked.flatten().tolist() == [0.25, -1.0]


def test_no_conv_bias_in_generator_and_orthogonal_init():
    g = tiny_generator()
    for module in g.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            assert module.bias is None
    w = g.parent_stage.joint[0].weight.flatten(1)  # (out, in * 9), out <= in * 9: orthonormal rows
    torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0]), atol=1e-5, rtol=0)


def test_discriminator_shapes_and_receptive_field():
    torch.manual_seed(0)
    d0 = BackgroundDiscriminator(4)
    x = torch.randn(2, 3, 126, 126, requires_grad=True)
    cls, rf = d0(x)
    assert cls.shape == rf.shape == (2, 1, 24, 24)
    # patch (i, j) depends on input rows 4i .. 4i + 33 and columns 4j .. 4j + 33 only
    i, j = 5, 17
    (grad,) = torch.autograd.grad(rf[0, 0, i, j], x)
    rows = grad[0].abs().sum((0, 2)).nonzero().flatten()
    cols = grad[0].abs().sum((0, 1)).nonzero().flatten()
    assert (rows.min().item(), rows.max().item()) == (4 * i, 4 * i + 33)
    assert (cols.min().item(), cols.max().item()) == (4 * j, 4 * j + 33)
    d2 = StageDiscriminator(4, 6)
    logits, score = d2(torch.randn(2, 3, 128, 128))
    assert logits.shape == (2, 6) and score.shape == (2,)
    assert {id(p) for p in d2.info_parameters()} == {id(p) for p in [*d2.joint.parameters(), *d2.logits.parameters()]}


def test_background_patch_weights_hand_computed():
    # box rows 40..80, columns 10..50 (y1, x1, y2, x2):
    # rows: ceil((40 - 34) / 4) = 2 .. floor(23 - (92 - 80) / 4) = 20; cols: 0 .. floor(23 - (92 - 50) / 4) = 12
    w = background_patch_weights(torch.tensor([[40.0, 10.0, 80.0, 50.0], [30.0, 30.0, 30.0, 90.0]]))
    expected = torch.ones(24, 24)
    expected[2:21, 0:13] = 0
    assert torch.equal(w[0, 0], expected)
    assert torch.equal(w[1, 0], torch.ones(24, 24))  # degenerate box: nothing excluded
    w = background_patch_weights(torch.tensor([[0.0, 0.0, 126.0, 126.0]]))
    assert w.sum() == 0
    with pytest.raises(ValueError, match="box must be"):
        background_patch_weights(torch.zeros(2, 3))


def _bce(p, y):
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def test_losses_direct():
    torch.manual_seed(1)
    cls, rf_r, rf_f = (torch.rand(2, 1, 24, 24) * 0.98 + 0.01 for _ in range(3))
    w = background_patch_weights(torch.tensor([[40.0, 10.0, 80.0, 50.0], [0.0, 0.0, 0.0, 0.0]]))
    loss = background_d_loss(cls, rf_r, rf_f, w)
    real = (_bce(rf_r, 1) * w).sum() / w.sum()  # the mean over all patches times N / sum(w)
    fake = _bce(rf_f, 0).mean()
    classify = _bce(cls, w).mean()
    torch.testing.assert_close(loss["real"], real)
    torch.testing.assert_close(loss["total"], 10 * (real + fake) + classify)
    none = background_d_loss(cls, rf_r, rf_f, torch.zeros_like(w))
    torch.testing.assert_close(none["real"], torch.tensor(0.0))
    with pytest.raises(ValueError, match="shapes differ"):
        background_d_loss(cls, rf_r, rf_f, w[:1])

    a, b = torch.rand(4) * 0.9 + 0.05, torch.rand(4) * 0.9 + 0.05
    torch.testing.assert_close(child_d_loss(a, b)["total"], _bce(a, 1).mean() + _bce(b, 0).mean())

    pl, cl = torch.randn(4, 3), torch.randn(4, 6)
    p, c = torch.tensor([0, 2, 1, 1]), torch.tensor([5, 0, 3, 2])
    g = finegan_g_loss(cls, rf_f, pl, p, a, cl, c)

    def ce(logits, target):
        return -(logits.log_softmax(1)[torch.arange(4), target]).mean()

    expected = 10 * _bce(rf_f, 1).mean() + _bce(cls, 1).mean() + ce(pl, p) + _bce(a, 1).mean() + ce(cl, c)
    torch.testing.assert_close(g["total"], expected)


def test_parameter_ema():
    net = torch.nn.Linear(2, 2)
    start = [p.detach().clone() for p in net.parameters()]
    ema = ParameterEMA(net, 0.9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    ema.update(net)
    for avg, s in zip(ema.params, start):
        # a = 0.9 a + 0.1 (s + 1), twice from a = s: s + 1 - 0.81
        torch.testing.assert_close(avg, s + 1 - 0.81)
    copy = ema.averaged(net)
    torch.testing.assert_close(copy.weight, ema.params[0])
    assert not torch.equal(copy.weight, net.weight) and not copy.training
    restored = ParameterEMA(net, 0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.9 and torch.equal(restored.params[1], ema.params[1])
    with pytest.raises(ValueError, match="decay"):
        ParameterEMA(net, 1.5)
    with pytest.raises(ValueError, match="do not match"):
        ema.copy_into(torch.nn.Linear(3, 2))
