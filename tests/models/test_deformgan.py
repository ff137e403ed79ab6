"""Deformable GAN generator, discriminator and losses (pydeform.models.deformgan, pydeform.losses.gan)."""
import math

import pytest
import torch
from torch import nn

from pydeform.losses.gan import DeformGANLoss, discriminator_loss, generator_adversarial_loss
from pydeform.models import (
    NUM_SKIP_LEVELS,
    PRESETS,
    VARIANTS,
    DeformableGenerator,
    DeformGANConfig,
    build_discriminator,
    build_generator,
)
from pydeform.models.deformgan import SampleNorm, norm_layer
from pydeform.nn import DeformableSkip
from pydeform.ops import reference

TINY = dict(size=(64, 32), ngf=8, ndf=8)


def inputs(batch: int, size: tuple[int, int], random_theta: bool = False, seed: int = 0):
    """source, source_pose, target_pose, theta (B, 4, 10, 2, 3), masks [4 x (B, 10, H/2^l, W/2^l)]."""
    g = torch.Generator().manual_seed(seed)
    H, W = size
    source = torch.rand(batch, 3, H, W, generator=g) * 2 - 1
    source_pose, target_pose = torch.rand(batch, 18, H, W, generator=g), torch.rand(batch, 18, H, W, generator=g)
    theta = torch.eye(2, 3).expand(batch, NUM_SKIP_LEVELS, 10, 2, 3).clone()
    if random_theta:
        theta += 0.1 * torch.randn(theta.shape, generator=g)
        theta[..., 2] += 2 * torch.randn(theta[..., 2].shape, generator=g)
    masks = [(torch.rand(batch, 10, H >> l, W >> l, generator=g) > 0.5).float() for l in range(NUM_SKIP_LEVELS)]
    for m in masks:
        m[:, 0] = 1  # the torso part covers everything, as in pydeform.pose.part_transforms
    return source, source_pose, target_pose, theta, masks


# ----------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_of_both_presets_and_all_variants(preset, variant):
    # Full image sizes, narrow networks (ngf=4) so that 256x256 stays cheap on the CPU.
    config = DeformGANConfig(preset=preset, variant=variant, ngf=4, ndf=4)
    H, W = PRESETS[preset].size
    G, D = build_generator(config).eval(), build_discriminator(config)
    x = inputs(1, (H, W))
    with torch.no_grad():
        fake = G(*x)
        logits = D(x[0], x[1], fake, x[2])
    assert fake.shape == (1, 3, H, W)
    # pix2pix patch discriminator: three stride-2 convs, then two 4x4 stride-1 convs (-1 each).
    assert logits.shape == (1, 1, H // 8 - 2, W // 8 - 2)


@pytest.mark.parametrize("preset,blocks,decoder", [
    ("market", 6, [512, 512, 512, 256, 128]),
    ("fashion", 7, [512, 512, 512, 512, 256, 128]),
])  # fmt: skip
@pytest.mark.parametrize("variant", VARIANTS)
def test_paper_widths(preset, blocks, decoder, variant):
    config = DeformGANConfig(preset=preset, variant=variant)
    with torch.device("meta"):  # the full-width networks, without allocating their weights
        G, D = build_generator(config), build_discriminator(config)
    encoders = [G.appearance, G.pose] if variant != "baseline" else [G.encoder]
    in_channels = [21, 18] if variant != "baseline" else [39]
    for encoder, channels in zip(encoders, in_channels):
        convs = [encoder.stem] + [block[1] for block in encoder.blocks]
        assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 512, 512][:blocks]
        assert convs[0].in_channels == channels and convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)
        assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs[1:])
        # Norm in every stride-2 block but the last (as the authors' encoder).
        has_norm = [isinstance(block[-1], SampleNorm) for block in encoder.blocks]  # the authors' (default)
        assert has_norm == [True] * (blocks - 2) + [False]
    assert [block[1].out_channels for block in G.decoder] == decoder
    assert [any(isinstance(m, nn.Dropout) for m in block) for block in G.decoder] == [True] * 3 + [False] * (blocks - 4)
    assert isinstance(G.head[-1], nn.Tanh) and G.head[1].out_channels == 3
    assert hasattr(G, "skips") == (variant != "baseline")
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 3 + 18 + 3 + 18
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride for c in convs] == [(2, 2)] * 3 + [(1, 1)] * 2


