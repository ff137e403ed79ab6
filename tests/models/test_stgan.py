"""ST-GAN's networks and warp steps (pydeform.models.stgan) and the WGAN-GP losses."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from pydeform.losses.wgan import gradient_penalty, wgan_discriminator_loss, wgan_generator_loss
from pydeform.models.stgan import (
    OPS,
    STGAN,
    STGANConfig,
    STGANDiscriminator,
    WarpGenerator,
    _halve,
    _SameConv,
    same_size,
    warp_sampler,
)

SMALL = dict(g_widths=(4, 8, 8, 8, 8), d_widths=(4, 8, 8, 8, 8), fc=16)


# ----------------------------------------------------------------------------- shapes and init


@pytest.mark.parametrize(("size", "side"), [((64, 64), 2), ((144, 144), 5), ((37, 50), 2)])
def test_shapes_follow_tensorflow_same_padding(size, side):
    # 144 -> 72 -> 36 -> 18 -> 9 -> 5 and 64 -> ... -> 2, as the authors' comments in graph.py.
    assert same_size(size[0], 5) == math.ceil(size[0] / 32) and same_size(144, 4) == 9
    generator = WarpGenerator(size)
    fc_in = (512 + 7) * same_size(size[0], 5) * same_size(size[1], 5)
    assert generator.fc[0].in_features == fc_in
    if size == (64, 64):
        assert fc_in == 519 * 2 * 2
    background, foreground = torch.rand(2, 3, *size), torch.rand(2, 4, *size)
    assert generator(background, foreground).shape == (2, 8)
    scores = STGANDiscriminator()(background)
    assert scores.shape == (2, 1, side, same_size(size[1], 5))


def test_init_is_normal_001_with_zero_biases():
    generator, discriminator = WarpGenerator((64, 64)), STGANDiscriminator()
    layers = [*generator.convs, generator.fc[0], generator.fc[2], *discriminator.net[::2]]
    assert len(layers) == 5 + 2 + 6
    for layer in layers:
        assert torch.count_nonzero(layer.bias) == 0
        weight = layer.weight.detach().double()
        if weight.numel() >= 10_000:  # enough samples for a tight estimate
            assert weight.std().item() == pytest.approx(0.01, rel=0.05)
            assert abs(weight.mean().item()) < 0.01 * 5 / math.sqrt(weight.numel())
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in generator.modules())
    assert isinstance(discriminator.net[1], torch.nn.LeakyReLU) and discriminator.net[1].negative_slope == 0.2
    assert discriminator.net[-1].kernel_size == (3, 3) and discriminator.net[-1].out_channels == 1


@pytest.mark.parametrize("n", [8, 9])
def test_same_conv_pads_like_tensorflow(n):
    # A kernel that is 1 at tap (0, 0) reads the padded input at (2i, 2j): with TF's SAME
    # padding (total 2 for n = 8, 3 for n = 9, the extra one at the end) that is x[2i - 1, 2j - 1].
    conv = _SameConv(1, 1, 4, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
        conv.bias.zero_()
    x = torch.arange(1.0, n * n + 1).view(1, 1, n, n)
    out = conv(x)[0, 0]
    side = math.ceil(n / 2)
    assert out.shape == (side, side)
    for i in range(side):
        for j in range(side):
            want = x[0, 0, 2 * i - 1, 2 * j - 1].item() if i > 0 and j > 0 else 0.0
            assert out[i, j].item() == want


def test_halve_averages_2x2_blocks_with_zeros_past_an_odd_edge():
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    out = _halve(x)
    assert out.shape == (2, 3, 3, 2)
    padded = np.zeros((2, 3, 6, 4))
    padded[:, :, :5] = x.numpy()
    want = padded.reshape(2, 3, 3, 2, 2, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=1e-12)


def test_generator_sees_the_pooled_input_at_every_block():
    # With every conv weight 0 the features are ReLU(0) = 0 plus the pooled input copies, so
    # the fc sees exactly the input pooled 5 times: check against that closed form.
    generator = WarpGenerator((32, 32), widths=(2, 2, 2, 2, 2), fc=4)
    with torch.no_grad():
        for conv in generator.convs:
            conv.weight.zero_()
        generator.fc[0].weight.copy_(torch.eye(4, generator.fc[0].in_features))
        generator.fc[2].weight.copy_(torch.eye(8, 4))
    background, foreground = torch.rand(1, 3, 32, 32), torch.rand(1, 4, 32, 32)
    dp = generator(background, foreground)
    pooled = torch.cat([background, foreground], dim=1).view(1, 7, 1, 32, 1, 32).mean(dim=(3, 5))  # (1, 7, 1, 1)
    # fc input: 2 zero conv channels, then the 7 pooled channels; the identity fc picks entries 0..3.
    flat = torch.cat([torch.zeros(2), pooled.flatten()])
    torch.testing.assert_close(dp[0, :4], flat[:4])
    assert (dp[0, 4:] == 0).all()


# ----------------------------------------------------------------------------- warping


def _matrix(p: np.ndarray) -> np.ndarray:
    # ST-GAN's sl(3) basis written out independently (1-based in their vec2mtrx).
    p0, p1, p2, p3, p4, p5, p6, p7 = p
    return scipy.linalg.expm(np.array([[p2, p1, p0], [p5, -p2 - p6, p4], [p3, p7, p6]]))


@pytest.mark.parametrize("ops", OPS)
def test_samplers_shift_by_a_translation(ops):
    # p0 = 2 / (W - 1): x_in = x_out + 1 pixel, so out[..., j] = fg[..., j + 1], 0 at the last column.
    W = 9
    foreground = torch.rand(1, 4, 7, W, dtype=torch.float64)
    p = torch.zeros(1, 8, dtype=torch.float64)
    p[0, 0] = 2 / (W - 1)
    from pydeform.geometry import params_to_matrix

    out = warp_sampler(ops)(foreground, params_to_matrix(p))
    torch.testing.assert_close(out[..., :-1], foreground[..., 1:], atol=1e-6, rtol=0)
    assert out[..., -1].abs().max() < 1e-6
    identity = warp_sampler(ops)(foreground, params_to_matrix(torch.zeros(1, 8, dtype=torch.float64)))
    torch.testing.assert_close(identity, foreground, atol=1e-6, rtol=0)


def test_the_three_samplers_give_the_same_forward():
    config = STGANConfig(size=(24, 20), warps=2, **SMALL)
    torch.manual_seed(1)
    models = {ops: STGAN(STGANConfig(**{**config.to_dict(), "ops": ops})) for ops in OPS}
    # A larger last layer than the init, so that the updates dp are far from 0 and the warps matter.
    state = {k: v * 300 if k.endswith("fc.2.weight") else v for k, v in models["pydeform"].state_dict().items()}
    for model in models.values():
        model.load_state_dict(state)
    background, foreground = torch.rand(3, 3, 24, 20), torch.rand(3, 4, 24, 20)
    p_init = 0.1 * torch.randn(3, 8)
    results = {ops: model(background, foreground, p_init) for ops, model in models.items()}
    assert results["pydeform"].updates[0].abs().max() > 1e-2
    for ops in ("reference", "kornia"):
        for a, b in zip(results["pydeform"].params, results[ops].params):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        for a, b in zip(results["pydeform"].composites, results[ops].composites):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_warp_steps_add_parameters_and_feed_the_current_warp():
    torch.manual_seed(2)
    model = STGAN(STGANConfig(size=(16, 16), warps=3, **SMALL))
    with torch.no_grad():
        for generator in model.generators:
            generator.fc[2].weight.mul_(300)  # visible updates
    background, foreground = torch.rand(2, 3, 16, 16), torch.rand(2, 4, 16, 16)
    p_init = 0.1 * torch.randn(2, 8)
    steps = model(background, foreground, p_init)
    assert len(steps.params) == len(steps.warped) == len(steps.composites) == 4 and len(steps.updates) == 3
    p = p_init
    for k, generator in enumerate(model.generators):
        h = torch.from_numpy(np.stack([_matrix(row) for row in p.detach().double().numpy()])).float()
        warped = F.grid_sample(foreground, _grid(h, 16, 16), align_corners=True)
        torch.testing.assert_close(steps.warped[k], warped, atol=1e-5, rtol=0)
        rgb, alpha = warped[:, :3], warped[:, 3:]
        torch.testing.assert_close(steps.composites[k], rgb * alpha + background * (1 - alpha), atol=1e-5, rtol=0)
        dp = generator(background, warped)
        torch.testing.assert_close(steps.updates[k], dp, atol=1e-6, rtol=1e-5)
        p = p + dp
        torch.testing.assert_close(steps.params[k + 1], p, atol=1e-6, rtol=1e-5)
    assert (steps.params[-1] - p_init).abs().max() > 1e-3
    with pytest.raises(ValueError, match="steps"):
        model(background, foreground, p_init, steps=4)


def _grid(h: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """grid_sample grid of output -> input normalized homographies h (B, 3, 3), by hand."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # (H, W, 3)
    uvw = torch.einsum("bij,hwj->bhwi", h, points)
    return uvw[..., :2] / uvw[..., 2:]


