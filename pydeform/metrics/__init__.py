"""pydeform.metrics: the image metrics of pose-guided person image generation, in torch
(batched, any device, differentiable where it makes sense).

- `ssim(generated, reference)`: mean SSIM with a Gaussian window, per image.
- `mask_ssim(generated, reference, mask)`: SSIM of both images times a body mask.
- `body_mask(target_keypoints, size)`: the mask of the original mask-SSIM.
- `l1`, `psnr`: per-image mean absolute difference and peak signal-to-noise ratio.
- `pckh`, `keypoint_error`: pose metrics of detected keypoints against the target pose
  (`pydeform.metrics.keypoints`; the detector itself is not part of pydeform yet).

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
from pydeform.metrics.image import BODY_MASK_LIMBS, body_mask, l1, mask_ssim, psnr, ssim
from pydeform.metrics.keypoints import keypoint_error, pckh

__all__ = ["BODY_MASK_LIMBS", "body_mask", "keypoint_error", "l1", "mask_ssim", "pckh", "psnr", "ssim"]
