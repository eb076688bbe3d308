"""Specification of the PSNR/SSIM conventions in ``esrgan.metrics``.

Luma follows MATLAB's rgb2ycbcr: Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1]. For
a gray pixel (v, v, v) in 0..255 this is Y = 16 + v * 219 / 255, because the three weights sum to 219.
"""

import math
import re
from collections.abc import Callable

import numpy as np
import pytest

from esrgan.metrics import calculate_psnr, calculate_ssim, rgb_to_y

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def gray_rgb(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def random_rgb(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """ssim_index.m written out with explicit loops over every 11x11 window inside the image."""
    window = np.zeros((11, 11))
    for i in range(11):
        for j in range(11):
            window[i, j] = math.exp(-((i - 5) ** 2 + (j - 5) ** 2) / (2 * 1.5**2))
    window /= window.sum()

    values = []
    for r in range(x.shape[0] - 10):
        for c in range(x.shape[1] - 10):
            px = x[r : r + 11, c : c + 11]
            py = y[r : r + 11, c : c + 11]
            mx = (window * px).sum()
            my = (window * py).sum()
            vx = (window * px * px).sum() - mx * mx
            vy = (window * py * py).sum() - my * my
            cov = (window * px * py).sum() - mx * my
            values.append(((2 * mx * my + C1) * (2 * cov + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    return float(np.mean(values))


@pytest.mark.parametrize(
    ("rgb", "expected_y"),
    [
        ((255, 255, 255), 235.0),
        ((0, 0, 0), 16.0),
        ((255, 0, 0), 16 + 65.481),
        ((0, 255, 0), 16 + 128.553),
        ((0, 0, 255), 16 + 24.966),
    ],
)
def test_rgb_to_y_of_pure_colours(rgb: tuple[int, int, int], expected_y: float) -> None:
    img = np.array([[rgb]], dtype=np.uint8)
    assert rgb_to_y(img)[0, 0] == pytest.approx(expected_y, abs=1e-12)


def test_rgb_to_y_treats_float_in_unit_range_like_uint8() -> None:
    img = random_rgb(0)
    np.testing.assert_allclose(rgb_to_y(img / 255.0), rgb_to_y(img), rtol=0, atol=1e-12)


def test_rgb_to_y_is_float64_and_unrounded() -> None:
    y = rgb_to_y(gray_rgb(100, size=2))
    assert y.dtype == np.float64 and y.shape == (2, 2)
    assert y[0, 0] == pytest.approx(16 + 100 * 219 / 255, abs=1e-12)


def test_psnr_of_gray_images_follows_from_their_luma_difference() -> None:
    d = 10 * 219 / 255  # Y(110) - Y(100)
    expected = 10 * math.log10(255**2 / d**2)
    assert calculate_psnr(gray_rgb(100), gray_rgb(110), crop_border=0) == pytest.approx(expected, abs=1e-10)


def test_psnr_of_a_red_only_difference_uses_the_red_luma_weight() -> None:
    img2 = gray_rgb(100)
    img2[..., 0] += 20
    d = 20 * 65.481 / 255
    expected = 10 * math.log10(255**2 / d**2)
    assert calculate_psnr(gray_rgb(100), img2, crop_border=0) == pytest.approx(expected, abs=1e-10)


def test_psnr_over_all_channels_averages_the_squared_error_over_channels() -> None:
    img2 = gray_rgb(100)
    img2[..., 1] += 5  # squared error 25 in one channel out of three
    expected = 10 * math.log10(255**2 / (25 / 3))
    psnr = calculate_psnr(gray_rgb(100), img2, crop_border=0, test_y_channel=False)
    assert psnr == pytest.approx(expected, abs=1e-10)


def test_psnr_of_float_images_equals_psnr_of_the_uint8_images() -> None:
    a, b = random_rgb(1), random_rgb(2)
    expected = calculate_psnr(a, b, crop_border=2)
    assert calculate_psnr(a / 255.0, b / 255.0, crop_border=2) == pytest.approx(expected, abs=1e-10)


def test_psnr_of_grayscale_images_uses_the_values_themselves() -> None:
    a = np.full((8, 8), 50, dtype=np.uint8)
    b = np.full((8, 8), 53, dtype=np.uint8)
    assert calculate_psnr(a, b, crop_border=0) == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-10)


def test_identical_images_have_infinite_psnr_and_ssim_one() -> None:
    img = random_rgb(3)
    assert calculate_psnr(img, img, crop_border=0) == float("inf")
    assert calculate_ssim(img, img, crop_border=0) == 1.0
    assert calculate_ssim(img, img, crop_border=0, test_y_channel=False) == 1.0


def test_crop_border_removes_errors_confined_to_the_border() -> None:
    img1 = random_rgb(4, size=20)
    img2 = 255 - img1
    img2[4:-4, 4:-4] = img1[4:-4, 4:-4]
    assert calculate_psnr(img1, img2, crop_border=4) == float("inf")
    assert calculate_ssim(img1, img2, crop_border=4) == 1.0
    assert calculate_psnr(img1, img2, crop_border=3) < 20


def test_ssim_of_grayscale_images_matches_a_loop_implementation() -> None:
    a = random_rgb(5)[..., 0]
    b = np.clip(a.astype(int) + np.random.default_rng(6).integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    expected = reference_ssim(a.astype(np.float64), b.astype(np.float64))
    assert calculate_ssim(a, b, crop_border=0) == pytest.approx(expected, abs=1e-10)


def test_ssim_on_y_channel_matches_a_loop_implementation_on_luma() -> None:
    a, b = random_rgb(7), random_rgb(8)
    expected = reference_ssim(rgb_to_y(a), rgb_to_y(b))
    assert calculate_ssim(a, b, crop_border=0) == pytest.approx(expected, abs=1e-10)


def test_ssim_over_channels_is_the_mean_of_per_channel_ssim() -> None:
    a, b = random_rgb(9), random_rgb(10)
    channels = [reference_ssim(a[..., c].astype(np.float64), b[..., c].astype(np.float64)) for c in range(3)]
    ssim = calculate_ssim(a, b, crop_border=0, test_y_channel=False)
    assert ssim == pytest.approx(np.mean(channels), abs=1e-10)


def test_ssim_of_flat_images_is_the_luminance_term() -> None:
    # Both images have zero variance, so the contrast-structure term is C2 / C2 = 1.
    a = np.full((16, 16), 100, dtype=np.uint8)
    b = np.full((16, 16), 110, dtype=np.uint8)
    expected = (2 * 100 * 110 + C1) / (100**2 + 110**2 + C1)
    assert calculate_ssim(a, b, crop_border=0) == pytest.approx(expected, rel=1e-12)


def test_ssim_is_symmetric() -> None:
    a, b = random_rgb(11), random_rgb(12)
    assert calculate_ssim(a, b, crop_border=1) == calculate_ssim(b, a, crop_border=1)


@pytest.mark.parametrize("metric", [calculate_psnr, calculate_ssim])
def test_shape_mismatch_names_both_shapes(metric: Callable[..., float]) -> None:
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    b = np.zeros((16, 17, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=re.escape("(16, 16, 3)") + ".*" + re.escape("(16, 17, 3)")):
        metric(a, b, crop_border=0)


def test_ssim_rejects_images_smaller_than_the_window_after_cropping() -> None:
    img = random_rgb(13, size=16)
    with pytest.raises(ValueError, match="11x11"):
        calculate_ssim(img, img, crop_border=3)
