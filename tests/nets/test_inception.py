"""InceptionV3FID: the key layout of the standard weight files, strict loading, the two
resizings against closed forms, and equality with torch-fidelity's own module under the
same random weights."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from metric_weights import torch_fidelity_inception, write_inception_weights

from pydeform.nets import InceptionV3FID
from pydeform.nets.inception import BasicConv2d, resize_tf1_bilinear

# Branch names per block type (torchvision Inception3 / pytorch-fid / torch-fidelity).
_A = ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", "branch_pool"]
_B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_C = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3"] + [f"branch7x7dbl_{i}" for i in range(1, 6)] + ["branch_pool"]
_D = ["branch3x3_1", "branch3x3_2"] + [f"branch7x7x3_{i}" for i in range(1, 5)]
_E = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
      "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
_BLOCKS = {"Mixed_5b": _A, "Mixed_5c": _A, "Mixed_5d": _A, "Mixed_6a": _B, "Mixed_6b": _C, "Mixed_6c": _C,
           "Mixed_6d": _C, "Mixed_6e": _C, "Mixed_7a": _D, "Mixed_7b": _E, "Mixed_7c": _E}
_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
# A few shapes of the real file, from the TF graph (torch-fidelity's util_convert_inception_weights.py).
_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1), "Mixed_5c.branch_pool.conv.weight": (64, 256, 1, 1),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7), "Mixed_6e.branch7x7dbl_2.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3), "Mixed_7b.branch1x1.conv.weight": (320, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1), "Mixed_7c.branch_pool.bn.running_var": (192,),
    "fc.weight": (1008, 2048), "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    return path, write_inception_weights(path)


@pytest.fixture(scope="module")
def net(weights):
    return InceptionV3FID(weights[0])


def test_state_dict_layout_of_the_standard_files(net):
    convs = _STEM + [f"{block}.{branch}" for block, branches in _BLOCKS.items() for branch in branches]
    expected = {f"{c}.conv.weight" for c in convs} | {"fc.weight", "fc.bias"}
    expected |= {f"{c}.bn.{p}" for c in convs for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    state = net.state_dict()
    assert set(state) == expected and len(convs) == 94
    for key, shape in _SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert all(m.bn.eps == 1e-3 for m in net.modules() if isinstance(m, BasicConv2d))


def test_equal_to_torch_fidelity_under_the_same_weights(weights, net):
    module = torch_fidelity_inception()
    if module is None:
        pytest.skip("torch-fidelity is not installed (pip install --no-deps torch-fidelity)")
    reference = module.FeatureExtractorInceptionV3("inception", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=str(weights[0]))
    layout = lambda m: {k: v.shape for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert layout(reference) == layout(net)
    images = torch.randint(0, 256, (2, 3, 70, 45), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        features, logits = reference(images)
        ours = net(images)
    # the comparison is not between constants: the two images' outputs differ
    assert (features[0] - features[1]).abs().max() > 0.1 and (logits[0] - logits[1]).abs().max() > 0.1
    torch.testing.assert_close(ours[0], features, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours[1], logits, rtol=1e-4, atol=1e-5)
    assert "torchvision" not in sys.modules


def test_tf1_resize_hand_cases_and_torch_fidelity():
    x = torch.tensor([[[[2.0, 6.0]]]])
    torch.testing.assert_close(resize_tf1_bilinear(x, (1, 4)), torch.tensor([[[[2.0, 4.0, 6.0, 6.0]]]]))  # a, (a+b)/2, b, b
    y = torch.tensor([[[[0.0], [3.0], [6.0]]]])
    torch.testing.assert_close(resize_tf1_bilinear(y, (2, 1)), torch.tensor([[[[0.0], [4.5]]]]))  # rows 0 and 1.5
    module = torch_fidelity_inception()
    if module is not None:
        import importlib.util
        from pathlib import Path
        path = Path(module.__file__).with_name("interpolate_compat_tensorflow.py")
        spec = importlib.util.spec_from_file_location("tf1_interpolate", path)
        interpolate = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(interpolate)
        z = torch.rand(2, 3, 37, 23) * 255
        expected = interpolate.interpolate_bilinear_2d_like_tensorflow1x(z, size=(299, 299), align_corners=False)
        torch.testing.assert_close(resize_tf1_bilinear(z, (299, 299)), expected, rtol=0, atol=1e-4)


def test_pytorch_fid_resizing(weights):
    net = InceptionV3FID(weights[0], resize="pytorch-fid")
    x = torch.tensor([[[[51.0, 102.0]]]]).expand(1, 3, 1, 2)
    got = net._prepare(x)
    # half-pixel centres: 2 -> 299 columns; ends clamp, 2x - 1 of x / 255
    expected = 2 * F.interpolate(x / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(got, expected)
    assert got[0, 0, 0, 0].item() == pytest.approx(2 * 0.2 - 1) and got[0, 0, 0, -1].item() == pytest.approx(2 * 0.4 - 1)
    tf = InceptionV3FID(weights[0])._prepare(x)
    assert tf[0, 0, 0, 0].item() == pytest.approx((51 - 128) / 128) and tf[0, 0, 0, -1].item() == pytest.approx((102 - 128) / 128)


def test_basic_conv_folds_batchnorm_exactly():
    block = BasicConv2d(4, 6, kernel_size=3, padding=1)
    with torch.no_grad():
        block.bn.running_mean.normal_()
        block.bn.running_var.uniform_(0.5, 2)
        block.bn.weight.normal_()
        block.bn.bias.normal_()
    block.eval()
    x = torch.randn(2, 4, 9, 7)
    torch.testing.assert_close(block(x), F.relu(block.bn(block.conv(x))), rtol=1e-5, atol=1e-5)


def test_loading_is_strict(weights, tmp_path):
    _, state = weights
    with pytest.raises(ValueError, match="pt_inception-2015-12-05-6726825d.pth.*random_weights=True"):
        InceptionV3FID()
    with pytest.raises(ValueError, match="resize must be one of"):
        InceptionV3FID(random_weights=True, resize="bicubic")
    with pytest.raises(FileNotFoundError, match="Inception weights"):
        InceptionV3FID(tmp_path / "missing.pth")
    write_inception_weights(tmp_path / "tracked.pth", batches_tracked=True)  # a torchvision-style state_dict
    assert InceptionV3FID(tmp_path / "tracked.pth").weights_path == tmp_path / "tracked.pth"
    partial = dict(state)
    del partial["Mixed_7c.branch_pool.bn.running_var"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing keys.*Mixed_7c.branch_pool.bn.running_var"):
        InceptionV3FID(tmp_path / "partial.pth")
    extra = dict(state, **{"AuxLogits.fc.weight": torch.zeros(1008, 768)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="unexpected keys.*AuxLogits.fc.weight"):
        InceptionV3FID(tmp_path / "extra.pth")
    wrong = dict(state, **{"fc.weight": torch.zeros(1000, 2048)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"fc.weight has shape \(1000, 2048\)"):
        InceptionV3FID(tmp_path / "wrong.pth")
    net = InceptionV3FID(random_weights=True)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        resize_tf1_bilinear(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), (4, 4))


@pytest.mark.skipif(not os.environ.get("PYDEFORM_INCEPTION_WEIGHTS"),
                    reason="set PYDEFORM_INCEPTION_WEIGHTS to pt_inception-2015-12-05-6726825d.pth or "
                           "weights-inception-2015-12-05-6726825d.pth to run with the real weights")
def test_real_weights():
    net = InceptionV3FID(os.environ["PYDEFORM_INCEPTION_WEIGHTS"])
    images = torch.randint(0, 256, (2, 3, 128, 64), dtype=torch.uint8)
    features, logits = net(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert bool((features >= 0).all())  # mean of ReLU outputs
    module = torch_fidelity_inception()
    if module is not None:
        reference = module.FeatureExtractorInceptionV3("inception", ["2048", "logits_unbiased"],
                                                       feature_extractor_weights_path=os.environ["PYDEFORM_INCEPTION_WEIGHTS"])
        with torch.inference_mode():
            expected = reference(images)
        torch.testing.assert_close(features, expected[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits, expected[1], rtol=1e-4, atol=1e-4)
