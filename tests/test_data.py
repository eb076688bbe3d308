"""Specification of the paired folder dataset, its augmentation and the image/tensor conversions."""

import os
import random
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from esrgan.data.imresize import imresize
from esrgan.data.paired import PairedImageDataset, augment
from esrgan.utils.image import header_size, img2tensor, read_image, tensor2img, to_uint8, write_image


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8/uint16 array (or a 2-D grayscale one) with OpenCV, which expects BGR."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb if rgb.ndim == 2 else np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


def random_rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def nearest_up(lq: np.ndarray, scale: int) -> np.ndarray:
    return np.kron(lq, np.ones((scale, scale, 1), dtype=lq.dtype))


def as_uint8(t: torch.Tensor) -> np.ndarray:
    """A CxHxW sample tensor of an 8-bit image back to its HxWxC uint8 values."""
    return np.round(t.numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)


def dihedral_poses(img: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations/reflections of a square HxWxC image, built with np.rot90 (independently of `augment`)."""
    return [np.rot90(base, k) for base in (img, img[:, ::-1]) for k in range(4)]


def make_pairs(root: Path, scale: int, lq_shapes: list[tuple[int, int]]) -> tuple[str, str, list[np.ndarray]]:
    """GT = nearest-neighbour upscaling of a random LQ, same file names in GT/ and LQ/."""
    lqs = []
    for i, (h, w) in enumerate(lq_shapes):
        lq = random_rgb(h, w, seed=i)
        write_rgb(root / "LQ" / f"im{i}.png", lq)
        write_rgb(root / "GT" / f"im{i}.png", nearest_up(lq, scale))
        lqs.append(lq)
    return str(root / "GT"), str(root / "LQ"), lqs


# ------------------------------------------------------------------------------------------ training crops
@pytest.mark.parametrize("scale", [2, 4])
def test_training_crops_of_gt_and_lq_are_aligned(tmp_path, scale):
    gt_dir, lq_dir, lqs = make_pairs(tmp_path, scale, [(12, 16), (10, 9), (14, 11)])
    gt_size = 8 * scale
    ds = PairedImageDataset("t", scale, gt_dir, lq_dir, gt_size=gt_size, use_flip=True, use_rot=True)
    random.seed(0)
    for draw in range(60):
        index = draw % len(ds)
        sample = ds[index]
        gt, lq = as_uint8(sample["GT"]), as_uint8(sample["LQ"])
        assert gt.shape == (gt_size, gt_size, 3)
        assert lq.shape == (8, 8, 3)
        np.testing.assert_array_equal(gt, nearest_up(lq, scale))
        # and the LQ patch is a pose of some 8x8 window of its source image
        src = lqs[index]
        windows = [src[y: y + 8, x: x + 8] for y in range(src.shape[0] - 7) for x in range(src.shape[1] - 7)]
        assert any(np.array_equal(lq, pose) for win in windows for pose in dihedral_poses(win))


@pytest.mark.parametrize("replacement, problem", [
    ("lq", "{lq} is too small for GT_size 32: its LQ is 6x5, smaller than 8x8"),
    ("gt", "im1 ({gt} is 32x40, {lq} is 9x10; GT must be 4 x LQ)"),
])
def test_an_image_replaced_during_the_run_by_one_that_does_not_fit_is_named(tmp_path, replacement, problem):
    """The sizes are checked at the start, from the files' headers; a crop of a smaller image was an error of
    random.randrange that named no file."""
    gt_dir, lq_dir, _ = make_pairs(tmp_path, 4, [(12, 16), (10, 9)])
    ds = PairedImageDataset("t", 4, gt_dir, lq_dir, gt_size=32)
    if replacement == "lq":
        write_rgb(tmp_path / "LQ" / "im1.png", random_rgb(5, 6, seed=5))
    else:
        write_rgb(tmp_path / "GT" / "im1.png", random_rgb(40, 32, seed=5))
    assert ds[(0, 1)]["LQ"].shape == (3, 8, 8)
    with pytest.raises(ValueError) as info:
        ds[(1, 1)]
    assert str(info.value) == "dataset t: an image changed since the run started: " + problem.format(
        lq=tmp_path / "LQ" / "im1.png", gt=tmp_path / "GT" / "im1.png")


def lq_patch_counts(tmp_path: Path, use_flip: bool, use_rot: bool, draws: int = 200) -> Counter[bytes]:
    """How often each LQ patch comes, drawn from one 8x8 image cropped to 8x8: only the augmentation can change
    them."""
    gt_dir, lq_dir, _ = make_pairs(tmp_path, 4, [(8, 8)])
    ds = PairedImageDataset("t", 4, gt_dir, lq_dir, gt_size=32, use_flip=use_flip, use_rot=use_rot)
    random.seed(1)
    return Counter(as_uint8(ds[0]["LQ"]).tobytes() for _ in range(draws))


def distinct_lq_patches(tmp_path: Path, use_flip: bool, use_rot: bool) -> set[bytes]:
    return set(lq_patch_counts(tmp_path, use_flip, use_rot))


def test_flips_and_rotations_produce_all_eight_poses_equally_often(tmp_path):
    poses = {np.ascontiguousarray(p).tobytes() for p in dihedral_poses(random_rgb(8, 8, seed=0))}
    assert len(poses) == 8  # the image has no symmetry
    counts = lq_patch_counts(tmp_path, use_flip=True, use_rot=True, draws=800)
    assert set(counts) == poses
    # Three fair coins: 100 draws of each pose expected (binomial standard deviation 9.4; seeded, so fixed: 84 to
    # 121); one coin at 0.4 would make them 80 and 120
    assert all(75 <= n <= 125 for n in counts.values()), sorted(counts.values())


def test_use_flip_alone_gives_horizontal_flips_as_in_the_original_code(tmp_path):
    img = random_rgb(8, 8, seed=0)
    flips = {np.ascontiguousarray(p).tobytes() for p in (img, img[:, ::-1])}
    assert distinct_lq_patches(tmp_path, use_flip=True, use_rot=False) == flips


def test_use_rot_alone_gives_vertical_flips_and_transpositions(tmp_path):
    img = random_rgb(8, 8, seed=0)
    poses = {np.ascontiguousarray(p).tobytes() for p in (img, img[::-1], img.transpose(1, 0, 2),
                                                            img[::-1].transpose(1, 0, 2))}
    assert distinct_lq_patches(tmp_path, use_flip=False, use_rot=True) == poses


def test_without_augmentation_the_patch_is_unchanged(tmp_path):
    assert distinct_lq_patches(tmp_path, use_flip=False, use_rot=False) == {random_rgb(8, 8, seed=0).tobytes()}


# ------------------------------------------------------------------------------------------ augment
LABELLED = np.array([[1, 2, 3], [4, 5, 6]])[:, :, None]


@pytest.mark.parametrize(
    ("hflip", "vflip", "rot90", "expected"),
    [
        (False, False, False, [[1, 2, 3], [4, 5, 6]]),
        (True, False, False, [[3, 2, 1], [6, 5, 4]]),
        (False, True, False, [[4, 5, 6], [1, 2, 3]]),
        (False, False, True, [[1, 4], [2, 5], [3, 6]]),
        (True, True, False, [[6, 5, 4], [3, 2, 1]]),
        (True, False, True, [[3, 6], [2, 5], [1, 4]]),
        (False, True, True, [[4, 1], [5, 2], [6, 3]]),
        (True, True, True, [[6, 3], [5, 2], [4, 1]]),
    ],
)
def test_augment_gives_the_expected_pose(hflip, vflip, rot90, expected):
    (out,) = augment([LABELLED], hflip, vflip, rot90)
    np.testing.assert_array_equal(out[:, :, 0], np.array(expected))


def test_augment_applies_the_same_pose_to_every_image():
    big = nearest_up(LABELLED, 2)
    small, large = augment([LABELLED, big], True, False, True)
    np.testing.assert_array_equal(large, nearest_up(small, 2))


# ------------------------------------------------------------------------------------------ folder checks
def test_gt_images_without_lq_are_listed(tmp_path):
    for name in ("a", "b", "c"):
        write_rgb(tmp_path / "GT" / f"{name}.png", random_rgb(8, 8, seed=0))
    write_rgb(tmp_path / "LQ" / "b.png", random_rgb(2, 2, seed=0))
    with pytest.raises(ValueError, match="2 GT images") as info:
        PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"))
    assert "a, c" in str(info.value)


def test_div2k_named_lq_images_pair_with_their_gt(tmp_path):
    """DIV2K's LR folders name 0801.png's LQ 0801x4.png; an exact name wins where both exist."""
    gt = {name: random_rgb(16, 12, seed=i) for i, name in enumerate(("0801", "0802"))}
    for name, image in gt.items():
        write_rgb(tmp_path / "GT" / f"{name}.png", image)
    lq_0801 = random_rgb(4, 3, seed=7)
    write_rgb(tmp_path / "LQ" / "0801x4.png", lq_0801)
    write_rgb(tmp_path / "LQ" / "0802x4.png", random_rgb(4, 3, seed=8))
    write_rgb(tmp_path / "LQ" / "0802.png", exact := random_rgb(4, 3, seed=9))
    dataset = PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"))
    assert dataset.keys == ["0801", "0802"] and dataset.lq_key == {"0801": "0801x4", "0802": "0802"}
    first, second = dataset[0], dataset[1]
    assert first["name"] == "0801"
    np.testing.assert_array_equal(as_uint8(first["LQ"]), lq_0801)
    np.testing.assert_array_equal(as_uint8(first["GT"]), gt["0801"])
    np.testing.assert_array_equal(as_uint8(second["LQ"]), exact)
    with pytest.raises(ValueError, match=r"no LQ image of the same name \(or DIV2K's <name>x2\) in .*LQ; they are "
                                         r"there as <name>x4: check scale: 0801"):
        PairedImageDataset("t", 2, str(tmp_path / "GT"), str(tmp_path / "LQ"))


def test_a_div2k_style_name_that_is_another_gt_image_is_refused(tmp_path):
    for name in ("a", "ax4"):
        write_rgb(tmp_path / "GT" / f"{name}.png", random_rgb(8, 8, seed=0))
    write_rgb(tmp_path / "LQ" / "ax4.png", random_rgb(2, 2, seed=0))
    with pytest.raises(ValueError, match=r"GT images a in .* their DIV2K-style LQ names <name>x4 are GT images"):
        PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"))


def test_more_than_twenty_missing_lq_images_are_summarised(tmp_path):
    for i in range(25):
        write_rgb(tmp_path / "GT" / f"img{i:02d}.png", random_rgb(4, 4, seed=i))
    (tmp_path / "LQ").mkdir()
    with pytest.raises(ValueError) as info:
        PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"))
    message = str(info.value)
    assert ", ".join(f"img{i:02d}" for i in range(20)) + " ... and 5 more" in message
    assert "img20" not in message


def test_an_image_too_small_for_the_patch_is_named_when_the_dataset_is_built(tmp_path):
    gt_dir, lq_dir, _ = make_pairs(tmp_path, 4, [(6, 7)])
    with pytest.raises(ValueError, match=r"LQ/im0\.png is too small for GT_size 32") as info:
        PairedImageDataset("t", 4, gt_dir, lq_dir, gt_size=32)
    assert "7x6" in str(info.value)


# ------------------------------------------------------------------------------------------ GT only, LQ only
def test_without_lq_folder_lq_is_matlab_bicubic_of_the_modcropped_gt(tmp_path):
    gt = random_rgb(37, 50, seed=3)
    write_rgb(tmp_path / "GT" / "x.png", gt)
    sample = PairedImageDataset("t", 4, str(tmp_path / "GT"), None)[0]
    assert tuple(sample["GT"].shape) == (3, 36, 48)
    assert tuple(sample["LQ"].shape) == (3, 9, 12)
    np.testing.assert_array_equal(as_uint8(sample["GT"]), gt[:36, :48])
    expected_lq = imresize(gt[:36, :48], scale=1 / 4).astype(np.float32) / 255.0
    np.testing.assert_array_equal(sample["LQ"].numpy().transpose(1, 2, 0), expected_lq)


def test_validation_gt_is_cut_to_scale_times_the_lq(tmp_path):
    gt = random_rgb(37, 50, seed=4)
    write_rgb(tmp_path / "GT" / "x.png", gt)
    write_rgb(tmp_path / "LQ" / "x.png", random_rgb(9, 12, seed=5))
    sample = PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"))[0]
    assert tuple(sample["LQ"].shape) == (3, 9, 12)
    np.testing.assert_array_equal(as_uint8(sample["GT"]), gt[:36, :48])


def test_validation_gt_smaller_than_scale_times_lq_names_both_files(tmp_path):
    gt_path = write_rgb(tmp_path / "GT" / "x.png", random_rgb(35, 48, seed=4))
    lq_path = write_rgb(tmp_path / "LQ" / "x.png", random_rgb(9, 12, seed=5))
    with pytest.raises(ValueError) as info:
        PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"))
    assert str(gt_path) in str(info.value)
    assert str(lq_path) in str(info.value)


def test_an_lq_only_dataset_has_no_gt(tmp_path):
    lq = random_rgb(5, 6, seed=6)
    write_rgb(tmp_path / "LQ" / "only.png", lq)
    sample = PairedImageDataset("t", 4, None, str(tmp_path / "LQ"))[0]
    assert "GT" not in sample
    assert sample["name"] == "only"
    np.testing.assert_array_equal(as_uint8(sample["LQ"]), lq)


# ------------------------------------------------------------------------------------------ read_image
def test_read_image_scales_16_bit_by_65535(tmp_path):
    rgb = np.array([[[0, 257, 65535], [32768, 1, 4096]]], dtype=np.uint16)
    img = read_image(write_rgb(tmp_path / "deep.png", rgb))
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img, rgb.astype(np.float32) / 65535.0)


def test_read_image_replicates_grayscale_to_three_channels(tmp_path):
    gray = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    img = read_image(write_rgb(tmp_path / "gray.png", gray))
    assert img.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray.astype(np.float32) / 255.0)


def test_read_image_drops_the_alpha_channel(tmp_path):
    bgra = np.array([[[0, 0, 255, 7], [255, 51, 0, 200]]], dtype=np.uint8)
    path = tmp_path / "alpha.png"
    assert cv2.imwrite(str(path), bgra)
    np.testing.assert_array_equal(read_image(path), np.array([[[1, 0, 0], [0, 0.2, 1]]], dtype=np.float32))


def test_read_image_returns_rgb(tmp_path):
    path = tmp_path / "red.png"
    assert cv2.imwrite(str(path), np.array([[[0, 0, 255]]], dtype=np.uint8))  # OpenCV's BGR red
    np.testing.assert_array_equal(read_image(path), np.array([[[1.0, 0.0, 0.0]]], dtype=np.float32))


def test_read_image_of_a_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes())
    with pytest.raises(OSError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_a_file_name_that_is_not_utf8_is_read_and_written(tmp_path):
    # A Latin-1 name from an old archive: Python holds it with a surrogate escape, on which OpenCV's own file
    # functions crash the process (opencv-python 5.1).
    path = tmp_path / os.fsdecode(b"caf\xe9.png")
    rgb = random_rgb(3, 5, seed=4)
    write_image(path, rgb)
    assert os.listdir(tmp_path) == [os.fsdecode(b"caf\xe9.png")]
    np.testing.assert_array_equal(to_uint8(read_image(path)), rgb)
    assert header_size(path) == (5, 3)


def test_a_float_image_is_refused_naming_its_sample_type(tmp_path):
    path = tmp_path / "float.tiff"
    assert cv2.imwrite(str(path), np.full((4, 4, 3), 0.5, dtype=np.float32))
    with pytest.raises(OSError, match=r"float\.tiff has sample type float32; only 8- and 16-bit"):
        read_image(path)


@pytest.mark.parametrize(("orientation", "upright"), [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                                      (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a))])
def test_a_jpeg_is_turned_upright_by_its_exif_orientation_and_its_size_read_so(tmp_path, orientation, upright):
    """As image viewers, BasicSR's reader and upscale.py show it; the header size agrees with the pixels."""
    stored = np.zeros((16, 24, 3), dtype=np.uint8)
    stored[:8, :8] = 255  # a white top-left corner, where a rotation moves it
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    img = to_uint8(read_image(tmp_path / "photo.jpg"))
    expected = upright(stored)
    assert img.shape == expected.shape and header_size(tmp_path / "photo.jpg") == expected.shape[1::-1]
    assert np.abs(img.astype(int) - expected).mean() < 2


# ------------------------------------------------------------------------------------------ tensor2img
def test_tensor2img_rounds_to_the_nearest_level_and_clamps():
    row = torch.tensor([-0.2, 0.49 / 255, 0.51 / 255, 200.49 / 255, 200.51 / 255, 1.0, 1.3])
    img = tensor2img(row.view(1, 1, -1).repeat(3, 1, 1))
    assert img.dtype == np.uint8
    assert img.shape == (1, 7, 3)
    np.testing.assert_array_equal(img[0, :, 0], [0, 0, 1, 200, 201, 255, 255])


def test_tensor2img_moves_channels_last_and_drops_the_batch_axis():
    t = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1) / 255
    np.testing.assert_array_equal(tensor2img(t), np.array([[[10, 20, 30]]], dtype=np.uint8))