def test_frozen_steps_build_no_graph():
    model = STGAN(STGANConfig(size=(16, 16), warps=2, **SMALL))
    background, foreground = torch.rand(2, 3, 16, 16), torch.rand(2, 4, 16, 16)
    steps = model(background, foreground, torch.zeros(2, 8), steps=2, frozen=1)
    assert not steps.params[1].requires_grad and steps.params[2].requires_grad
    steps.composites[2].sum().backward()
    assert all(p.grad is None for p in model.generators[0].parameters())
    assert all(p.grad is not None for p in model.generators[1].parameters())


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="ops"):
        STGANConfig(ops="opencv")
    with pytest.raises(ValueError, match="warps"):
        STGANConfig(warps=0)
    with pytest.raises(ValueError, match="g_widths"):
        STGANConfig(g_widths=())
    with pytest.raises(ValueError, match="size"):
        STGANConfig(size=(64,))
    model = STGAN(STGANConfig(size=(16, 16), warps=1, **SMALL))
    with pytest.raises(ValueError, match="foreground must have shape"):
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.zeros(1, 8))
    with pytest.raises(ValueError, match="p_init"):
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 4, 16, 16), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="frozen"):
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 4, 16, 16), torch.zeros(1, 8), steps=1, frozen=2)
    assert STGANConfig.from_dict(STGANConfig(size=[8, 8], warps=2).to_dict()) == STGANConfig(size=(8, 8), warps=2)


