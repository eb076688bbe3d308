"""Specification of NIQE in ``esrgan.metrics.niqe`` (the MATLAB release's computequality.m with 96x96 blocks).

The reference values below were computed independently with the NIQE of BasicSR 1.4.2 (basicsr/metrics/niqe.py,
which reports agreeing with MATLAB R2021a to 4 decimals on Set14's baboon), run in float64 as MATLAB computes
(BasicSR itself works in float32, which moves NIQE by up to 0.04) on the same 8-bit luma of the bundled demo
photos. Images with perfectly flat areas are left out of that comparison: there NIQE depends on floating-point
rounding noise (see ``test_flat_neighbourhoods_have_exactly_zero_coefficients``).
"""

import hashlib
import json
import math

import numpy as np
import pytest

from esrgan.data.imresize import imresize
from esrgan.metrics import calculate_niqe
from esrgan.metrics.niqe import PRISTINE_MODEL, _aggd, _block_features, _mscn, niqe_features, niqe_luma, pristine_model
from esrgan.options import REPO_ROOT
from esrgan.utils.image import read_image, to_uint8

DEMO = REPO_ROOT / "datasets" / "demo"

# (image, channel, crop_border) -> NIQE of the independent implementation (float64).
REFERENCE = {
    ("train/chelsea", "y", 0): 2.5387843380414474,
    ("train/chelsea", "y", 4): 2.6294113207244987,
    ("train/chelsea", "gray", 0): 2.462756450965805,
    ("train/chelsea", "gray", 4): 2.5489193485490933,
    ("train/hubble_deep_field", "y", 0): 7.799790780302431,
    ("train/hubble_deep_field", "y", 4): 7.830950950445615,
    ("train/hubble_deep_field", "gray", 0): 7.6323806712668505,
    ("train/hubble_deep_field", "gray", 4): 7.678524727485585,
    ("train/coffee", "gray", 0): 4.058462007488338,
    ("train/coffee", "gray", 4): 4.007203785729205,
    ("val/brick", "y", 0): 13.678383211623133,
    ("val/brick", "gray", 0): 13.127976119719651,
    ("val/grass", "y", 0): 7.010126066372922,
    ("val/grass", "gray", 0): 7.149492259663205,
    ("val/gravel", "y", 0): 4.787452518539564,
    ("val/gravel", "gray", 0): 4.857506243781678,
}


def demo(name: str) -> np.ndarray:
    return to_uint8(read_image(DEMO / f"{name}.png"))


@pytest.mark.parametrize(("image", "channel", "crop"), list(REFERENCE))
def test_niqe_equals_an_independent_float64_implementation(image, channel, crop):
    assert calculate_niqe(demo(image), crop, channel) == pytest.approx(REFERENCE[image, channel, crop], abs=1e-9)


# Photos with perfectly flat areas, scored by BasicSR 1.4.2's own calculate_niqe (float32, crop_border 4,
# convert_to 'y'): here the two differ only by the rounding noise of the flat neighbourhoods, which this module
# sets to exactly 0 and BasicSR keeps.
BASICSR_FLAT = {"train/astronaut": 2.991296048454476, "train/retina": 5.9612909624839565,
                "train/immunohistochemistry": 3.2973041582569156}


@pytest.mark.parametrize("image", list(BASICSR_FLAT))
def test_on_flat_areas_niqe_stays_within_rounding_noise_of_basicsr(image):
    assert calculate_niqe(demo(image), 4, "y") == pytest.approx(BASICSR_FLAT[image], abs=2e-3)


# ------------------------------------------------------------------------------------------------ the luma
def test_luma_is_matlabs_uint8_rgb2ycbcr_and_rgb2gray():
    pixels = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, rounded: 235, 16, 81.481 -> 81, 144.553 -> 145, 40.966 -> 41
    assert niqe_luma(pixels, "y").tolist() == [[235, 16, 81, 145, 41]]
    # rgb2gray: 0.298936 R + 0.587043 G + 0.114021 B, rounded: 76.2 -> 76, 149.7 -> 150, 29.1 -> 29
    assert niqe_luma(pixels, "gray").tolist() == [[255, 0, 76, 150, 29]]


def test_an_exact_tie_rounds_as_matlabs_double_arithmetic_does():
    # 16 + (65.481 * 220 + 128.553 * 208 + 24.966 * 216) / 255 = 198.5 exactly, but MATLAB's term-by-term double
    # evaluation gives 198.49999999999997, which uint8 conversion rounds down.
    assert niqe_luma(np.array([[[220, 208, 216]]], np.uint8), "y").tolist() == [[198]]


