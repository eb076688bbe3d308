"""Image quality metrics used to evaluate super-resolution results."""

from esrgan.metrics.niqe import calculate_niqe
from esrgan.metrics.perceptual_index import perceptual_index, read_ma_scores
from esrgan.metrics.psnr_ssim import calculate_psnr, calculate_ssim, rgb_to_y

__all__ = ["calculate_niqe", "calculate_psnr", "calculate_ssim", "perceptual_index", "read_ma_scores", "rgb_to_y"]