def test_output_is_tanh_of_the_last_conv():
    config = DeformGANConfig(**TINY)
    G = build_generator(config).eval()
    for p in G.head[1].parameters():
        p.data.mul_(50)  # push the pre-activation far outside (-1, 1)
    captured = {}
    G.head[1].register_forward_hook(lambda m, args, out: captured.update(pre=out))
    with torch.no_grad():
        fake = G(*inputs(2, config.image_size))
    assert captured["pre"].abs().max() > 3
    torch.testing.assert_close(fake, torch.tanh(captured["pre"]))
    assert fake.min() >= -1 and fake.max() <= 1


# ----------------------------------------------------------------------------- deformable skip


def test_skip_with_identity_parts_is_identity():
    x = torch.randn(2, 5, 12, 8)
    theta = torch.eye(2, 3).expand(2, 10, 2, 3)
    torch.testing.assert_close(DeformableSkip()(x, theta, torch.ones(2, 10, 12, 8)), x)


def test_skip_translation_is_a_shift_with_zero_padding():
    # Output pixel (j, i) samples input (j + 1, i): a shift left by one column, zeros beyond the edge.
    x = torch.randn(1, 4, 6, 5)
    theta = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).expand(1, 10, 2, 3)
    want = torch.cat([x[..., 1:], torch.zeros(1, 4, 6, 1)], dim=-1)
    torch.testing.assert_close(DeformableSkip()(x, theta, torch.ones(1, 10, 6, 5)), want)


def test_skip_is_the_max_over_masked_parts():
    x = torch.rand(1, 3, 6, 6) + 0.5  # positive, so that masked-out zeros never win
    theta = torch.eye(2, 3).repeat(1, 10, 1, 1)
    theta[0, 1, 0, 2] = 2.0  # part 1 samples two columns to the right
    masks = torch.zeros(1, 10, 6, 6)
    masks[0, 0, :, :3] = 1  # part 0 (identity) on the left half, part 1 on the right half
    masks[0, 1, :, 3:] = 1
    out = DeformableSkip()(x, theta, masks)
    torch.testing.assert_close(out[..., :3], x[..., :3])
    torch.testing.assert_close(out[..., 3:4], x[..., 5:6])
    torch.testing.assert_close(out[..., 4:], torch.zeros(1, 3, 6, 2))  # sampled outside the map


def test_generator_skips_warp_the_appearance_features():
    config = DeformGANConfig(**TINY)
    G = build_generator(config).eval()
    appearance, pose, skip_io = {}, {}, {}
    G.appearance.register_forward_hook(lambda m, args, out: appearance.update(features=out))
    G.pose.register_forward_hook(lambda m, args, out: pose.update(features=out))
    for level, skip in enumerate(G.skips):
        skip.register_forward_hook(lambda m, args, out, level=level: skip_io.update({level: (args, out)}))
    source, source_pose, target_pose, theta, masks = inputs(2, config.image_size, random_theta=True)
    with torch.no_grad():
        G(source, source_pose, target_pose, theta, masks)
    H, W = config.image_size
    for level in range(NUM_SKIP_LEVELS):
        (features, level_theta, level_masks), out = skip_io[level]
        assert features is appearance["features"][level]
        assert features.shape[-2:] == (H >> level, W >> level)
        # The fused kernel and the reference round differently in float32.
        want = reference.multi_affine_warp(features, theta[:, level], masks[level])
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
    # The pose encoder runs on the target heatmaps alone.
    torch.testing.assert_close(pose["features"][0], G.pose.stem(target_pose))


