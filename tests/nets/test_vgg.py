import pytest
import torch
import torch.nn.functional as F

from pydeform.nets.vgg import IMAGENET_MEAN, IMAGENET_STD, LAYERS, VGG19Features


def torchvision_layout_state(seed=0):
    """A random state dict with torchvision vgg19's keys and shapes (features + classifier)."""
    g = torch.Generator().manual_seed(seed)
    state, in_c = {}, 3
    convs = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    outs = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    for index, out_c in zip(convs, outs):
        state[f"features.{index}.weight"] = torch.randn(out_c, in_c, 3, 3, generator=g) * 0.05
        state[f"features.{index}.bias"] = torch.randn(out_c, generator=g) * 0.05
        in_c = out_c
    state["classifier.0.weight"] = torch.randn(8, 8, generator=g)
    return state


def test_layer_indices_match_torchvision():
    # torchvision's vgg19().features: relu1_2 = 3, relu2_2 = 8, relu3_4 = 17, relu4_4 = 26, relu5_4 = 35.
    assert (LAYERS["relu1_2"], LAYERS["relu2_2"], LAYERS["relu3_4"], LAYERS["relu4_4"], LAYERS["relu5_4"]) == (3, 8, 17, 26, 35)
    assert LAYERS["pool5"] == 36


def test_loads_torchvision_state_dict_and_computes_features(tmp_path):
    state = torchvision_layout_state()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    vgg = VGG19Features(path, layers=("relu1_1", "relu1_2"))
    images = torch.rand(2, 3, 16, 12) * 2 - 1
    out = vgg(images)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = ((images + 1) / 2 - mean) / std
    relu1_1 = F.relu(F.conv2d(x, state["features.0.weight"], state["features.0.bias"], padding=1))
    relu1_2 = F.relu(F.conv2d(relu1_1, state["features.2.weight"], state["features.2.bias"], padding=1))
    torch.testing.assert_close(out["relu1_1"], relu1_1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["relu1_2"], relu1_2, rtol=1e-4, atol=1e-5)
    assert len(vgg.features) == 4  # cut after the deepest requested layer
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training


def test_refuses_without_weights_unless_random_is_explicit(tmp_path):
    with pytest.raises(ValueError, match="needs pretrained weights"):
        VGG19Features()
    with pytest.raises(FileNotFoundError):
        VGG19Features(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="missing|shape"):
        VGG19Features(bad)
    with pytest.raises(ValueError, match="layer names"):
        VGG19Features(random_weights=True, layers=("relu9_9",))
    assert VGG19Features(random_weights=True, layers=("relu5_4",))(torch.zeros(1, 3, 32, 32))["relu5_4"].shape == (1, 512, 2, 2)