def test_tensor2img_leaves_its_input_unchanged():
    t = torch.tensor([-0.2, 0.5, 1.3]).view(1, 1, 3).repeat(3, 1, 1)
    before = t.clone()
    tensor2img(t)
    assert torch.equal(t, before)


# ------------------------------------------------------------------------------------------ checks at start-up
def test_all_pairing_problems_are_reported_together_before_training(tmp_path):
    write_rgb(tmp_path / "GT" / "wrong_scale.png", random_rgb(40, 40, seed=0))
    write_rgb(tmp_path / "LQ" / "wrong_scale.png", random_rgb(8, 8, seed=0))  # 40 is not 4 x 8
    write_rgb(tmp_path / "GT" / "too_small.png", random_rgb(16, 16, seed=0))
    write_rgb(tmp_path / "LQ" / "too_small.png", random_rgb(4, 4, seed=0))
    write_rgb(tmp_path / "GT" / "fine.png", random_rgb(32, 32, seed=0))
    write_rgb(tmp_path / "LQ" / "fine.png", random_rgb(8, 8, seed=0))
    with pytest.raises(ValueError, match="2 images do not fit") as info:
        PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"), gt_size=32)
    message = str(info.value)
    assert "wrong_scale" in message and "40x40" in message and "8x8" in message
    assert f"{tmp_path / 'LQ' / 'too_small.png'} is too small for GT_size 32" in message
    assert "fine" not in message.replace("do not fit", "")


