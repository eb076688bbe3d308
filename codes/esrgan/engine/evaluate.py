"""Scoring SR results the way SR papers do: uint8 images, Y channel, `scale` pixels cropped at the border."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.imresize import imresize
from ..metrics import calculate_psnr, calculate_ssim
from ..utils.image import to_uint8


@dataclass
class Scores:
    psnr: float
    ssim: float


def score(sr: np.ndarray, gt: np.ndarray, crop_border: int) -> Scores:
    """PSNR/SSIM on Y of two uint8 RGB images of the same size."""
    return Scores(calculate_psnr(sr, gt, crop_border), calculate_ssim(sr, gt, crop_border))


def bicubic_upscale(lq: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB bicubic upscaling of the 8-bit LQ image (MATLAB rounds after each axis)."""
    return imresize(to_uint8(lq), scale=float(scale))


def bicubic_score(lq: torch.Tensor, gt: np.ndarray, scale: int) -> Scores:
    """Scores of the bicubic baseline for a CxHxW [0, 1] LQ tensor against its uint8 GT."""
    return score(bicubic_upscale(lq.numpy().transpose(1, 2, 0), scale), gt, crop_border=scale)
