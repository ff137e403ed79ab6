"""pydeform.metrics against scikit-image (structural_similarity, peak_signal_noise_ratio,
and the original mask-SSIM body mask rebuilt from skimage.draw / skimage.morphology) and
closed forms."""
import numpy as np
import pytest
import torch
from devices import DEVICES
from skimage.draw import disk, polygon
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.morphology import dilation, erosion

from pydeform.metrics import BODY_MASK_LIMBS, body_mask, l1, mask_ssim, psnr, ssim

# Index pairs of the original pose_utils.produce_ma_mask, 1-based as written there.
ORIGINAL_LIMBS = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
                  [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [2, 17], [2, 18], [9, 12], [12, 6],
                  [9, 3], [17, 18]]  # fmt: skip


def skimage_ssim(generated: np.ndarray, reference: np.ndarray, data_range=None, sigma=1.5) -> float:
    """The Deformable GAN's ssim_score for one (C, H, W) pair, with today's skimage API."""
    if data_range is None:
        data_range = generated.max() - generated.min()
    return structural_similarity(reference, generated, gaussian_weights=True, sigma=sigma,
                                 use_sample_covariance=False, channel_axis=0, data_range=data_range)


def produce_ma_mask(kp_yx: np.ndarray, size, point_radius=4) -> np.ndarray:
    """The original mask-SSIM mask (pose_utils.produce_ma_mask), keypoints (18, 2) as (y, x)."""
    mask = np.zeros(size, dtype=bool)
    for f, t in np.array(ORIGINAL_LIMBS) - 1:
        if (kp_yx[f] == -1).any() or (kp_yx[t] == -1).any() or (kp_yx[f] == kp_yx[t]).all():
            continue
        normal = kp_yx[f] - kp_yx[t]
        normal = np.array([-normal[1], normal[0]])
        normal = point_radius * normal / np.linalg.norm(normal)
        corners = np.array([kp_yx[f] + normal, kp_yx[f] - normal, kp_yx[t] - normal, kp_yx[t] + normal])
        rr, cc = polygon(corners[:, 0], corners[:, 1], shape=size)
        mask[rr, cc] = True
    for joint in kp_yx:
        if (joint == -1).any():
            continue
        rr, cc = disk((joint[0], joint[1]), point_radius, shape=size)
        mask[rr, cc] = True
    square = np.ones((5, 5), dtype=bool)
    return erosion(dilation(mask, square), square)


