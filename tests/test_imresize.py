"""Specification of the MATLAB-compatible bicubic resize in ``esrgan.data.imresize``.

Expected values are derived here from the kernel definition (Keys' cubic, a = -0.5), independently
of the module: for a downscale by 1/2 with antialiasing, output pixel 1 (1-based) of a length-4 axis
samples the input at u = 1/0.5 + 0.5 * (1 - 1/0.5) = 1.5 with the kernel 0.5 * cubic(0.5 * d), which
is non-zero for |d| < 4, i.e. on the eight taps j = -2..5.
"""

import numpy as np
import pytest

from esrgan.data.imresize import _weight_matrix, bicubic_degrade, imresize, modcrop


def keys_cubic(x: float) -> float:
    """Keys' cubic convolution kernel with a = -0.5, written out from its definition."""
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x <= 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


# The eight taps j = -2..5 of output pixel 1 (distances u - j = 3.5, 2.5, ..., -3.5), in 1/256:
# 0.5 * cubic(1.75) = -3/256, 0.5 * cubic(1.25) = -9/256, 0.5 * cubic(0.75) = 29/256,
# 0.5 * cubic(0.25) = 111/256, then mirrored. They already sum to 1.
HALF_SCALE_TAPS = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256

# Symmetric padding maps taps 0, -1, -2 to pixels 1, 2, 3 and tap 5 to pixel 4, so pixel 1 gets
# 111 + 29, pixel 2 gets 111 - 9, pixel 3 gets 29 - 3 and pixel 4 gets -9 - 3 (in 1/256).
HALF_SCALE_FOLDED = np.array([140, 102, 26, -12]) / 256

RAMP_ROW = np.array([[0.0, 64.0, 128.0, 192.0]])


def test_half_scale_taps_follow_from_the_stretched_kernel_and_fold_at_the_border() -> None:
    u = 1.5
    taps = [0.5 * keys_cubic(0.5 * (u - j)) for j in range(-2, 6)]
    np.testing.assert_array_equal(taps, HALF_SCALE_TAPS)
    # The module's weights for a length-4 axis: output 1 gets the folded taps, output 2 their mirror image.
    np.testing.assert_allclose(_weight_matrix(4, 2, 0.5, antialiasing=True),
                               [HALF_SCALE_FOLDED, HALF_SCALE_FOLDED[::-1]], rtol=0, atol=1e-15)


def test_half_scale_of_a_row_uses_the_mirrored_folded_taps() -> None:
    # Output 1 is HALF_SCALE_FOLDED . row, output 2 its mirror image:
    # (102*64 + 26*128 - 12*192) / 256 = 29.5 and (26*64 + 102*128 + 140*192) / 256 = 162.5.
    assert HALF_SCALE_FOLDED @ RAMP_ROW[0] == 29.5
    np.testing.assert_array_equal(imresize(RAMP_ROW, 0.5), [[29.5, 162.5]])


def test_half_scale_of_4x4_is_separable() -> None:
    # img[r, c] = 4r + c; each axis maps (0, 1, 2, 3) to (118/256, 650/256) = (0.4609375, 2.5390625),
    # so the result is 4 * a_r + a_c.
    img = np.arange(16, dtype=np.float64).reshape(4, 4)
    expected = np.array([[2.3046875, 4.3828125], [10.6171875, 12.6953125]])
    np.testing.assert_allclose(imresize(img, 0.5), expected, rtol=0, atol=1e-12)


def test_without_antialiasing_the_kernel_is_not_stretched() -> None:
    # u = 1.5 with the plain kernel: taps 0..3 get cubic(1.5) = -1/16, cubic(0.5) = 9/16, 9/16, -1/16;
    # tap 0 mirrors onto pixel 1, so the folded weights are (1/2, 9/16, -1/16, 0):
    # 9/16*64 - 1/16*128 = 28 and, mirrored, -1/16*64 + 9/16*128 + 1/2*192 = 164.
    np.testing.assert_array_equal(imresize(RAMP_ROW, 0.5, antialiasing=False), [[28.0, 164.0]])


def test_x2_upscaling_reproduces_a_linear_ramp_away_from_the_borders() -> None:
    # Output pixel k (0-based) samples input position k/2 - 0.25 (0-based); the cubic kernel
    # interpolates linear functions exactly wherever all four taps lie inside the image.
    ramp = np.arange(8, dtype=np.float64)[None, :]
    out = imresize(ramp, 2)
    interior = np.arange(3, 13)
    np.testing.assert_allclose(out[0, interior], interior / 2 - 0.25, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 0.25, 1 / 3, 2, 3, 1.5])
def test_constant_uint8_image_stays_exactly_constant(scale: float) -> None:
    img = np.full((12, 9, 3), 77, dtype=np.uint8)
    out = imresize(img, scale)
    assert out.dtype == np.uint8
    assert np.all(out == 77)


@pytest.mark.parametrize("scale", [0.5, 0.25, 1 / 3, 2, 3, 1.5])
def test_constant_float_image_stays_constant(scale: float) -> None:
    # Weights are normalised in floating point, so equality holds to rounding error only.
    img = np.full((12, 9), 0.3)
    np.testing.assert_allclose(imresize(img, scale), 0.3, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("in_shape", "scale", "out_shape"),
    [
        ((7, 5), 0.5, (4, 3)),
        ((17, 13), 0.25, (5, 4)),
        ((7, 5), 2, (14, 10)),
        ((7, 5), 3, (21, 15)),
        ((9, 9), 1 / 3, (3, 3)),
    ],
)
def test_output_size_is_ceil_of_scaled_input_size(
    in_shape: tuple[int, int], scale: float, out_shape: tuple[int, int]
) -> None:
    assert imresize(np.zeros(in_shape), scale).shape == out_shape


