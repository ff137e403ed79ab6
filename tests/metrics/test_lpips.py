"""LPIPS: metric properties, the formula against numpy, the backbone against an explicit
torchvision-layout conv chain, strict loading of both weight files, opt-in real weights."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pydeform.metrics import LPIPS
from pydeform.metrics.lpips import _TAPS, LPIPS_NETS, MIN_SIZE

# torchvision alexnet().features: (index, out, in, kernel, stride, padding); max-pools 3/2 after 0 and 3.
ALEX_CONVS = [(0, 64, 3, 11, 4, 2), (3, 192, 64, 5, 1, 2), (6, 384, 192, 3, 1, 1), (8, 256, 384, 3, 1, 1),
              (10, 256, 256, 3, 1, 1)]
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_OUT = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def _alex_file(path, classifier=True):
    g = torch.Generator().manual_seed(0)
    state = {}
    for index, out, cin, k, _, _ in ALEX_CONVS:
        state[f"features.{index}.weight"] = torch.randn(out, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(out, generator=g) * 0.1
    if classifier:
        state["classifier.1.weight"] = torch.zeros(4, 9216)
    torch.save(state, path)
    return state


def _linear_file(path, channels=(64, 192, 384, 256, 256)):
    g = torch.Generator().manual_seed(1)
    state = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(channels)}
    torch.save(state, path, _use_new_zipfile_serialization=False)  # the lpips package's legacy format
    return state


@pytest.fixture(scope="module")
def alex(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    backbone, linear = _alex_file(folder / "alexnet.pth"), _linear_file(folder / "alex.pth")
    return LPIPS("alex", folder / "alexnet.pth", folder / "alex.pth"), backbone, linear, folder


def test_lpips_properties(alex):
    model = alex[0]
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1, torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    assert torch.equal(model(x, x), torch.zeros(3))
    torch.testing.assert_close(model(x, y), model(y, x), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.per_layer(x, y).sum(1), model(x, y))
    assert model(x, y).shape == (3,) and bool((model(x, y) > 0).all())
    assert model(x[:1], y[:1]).item() == pytest.approx(model(x, y)[0].item(), rel=1e-5)  # per pair, batch-free


def test_lpips_formula_against_numpy(alex):
    model, _, linear, _ = alex
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 64, 80, generator=g) * 2 - 1, torch.rand(2, 3, 64, 80, generator=g) * 2 - 1
    fx, fy = model.activations(x), model.activations(y)
    expected = np.zeros((2, 5))
    for layer, (a, b) in enumerate(zip(fx, fy)):
        a, b = a.double().numpy(), b.double().numpy()
        a = a / (np.sqrt((a**2).sum(1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b**2).sum(1, keepdims=True)) + 1e-10)
        w = linear[f"lin{layer}.model.1.weight"].double().numpy().reshape(1, -1, 1, 1)
        expected[:, layer] = ((a - b) ** 2 * w).sum(1).mean((1, 2))
    np.testing.assert_allclose(model.per_layer(x, y).numpy(), expected, rtol=1e-4, atol=1e-7)


def test_lpips_backbone_is_torchvision_alexnet_after_the_scaling_layer(alex):
    model, backbone, _, _ = alex
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    h = (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    expected = []
    for index, _, _, _, stride, padding in ALEX_CONVS:
        if index in (3, 6):
            h = F.max_pool2d(h, 3, 2)
        h = F.relu(F.conv2d(h, backbone[f"features.{index}.weight"], backbone[f"features.{index}.bias"], stride, padding))
        expected.append(h)
    for got, want in zip(model.activations(x), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # input_range: [0, 1] images give what their [-1, 1] versions give
    zero_one = LPIPS("alex", alex[3] / "alexnet.pth", alex[3] / "alex.pth", input_range=(0, 1))
    y = torch.rand_like(x)
    torch.testing.assert_close(zero_one((x + 1) / 2, y), model(x, 2 * y - 1), rtol=1e-5, atol=1e-6)


def test_lpips_vgg_layout(tmp_path):
    state = {}
    cin = 3
    for index, out in zip(VGG16_CONVS, VGG16_OUT):
        state[f"features.{index}.weight"] = torch.randn(out, cin, 3, 3) * (2 / (cin * 9)) ** 0.5
        state[f"features.{index}.bias"] = torch.zeros(out)
        cin = out
    torch.save(state, tmp_path / "vgg16.pth")
    _linear_file(tmp_path / "vgg.pth", (64, 128, 256, 512, 512))
    model = LPIPS("vgg", tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    assert [a.shape[1:] for a in model.activations(x)] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    assert model(x, y).item() > 0 and model(x, x).item() == 0
    _linear_file(tmp_path / "alex.pth")
    with pytest.raises(ValueError, match=r"lin1.model.1.weight has shape \(1, 192, 1, 1\), expected \(1, 128"):
        LPIPS("vgg", tmp_path / "vgg16.pth", tmp_path / "alex.pth")  # AlexNet heads for VGG


def test_lpips_loading_errors(alex, tmp_path):
    folder = alex[3]
    with pytest.raises(ValueError, match="alexnet-owt-7be5be79.pth.*alex.pth"):
        LPIPS("alex")
    with pytest.raises(ValueError, match="linear_weights"):
        LPIPS("alex", backbone_weights=folder / "alexnet.pth")
    with pytest.raises(ValueError, match="net must be"):
        LPIPS("squeeze", random_weights=True)
    with pytest.raises(FileNotFoundError):
        LPIPS("alex", tmp_path / "none.pth", folder / "alex.pth")
    partial = {k: v for k, v in torch.load(folder / "alexnet.pth").items() if k != "features.10.bias"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing keys.*features.10.bias"):
        LPIPS("alex", tmp_path / "partial.pth", folder / "alex.pth")
    with pytest.raises(ValueError, match="not a torchvision vgg16"):  # AlexNet backbone for VGG
        LPIPS("vgg", folder / "alexnet.pth", folder / "alex.pth")
    wrong = torch.load(folder / "alex.pth")
    wrong["lin2.model.1.weight"] = torch.zeros(1, 3, 1, 1)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"lin2.model.1.weight has shape \(1, 3, 1, 1\)"):
        LPIPS("alex", folder / "alexnet.pth", tmp_path / "wrong.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(ValueError, match="not a readable state-dict"):
        LPIPS("alex", folder / "alexnet.pth", tmp_path / "text.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        LPIPS("alex", folder / "alexnet.pth", tmp_path / "list.pth")
    model = LPIPS("alex", random_weights=True)
    with pytest.raises(ValueError, match="one shape"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.activations(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="input_range"):
        LPIPS("alex", random_weights=True, input_range=(1, 0))


@pytest.mark.skipif(not (os.environ.get("PYDEFORM_LPIPS_BACKBONE") and os.environ.get("PYDEFORM_LPIPS_LINEAR")),
                    reason="set PYDEFORM_LPIPS_BACKBONE (torchvision alexnet file) and PYDEFORM_LPIPS_LINEAR "
                           "(lpips v0.1 alex.pth) to run with the real weights")
def test_lpips_real_weights():
    model = LPIPS("alex", os.environ["PYDEFORM_LPIPS_BACKBONE"], os.environ["PYDEFORM_LPIPS_LINEAR"])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    near, far = model(x, noisy), model(x, torch.rand_like(x) * 2 - 1)
    assert bool((near < far).all()) and bool((model(x, x) == 0).all())


@pytest.mark.parametrize("net", LPIPS_NETS)
def test_lpips_refuses_small_and_integer_images(net):
    model = LPIPS(net, random_weights=True)
    side = MIN_SIZE[net]
    assert len(model.activations(torch.zeros(1, 3, side, side))) == 5
    with pytest.raises(RuntimeError):  # what the check prevents: the backbone fails one pixel lower
        model.backbone.features[: _TAPS[net][-1]](torch.zeros(1, 3, side - 1, side - 1))
    small = torch.zeros(1, 3, side - 1, 64)
    with pytest.raises(ValueError, match=f"at least {side}x{side} pixels, got {side - 1}x64"):
        model(small, small)
    pixels = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    with pytest.raises(TypeError, match="floating point"):
        model(pixels, pixels)