# ----------------------------------------------------------------------------- WGAN-GP


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    # D(x) = sum_c w_c x_c as a score map: grad of its sum is w_c at every pixel, so
    # ||grad|| = sqrt(H W sum w_c^2) whatever x_hat is.
    w = torch.tensor([0.3, -0.2, 0.05], dtype=torch.float64, requires_grad=True)

    def critic(x):
        return torch.einsum("c,bchw->bhw", w, x)[:, None]

    real, fake = torch.rand(4, 3, 5, 6, dtype=torch.float64), torch.rand(4, 3, 5, 6, dtype=torch.float64)
    norm = math.sqrt(30 * (0.09 + 0.04 + 0.0025) + 1e-8)
    penalty = gradient_penalty(critic, real, fake)
    torch.testing.assert_close(penalty, torch.full((4,), (norm - 1) ** 2, dtype=torch.float64))
    # The penalty trains the critic: d/dw (||grad|| - 1)^2 = 2 (||grad|| - 1) H W w / ||grad||.
    (grad_w,) = torch.autograd.grad(penalty.mean(), w)
    torch.testing.assert_close(grad_w, 2 * (norm - 1) * 30 * w.detach() / norm)

    parts = wgan_discriminator_loss(critic, real, fake, gp_weight=10.0)
    fake_mean, real_mean = critic(fake).mean(), critic(real).mean()
    torch.testing.assert_close(parts["total"], fake_mean - real_mean + 10 * (norm - 1) ** 2)
    torch.testing.assert_close(parts["wasserstein"], (real_mean - fake_mean).detach())


def test_gradient_penalty_interpolates_real_and_fake():
    # D(x) = ||x||^2 / 2 per sample: grad = x_hat = alpha real + (1 - alpha) fake.
    def critic(x):
        return 0.5 * x.flatten(1).square().sum(dim=1)

    real, fake = torch.randn(3, 2, 4, dtype=torch.float64), torch.randn(3, 2, 4, dtype=torch.float64)
    alpha = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    x_hat = alpha[:, None, None] * real + (1 - alpha[:, None, None]) * fake
    want = ((x_hat.flatten(1).square().sum(dim=1) + 1e-8).sqrt() - 1) ** 2
    torch.testing.assert_close(gradient_penalty(critic, real, fake, alpha), want)
    with pytest.raises(ValueError, match="alpha"):
        gradient_penalty(critic, real, fake, alpha[:2])
    with pytest.raises(ValueError, match="fake has shape"):
        gradient_penalty(critic, real, fake[:2])


def test_generator_loss_adds_the_update_norm():
    scores, dp = torch.tensor([[1.0], [3.0]]), torch.tensor([[3.0, 4.0, 0, 0, 0, 0, 0, 0], [0.0] * 8])
    parts = wgan_generator_loss(scores, dp, dp_weight=0.5)
    assert parts["adv"].item() == -2.0 and parts["dp"].item() == 12.5
    assert parts["total"].item() == -2.0 + 0.5 * 12.5
    assert wgan_generator_loss(scores)["total"].item() == -2.0