def test_output_shape_sets_each_axis_independently() -> None:
    assert imresize(np.zeros((7, 5, 3)), output_shape=(6, 9)).shape == (6, 9, 3)


@pytest.mark.parametrize("scale", [0.5, 0.25, 2, 3])
def test_resizing_commutes_with_flips_and_transposition(scale: float) -> None:
    img = np.random.default_rng(0).random((8, 12, 3))
    out = imresize(img, scale)
    np.testing.assert_allclose(imresize(img[:, ::-1], scale), out[:, ::-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(imresize(img[::-1], scale), out[::-1], rtol=0, atol=1e-12)
    transposed = imresize(img.transpose(1, 0, 2), scale)
    np.testing.assert_allclose(transposed, out.transpose(1, 0, 2), rtol=0, atol=1e-12)


def test_uint8_rounds_half_away_from_zero() -> None:
    # The float results are 29.5 and 162.5; round-half-to-even would give 162.
    out = imresize(RAMP_ROW.astype(np.uint8), 0.5)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[30, 163]])


def test_integer_images_are_rounded_after_each_axis_like_matlab() -> None:
    # MATLAB's per-axis resampler returns the input class, so the row pass is rounded first.
    # img[i, j] = r_i + r_j with r = (0, 64, 128, 192): the row pass gives 29.5 + r_j and
    # 162.5 + r_j, rounded to 30 + r_j and 163 + r_j; the column pass then gives 30 + 29.5,
    # 30 + 162.5, 163 + 29.5 and 163 + 162.5, rounded up again. Rounding once would give 59, 192, 325.
    r = RAMP_ROW[0]
    img = (r[:, None] + r[None, :]).astype(np.uint16)
    np.testing.assert_array_equal(imresize(img, 0.5), [[60, 193], [193, 326]])


def test_uint8_overshoot_of_a_checkerboard_is_clipped() -> None:
    board = (np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8)
    as_float = imresize(board.astype(np.float64), 2)
    assert as_float.min() < 0 and as_float.max() > 255
    out = imresize(board, 2)
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255


def test_uint16_overshoot_is_clipped_to_its_range() -> None:
    board = (np.indices((8, 8)).sum(axis=0) % 2 * 65535).astype(np.uint16)
    out = imresize(board, 2)
    assert out.dtype == np.uint16
    assert out.min() == 0 and out.max() == 65535


def test_float32_keeps_its_dtype_and_is_not_clipped() -> None:
    board = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.float32)
    out = imresize(board, 2)
    assert out.dtype == np.float32
    assert out.min() < 0 and out.max() > 1


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_channels_are_resized_independently(channels: int) -> None:
    img = np.random.default_rng(1).random((10, 7, channels))
    out = imresize(img, 0.5)
    assert out.shape == (5, 4, channels)
    for c in range(channels):
        np.testing.assert_allclose(out[:, :, c], imresize(img[:, :, c], 0.5), rtol=0, atol=1e-12)


def test_grayscale_image_keeps_two_dimensions() -> None:
    assert imresize(np.zeros((10, 7), dtype=np.uint8), 0.5).shape == (5, 4)


@pytest.mark.parametrize("scale", [0, -0.5, float("nan")])
def test_non_positive_scale_is_rejected(scale: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        imresize(np.zeros((4, 4)), scale)


def test_empty_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        imresize(np.zeros((0, 4)), 0.5)


def test_scale_and_output_shape_are_mutually_exclusive() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4)), 0.5, output_shape=(2, 2))


def test_unsupported_dtype_is_rejected() -> None:
    with pytest.raises(TypeError, match="int32"):
        imresize(np.zeros((4, 4), dtype=np.int32), 0.5)


def test_modcrop_keeps_the_top_left_multiple_of_scale() -> None:
    img = np.arange(17 * 13).reshape(17, 13)
    np.testing.assert_array_equal(modcrop(img, 4), img[:16, :12])


def test_bicubic_degrade_is_imresize_of_the_modcropped_image() -> None:
    img = np.random.default_rng(2).integers(0, 256, (17, 13, 3), dtype=np.uint8)
    lr = bicubic_degrade(img, 4)
    assert lr.shape == (4, 3, 3)
    np.testing.assert_array_equal(lr, imresize(img[:16, :12], 0.25))


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 2.0, 4.0])
def test_torch_resize_equals_the_numpy_float_resize(scale):
    import torch

    from esrgan.data.imresize import imresize_torch

    img = np.random.default_rng(0).random((2, 3, 13, 18))  # NCHW
    expected = np.stack([imresize(im.transpose(1, 2, 0), scale=scale).transpose(2, 0, 1) for im in img])
    got = imresize_torch(torch.from_numpy(img), scale).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_an_integer_image_is_resized_rows_first_on_equal_scales_and_rounded_after_each_axis() -> None:
    """MATLAB resizes the axis of the smaller scale first, rows on a tie, and an integer image is converted back
    to its type after each axis: the order shows in the rounding (columns first gives other pixels here)."""
    img = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    w = _weight_matrix(8, 4, 0.5, True)

    def to_uint8(v: np.ndarray) -> np.ndarray:
        return np.floor(np.clip(v, 0, 255) + 0.5)

    rows_first = to_uint8(to_uint8(w @ img.astype(np.float64)) @ w.T)
    columns_first = to_uint8(w @ to_uint8(img.astype(np.float64) @ w.T))
    assert not np.array_equal(rows_first, columns_first)
    np.testing.assert_array_equal(imresize(img, 0.5), rows_first.astype(np.uint8))

