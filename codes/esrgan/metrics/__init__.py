"""Image quality metrics used to evaluate super-resolution results."""

from esrgan.metrics.psnr_ssim import calculate_psnr, calculate_ssim, rgb_to_y

__all__ = ["calculate_psnr", "calculate_ssim", "rgb_to_y"]
