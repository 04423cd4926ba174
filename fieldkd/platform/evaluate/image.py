"""Image-quality metrics for rendered views: PSNR, SSIM (and LPIPS, re-exported).

Images are (H, W, 3) with values in [0, 1], as torch tensors or numpy arrays.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

from ._arrays import as_image_pair
from .lpips_metric import LpipsMetric, make_lpips

__all__ = ["mse_to_psnr", "psnr", "ssim", "ssim_win_size", "LpipsMetric", "make_lpips"]

# skimage's default uniform window; larger images always use it so numbers stay
# comparable across resolutions.
_DEFAULT_WIN = 7


def mse_to_psnr(mse: float) -> float:
    """PSNR in dB for a mean squared error of images with peak value 1.

    A zero error has no finite PSNR; we return ``inf`` rather than a cap so that
    a perfect reconstruction is never confused with a merely very good one.
    """
    mse = float(mse)
    if mse < 0:
        raise ValueError(f"mse must be >= 0, got {mse}")
    if mse == 0.0:
        return math.inf
    return -10.0 * math.log10(mse)


def psnr(pred, gt) -> float:
    """PSNR (dB) between two (H, W, 3) images in [0, 1]; ``inf`` when identical."""
    p, g = as_image_pair(pred, gt)
    return mse_to_psnr(np.mean((p - g) ** 2))


def ssim_win_size(height: int, width: int) -> int:
    """The SSIM window for an image: 7, or the largest odd size that fits.

    skimage needs an odd window no larger than the image; below 3 pixels the
    sample covariance is undefined, so such images are rejected.
    """
    side = min(height, width, _DEFAULT_WIN)
    if side % 2 == 0:
        side -= 1
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {height}x{width}")
    return side


def ssim(pred, gt) -> float:
    """Mean SSIM over colour channels of two (H, W, 3) images in [0, 1].

    Uses skimage's uniform window (7x7, shrunk for tiny images, see
    ``ssim_win_size``). Published NeRF numbers often use an 11x11 Gaussian
    window, so compare absolute values only with numbers from this function.
    """
    p, g = as_image_pair(pred, gt)
    win = ssim_win_size(p.shape[0], p.shape[1])
    return float(structural_similarity(p, g, win_size=win, channel_axis=-1, data_range=1.0))
