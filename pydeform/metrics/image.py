"""Image-comparison metrics of pose-guided generation: SSIM, mask-SSIM, L1, PSNR, and the
body mask of mask-SSIM. All take batches (B, C, H, W) and return one value per image (B,).

See `pydeform.metrics` for which settings the Deformable GAN evaluation used.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pydeform.pose.keypoints import KeypointsLike, _as_keypoint_array, _check_size, _missing

__all__ = ["ssim", "mask_ssim", "l1", "psnr", "body_mask", "BODY_MASK_LIMBS"]

_K1, _K2 = 0.01, 0.03  # SSIM stabilisers of Wang et al. 2004 (skimage's defaults)


def _check_images(x: object, y: object, names: tuple[str, str] = ("x", "y")) -> None:
    """Two real tensors of the same (B, C, H, W) shape on the same device."""
    for value, name in zip((x, y), names):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        if value.dim() != 4:
            raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(value.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"{names[1]} must have the shape of {names[0]} {tuple(x.shape)}, got {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"{names[1]} must be on {names[0]}'s device {x.device}, got {y.device}")


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64; otherwise float32 (integers and fp16/bf16 are
    promoted: 8-bit images and half precision are too coarse for the variance terms)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _data_range(data_range: float | Tensor | None, x: Tensor, name: str = "data_range") -> Tensor:
    """-> (B, 1, 1, 1) of x's dtype. None: x.max() - x.min() per image (detached)."""
    batch = x.shape[0]
    if data_range is None:
        flat = x.detach().flatten(1)
        value = flat.amax(dim=1) - flat.amin(dim=1)
    elif isinstance(data_range, Tensor):
        if data_range.dim() > 1 or data_range.numel() not in (1, batch):
            raise ValueError(f"{name} must be a number or a tensor of shape () or ({batch},), "
                             f"got shape {tuple(data_range.shape)}")
        value = data_range.to(device=x.device, dtype=x.dtype).reshape(-1).expand(batch)
        if not bool(torch.isfinite(value).all() and (value > 0).all()):
            raise ValueError(f"{name} must be positive and finite, got {data_range}")
    elif isinstance(data_range, (int, float, np.integer, np.floating)) and not isinstance(data_range, bool):
        if not (math.isfinite(data_range) and data_range > 0):
            raise ValueError(f"{name} must be positive and finite, got {data_range!r}")
        value = torch.full((batch,), float(data_range), dtype=x.dtype, device=x.device)
    else:
        raise TypeError(f"{name} must be None, a number or a tensor, got {type(data_range).__name__}")
    return value.view(batch, 1, 1, 1)


