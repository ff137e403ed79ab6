"""MixNMatch networks and losses against direct computations."""
import pytest
import torch
import torch.nn.functional as F

from pydeform.losses.codes import code_cross_entropy
from pydeform.losses.wgan import mixed_gradient_penalty
from pydeform.models.finegan import init_weights
from pydeform.models.mixnmatch import (
    BiDiscriminators,
    Encoder,
    FeatureDiscriminator,
    FeatureExtractor,
    MixGenerator,
    MixNMatchConfig,
    MixStageDiscriminator,
    free_codes,
    tied_codes,
)
from pydeform.train.mixnmatch import bi_discriminator_loss, code_prediction_loss

CFG = MixNMatchConfig(z_dim=8, backgrounds=4, parents=2, children=4, gf_dim=4, df_dim=4, encoder_dim=4, bd_dim=2,
                      bd_hidden=8, fx_dim=2)  # fmt: skip


def test_shapes_and_compositing():
    torch.manual_seed(0)
    g = MixGenerator(CFG)
    g.apply(init_weights)
    g.eval()
    codes = tied_codes(3, CFG, torch.device("cpu"))
    out = g(codes["z"], codes["c"], codes["p"], codes["b"])
    assert out.child.shape == (3, 3, 128, 128) and out.parent_features.shape == (3, 1, 128, 128)
    P = out.parent_foreground * out.parent_mask + out.background * (1 - out.parent_mask)
    torch.testing.assert_close(out.parent, P)
    torch.testing.assert_close(out.child, out.child_foreground * out.child_mask + P * (1 - out.child_mask))
    # feature mode: the given features replace the parent stage
    again = g(codes["z"], codes["c"], codes["p"], codes["b"], parent_features=out.parent_features)
    torch.testing.assert_close(again.child, out.child)
    # a second z for the parent stage changes the parent, not the background
    other = g(codes["z"], codes["c"], codes["p"], codes["b"], z_parent=torch.randn(3, 8))
    torch.testing.assert_close(other.background, out.background)
    assert not torch.allclose(other.parent_mask, out.parent_mask)
    with pytest.raises(ValueError, match="p must be"):
        g(codes["z"], codes["c"], codes["c"], codes["b"])

    enc = Encoder(CFG).eval()
    e = enc(out.child)
    assert {k: tuple(v.shape) for k, v in e.items()} == {"z": (3, 8), "b": (3, 4), "p": (3, 2), "c": (3, 4)}
    assert e["z"].abs().max() <= 4
    torch.testing.assert_close(enc.soft(out.child)["p"], e["p"].softmax(1))
    scores = BiDiscriminators(CFG)(out.child, codes["z"], codes["b"], codes["p"], codes["c"])
    assert [tuple(s.shape) for s in scores] == [(3,)] * 4
    logits, rf = MixStageDiscriminator(2, 2)(out.child)
    assert logits.shape == (3, 2) and rf.shape == (3, 1, 1, 1)
    fx = FeatureExtractor(1, 2).eval()
    assert fx(out.child).shape == (3, 1, 128, 128)
    assert FeatureDiscriminator(1, 2)(out.parent_features).shape == (3, 1, 24, 24)