def test_gradient_reaches_theta_and_theta_changes_the_output():
    config = DeformGANConfig(**TINY)
    G = build_generator(config).eval()
    source, source_pose, target_pose, theta, masks = inputs(2, config.image_size, random_theta=True)
    theta = theta.requires_grad_()
    fake = G(source, source_pose, target_pose, theta, masks)
    fake.square().sum().backward()
    for level in range(NUM_SKIP_LEVELS):
        assert theta.grad[:, level].abs().sum() > 0, f"no gradient reaches the level-{level} transforms"
    moved = theta.detach().clone()
    moved[..., 2] += 3.0  # translate every part by 3 px
    with torch.no_grad():
        assert (G(source, source_pose, target_pose, moved, masks) - fake).abs().max() > 1e-3


def test_baseline_ignores_theta_and_needs_none():
    config = DeformGANConfig(variant="baseline", **TINY)
    G = build_generator(config).eval()
    source, source_pose, target_pose, theta, masks = inputs(1, config.image_size, random_theta=True)
    with torch.no_grad():
        torch.testing.assert_close(G(source, source_pose, target_pose), G(source, source_pose, target_pose, theta, masks))


def test_deformable_generator_rejects_missing_or_misshaped_geometry():
    config = DeformGANConfig(**TINY)
    G = build_generator(config)
    source, source_pose, target_pose, theta, masks = inputs(1, config.image_size)
    with pytest.raises(ValueError, match="theta and masks"):
        G(source, source_pose, target_pose)
    with pytest.raises(ValueError, match=r"masks\[2\]"):
        G(source, source_pose, target_pose, theta, masks[:2] + [masks[1], masks[3]])
    with pytest.raises(ValueError, match="source_pose"):
        G(source, source_pose[:, :17], target_pose, theta, masks)


def test_dropout_is_active_in_training_only():
    config = DeformGANConfig(**TINY)
    G = build_generator(config)
    x = inputs(1, config.image_size)
    with torch.no_grad():
        G.train()
        assert not torch.equal(G(*x), G(*x))
        G.eval()
        assert torch.equal(G(*x), G(*x))


def test_fused_warp_generator_matches_reference():
    ref = DeformableGenerator((64, 32), 6, 8, ops="reference").eval()
    fused = DeformableGenerator((64, 32), 6, 8, ops="pydeform").eval()
    fused.load_state_dict(ref.state_dict())
    x = inputs(2, (64, 32), random_theta=True)
    with torch.no_grad():
        torch.testing.assert_close(fused(*x), ref(*x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(preset="imagenet"), "preset"),
    (dict(variant="perceptual"), "variant"),
    (dict(ops="cuda"), "ops"),
    (dict(size=(100, 64)), "divisible"),
    (dict(size=(64, 32), num_blocks=4), "num_blocks"),
    (dict(size=(32, 16), num_blocks=5), "too small"),
    (dict(nn_kernel=4), "odd"),
    (dict(norm="layer"), "norm"),
    (dict(init="kaiming"), "init"),
])  # fmt: skip
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeformGANConfig(**kwargs)


def test_config_round_trip():
    config = DeformGANConfig(preset="fashion", variant="dsc", size=(64, 64), ngf=16)
    assert DeformGANConfig.from_dict(config.to_dict()) == config
    assert (config.blocks, config.kernel, config.image_size) == (7, 5, (64, 64))
    assert DeformGANConfig().kernel == 3


def test_sample_norm_is_keras_contribs_instance_normalization_with_axis_none():
    # keras_contrib InstanceNormalization(axis=None): reduction over every axis but the batch,
    # (x - mean) / (K.std(x) + epsilon) * gamma + beta with scalar gamma, beta and epsilon 1e-3.
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64) * 3 + 2
    norm = SampleNorm().double()
    with torch.no_grad():
        norm.weight.fill_(1.7), norm.bias.fill_(-0.4)
    a = x.numpy().reshape(3, -1)
    want = (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-3) * 1.7 - 0.4
    torch.testing.assert_close(norm(x), torch.from_numpy(want.reshape(x.shape)))
    assert [p.shape for p in norm.parameters()] == [(1,), (1,)]
    assert torch.autograd.gradcheck(SampleNorm().double(), (x.requires_grad_(),))
    assert isinstance(norm_layer("instance", 5), nn.InstanceNorm2d) and isinstance(norm_layer("batch", 5), nn.BatchNorm2d)


