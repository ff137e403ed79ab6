import pytest
import torch

from pydeform.losses import NNLoss
from pydeform.ops import reference


def test_value_is_mean_nn_distance_of_conv1_2_features():
    loss = NNLoss(kernel_size=5, random_vgg=True)
    fake, real = torch.rand(2, 3, 20, 12) * 2 - 1, torch.rand(2, 3, 20, 12) * 2 - 1
    features = loss.features
    want = reference.patch_nn_distance(features(fake)["relu1_2"], features(real)["relu1_2"], 5, 1)[0].mean()
    torch.testing.assert_close(loss(fake, real), want)


def test_tolerates_small_shifts_that_l1_punishes():
    loss = NNLoss(kernel_size=3, random_vgg=True)
    real = torch.rand(1, 3, 24, 16) * 2 - 1
    shifted = torch.roll(real, shifts=1, dims=3)
    f = loss.features
    l1 = (f(shifted)["relu1_2"] - f(real)["relu1_2"]).abs().sum(1).mean()
    assert loss(real, real) == 0
    assert loss(shifted, real) < 0.5 * l1


def test_gradient_reaches_generated_only():
    loss = NNLoss(random_vgg=True)
    fake = (torch.rand(1, 3, 8, 8) * 2 - 1).requires_grad_()
    real = (torch.rand(1, 3, 8, 8) * 2 - 1).requires_grad_()
    loss(fake, real).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None


def test_refuses_without_weights():
    with pytest.raises(ValueError, match="needs VGG19 weights"):
        NNLoss()
    with pytest.raises(ValueError, match="must match"):
        NNLoss(random_vgg=True)(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 6))


def test_caffe_preprocessing_and_cpu_autocast():
    # "caffe": the authors' VGG input (Keras VGG19 weights), through VGG19Features' caffe mode.
    caffe = NNLoss(kernel_size=3, random_vgg=True, preprocessing="caffe")
    assert caffe.features.preprocessing == "caffe" and NNLoss(random_vgg=True).features.preprocessing == "imagenet"
    from pydeform.losses.gan import DeformGANLoss

    assert DeformGANLoss("full", random_vgg=True, vgg_preprocessing="caffe").nn_loss.features.preprocessing == "caffe"
    # Under CPU autocast the features come out bfloat16; the CPU kernel compares them in float32.
    fake, real = torch.rand(1, 3, 12, 8) * 2 - 1, torch.rand(1, 3, 12, 8) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert caffe.features(fake)["relu1_2"].dtype == torch.bfloat16
        low = caffe(fake, real)
    torch.testing.assert_close(low, caffe(fake, real), rtol=0.05, atol=0.05 * caffe(fake, real).item())