def _gaussian_window(win_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(win_size,) normalised Gaussian taps at -r..r: scipy.ndimage.gaussian_filter's kernel
    for radius r = (win_size - 1) / 2."""
    r = (win_size - 1) // 2
    taps = torch.arange(-r, r + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (taps / sigma) ** 2)
    return (window / window.sum()).to(dtype=dtype, device=device)


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float | Tensor | None = None,
    sigma: float = 1.5,
    win_size: int = 11,
) -> Tensor:
    """Mean structural similarity of each image pair, with a Gaussian window.

    x: (B, C, H, W), the generated images (their range sets `data_range` when None).
    y: (B, C, H, W), the reference images. Any real dtype; computed in float64 if either is
    float64, float32 otherwise.
    data_range: R in C1 = (0.01 R)^2, C2 = (0.03 R)^2: a positive number, a () or (B,)
    tensor, or None for x.max() - x.min() per image over all channels (treated as a
    constant under autograd). A constant x then gives R = 0 and, as in skimage, a result
    that may be NaN.
    sigma, win_size: the Gaussian's standard deviation and the (odd) number of taps; the
    default pair is skimage's with gaussian_weights=True (win_size = 2 int(3.5 sigma + 0.5)
    + 1).
    Returns (B,): per channel, the SSIM map over the valid region (pixels whose whole window
    lies inside the image, (H - win_size + 1) x (W - win_size + 1)), averaged over that
    region and the channels. Means and (population) variances are window-weighted. Equals
    skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, channel_axis=<C>, data_range=R) for the default window.
    Differentiable in x and y.
    """
    _check_images(x, y)
    if isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer)) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd positive int, got {win_size!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    batch, channels, height, width = x.shape
    if win_size > min(height, width):
        raise ValueError(f"win_size {win_size} is larger than the images' height or width {(height, width)}")
    dtype = _compute_dtype(x, y)
    x, y = x.to(dtype), y.to(dtype)
    r = _data_range(data_range, x)
    c1, c2 = (_K1 * r) ** 2, (_K2 * r) ** 2

    # Second moments from data shifted by each image's mean: the variances are then
    # differences of small numbers, not of ~255^2 ones (float32 cancellation).
    shift_x = x.detach().mean(dim=(1, 2, 3), keepdim=True)
    shift_y = y.detach().mean(dim=(1, 2, 3), keepdim=True)
    xs, ys = x - shift_x, y - shift_y
    stack = torch.cat([x, y, xs * xs, ys * ys, xs * ys], dim=1)  # (B, 5C, H, W)
    window = _gaussian_window(int(win_size), float(sigma), dtype, x.device)
    groups = stack.shape[1]
    # Separable window, no padding: only the valid region, which is what skimage averages.
    filtered = F.conv2d(stack, window.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    filtered = F.conv2d(filtered, window.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    mu_x, mu_y, exx, eyy, exy = filtered.split(channels, dim=1)
    mu_xs, mu_ys = mu_x - shift_x, mu_y - shift_y  # window means of xs, ys
    var_x = exx - mu_xs * mu_xs
    var_y = eyy - mu_ys * mu_ys
    cov = exy - mu_xs * mu_ys
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def _as_mask(mask: object, x: Tensor) -> Tensor:
    """(B, H, W), (B, 1, H, W) or (B, C, H, W) (B may be 1) -> (B|1, 1|C, H, W) of x's dtype."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.is_complex():
        raise TypeError(f"mask must hold real numbers, got dtype {mask.dtype}")
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    batch, channels, height, width = x.shape
    if mask.dim() != 4 or mask.shape[0] not in (1, batch) or mask.shape[1] not in (1, channels) \
            or mask.shape[2:] != (height, width):
        raise ValueError(f"mask must have shape (B, H, W), (B, 1, H, W) or (B, C, H, W) with (B, C, H, W) = "
                         f"{tuple(x.shape)}, got {tuple(mask.shape)}")
    if mask.device != x.device:
        raise ValueError(f"mask must be on x's device {x.device}, got {mask.device}")
    return mask.to(x.dtype)


def mask_ssim(
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    data_range: float | Tensor | None = None,
    sigma: float = 1.5,
    win_size: int = 11,
) -> Tensor:
    """Mask-SSIM (Ma et al. 2017, as evaluated by Siarohin et al. 2018): ssim(x * mask, y * mask).

    x: (B, C, H, W) generated, y: (B, C, H, W) reference. mask: (B, H, W), (B, 1, H, W) or
    (B, C, H, W) (B may be 1), typically `body_mask` of the target pose. data_range None:
    the range of the masked x, as the original (which masked both images first, then called
    SSIM with the masked generated image's range). Returns (B,).
    Masked-out pixels become 0, so the result depends on the images' value range: the
    original masked uint8 images in [0, 255] (0 = black); pass that range to reproduce it.
    """
    _check_images(x, y)
    dtype = _compute_dtype(x, y)
    x, y = x.to(dtype), y.to(dtype)
    mask = _as_mask(mask, x)
    return ssim(x * mask, y * mask, data_range=data_range, sigma=sigma, win_size=win_size)


def l1(x: Tensor, y: Tensor) -> Tensor:
    """Mean absolute difference per image: (B, C, H, W) x2 -> (B,).

    The Deformable GAN's L1 score is this on images in [-1, 1].
    """
    _check_images(x, y)
    dtype = _compute_dtype(x, y)
    return (x.to(dtype) - y.to(dtype)).abs().mean(dim=(1, 2, 3))


