"""The Variational U-Net's layers and networks against independent computations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pydeform.models.vunet import (
    PRESETS,
    ResidualBlock,
    VUNet,
    VUNetConfig,
    WNConv2d,
    data_dependent_init,
    depth_to_space,
    latent_kl,
    merge_groups,
    space_to_depth,
    split_groups,
)


def tiny(**kw) -> VUNetConfig:
    return VUNetConfig(**{"size": 16, "n_filters": 4, "max_filters": 8, **kw})


# ----------------------------------------------------------------------------- TensorFlow's layouts


def nhwc(values) -> torch.Tensor:
    """A TensorFlow NHWC example as an NCHW tensor."""
    return torch.tensor(values, dtype=torch.float32).permute(0, 3, 1, 2)


def test_space_to_depth_matches_tensorflows_documented_examples():
    # tf.nn.space_to_depth docstring, block_size 2: the three examples.
    assert space_to_depth(nhwc([[[[1], [2]], [[3], [4]]]])).permute(0, 2, 3, 1).tolist() == [[[[1, 2, 3, 4]]]]
    x = nhwc([[[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]])
    assert space_to_depth(x).permute(0, 2, 3, 1).flatten().tolist() == list(range(1, 13))
    x = nhwc([[[[1], [2], [5], [6]], [[3], [4], [7], [8]], [[9], [10], [13], [14]], [[11], [12], [15], [16]]]])
    expected = [[[[1, 2, 3, 4], [5, 6, 7, 8]], [[9, 10, 11, 12], [13, 14, 15, 16]]]]
    assert space_to_depth(x).permute(0, 2, 3, 1).tolist() == expected
    assert torch.equal(depth_to_space(space_to_depth(x)), x)
    # torch's pixel_unshuffle orders the channels differently (channel-major).
    y = torch.randn(1, 3, 4, 4)
    assert not torch.equal(space_to_depth(y), F.pixel_unshuffle(y, 2))


def test_sub_lattices_come_in_tensorflows_order():
    x = torch.randn(2, 5, 6, 8)
    groups = split_groups(x)
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        assert torch.equal(groups[k], x[:, :, dy::2, dx::2])
    assert torch.equal(merge_groups(groups), x)
    with pytest.raises(ValueError, match="divisible"):
        space_to_depth(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="divisible"):
        depth_to_space(torch.zeros(1, 3, 2, 2))


def test_kl_is_the_unit_variance_gaussian_kl():
    q, p = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 4, 2, 2, dtype=torch.float64)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(q, 1.0), torch.distributions.Normal(p, 1.0))
    torch.testing.assert_close(latent_kl(q, p), kl.sum((1, 2, 3)).mean())
    torch.testing.assert_close(latent_kl(q, q), torch.zeros((), dtype=torch.float64))


# ----------------------------------------------------------------------------- layers


def test_weight_norm_conv_formula_and_tf_same_padding():
    torch.manual_seed(0)
    conv = WNConv2d(3, 5, 3, stride=2)
    with torch.no_grad():
        conv.g.uniform_(0.5, 2)
        conv.b.normal_()
    x = torch.randn(2, 3, 6, 8)
    v = conv.v.detach().numpy()
    w = v / np.sqrt((v**2).sum(axis=(1, 2, 3), keepdims=True))
    xs = x.numpy()
    out = np.zeros((2, 5, 3, 4))
    for i in range(3):  # TF 'SAME', stride 2: rows 2i .. 2i+2, zero past the end (0 before, 1 after)
        for j in range(4):
            for di in range(3):
                for dj in range(3):
                    r, c = 2 * i + di, 2 * j + dj
                    if r < 6 and c < 8:
                        out[:, :, i, j] += np.einsum("bc,oc->bo", xs[:, :, r, c], w[:, :, di, dj])
    out = out * conv.g.detach().numpy()[None, :, None, None] + conv.b.detach().numpy()[None, :, None, None]
    np.testing.assert_allclose(conv(x).detach().numpy(), out, rtol=1e-5, atol=1e-5)
    assert conv.v.std().item() == pytest.approx(0.05, rel=0.3)  # V ~ N(0, 0.05)


def test_data_dependent_init_gives_every_layer_zero_mean_unit_variance():
    torch.manual_seed(0)
    model = VUNet(tiny())
    outputs = []
    hooks = [m.register_forward_hook(lambda mod, args, out: outputs.append(out)) for m in model.modules()
             if isinstance(m, WNConv2d)]  # fmt: skip
    stickman, crops = torch.randn(8, 3, 16, 16), torch.randn(8, 24, 8, 8)
    with data_dependent_init(model):
        model(stickman, crops)
    for hook in hooks:
        hook.remove()
    assert len(outputs) > 30
    for out in outputs:
        torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(out.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(out.var(dim=(0, 2, 3), unbiased=False), torch.ones(out.shape[1]), atol=1e-3,
                                   rtol=0)  # fmt: skip
    assert not any(m.init_mode for m in model.modules() if isinstance(m, WNConv2d))
    assert all(p.grad is None for p in model.parameters())


def test_residual_block_formula():
    torch.manual_seed(0)
    block = ResidualBlock(4, 6, dropout=0.0)
    x, a = torch.randn(2, 4, 5, 5), torch.randn(2, 6, 5, 5)
    expected = x + block.conv(F.elu(torch.cat([x, block.nin(F.elu(a))], 1)))
    torch.testing.assert_close(block(x, a), expected)
    with pytest.raises(ValueError, match="skip"):
        block(x)


# ----------------------------------------------------------------------------- the networks


def test_shapes_latent_scales_and_presets():
    config = VUNetConfig()
    assert (config.size, config.box_factor, config.bottleneck_factor, config.n_scales) == (128, 1, 1, 7)
    fashion = VUNetConfig(preset="deepfashion")
    assert (fashion.size, fashion.box_factor, fashion.n_scales, PRESETS["deepfashion"].batch_size) == (256, 2, 7, 8)
    model = VUNet(tiny())
    assert model.dec_up.channels == [4, 8, 8, 8] and model.enc_up.channels == [8, 8, 8]
    image, qs, ps = model(torch.randn(2, 3, 16, 16), torch.randn(2, 24, 8, 8))
    assert image.shape == (2, 3, 16, 16)
    assert [q.shape for q in qs] == [ps[0].shape, ps[1].shape] == [(2, 8, 2, 2), (2, 8, 4, 4)]
    with pytest.raises(ValueError, match="stickman"):
        model.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="crops"):
        model.encode(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("bad", [dict(size=24), dict(dropout=1.0), dict(preset="x"), dict(box_factor=4),
                                 dict(latent_scales=4), dict(n_filters=0)])  # fmt: skip
def test_config_errors(bad):
    with pytest.raises(ValueError):
        tiny(**bad)


def test_every_latent_scale_must_have_equal_widths():
    # box_factor 3 widens the encoder's finest latent scale to 256 while the decoder's stay at 128
    with pytest.raises(ValueError, match=r"4 latent scales have different widths \(\[256, 128, 128, 128\]"):
        VUNet(VUNetConfig(preset="market", box_factor=3, latent_scales=4))


def test_prior_is_autoregressive_over_the_sub_lattices():
    torch.manual_seed(0)
    model = VUNet(tiny()).eval()
    stickman = torch.randn(1, 3, 16, 16)
    zs = [torch.randn(1, 8, 2, 2), torch.randn(1, 8, 4, 4)]
    _, ps, _ = model.decode(stickman, zs)
    for k in range(4):
        changed = [z.clone() for z in zs]
        changed[1] = merge_groups([g + (5.0 if i == k else 0.0) for i, g in enumerate(split_groups(zs[1]))])
        _, ps2, _ = model.decode(stickman, changed)
        torch.testing.assert_close(ps2[0], ps[0])  # the coarser scale never sees the finer latent
        before, after = split_groups(ps[1]), split_groups(ps2[1])
        for i in range(4):
            if i <= k:  # group i's mean depends only on the groups before it
                torch.testing.assert_close(after[i], before[i])
            else:
                assert not torch.allclose(after[i], before[i])


def test_transfer_is_deterministic_and_prior_samples_differ():
    torch.manual_seed(0)
    model = VUNet(tiny()).eval()
    stickman, crops = torch.randn(2, 3, 16, 16), torch.randn(2, 24, 8, 8)
    torch.testing.assert_close(model.transfer(crops, stickman), model.transfer(crops, stickman))
    qs, _ = model.encode(crops)
    torch.testing.assert_close(model.transfer(crops, stickman), model.decode(stickman, qs)[0])
    assert not torch.allclose(model.sample(stickman), model.sample(stickman))
    image, qs, ps = model(stickman, crops)
    torch.testing.assert_close(model.kl(qs, ps), latent_kl(qs[0], ps[0]) + latent_kl(qs[1], ps[1]))
