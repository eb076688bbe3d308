"""Specification of the shared inference path (``esrgan.engine.inference``): tiling, precision, channels_last,
the x8 self-ensemble, and reading / writing users' images in the kind they came in."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from esrgan.archs.rrdbnet import RRDBNet
from esrgan.data.imresize import imresize
from esrgan.engine.inference import (
    check_finite,
    read_for_inference,
    super_resolve,
    upscale_alpha,
    write_inference_result,
)

ONE_LEVEL = 1 / 255  # one step of an 8-bit image


def tiny_net(scale: int = 4, seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(3, 3, nf=8, nb=1, gc=4, scale=scale)


@pytest.fixture(scope="module")
def net() -> RRDBNet:
    return tiny_net()


@pytest.fixture(scope="module")
def lq() -> torch.Tensor:
    """A 37x29 batch of one image: a size that no tile size used below divides."""
    return torch.rand(1, 3, 29, 37, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def plain(net, lq) -> torch.Tensor:
    return super_resolve(net, lq, 4)


# ---------------------------------------------------------------------------------------------- basics
def test_output_is_float32_on_the_cpu_scale_times_larger_and_the_mode_is_restored(net):
    net.train()
    out = super_resolve(net, torch.rand(2, 3, 5, 6), 4)
    assert (out.shape, out.dtype, out.device.type) == ((2, 3, 20, 24), torch.float32, "cpu")
    assert net.training
    assert not out.is_inference() and not out.requires_grad
    net.eval()


def test_a_network_in_eval_mode_stays_in_eval_mode():
    """Validation runs the training generator: whatever mode it came in is the one it leaves in."""
    net = tiny_net()
    net.eval()
    super_resolve(net, torch.rand(1, 3, 5, 6), 4)
    assert not net.training


def test_images_of_a_batch_are_super_resolved_independently(net):
    batch = torch.rand(2, 3, 6, 7, generator=torch.Generator().manual_seed(2))
    out = super_resolve(net, batch, 4)
    assert torch.allclose(out[1:], super_resolve(net, batch[1:], 4), atol=1e-6)


def test_a_scale_that_does_not_match_the_network_is_refused(net):
    with pytest.raises(ValueError, match="not x2: the scale does not match the network"):
        super_resolve(net, torch.rand(1, 3, 5, 5), 2)


# -------------------------------------------------------------------------------------------------- tiles
def test_tiles_with_16_pixels_of_overlap_give_the_untiled_result(net, lq, plain):
    tiled = super_resolve(net, lq, 4, tile=16, tile_overlap=16)
    assert tiled.shape == (1, 3, 116, 148)
    assert (tiled - plain).abs().max() <= ONE_LEVEL


def test_tiles_without_overlap_show_seams(net, lq, plain):
    """The control of the test above: the overlap is what removes the seams."""
    tiled = super_resolve(net, lq, 4, tile=16, tile_overlap=0)
    assert (tiled - plain).abs().max() > ONE_LEVEL


class _RecordingNearest(nn.Module):
    """x2 nearest-neighbour upscaling (no reach: tiles join exactly) that records the size of each input."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_each_tile_runs_with_overlap_pixels_of_context_on_every_side_cut_at_the_image_border():
    """A 10x12 image in 4x4 tiles with 3 pixels of overlap: rows 0-3 run with rows 0-6, rows 4-7 with 1-9, rows
    8-9 with 5-9; columns 0-3 with 0-6, 4-7 with 1-10, 8-11 with 5-11."""
    recorder = _RecordingNearest()
    lq = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(3))
    out = super_resolve(recorder, lq, 2, tile=4, tile_overlap=3)
    assert recorder.sizes == [(h, w) for h in (7, 9, 5) for w in (7, 10, 7)]
    assert torch.equal(out, nn.functional.interpolate(lq, scale_factor=2, mode="nearest"))


@pytest.mark.parametrize("tile", [24, 64], ids=lambda t: f"tile{t}")
def test_any_tile_size_works_including_ones_that_do_not_divide_the_image_or_exceed_it(net, lq, plain, tile):
    tiled = super_resolve(net, lq, 4, tile=tile, tile_overlap=16)
    assert tiled.shape == plain.shape
    assert (tiled - plain).abs().max() <= ONE_LEVEL


