"""PATN and the nested variant: shapes, parameter counts from the published layer list,
the block equations, initialisation and the config's checks."""
import pytest
import torch
from torch import nn

from pydeform.models.patn import (
    NestedAttentionBlock,
    PATBlock,
    PATNConfig,
    build_discriminators,
    build_generator,
    init_weights,
)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(k: int, cin: int, cout: int, bias: bool) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def published_counts(ngf: int, norm: str, blocks: int = 9, d_blocks: int = 3) -> tuple[int, int, int]:
    """Parameters of PATNModel / ResnetDiscriminator written out from their layer lists
    (model_variants.py, networks.py): batch norm has 2 C parameters and the convs no bias,
    instance norm no parameters and the convs a bias; the output conv always has one."""
    bias = norm == "instance"
    bn = (lambda c: 0) if bias else (lambda c: 2 * c)
    encoder = lambda cin: (conv(7, cin, ngf, bias) + bn(ngf) + conv(3, ngf, 2 * ngf, bias) + bn(2 * ngf)
                           + conv(3, 2 * ngf, 4 * ngf, bias) + bn(4 * ngf))  # fmt: skip
    d = 4 * ngf
    stream1 = 2 * (conv(3, d, d, bias) + bn(d))
    block0 = stream1 + conv(3, d, d, bias) + bn(d) + conv(3, d, d, bias)
    block = stream1 + conv(3, 2 * d, 2 * d, bias) + bn(2 * d) + conv(3, 2 * d, d, bias)
    decoder = conv(3, 4 * ngf, 2 * ngf, bias) + bn(2 * ngf) + conv(3, 2 * ngf, ngf, bias) + bn(ngf) + conv(7, ngf, 3, True)
    generator = encoder(3) + encoder(36) + block0 + (blocks - 1) * block + decoder

    def discriminator(cin: int, ndf: int = ngf) -> int:
        head = conv(7, cin, ndf, bias) + bn(ndf) + conv(3, ndf, 2 * ndf, bias) + bn(2 * ndf)
        head += conv(3, 2 * ndf, 4 * ndf, bias) + bn(4 * ndf)
        return head + d_blocks * 2 * (conv(3, 4 * ndf, 4 * ndf, bias) + bn(4 * ndf))

    return generator, discriminator(21), discriminator(6)


@pytest.mark.parametrize("preset, norm", [("market", "batch"), ("fashion", "instance")])
@pytest.mark.parametrize("block", ["patb", "nested"])
def test_parameter_counts_match_the_published_layer_list(preset, norm, block):
    config = PATNConfig(preset=preset, block=block)
    assert config.norm_kind == norm
    g, (shape_d, appearance_d) = build_generator(config), build_discriminators(config)
    assert (count(g), count(shape_d), count(appearance_d)) == published_counts(64, norm)
    assert 41.3e6 < count(g) < 41.4e6  # "about 41.4 M" (the published model's printout, Market: 41,365,763)


def test_inner_blocks_add_residual_blocks():
    one = count(build_generator(PATNConfig(block="nested", ngf=8)))
    two = count(build_generator(PATNConfig(block="nested", ngf=8, inner_blocks=2)))
    d = 32
    assert two - one == 9 * 2 * (conv(3, d, d, False) + 2 * d)


@pytest.mark.parametrize("block", ["patb", "nested"])
def test_shapes_and_attention_masks(block):
    config = PATNConfig(block=block, size=(64, 32), ngf=8, ndf=8)
    g = build_generator(config).eval()
    image, pose = torch.rand(2, 3, 64, 32) * 2 - 1, torch.rand(2, 36, 64, 32)
    out, masks = g(image, pose, return_attention=True)
    assert out.shape == (2, 3, 64, 32) and out.abs().max() <= 1
    assert len(masks) == 9 and all(m.shape == (2, 32, 16, 8) for m in masks)
    assert all(((m > 0) & (m < 1)).all() for m in masks)
    assert torch.equal(g(image, pose), out)
    shape_d, appearance_d = build_discriminators(config)
    assert shape_d(torch.cat([out, pose[:, 18:]], 1)).shape == (2, 32, 16, 8)
    assert appearance_d(torch.cat([out, image], 1)).shape == (2, 32, 16, 8)