def test_pairs_all_of_another_scale_say_so_first(tmp_path):
    for i in range(3):
        write_rgb(tmp_path / "GT" / f"{i}.png", random_rgb(32, 32, seed=i))
        write_rgb(tmp_path / "LQ" / f"{i}.png", random_rgb(8, 8, seed=i))  # x4 pairs
    with pytest.raises(ValueError, match=r"^dataset t: 3 images do not fit: every pair is x4, not x2: check scale "
                                         r"\(and the LQ folder\)\. 0 \("):
        PairedImageDataset("t", 2, str(tmp_path / "GT"), str(tmp_path / "LQ"))
    write_rgb(tmp_path / "GT" / "3.png", random_rgb(16, 16, seed=3))
    write_rgb(tmp_path / "LQ" / "3.png", random_rgb(8, 8, seed=3))  # a x2 pair, too small for GT_size 32
    with pytest.raises(ValueError) as info:
        PairedImageDataset("t", 2, str(tmp_path / "GT"), str(tmp_path / "LQ"), gt_size=32)
    assert "4 images do not fit" in str(info.value) and "every pair" not in str(info.value)


def test_missing_unreadable_misfitting_and_too_small_images_are_reported_in_one_error(tmp_path):
    write_rgb(tmp_path / "GT" / "good.png", random_rgb(32, 32, seed=0))
    write_rgb(tmp_path / "LQ" / "good.png", random_rgb(8, 8, seed=0))
    write_rgb(tmp_path / "GT" / "alone.png", random_rgb(32, 32, seed=1))  # no LQ
    write_rgb(tmp_path / "GT" / "broken.png", random_rgb(32, 32, seed=2))
    (tmp_path / "LQ" / "broken.png").write_bytes(b"not an image")
    write_rgb(tmp_path / "GT" / "skewed.png", random_rgb(32, 32, seed=3))
    write_rgb(tmp_path / "LQ" / "skewed.png", random_rgb(8, 7, seed=3))  # not GT / 4
    write_rgb(tmp_path / "GT" / "tiny.png", random_rgb(16, 16, seed=4))
    write_rgb(tmp_path / "LQ" / "tiny.png", random_rgb(4, 4, seed=4))  # fits, but under GT_size 32
    with pytest.raises(ValueError) as info:
        PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"), gt_size=32)
    first, second, third = str(info.value).split("\n  and ")
    assert first.startswith("dataset t: 1 GT images in ") and first.endswith(": alone")
    assert second.startswith("1 images cannot be read: ") and "broken.png" in second
    assert third.startswith("2 images do not fit: skewed (") and "tiny.png is too small for GT_size 32" in third
    assert "good" not in str(info.value)