def psnr(x: Tensor, y: Tensor, data_range: float | Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image, 10 log10(data_range^2 / MSE), in dB.

    x, y: (B, C, H, W). data_range: positive number or () / (B,) tensor (e.g. 255 for uint8
    images, 2 for [-1, 1]). Returns (B,); identical images give +inf.
    """
    _check_images(x, y)
    if data_range is None:
        raise TypeError("data_range must be given (a number or a tensor), got None")
    dtype = _compute_dtype(x, y)
    x, y = x.to(dtype), y.to(dtype)
    peak = _data_range(data_range, x).view(-1)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(peak * peak / mse)


# The segments of the original mask-SSIM body mask (pose_utils.produce_ma_mask of the
# Deformable GAN code), as COCO-18 joint indices: the skeleton, neck-ears, the hip line,
# the torso sides (hip-shoulder) and the ear-ear line.
BODY_MASK_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (1, 16), (1, 17), (8, 11), (11, 5),
    (8, 2), (16, 17),
)  # fmt: skip


def _in_polygon(xs: np.ndarray, ys: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Pixel centres (x, y) inside a polygon of (x, y) corners, or on its boundary.

    O'Rourke's crossing test with left and right rays (a point whose crossing parities
    differ lies on an edge), the test of skimage.draw.polygon since 0.19, written with the
    same arithmetic so that the masks match it pixel for pixel.
    """
    vertex = np.zeros(np.broadcast(xs, ys).shape, dtype=bool)
    right, left = vertex.copy(), vertex.copy()
    x1, y1 = corners[-1, 0] - xs, corners[-1, 1] - ys
    for cx, cy in corners:
        x0, y0 = cx - xs, cy - ys
        vertex |= (np.abs(x0) < 1e-12) & (np.abs(y0) < 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):  # y0 == y1 never straddles
            crossing = (x0 * y1 - x1 * y0) / (y1 - y0)
        right ^= ((y0 > 0) != (y1 > 0)) & (crossing > 0)
        left ^= ((y0 < 0) != (y1 < 0)) & (crossing < 0)
        x1, y1 = x0, y0
    # Inside: odd right crossings; on an edge: right and left parities differ.
    return vertex | right | left


def body_mask(
    keypoints: KeypointsLike,
    size: tuple[int, int],
    point_radius: float = 4.0,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The body mask of the Deformable GAN's mask-SSIM (their `pose_utils.produce_ma_mask`).

    keypoints: (18, 2) or (B, 18, 2) (x, y) pixels, missing -1 (see `pydeform.pose`).
    size: (H, W). Returns (H, W) or (B, H, W) in {0, 1} of `dtype` on the keypoints' device.
    The union of: for each segment of `BODY_MASK_LIMBS` with both ends present, the
    rectangle of half width `point_radius` around it (pixel centres inside or on its
    boundary); for each present joint, the disk of pixels closer than `point_radius`;
    then a morphological closing with a 5 x 5 square (dilation, then erosion, each over the
    pixels inside the image). A segment of coincident ends adds only its disks.
    This equals the original computed with scikit-image >= 0.19 (draw.polygon, draw.disk,
    morphology.dilation/erosion). The skimage of 2018 left pixel centres lying exactly on
    some rectangle edges out (a half-open polygon rule), so masks of that era can differ
    by such boundary pixels, mostly on axis-aligned limbs.
    """
    xy, batched, device = _as_keypoint_array(keypoints, "keypoints")
    height, width = _check_size(size)
    if isinstance(point_radius, bool) or not isinstance(point_radius, (int, float)) \
            or not math.isfinite(point_radius) or point_radius <= 0:
        raise ValueError(f"point_radius must be a positive number, got {point_radius!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    masks = np.zeros((len(xy), height, width), dtype=bool)

    def window(low: np.ndarray, high: np.ndarray) -> tuple[slice, slice]:
        """The pixels of the (x, y) box [low, high], clipped: each shape is tested only there."""
        x0, y0 = np.maximum(np.floor(low), 0).astype(int)
        x1, y1 = np.ceil(high).astype(int) + 1
        return slice(y0, max(y0, min(y1, height))), slice(x0, max(x0, min(x1, width)))

    for pose, mask in zip(xy, masks):
        missing = _missing(pose)
        for a, b in BODY_MASK_LIMBS:
            if missing[a] or missing[b] or (pose[a] == pose[b]).all():
                continue
            # The original's arithmetic, so that corners agree to the last bit.
            along = pose[a] - pose[b]
            normal = np.array([along[1], -along[0]])
            normal = point_radius * normal / np.linalg.norm(normal)
            corners = np.stack([pose[a] + normal, pose[a] - normal, pose[b] - normal, pose[b] + normal])
            box = window(corners.min(axis=0), corners.max(axis=0))
            mask[box] |= _in_polygon(xs[box], ys[box], corners)
        for x, y in pose[~missing]:
            box = window(np.array([x, y]) - point_radius, np.array([x, y]) + point_radius)
            # skimage.draw.disk's test: strictly inside the circle.
            mask[box] |= ((ys[box] - y) / point_radius) ** 2 + ((xs[box] - x) / point_radius) ** 2 < 1
    # Closing. max_pool2d pads with -inf, so both steps look only at pixels in the image
    # (the same as skimage's default 'reflect' border for a 5 x 5 square).
    closed = torch.from_numpy(masks).to(torch.float32).unsqueeze(1)
    closed = F.max_pool2d(closed, 5, stride=1, padding=2)
    closed = -F.max_pool2d(-closed, 5, stride=1, padding=2)
    out = closed.squeeze(1).to(device=device, dtype=dtype)
    return out if batched else out[0]
