"""pydeform.metrics: the image metrics of pose-guided person image generation, in torch
(batched, any device, differentiable where it makes sense).

- `ssim(generated, reference)`: mean SSIM with a Gaussian window, per image.
- `mask_ssim(generated, reference, mask)`: SSIM of both images times a body mask.
- `body_mask(target_keypoints, size)`: the mask of the original mask-SSIM.
- `l1`, `psnr`: per-image mean absolute difference and peak signal-to-noise ratio.
- `fid`, `kid`, `inception_score`, `FeatureStats`/`feature_stats` (distribution.py), on the
  outputs of `pydeform.nets.InceptionV3FID`; `folder_stats` (cached by content).
- `LPIPS(net="alex"|"vgg")`: LPIPS v0.1.
- `pose_transfer_metrics`: the `patn` and `gfla` evaluation protocols on image folders
  (`pydeform metrics pose-transfer`); `generation_metrics`: FID/IS/LPIPS of generated
  tensors for a model's `test` command, with the reasons for what it skipped.
- `pckh`, `keypoint_error`: pose metrics of detected keypoints against the target pose
  (`pydeform.metrics.keypoints`), with a keypoint detector trained on synthetic images
  (`pydeform.metrics.detector`).

The Deformable GAN evaluation (Siarohin et al., CVPR 2018; `test.py` of their code) scored
each generated image against its target with skimage's
`compare_ssim(reference, generated, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, multichannel=True, data_range=generated.max() - generated.min())`
on uint8 images in [0, 255], averaged over the test pairs. `ssim` matches today's
`skimage.metrics.structural_similarity` with those arguments (channel_axis for
multichannel): a Gaussian window of sigma 1.5 (11 taps), population (co)variances,
C1 = (0.01 R)^2, C2 = (0.03 R)^2 with R the GENERATED image's range (pass the generated
image first: `data_range=None` takes x.max() - x.min() per image), the SSIM map averaged
over the pixels whose window lies inside the image, then over the channels.
Mask-SSIM multiplied both uint8 images by `produce_ma_mask(target keypoints)` (what
`body_mask` computes) and scored them the same way, so the range again comes from the
masked generated image. Their L1 score is the mean absolute difference of images scaled
to [-1, 1] (`l1`). To reproduce their numbers, convert generated images to uint8 as they
did, (255 (x + 1) / 2) truncated, and pass [0, 255] values to `ssim` and `mask_ssim`.
"""
import importlib

# Loaded on first use (PEP 562), so that `pydeform --help` and the command line parser do not
# import torch and scipy.
_EXPORTS = {
    "pydeform.metrics.image": ["BODY_MASK_LIMBS", "body_mask", "l1", "mask_ssim", "psnr", "ssim"],
    "pydeform.metrics.distribution": ["FeatureStats", "feature_stats", "fid", "kid", "inception_score"],
    "pydeform.metrics.lpips": ["LPIPS"],
    "pydeform.metrics.folders": ["folder_stats", "list_images"],
    "pydeform.metrics.protocols": ["generation_metrics", "pose_transfer_metrics"],
    "pydeform.metrics.keypoints": ["keypoint_error", "pckh"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'pydeform.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
