"""Separable Gaussian filtering shared by the metrics (SSIM's window, NIQE's local normalisation)."""

import numpy as np


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)``, normalised to sum 1.

    The normalised 2-D window is the outer product of this vector with itself (fspecial's cut-off at
    ``eps * max`` removes nothing for the windows used here).
    """
    x = np.arange(size) - (size - 1) / 2
    taps = np.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def filter_valid(img: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of an HxW or HxWxC array (MATLAB ``filter2(window, img, 'valid')``)."""
    # The window is symmetric, so correlation and convolution agree. One vectorised pass per tap.
    n = len(taps)
    h, w = img.shape[:2]
    rows = sum(t * img[k : h - n + 1 + k] for k, t in enumerate(taps))
    return sum(t * rows[:, k : w - n + 1 + k] for k, t in enumerate(taps))
