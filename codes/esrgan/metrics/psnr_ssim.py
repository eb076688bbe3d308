"""PSNR and SSIM with the conventions of the super-resolution literature.

SR papers (ESRGAN's Table 2 among them) report PSNR/SSIM computed in MATLAB on the luminance channel:
``Y = rgb2ycbcr(im2double(img))`` scaled to 0..255, with ``scale`` pixels cropped from every border,
and SSIM from Wang et al.'s reference ``ssim_index.m``. Small deviations from these conventions
(BT.601 full-range luma, rounding Y to integers, padding instead of 'valid' filtering) shift PSNR by
tenths of a dB, so this module follows them literally:

* Y is computed in float64 and is not rounded, in [16, 235] for inputs in [0, 255];
* PSNR uses a peak of 255;
* SSIM uses an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, 'valid'
  filtering (only windows fully inside the image) and the mean of the SSIM map.

Images are RGB (channel order R, G, B), either uint8 in [0, 255] or float in [0, 1].
"""

import math

import numpy as np

from .filters import filter_valid, gaussian_taps

# MATLAB rgb2ycbcr's luma row for R, G, B in [0, 1], producing Y on the 0..255 scale (ITU-R BT.601,
# studio swing: black maps to 16, white to 235).
_Y_OFFSET = 16.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])

_PEAK = 255.0

# Parameters of ssim_index.m (Wang, Bovik, Sheikh, Simoncelli 2004).
_SSIM_WINDOW_SIZE = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * _PEAK) ** 2
_SSIM_C2 = (0.03 * _PEAK) ** 2


class SSIMImageTooSmallError(ValueError):
    """The images (after cropping) are smaller than SSIM's 11x11 window."""


def _to_255(img: np.ndarray) -> np.ndarray:
    """uint8 images as they are, float images in [0, 1] multiplied by 255; float64 result."""
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64) * _PEAK
    raise TypeError(f"expected a uint8 image or a float image in [0, 1], got dtype {img.dtype}")


def _y_from_255(img: np.ndarray) -> np.ndarray:
    """Luma of an HxWx3 RGB image on the 0..255 scale."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {img.shape}")
    return _Y_OFFSET + img @ (_Y_WEIGHTS / _PEAK)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y channel of MATLAB's ``rgb2ycbcr`` on the 0..255 scale, unrounded.

    Args:
        img: HxWx3 RGB image, uint8 in [0, 255] or float in [0, 1].

    Returns:
        float64 HxW array, ``16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1].
    """
    return _y_from_255(_to_255(img))


def _prepare_pair(
    img1: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair and return both as float64 HxWxC arrays on the 0..255 scale, cropped."""
    if img1.shape != img2.shape:
        raise ValueError(f"images must have the same shape, got {img1.shape} and {img2.shape}")
    if img1.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWxC images, got shape {img1.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be non-negative, got {crop_border}")

    pair = []
    for img in (img1, img2):
        img = _to_255(img)
        if img.ndim == 2:
            # A grayscale image already is its own luminance.
            img = img[:, :, None]
        elif test_y_channel and img.shape[2] == 3:
            img = _y_from_255(img)[:, :, None]
        elif test_y_channel and img.shape[2] != 1:
            raise ValueError(f"test_y_channel needs RGB or single-channel images, got shape {img.shape}")
        h, w = img.shape[:2]
        pair.append(img[crop_border : h - crop_border, crop_border : w - crop_border])
    if pair[0].size == 0:
        raise ValueError(f"crop_border {crop_border} removes the whole {img1.shape[:2]} image")
    return pair[0], pair[1]


def calculate_psnr(
    img1: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool = True
) -> float:
    """Peak signal-to-noise ratio in dB with peak 255.

    Args:
        img1, img2: HxWxC RGB (or HxW grayscale) images of the same shape, uint8 in [0, 255] or
            float in [0, 1].
        crop_border: Pixels removed at each border before comparing (usually the SR scale).
        test_y_channel: Compare the Y channel of ``rgb2ycbcr``; otherwise all channels.

    Returns:
        PSNR in dB, ``inf`` for identical images.
    """
    a, b = _prepare_pair(img1, img2, crop_border, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(_PEAK**2 / mse)


def calculate_ssim(
    img1: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool = True
) -> float:
    """Structural similarity as in ``ssim_index.m``, averaged over the SSIM map (and channels).

    Args:
        img1, img2: HxWxC RGB (or HxW grayscale) images of the same shape, uint8 in [0, 255] or
            float in [0, 1]. After cropping both sides must be at least 11 pixels.
        crop_border: Pixels removed at each border before comparing (usually the SR scale).
        test_y_channel: Compare the Y channel of ``rgb2ycbcr``; otherwise the mean SSIM of the channels.

    Returns:
        Mean SSIM, 1.0 for identical images.
    """
    a, b = _prepare_pair(img1, img2, crop_border, test_y_channel)
    if min(a.shape[:2]) < _SSIM_WINDOW_SIZE:
        raise SSIMImageTooSmallError(
            f"SSIM needs images of at least {_SSIM_WINDOW_SIZE}x{_SSIM_WINDOW_SIZE} pixels after "
            f"cropping, got {a.shape[:2]}"
        )

    taps = gaussian_taps(_SSIM_WINDOW_SIZE, _SSIM_SIGMA)
    mu1 = filter_valid(a, taps)
    mu2 = filter_valid(b, taps)
    mu1_sq = mu1 * mu1
    mu2_sq = mu2 * mu2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = filter_valid(a * a, taps) - mu1_sq
    sigma2_sq = filter_valid(b * b, taps) - mu2_sq
    sigma12 = filter_valid(a * b, taps) - mu1_mu2

    ssim_map = ((2 * mu1_mu2 + _SSIM_C1) * (2 * sigma12 + _SSIM_C2)) / (
        (mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2)
    )
    # Every channel's map has the same size, so the overall mean is the mean of the channel means.
    return float(np.mean(ssim_map))