def test_a_negative_tile_overlap_is_refused(net, lq):
    with pytest.raises(ValueError, match=r"tile \(8\) and tile_overlap \(-1\) must be >= 0"):
        super_resolve(net, lq, 4, tile=8, tile_overlap=-1)


# ---------------------------------------------------------------------------------------------- precision
def test_fp16_on_the_cpu_is_refused_with_what_to_use_instead(net, lq):
    with pytest.raises(ValueError, match=r"precision fp16 needs a CUDA device.*use fp32, or bf16"):
        super_resolve(net, lq, 4, precision="fp16", device="cpu")


def test_bf16_runs_on_the_cpu_close_to_fp32(net, lq, plain):
    out = super_resolve(net, lq, 4, precision="bf16")
    assert out.dtype == torch.float32
    assert not torch.equal(out, plain)  # it did run in bf16
    assert (out - plain).abs().max() < 0.02


def test_a_non_finite_fp16_output_is_an_overflow_error_that_names_the_remedy():
    out = torch.tensor([[0.5, float("inf")]])
    with pytest.raises(ValueError, match=r"overflowed the fp16 range.*Use precision bf16.*or fp32"):
        check_finite(out, "fp16")


def test_a_non_finite_output_in_other_precisions_points_at_the_weights_or_input():
    with pytest.raises(ValueError, match=r"non-finite values \(precision fp32\): the weights or the input"):
        check_finite(torch.tensor([float("nan")]), "fp32")


def test_a_finite_output_passes():
    check_finite(torch.tensor([0.0, 1.0, -3.0]), "fp16")


def test_channels_last_gives_the_default_result(net, lq, plain):
    out = super_resolve(net, lq, 4, channels_last=True)
    assert (out - plain).abs().max() < 1e-5


# ------------------------------------------------------------------------------------------ self-ensemble
@pytest.fixture(scope="module")
def small(lq) -> torch.Tensor:
    """13x11: not square, so the transposed poses have another shape."""
    return lq[:, :, :11, :13]


def test_self_ensemble_of_an_equivariant_network_is_its_plain_output(small):
    nearest = nn.Upsample(scale_factor=4, mode="nearest")
    assert (super_resolve(nearest, small, 4, self_ensemble=True) - super_resolve(nearest, small, 4)).abs().max() < 1e-6


def test_self_ensemble_is_the_mean_of_the_8_rotated_and_mirrored_results(net, small):
    expected = torch.zeros(1, 3, 44, 52)
    with torch.no_grad():
        for mirror in (False, True):
            x = small.flip(-1) if mirror else small
            for quarter_turns in range(4):
                y = net(torch.rot90(x, quarter_turns, dims=(-2, -1)))
                y = torch.rot90(y, -quarter_turns, dims=(-2, -1))
                expected += (y.flip(-1) if mirror else y) / 8
    ensemble = super_resolve(net, small, 4, self_ensemble=True)
    assert (ensemble - expected).abs().max() < 1e-6
    assert (ensemble - super_resolve(net, small, 4)).abs().max() > 1e-4  # the poses do disagree for a real network


def test_self_ensemble_works_with_tiles(net, small):
    ensemble = super_resolve(net, small, 4, self_ensemble=True)
    assert (super_resolve(net, small, 4, self_ensemble=True, tile=8) - ensemble).abs().max() <= ONE_LEVEL


# ------------------------------------------------------------------------------------------- image files
RGB = np.array([[[255, 0, 0], [0, 128, 255]], [[10, 20, 30], [255, 255, 255]]], dtype=np.uint8)  # 2x2, RGB


def bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def sr_of(rgb: np.ndarray) -> np.ndarray:
    """A stand-in x2 SR result: nearest upscaling of the [0, 1] image."""
    return rgb.repeat(2, axis=0).repeat(2, axis=1)


def test_an_8bit_rgb_png_is_read_as_rgb_and_written_back_as_8bit_rgb(tmp_path):
    cv2.imwrite(str(tmp_path / "in.png"), bgr(RGB))
    rgb, info = read_for_inference(tmp_path / "in.png")
    assert rgb.dtype == np.float32 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb, RGB / np.float32(255))
    assert (info.bit_depth, info.gray, info.alpha) == (8, False, None)
    write_inference_result(tmp_path / "out.png", sr_of(rgb), info)
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint8
    np.testing.assert_array_equal(written, bgr(sr_of(RGB)))