def test_keras_and_normal_initialisation():
    torch.manual_seed(0)
    keras = build_generator(DeformGANConfig(**TINY))
    normal = build_generator(DeformGANConfig(**TINY, norm="instance", init="normal"))
    for conv in (m for m in keras.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))):
        w = conv.weight
        fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
        limit = math.sqrt(6 / (fan_in + fan_out))  # Glorot uniform (symmetric in the two fans)
        assert w.abs().max() <= limit and w.abs().max() > 0.9 * limit
        assert conv.bias is None or not conv.bias.any()
    assert all(bool((m.weight == 1).all()) for m in keras.modules() if isinstance(m, SampleNorm))
    convs = torch.cat([m.weight.flatten() for m in normal.modules() if isinstance(m, nn.Conv2d)])
    assert abs(convs.std().item() - 0.02) < 0.002
    scales = torch.cat([m.weight for m in normal.modules() if isinstance(m, nn.InstanceNorm2d)])
    assert abs(scales.mean().item() - 1) < 0.01 and 0.01 < scales.std().item() < 0.03


# ----------------------------------------------------------------------------- losses


def test_gan_losses_are_the_binary_cross_entropies():
    real, fake = torch.randn(3, 1, 4, 2), torch.randn(3, 1, 4, 2)
    sigmoid = torch.sigmoid
    want_d = -torch.log(sigmoid(real)).mean() - torch.log(1 - sigmoid(fake)).mean()
    torch.testing.assert_close(discriminator_loss(real, fake), want_d)
    torch.testing.assert_close(generator_adversarial_loss(fake), -torch.log(sigmoid(fake)).mean())
    # Stable for confident logits, where log(sigmoid) would underflow.
    assert math.isclose(generator_adversarial_loss(torch.tensor([-200.0])).item(), 200.0)


@pytest.mark.parametrize("variant", ["baseline", "dsc"])
def test_l1_variants_weigh_l1_by_100(variant):
    loss = DeformGANLoss(variant)
    logits, generated, target = torch.randn(2, 1, 5, 3), torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    parts = loss(logits, generated, target)
    l1 = (generated - target).abs().mean()
    torch.testing.assert_close(parts["l1"], l1)
    torch.testing.assert_close(parts["total"], generator_adversarial_loss(logits) + 100 * l1)
    assert loss.nn_loss is None  # no VGG for the L1 variants


@pytest.mark.parametrize("ops", ["reference", "pydeform"])
def test_full_variant_is_gan_plus_0_01_nn_loss(ops):
    loss = DeformGANLoss("full", nn_kernel=5, random_vgg=True, ops=ops)
    logits, generated, target = torch.randn(2, 1, 5, 3), torch.rand(2, 3, 12, 8) * 2 - 1, torch.rand(2, 3, 12, 8) * 2 - 1
    features = loss.nn_loss.features
    nn_distance = reference.patch_nn_distance(features(generated)["relu1_2"], features(target)["relu1_2"], 5, 1)[0].mean()
    parts = loss(logits, generated, target)
    torch.testing.assert_close(parts["nn"], nn_distance)
    torch.testing.assert_close(parts["total"], generator_adversarial_loss(logits) + 0.01 * nn_distance)


def test_full_variant_refuses_without_vgg_weights():
    with pytest.raises(ValueError, match="random_vgg"):
        DeformGANLoss("full")


def test_generator_loss_gradient_reaches_generated_not_target():
    loss = DeformGANLoss("full", random_vgg=True)
    generated = (torch.rand(1, 3, 8, 8) * 2 - 1).requires_grad_()
    target = (torch.rand(1, 3, 8, 8) * 2 - 1).requires_grad_()
    loss(torch.zeros(1, 1, 2, 2), generated, target)["total"].backward()
    assert generated.grad.abs().sum() > 0 and target.grad is None