def test_with_skip_corrupt_a_missing_lq_is_still_reported_next_to_no_readable_images_left(tmp_path):
    for name in ("a", "b"):
        write_rgb(tmp_path / "GT" / f"{name}.png", random_rgb(32, 32, seed=0))
    (tmp_path / "LQ").mkdir()
    (tmp_path / "LQ" / "b.png").write_bytes(b"not an image")
    with pytest.raises(ValueError) as info:
        PairedImageDataset("t", 4, str(tmp_path / "GT"), str(tmp_path / "LQ"), gt_size=32, skip_corrupt=True)
    first, second = str(info.value).split("\n  and ")
    assert first.startswith("dataset t: 1 GT images in ") and first.endswith(": a")
    assert second == "no readable images left"


def test_gt_only_images_too_small_for_the_crop_are_reported(tmp_path):
    write_rgb(tmp_path / "GT" / "tiny.png", random_rgb(30, 60, seed=0))
    with pytest.raises(ValueError, match=r"GT/tiny\.png is too small for GT_size 32: its LQ is 15x7"):
        PairedImageDataset("t", 4, str(tmp_path / "GT"), None, gt_size=32)


def test_unreadable_files_are_listed_at_start_up_or_left_out_on_request(tmp_path):
    write_rgb(tmp_path / "GT" / "good.png", random_rgb(32, 32, seed=0))
    (tmp_path / "GT" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png"):
        PairedImageDataset("t", 4, str(tmp_path / "GT"), None, gt_size=32)
    ds = PairedImageDataset("t", 4, str(tmp_path / "GT"), None, gt_size=32, skip_corrupt=True)
    assert ds.keys == ["good"]


def test_a_broken_symbolic_link_is_named_at_start_up_not_silently_left_out(tmp_path):
    write_rgb(tmp_path / "GT" / "good.png", random_rgb(32, 32, seed=0))
    (tmp_path / "GT" / "moved.png").symlink_to(tmp_path / "elsewhere" / "moved.png")
    with pytest.raises(ValueError, match=r"1 images cannot be read: \S*/GT/moved\.png"):
        PairedImageDataset("t", 4, str(tmp_path / "GT"), None, gt_size=32)


def truncate_pixels(path: Path) -> None:
    """Keep the PNG header (size readable) but cut the pixel data, so only decoding fails."""
    path.write_bytes(path.read_bytes()[:60])


def test_an_image_that_fails_to_decode_during_training_names_file_and_dataset(tmp_path):
    write_rgb(tmp_path / "GT" / "a.png", random_rgb(32, 32, seed=0))
    truncate_pixels(tmp_path / "GT" / "a.png")
    ds = PairedImageDataset("mytrain", 4, str(tmp_path / "GT"), None, gt_size=32)
    with pytest.raises(OSError, match="dataset mytrain") as info:
        ds[0]
    assert "a.png" in str(info.value) and "skip_corrupt" in str(info.value)


def test_skip_corrupt_replaces_an_undecodable_image_and_counts_it_and_reports_it_once(tmp_path, package_log):
    write_rgb(tmp_path / "GT" / "a.png", random_rgb(32, 32, seed=0))
    write_rgb(tmp_path / "GT" / "b.png", random_rgb(32, 32, seed=1))
    truncate_pixels(tmp_path / "GT" / "a.png")
    ds = PairedImageDataset("t", 4, str(tmp_path / "GT"), None, gt_size=32, skip_corrupt=True)
    sample = ds[(0, 123)]
    # a, then a again (the retry is a seeded random pick among all images), then b
    assert sample["name"] == "b" and ds.skipped == 2
    assert ds[(0, 5)]["name"] == "b" and ds.skipped > 2  # the next epoch draws it again
    # (a set: caplog may see a record twice, through the package logger and through the root logger)
    warnings = sorted({r.getMessage() for r in package_log.records if r.levelname == "WARNING"})
    assert len(warnings) == 1 and warnings[0].startswith("dataset t: skipped unreadable image a (1 skipped so far "
                                                         "in this process, each image reported once): ")


def test_skip_corrupt_gives_up_after_eleven_unreadable_images_in_a_row_as_it_says(tmp_path):
    for name in "ab":
        write_rgb(tmp_path / "GT" / f"{name}.png", random_rgb(32, 32, seed=0))
        truncate_pixels(tmp_path / "GT" / f"{name}.png")
    ds = PairedImageDataset("t", 4, str(tmp_path / "GT"), None, gt_size=32, skip_corrupt=True)
    with pytest.raises(OSError, match="dataset t: 11 unreadable images in a row; check the data"):
        ds[(0, 1)]
    assert ds.skipped == 11


def test_a_sample_seed_fixes_crop_and_augmentation(tmp_path):
    gt_dir, lq_dir, _ = make_pairs(tmp_path, 4, [(20, 24)])
    ds = PairedImageDataset("t", 4, gt_dir, lq_dir, gt_size=16, use_flip=True, use_rot=True)
    assert torch.equal(ds[(0, 7)]["LQ"], ds[(0, 7)]["LQ"])
    assert len({ds[(0, seed)]["LQ"].numpy().tobytes() for seed in range(20)}) > 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_lq_made_on_the_fly_is_the_lr_file_generate_lr_writes(tmp_path, scale):
    """A GT-only set degrades as the preparation scripts do, so that training on HR alone and on prepared pairs
    see the same LR images (here with edges to mod-crop)."""
    from esrgan.data.prepare import generate_lr

    write_rgb(tmp_path / "GT" / "x.png", random_rgb(37, 50, seed=scale))
    assert generate_lr(tmp_path / "GT" / "x.png", tmp_path / "LR" / "x.png", scale, png_level=1,
                       hr_mod_out=tmp_path / "HR" / "x.png")
    sample = PairedImageDataset("t", scale, str(tmp_path / "GT"), None)[0]
    assert torch.equal(sample["LQ"], img2tensor(read_image(tmp_path / "LR" / "x.png")))
    assert torch.equal(sample["GT"], img2tensor(read_image(tmp_path / "HR" / "x.png")))


def test_cv2_bicubic_degradation_is_opencvs_bicubic_and_differs_from_matlab(tmp_path):
    gt = random_rgb(32, 32, seed=3)
    write_rgb(tmp_path / "GT" / "x.png", gt)
    matlab = PairedImageDataset("t", 4, str(tmp_path / "GT"), None)[0]["LQ"]
    opencv = PairedImageDataset("t", 4, str(tmp_path / "GT"), None, degradation="cv2_bicubic")[0]["LQ"]
    assert matlab.shape == opencv.shape == (3, 8, 8)
    assert not torch.equal(matlab, opencv)
    assert np.array_equal(tensor2img(opencv), cv2.resize(gt, (8, 8), interpolation=cv2.INTER_CUBIC))


def test_on_the_fly_lq_of_a_16_bit_gt_rounds_it_to_8_bits():
    """0.002 of a 16-bit GT is 0.51 of 255: the LQ is 1/255 (rounded), not 0."""
    from esrgan.data.paired import bicubic_lq

    lq = bicubic_lq(np.full((8, 8, 3), 0.002, np.float32), 2)
    assert lq.shape == (4, 4, 3) and np.all(lq == np.float32(1 / 255))


def test_an_image_over_pils_pixel_limit_is_sized_from_its_header(tmp_path, monkeypatch):
    """PIL refuses to open a header of more pixels than twice Image.MAX_IMAGE_PIXELS (its guard against decoding
    huge images); OpenCV decodes them, so the header readers lift the limit for the header and put it back."""
    from PIL import Image

    from esrgan.data.sources import FolderSource
    from esrgan.utils.image import header_size

    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((40, 30, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((4, 3, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1,200 pixels is over twice the limit
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "big.png")
    assert header_size(tmp_path / "big.png") == (30, 40) and Image.MAX_IMAGE_PIXELS == 500
    assert FolderSource(str(tmp_path)).sizes() == {"big": (40, 30), "small": (4, 3)}


def test_validation_leaves_out_an_unreadable_image_instead_of_scoring_another_twice(tmp_path):
    from esrgan.engine.distributed import World
    from esrgan.engine.trainer import _own_share

    for i, name in enumerate("abc"):
        write_rgb(tmp_path / "GT" / f"{name}.png", random_rgb(32, 32, seed=i))
    truncate_pixels(tmp_path / "GT" / "b.png")
    ds = PairedImageDataset("val", 4, str(tmp_path / "GT"), None, skip_corrupt=True)
    assert [(i, sample["name"]) for i, sample in _own_share(ds, World())] == [(0, "a"), (2, "c")]


def test_a_validation_set_with_no_readable_image_stops_training_with_its_name(tmp_path):
    from esrgan.engine.distributed import World
    from esrgan.engine.evaluate import Evaluator
    from esrgan.engine.trainer import bicubic_baseline

    for i, name in enumerate("ab"):
        write_rgb(tmp_path / "GT" / f"{name}.png", random_rgb(32, 32, seed=i))
        truncate_pixels(tmp_path / "GT" / f"{name}.png")
    ds = PairedImageDataset("myval", 4, str(tmp_path / "GT"), None, skip_corrupt=True)
    with pytest.raises(ValueError) as info:
        bicubic_baseline(ds, Evaluator(["psnr"], 4), 4, World())
    assert str(info.value) == ("dataset myval: none of its 2 images could be read (skip_corrupt left each out, see "
                               "the warnings above); check the data")
    assert ds.skipped == 2


def test_whole_image_is_the_image_itself_or_none_when_unreadable(tmp_path):
    write_rgb(tmp_path / "GT" / "a.png", random_rgb(32, 32, seed=0))
    write_rgb(tmp_path / "GT" / "b.png", random_rgb(32, 32, seed=1))
    truncate_pixels(tmp_path / "GT" / "a.png")
    ds = PairedImageDataset("t", 4, str(tmp_path / "GT"), None, skip_corrupt=True)
    assert ds.whole_image(0) is None and ds.skipped == 1
    sample = ds.whole_image(1)
    assert sample["name"] == "b" and tuple(sample["GT"].shape) == (3, 32, 32) and tuple(sample["LQ"].shape) == (3, 8, 8)
    strict = PairedImageDataset("t", 4, str(tmp_path / "GT"), None)
    with pytest.raises(OSError, match=r"GT/a\.png: .*\(set skip_corrupt: true"):
        strict.whole_image(0)


def test_a_whole_image_set_names_images_too_small_to_score_before_anything_runs(tmp_path):
    write_rgb(tmp_path / "GT" / "ok.png", random_rgb(12, 16, seed=0))  # LQ 3x4 at x4
    write_rgb(tmp_path / "GT" / "tiny.png", random_rgb(3, 3, seed=1))  # LQ 0x0
    write_rgb(tmp_path / "GT" / "thin.png", random_rgb(8, 192, seed=2))  # LQ 48x2: nothing left after cropping
    with pytest.raises(ValueError) as info:
        PairedImageDataset("val", 4, str(tmp_path / "GT"), None)
    message = str(info.value)
    assert "2 images do not fit" in message and message.count("is too small to score") == 2
    assert "thin is too small to score: its GT is 192x8, so its LQ is 48x2" in message
    assert "tiny is too small to score: its GT is 3x3, so its LQ is 0x0" in message
    assert "it needs an LQ of at least 3x3" in message
    # A set whose metrics need no GT (NIQE only: n/a for small images) needs only a non-empty LQ.
    with pytest.raises(ValueError, match=r"1 images do not fit: tiny is smaller than the scale: its GT is 3x3, so "
                                         r"its LQ would be 0x0$"):
        PairedImageDataset("test", 4, str(tmp_path / "GT"), None, scored=False)
    (tmp_path / "GT" / "tiny.png").unlink()
    assert len(PairedImageDataset("test", 4, str(tmp_path / "GT"), None, scored=False)) == 2
    (tmp_path / "GT" / "thin.png").unlink()
    assert len(PairedImageDataset("val", 4, str(tmp_path / "GT"), None)) == 1