def test_gray_images_are_scored_as_they_are_and_float_images_as_their_8_bit_values():
    gray = demo("train/chelsea")[:, :, 1]
    assert np.array_equal(niqe_luma(gray), gray.astype(np.float64))
    rgb = demo("train/chelsea")
    assert calculate_niqe(rgb.astype(np.float32) / 255, 4) == calculate_niqe(rgb, 4)


# ---------------------------------------------------------------------------------------- the algorithm
def estimate_aggd_by_hand(vec: np.ndarray) -> tuple[float, float, float]:
    """estimateaggdparam.m line by line, one value at a time."""
    gam = [(200 + k) / 1000 for k in range(9801)]
    r_gam = [math.gamma(2 / g) ** 2 / (math.gamma(1 / g) * math.gamma(3 / g)) for g in gam]
    left = [v for v in vec if v < 0]
    right = [v for v in vec if v > 0]
    leftstd = math.sqrt(sum(v * v for v in left) / len(left))
    rightstd = math.sqrt(sum(v * v for v in right) / len(right))
    gammahat = leftstd / rightstd
    rhat = (sum(abs(v) for v in vec) / len(vec)) ** 2 / (sum(v * v for v in vec) / len(vec))
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    best = min(range(len(gam)), key=lambda k: (r_gam[k] - rhatnorm) ** 2)
    alpha = gam[best]
    factor = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, leftstd * factor, rightstd * factor


def test_the_vectorised_aggd_fit_equals_estimateaggdparam_written_out():
    rng = np.random.default_rng(0)
    # Laplacian-like, skewed and near-Gaussian samples.
    rows = np.stack([rng.laplace(size=300), rng.gamma(2.0, size=300) - 1.5, rng.normal(size=300)])
    shape, left, right = _aggd(rows)
    for k, row in enumerate(rows):
        alpha, beta_l, beta_r = estimate_aggd_by_hand(row)
        assert (round(0.2 + shape[k] / 1000, 3), left[k], right[k]) == pytest.approx((alpha, beta_l, beta_r),
                                                                                      rel=1e-12)


def test_mscn_uses_a_7x7_gaussian_with_sigma_7_6_and_replicated_borders():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (12, 10)).astype(np.float64)
    x = np.arange(7) - 3
    window = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    window /= window.sum()
    padded = np.pad(img, 3, mode="edge")
    expected = np.empty_like(img)
    for i in range(12):
        for j in range(10):
            patch = padded[i : i + 7, j : j + 7]
            mu = (window * patch).sum()
            sigma = math.sqrt(abs((window * patch * patch).sum() - mu * mu))
            expected[i, j] = (img[i, j] - mu) / (sigma + 1)
    np.testing.assert_allclose(_mscn(img), expected, rtol=0, atol=1e-12)


def test_flat_neighbourhoods_have_exactly_zero_coefficients():
    # I - mu is rounding noise there; its signs would decide the AGGD fits' sample counts.
    img = np.full((20, 20), 117.0)
    img[:, 12:] = 40.0
    coefficients = _mscn(img)
    assert np.all(coefficients[:, :8] == 0) and np.all(coefficients[:, 16:] == 0)
    assert np.all(np.abs(coefficients[:, 9:15]) > 0.01)


def test_features_are_18_per_block_at_each_of_two_scales_in_row_major_block_order():
    luma = niqe_luma(demo("train/rocket"))[: 2 * 96, : 3 * 96]
    features = niqe_features(luma)
    assert features.shape == (6, 36)
    # Block (0, 1): coefficients of the whole image cut to the block, then of the image at half resolution
    # (MATLAB's bicubic imresize 0.5) cut to the matching 48x48 block.
    full = _mscn(luma)[None, :96, 96:192]
    half = _mscn(imresize(luma, scale=0.5))[None, :48, 48:96]
    np.testing.assert_array_equal(features[1], np.concatenate([_block_features(full), _block_features(half)], 1)[0])


def swap(features: np.ndarray, a: int, b: int) -> np.ndarray:
    """Exchange the 4 features of pair orientations a and b (0 horizontal, 1 vertical, 2 main, 3 anti-diagonal)."""
    order = np.arange(36)
    for base in (0, 18):
        ia, ib = base + 2 + 4 * a, base + 2 + 4 * b
        order[ia : ia + 4], order[ib : ib + 4] = np.arange(ib, ib + 4), np.arange(ia, ia + 4)
    return features[:, order]