def images(kind: str, value_range: str, shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A (generated, reference) float64 batch of shape (B, C, H, W)."""
    rng = np.random.default_rng(seed)
    b, c, h, w = shape
    if kind == "random":
        ref = rng.random(shape)
        gen = np.clip(ref + rng.normal(0, 0.15, shape), 0, 1)
    else:  # smooth ramps, a checkerboard, blobs; the generated image is shifted and dimmed
        ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([xs, ys, ((np.mgrid[0:h, 0:w] // 4).sum(0) % 2).astype(float)])[:c]
        blobs = np.exp(-((xs - rng.random((b, 1, 1, 1))) ** 2 + (ys - 0.5) ** 2) * 30)
        ref = np.clip(0.6 * base + 0.4 * blobs, 0, 1)
        gen = 0.8 * np.roll(ref, (1, 2), axis=(2, 3)) + 0.05
    if value_range == "uint8":  # 8-bit values, as the original scored saved images
        return np.round(gen * 255), np.round(ref * 255)
    return 2 * gen - 1, 2 * ref - 1


@pytest.mark.parametrize("shape", [(2, 3, 11, 11), (2, 1, 16, 23), (1, 3, 40, 32), (2, 3, 128, 64)])
@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("value_range", ["uint8", "unit"])
def test_ssim_matches_skimage(shape, kind, value_range):
    gen, ref = images(kind, value_range, shape, seed=sum(shape))
    expected = [skimage_ssim(g, r) for g, r in zip(gen, ref)]
    got = ssim(torch.from_numpy(gen), torch.from_numpy(ref))
    assert got.dtype == torch.float64 and got.shape == (shape[0],)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    # float32 (the generator's dtype) stays close thanks to the mean-shifted second moments.
    got32 = ssim(torch.from_numpy(gen).float(), torch.from_numpy(ref).float())
    np.testing.assert_allclose(got32.double().numpy(), expected, rtol=0, atol=1e-5)


def test_ssim_explicit_data_range_and_sigma():
    gen, ref = images("random", "unit", (3, 3, 24, 20), seed=1)
    x, y = torch.from_numpy(gen), torch.from_numpy(ref)
    expected = [skimage_ssim(g, r, data_range=2.0) for g, r in zip(gen, ref)]
    np.testing.assert_allclose(ssim(x, y, data_range=2.0).numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(ssim(x, y, data_range=torch.tensor(2.0)).numpy(), expected, atol=1e-10)
    ranges = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    expected = [skimage_ssim(g, r, data_range=d) for g, r, d in zip(gen, ref, ranges.tolist())]
    np.testing.assert_allclose(ssim(x, y, data_range=ranges).numpy(), expected, atol=1e-10)
    # Another Gaussian: skimage's window has 2 int(3.5 sigma + 0.5) + 1 taps.
    expected = [skimage_ssim(g, r, sigma=1.0) for g, r in zip(gen, ref)]
    np.testing.assert_allclose(ssim(x, y, sigma=1.0, win_size=9).numpy(), expected, atol=1e-10)


def test_ssim_properties():
    gen, ref = images("structured", "uint8", (2, 3, 32, 16), seed=2)
    x, y = torch.from_numpy(gen), torch.from_numpy(ref)
    np.testing.assert_allclose(ssim(x, x).numpy(), 1.0, atol=1e-12)
    # Batched = one image at a time; symmetric once the range is fixed.
    np.testing.assert_allclose(ssim(x, y).numpy(), [ssim(x[i:i + 1], y[i:i + 1]).item() for i in range(2)])
    np.testing.assert_allclose(ssim(x, y, data_range=255).numpy(), ssim(y, x, data_range=255).numpy(), atol=1e-12)
    # uint8 tensors are promoted (to float32).
    got = ssim(x.to(torch.uint8), y.to(torch.uint8))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), ssim(x, y).numpy(), atol=1e-5)


def test_ssim_gradcheck():
    x = torch.rand(1, 2, 12, 13, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 12, 13, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ssim(a, b, data_range=1.0, win_size=7), (x, y))


@pytest.mark.parametrize("device", DEVICES)
def test_ssim_device(device):
    gen, ref = images("random", "uint8", (2, 3, 32, 16), seed=3)
    x, y = torch.from_numpy(gen).float(), torch.from_numpy(ref).float()
    mask = torch.ones(2, 1, 32, 16)
    got = ssim(x.to(device), y.to(device))
    assert got.device.type == device
    np.testing.assert_allclose(got.cpu().numpy(), ssim(x, y).numpy(), atol=1e-6)
    got = mask_ssim(x.to(device), y.to(device), mask.to(device))
    np.testing.assert_allclose(got.cpu().numpy(), ssim(x, y).numpy(), atol=1e-6)


def test_mask_ssim_matches_masked_skimage():
    gen, ref = images("structured", "uint8", (2, 3, 40, 24), seed=4)
    rng = np.random.default_rng(4)
    mask = (rng.random((2, 40, 24)) > 0.4).astype(np.float64)
    # The original: both images times the mask, the range from the masked generated image.
    expected = [skimage_ssim(g * m, r * m) for g, r, m in zip(gen, ref, mask)]
    x, y, m = torch.from_numpy(gen), torch.from_numpy(ref), torch.from_numpy(mask)
    for shaped in (m, m[:, None], m[:, None].expand(2, 3, 40, 24)):
        np.testing.assert_allclose(mask_ssim(x, y, shaped).numpy(), expected, atol=1e-10)


def test_l1_and_psnr():
    gen, ref = images("random", "uint8", (2, 3, 20, 10), seed=5)
    x, y = torch.from_numpy(gen), torch.from_numpy(ref)
    # The original L1 score: images scaled to [-1, 1].
    expected = [np.abs(2 * (r / 255.0 - 0.5) - 2 * (g / 255.0 - 0.5)).mean() for g, r in zip(gen, ref)]
    np.testing.assert_allclose(l1(x / 127.5 - 1, y / 127.5 - 1).numpy(), expected, rtol=1e-12)
    expected = [peak_signal_noise_ratio(r, g, data_range=255) for g, r in zip(gen, ref)]
    np.testing.assert_allclose(psnr(x, y, 255).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(psnr(x, y, torch.tensor([255.0, 255.0])).numpy(), expected, rtol=1e-12)
    assert torch.isinf(psnr(x, x, 255)).all()


def test_validation_names_the_argument():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="x must have shape"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="y must have the shape"):
        ssim(x, x[:, :2])
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        l1(x, x.numpy())
    with pytest.raises(ValueError, match="win_size"):
        ssim(x, x, win_size=4)
    with pytest.raises(ValueError, match="win_size"):
        ssim(x[..., :8], x[..., :8])
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, data_range=-1.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, data_range=torch.ones(3))
    with pytest.raises(ValueError, match="sigma"):
        ssim(x, x, sigma=0)
    with pytest.raises(ValueError, match="mask must have shape"):
        mask_ssim(x, x, torch.ones(2, 2, 16, 16))
    with pytest.raises(ValueError, match="mask must have shape"):
        mask_ssim(x, x, torch.ones(2, 16, 15))
    with pytest.raises(TypeError, match="data_range"):
        psnr(x, x, None)
    with pytest.raises(ValueError, match="keypoints"):
        body_mask(np.zeros((17, 2)), (8, 8))


def random_poses(rng, count, size):
    """(count, 18, 2) integer (x, y) poses inside `size`, some joints missing, one with a
    vertical torso side and coincident ears (edge cases of the mask)."""
    h, w = size
    xy = np.stack([rng.integers(0, w, (count, 18)), rng.integers(0, h, (count, 18))], axis=-1).astype(float)
    xy[rng.random((count, 18)) < 0.15] = -1
    xy[0, 8], xy[0, 2] = (20, 60), (20, 30)  # Rhip directly below Rsho: an axis-aligned rectangle
    xy[0, 16] = xy[0, 17] = (30, 10)
    return xy


def test_body_mask_matches_original():
    rng = np.random.default_rng(6)
    limbs = {tuple(limb) for limb in (np.array(ORIGINAL_LIMBS) - 1).tolist()}
    assert set(BODY_MASK_LIMBS) == limbs and len(BODY_MASK_LIMBS) == len(limbs)
    for size, scale in (((128, 64), 1.0), ((100, 80), 0.77)):  # integer, then fractional joints
        xy = random_poses(rng, 6, size) * scale
        xy[xy < 0] = -1
        got = body_mask(torch.from_numpy(xy), size)
        assert got.shape == (6, *size) and got.dtype == torch.float32
        for pose, mask in zip(xy, got):
            expected = produce_ma_mask(pose[:, ::-1].copy(), size)
            np.testing.assert_array_equal(mask.numpy().astype(bool), expected)
        np.testing.assert_array_equal(body_mask(torch.from_numpy(xy[1]), size).numpy(), got[1].numpy())
    assert body_mask(np.full((18, 2), -1.0), (8, 8)).sum() == 0