def test_free_codes_are_untied():
    torch.manual_seed(0)
    codes = free_codes(200, CFG, torch.device("cpu"))
    tied_p = codes["c"].argmax(1) // 2
    assert (codes["p"].argmax(1) != tied_p).any() and (codes["b"].argmax(1) != codes["c"].argmax(1)).any()
    tied = tied_codes(50, CFG, torch.device("cpu"))
    assert torch.equal(tied["p"].argmax(1), tied["c"].argmax(1) // 2) and torch.equal(tied["b"], tied["c"])


def test_mixed_gradient_penalty_direct():
    torch.manual_seed(0)
    w1, w2, u, v = torch.randn(6), torch.randn(6), torch.randn(3), torch.randn(2)

    def critic(x, a, b):  # output 0 reads x and a, output 1 reads x and b: 4 penalised pairs
        return (x.flatten(1) @ w1 + a @ u, x.flatten(1) @ w2 + (b**2) @ v)

    real = [torch.randn(4, 1, 2, 3), torch.randn(4, 3), torch.randn(4, 2)]
    fake = [torch.randn(4, 1, 2, 3), torch.randn(4, 3), torch.randn(4, 2)]
    alphas = [torch.rand(4) for _ in range(3)]
    gp = mixed_gradient_penalty(critic, real, fake, alphas)
    b_hat = alphas[2][:, None] * real[2] + (1 - alphas[2][:, None]) * fake[2]
    grad_b = 2 * b_hat * v  # d/db of (b^2) @ v, per sample
    expected = ((w1.norm() - 1) ** 2 + (u.norm() - 1) ** 2 + (w2.norm() - 1) ** 2
                + ((grad_b.norm(dim=1) - 1) ** 2).mean())  # fmt: skip
    torch.testing.assert_close(gp, expected, rtol=1e-5, atol=1e-6)
    # each input has its own alpha: the critic sees alpha_j real_j + (1 - alpha_j) fake_j
    seen = []
    mixed_gradient_penalty(lambda *xs: (seen.extend(xs), [(xs[0].sum((1, 2, 3)) * xs[1].sum(1))])[1], real[:2], fake[:2], alphas[:2])
    torch.testing.assert_close(seen[1], alphas[1][:, None] * real[1] + (1 - alphas[1][:, None]) * fake[1])
    torch.testing.assert_close(seen[0], alphas[0].view(4, 1, 1, 1) * real[0] + (1 - alphas[0].view(4, 1, 1, 1)) * fake[0])
    with pytest.raises(ValueError, match="equal length"):
        mixed_gradient_penalty(critic, real, fake[:2])
    with pytest.raises(ValueError, match="differ"):
        mixed_gradient_penalty(critic, real, [fake[0], fake[1], torch.randn(4, 5)])
    with pytest.raises(ValueError, match=r"alphas\[1\] must have shape \(4,\), one per sample"):
        mixed_gradient_penalty(critic, real, fake, [alphas[0], torch.rand(1), alphas[2]])


def test_code_losses_direct():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    hard = F.one_hot(torch.tensor([0, 3, 1, 1, 2]), 4).float()
    soft = torch.rand(5, 4).softmax(1)
    ls = logits.log_softmax(1)
    torch.testing.assert_close(code_cross_entropy(logits, hard), -(ls * hard).sum(1).mean())
    torch.testing.assert_close(code_cross_entropy(logits, soft), -(ls * soft).sum(1).mean())
    with pytest.raises(ValueError, match="must both be"):
        code_cross_entropy(logits, hard[:, :3])

    predicted = {"z": torch.randn(5, 8), "b": torch.randn(5, 4), "p": torch.randn(5, 2), "c": torch.randn(5, 4)}
    codes = free_codes(5, CFG, torch.device("cpu"))
    parts = code_prediction_loss(predicted, codes)

    def ce(lg, oh):
        return -(lg.log_softmax(1) * oh).sum(1).mean()

    expected = (5 * (predicted["z"] - codes["z"]).abs().mean() + 5 * ce(predicted["b"], codes["b"])
                + 10 * ce(predicted["p"], codes["p"]) + 10 * ce(predicted["c"], codes["c"]))  # fmt: skip
    torch.testing.assert_close(parts["total"], expected)

    enc = tuple(torch.randn(3) for _ in range(4))
    gen = tuple(torch.randn(3) for _ in range(4))
    torch.testing.assert_close(bi_discriminator_loss(enc, gen), -sum(e.mean() for e in enc) + sum(g.mean() for g in gen))


def test_code_prediction_trains_only_the_encoders():
    torch.manual_seed(0)
    g, enc = MixGenerator(CFG), Encoder(CFG)
    free = free_codes(2, CFG, torch.device("cpu"))
    with torch.no_grad():
        image = g(free["z"], free["c"], free["p"], free["b"]).child
    code_prediction_loss(enc(image), free)["total"].backward()
    assert all(p.grad is None for p in g.parameters())
    assert all(p.grad is not None for p in enc.parameters())


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of parents"):
        MixNMatchConfig(children=7, parents=2, backgrounds=7)
    with pytest.raises(ValueError, match="df_dim must be even"):
        MixNMatchConfig(df_dim=5)
    with pytest.raises(ValueError, match="bd_hidden"):
        MixNMatchConfig(bd_hidden=0)