@pytest.mark.parametrize(("transform", "orientations"), [
    (lambda x: x[:, ::-1], (2, 3)),      # a mirror exchanges the two diagonals
    (lambda x: x[::-1, :], (2, 3)),
    (lambda x: x.T, (0, 1)),             # a transposition exchanges horizontal and vertical neighbours
])
def test_mirrors_and_transposes_permute_the_pair_orientations_and_nothing_else(transform, orientations):
    luma = niqe_luma(demo("train/rocket"))[: 3 * 96, : 4 * 96]
    ours = niqe_features(luma)
    moved = swap(niqe_features(np.ascontiguousarray(transform(luma))), *orientations)
    # Blocks come in another order: compare the Gaussian that NIQE fits to them.
    np.testing.assert_allclose(moved.mean(axis=0), ours.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.cov(moved, rowvar=False), np.cov(ours, rowvar=False), rtol=1e-7, atol=1e-12)


def test_a_half_turn_leaves_niqe_unchanged():
    img = demo("train/rocket")[: 3 * 96 + 8, : 4 * 96 + 8]  # whole blocks once 4 pixels are cropped
    assert calculate_niqe(img[::-1, ::-1], 4) == pytest.approx(calculate_niqe(img, 4), abs=1e-9)


# ------------------------------------------------------------------------------------------ what it means
def test_a_bicubic_upscale_scores_worse_than_the_photo_and_blur_worse_still():
    photo = demo("train/astronaut")
    lr = imresize(photo, scale=0.25)
    bicubic = imresize(lr, scale=4.0)
    smoother = imresize(imresize(photo, scale=0.125), scale=8.0)
    scores = [calculate_niqe(img, 4) for img in (photo, bicubic, smoother)]
    assert scores[0] < scores[1] < scores[2]
    assert scores[1] - scores[0] > 2


def test_noise_raises_niqe():
    photo = demo("train/chelsea")
    noisy = np.clip(photo + np.random.default_rng(2).normal(0, 20, photo.shape), 0, 255).astype(np.uint8)
    assert calculate_niqe(noisy, 4) > calculate_niqe(photo, 4) + 2


def test_the_pristine_model_is_the_releases_36_dimensional_gaussian():
    mu, cov = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    np.testing.assert_array_equal(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0
    # First and last entries of mu_prisparam in modelparameters.mat, and a digest of every float64 of mu and cov
    # (the same as of the copy in BasicSR 1.4.2's niqe_pris_params.npz).
    assert mu[0] == pytest.approx(2.60131368, abs=1e-8) and mu[35] == pytest.approx(0.18677778, abs=1e-8)
    digest = hashlib.sha256(mu.tobytes() + cov.tobytes()).hexdigest()
    assert digest == "f6284a2b53fd40bbc960472b76ec55b67a299a0270294b804c847e99b8cc1e30"
    assert "niqe_release" in json.loads(PRISTINE_MODEL.read_text(encoding="utf-8"))["source"]


# ------------------------------------------------------------------------------------------------- errors
def test_fewer_than_two_blocks_is_an_error_not_a_number():
    with pytest.raises(ValueError, match=r"at least two 96x96 blocks.*184x184 image \(after cropping\) holds 1"):
        calculate_niqe(demo("val/brick"), 4)


def test_a_flat_block_gets_shape_0_2_and_nan_scales_and_the_gaussian_uses_nanmean_and_complete_rows():
    luma = niqe_luma(demo("train/chelsea"))[:192, :192].copy()
    luma[90:, 90:] = 128.0  # block 3 and the 7x7 windows around its pixels are flat at full resolution
    features = niqe_features(luma)
    shapes = [0, 2, 6, 10, 14]  # the AGGD shape of the coefficients and of each neighbour product
    # estimateaggdparam on all-zero coefficients: no negative or positive values, NaN ratio, MATLAB's min picks
    # the first candidate shape.
    assert features[3, shapes].tolist() == [0.2] * 5
    assert np.isnan(np.delete(features[3, :18], shapes)).all() and np.isfinite(features[:3]).all()
    mu_p, cov_p = pristine_model()
    mu = np.nanmean(features, axis=0)  # nanmean: block 3's shapes count, its NaN scales do not
    cov = np.cov(features[:3], rowvar=False)  # nancov: complete rows only
    expected = math.sqrt((mu_p - mu) @ np.linalg.pinv((cov_p + cov) / 2) @ (mu_p - mu))
    assert calculate_niqe(luma.astype(np.uint8), 0) == pytest.approx(expected, rel=1e-12)


def test_a_flat_image_has_no_niqe():
    assert math.isnan(calculate_niqe(np.full((192, 192, 3), 128, np.uint8), 0))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="channel must be 'y' or 'gray'"):
        calculate_niqe(demo("val/brick"), 0, "lab")
    with pytest.raises(TypeError, match="uint8 image or a float image"):
        calculate_niqe(np.zeros((192, 192), np.int32), 0)
    with pytest.raises(ValueError, match="crop_border must be non-negative"):
        calculate_niqe(demo("val/brick"), -1)