def test_patb_block_equations():
    torch.manual_seed(0)
    block = PATBlock(8, "instance", dropout=False, first=False).eval()
    x1, x2 = torch.randn(2, 8, 6, 5), torch.randn(2, 16, 6, 5)
    out1, out2, mask = block(x1, x2)
    a = block.pose_conv(x2)
    expected = x1 + block.img_conv(x1) * torch.sigmoid(a)
    torch.testing.assert_close(mask, torch.sigmoid(a))
    torch.testing.assert_close(out1, expected)
    torch.testing.assert_close(out2, torch.cat([a, expected], 1))
    # The attention branch ends in a bare conv; the appearance branch in a norm.
    assert isinstance(block.pose_conv[-1], nn.Conv2d) and isinstance(block.img_conv[-1], nn.InstanceNorm2d)
    assert block.pose_conv[1].in_channels == 16 and PATBlock(8, "batch", False, first=True).pose_conv[1].in_channels == 8


def test_nested_block_is_a_residual_block_under_the_mask():
    torch.manual_seed(0)
    block = NestedAttentionBlock(8, "batch", dropout=False, first=True).eval()
    x1, x2 = torch.randn(2, 8, 6, 5), torch.randn(2, 8, 6, 5)
    out1, out2, _ = block(x1, x2)
    body = block.img_conv[0].body
    assert isinstance(body[3], nn.LeakyReLU) and body[3].negative_slope == 0.01
    # R(x1) = x1 + body(x1), computed here layer by layer
    h = body(x1)
    a = block.pose_conv(x2)
    torch.testing.assert_close(out1, x1 + (x1 + h) * torch.sigmoid(a))
    torch.testing.assert_close(out2, torch.cat([a, out1], 1))


def test_dropout_is_in_both_branches_and_optional():
    g = build_generator(PATNConfig(ngf=4))
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in g.modules()) == 18
    assert not any(isinstance(m, nn.Dropout) for m in build_generator(PATNConfig(ngf=4, dropout=False)).modules())
    d, _ = build_discriminators(PATNConfig(ndf=4))
    assert sum(isinstance(m, nn.Dropout) for m in d.modules()) == 3


def test_norms_and_biases_per_preset():
    market = build_generator(PATNConfig(ngf=4))
    fashion = build_generator(PATNConfig(preset="fashion", ngf=4))
    convs = lambda g: [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(c.bias is None for c in convs(market)[:-1]) and convs(market)[-1].bias is not None
    assert all(c.bias is not None for c in convs(fashion))
    assert any(isinstance(m, nn.BatchNorm2d) for m in market.modules())
    norms = [m for m in fashion.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and not any(m.affine for m in norms)


def test_init_normal_002():
    torch.manual_seed(0)
    g = build_generator(PATNConfig())
    weights = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-4 and abs(weights.std().item() - 0.02) < 2e-4
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1) < 0.005 and abs(bn.std().item() - 0.02) < 0.005
    assert all((m.bias == 0).all() for m in g.modules() if isinstance(m, nn.BatchNorm2d))
    lin = init_weights(nn.Linear(1000, 100))
    assert abs(lin.weight.std().item() - 0.02) < 1e-3


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "x"}, "preset"), ({"block": "x"}, "block"), ({"norm": "group"}, "norm"), ({"ngf": 0}, "ngf"),
    ({"ndf": 1.5}, "ndf"), ({"n_blocks": True}, "n_blocks"), ({"d_blocks": -1}, "d_blocks"),
    ({"inner_blocks": 0}, "inner_blocks"), ({"size": (66, 32)}, "divisible by 4"), ({"size": (4, 4)}, "at least 8"),
])  # fmt: skip
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PATNConfig(**kwargs)


def test_config_round_trip_and_input_errors():
    config = PATNConfig(block="nested", size=[64, 32])
    assert config.size == (64, 32) and PATNConfig.from_dict({**config.to_dict(), "unknown": 1}) == config
    g = build_generator(PATNConfig(size=(64, 32), ngf=4))
    with pytest.raises(ValueError, match="image must be"):
        g(torch.rand(1, 4, 64, 32), torch.rand(1, 36, 64, 32))
    with pytest.raises(ValueError, match="pose must be"):
        g(torch.rand(1, 3, 64, 32), torch.rand(1, 18, 64, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.rand(1, 3, 62, 32), torch.rand(1, 36, 62, 32))
    d, _ = build_discriminators(PATNConfig(ndf=4))
    with pytest.raises(ValueError, match=r"\(B, 21, H, W\)"):
        d(torch.rand(1, 6, 16, 16))