def test_a_16bit_png_is_read_by_65535_and_written_back_as_16bit(tmp_path):
    rgb16 = RGB.astype(np.uint16) * 257 + np.array([0, 1, 2], dtype=np.uint16)  # uses all 16 bits
    cv2.imwrite(str(tmp_path / "in.png"), bgr(rgb16))
    rgb, info = read_for_inference(tmp_path / "in.png")
    np.testing.assert_array_equal(rgb, rgb16 / np.float32(65535))
    assert info.bit_depth == 16
    write_inference_result(tmp_path / "out.png", sr_of(rgb), info)
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert (written.dtype, written.shape) == (np.uint16, (4, 4, 3))
    np.testing.assert_array_equal(written, bgr(sr_of(rgb16)))


def test_a_gray_image_is_processed_as_rgb_and_written_back_with_one_channel(tmp_path):
    gray = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), gray)
    rgb, info = read_for_inference(tmp_path / "in.png")
    assert rgb.shape == (2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], gray / np.float32(255))
    assert info.gray and info.alpha is None
    write_inference_result(tmp_path / "out.png", sr_of(rgb), info)
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert (written.dtype, written.shape) == (np.uint8, (4, 4))
    np.testing.assert_array_equal(written, sr_of(gray))


def test_rgba_keeps_its_alpha_upscaled_by_matlab_bicubic_and_is_written_back_as_rgba(tmp_path):
    alpha = np.array([[255, 0], [128, 255]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), np.dstack([bgr(RGB), alpha]))
    rgb, info = read_for_inference(tmp_path / "in.png")
    np.testing.assert_array_equal(rgb, RGB / np.float32(255))
    np.testing.assert_array_equal(info.alpha, alpha / np.float32(255))
    alpha_sr = upscale_alpha(info.alpha, 2)
    write_inference_result(tmp_path / "out.png", sr_of(rgb), info, alpha_sr)
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert (written.dtype, written.shape) == (np.uint8, (4, 4, 4))
    np.testing.assert_array_equal(written[:, :, :3], bgr(sr_of(RGB)))
    np.testing.assert_array_equal(written[:, :, 3], np.round(alpha_sr * 255))


def test_alpha_upscaling_is_imresize_clipped_to_0_1():
    step = np.zeros((4, 4), dtype=np.float32)
    step[:, 2:] = 1.0  # bicubic overshoots on both sides of a step
    expected = imresize(step, scale=4.0)
    assert expected.min() < 0 and expected.max() > 1
    np.testing.assert_array_equal(upscale_alpha(step, 4), np.clip(expected, 0, 1))


def test_the_result_of_an_rgba_input_needs_its_alpha(tmp_path):
    cv2.imwrite(str(tmp_path / "in.png"), np.dstack([bgr(RGB), np.full((2, 2), 255, np.uint8)]))
    rgb, info = read_for_inference(tmp_path / "in.png")
    with pytest.raises(ValueError, match="alpha_sr must be given exactly when the input had an alpha channel"):
        write_inference_result(tmp_path / "out.png", sr_of(rgb), info)


def test_an_alpha_of_another_size_than_the_result_is_refused_naming_both_sizes(tmp_path):
    cv2.imwrite(str(tmp_path / "in.png"), np.dstack([bgr(RGB), np.full((2, 2), 255, np.uint8)]))
    rgb, info = read_for_inference(tmp_path / "in.png")
    with pytest.raises(ValueError, match=r"alpha_sr is \(2, 2\), the image \(4, 4\)"):
        write_inference_result(tmp_path / "out.png", sr_of(rgb), info, info.alpha)
    assert not (tmp_path / "out.png").exists()


def test_a_jpeg_is_read_as_8bit_rgb_and_turned_upright_by_its_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels are to be rotated 90 degrees clockwise
    Image.fromarray(np.zeros((8, 16, 3), dtype=np.uint8)).save(tmp_path / "in.jpg", exif=exif)
    rgb, info = read_for_inference(tmp_path / "in.jpg")
    assert rgb.shape == (16, 8, 3)
    assert (info.bit_depth, info.gray, info.alpha) == (8, False, None)


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n truncated"],
                         ids=["empty", "text", "truncated"])
def test_a_file_that_is_not_an_image_is_an_os_error(tmp_path, content):
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(OSError, match="cannot decode image"):
        read_for_inference(tmp_path / "bad.png")
