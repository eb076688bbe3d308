"""Specification of the dataset preparation library (``esrgan.data.prepare``) and its two scripts.

Crop tests use a 16-bit "coordinate image" whose pixel (y, x) holds y * width + x, so the origin of
every crop can be read back from its top-left pixel.
"""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from esrgan.data import prepare
from esrgan.data.imresize import imresize, modcrop
from esrgan.data.prepare import (
    Extracted,
    check_crop_settings,
    crop_grid,
    crop_names,
    crop_positions,
    extract_subimages,
    generate_lr,
    match_lr,
    run_jobs,
)
from esrgan.utils.image import images_by_stem, list_images

REPO_ROOT = Path(__file__).resolve().parents[1]

# The coordinate image of the crop tests and its grid for 10x10 crops every 8 pixels:
# rows 0, 8 and the end-aligned 11 (3 pixels were left); columns 0, 8, 16 and the end-aligned 20.
H, W = 21, 30
GRID = [(y, x) for y in (0, 8, 11) for x in (0, 8, 16, 20)]
# At scale 2 the end-aligned row 11 moves up to 10; column 20 is on the grid already.
GRID_X2 = [(y, x) for y in (0, 8, 10) for x in (0, 8, 16, 20)]


def write_raw(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def read_raw(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def coordinate_image() -> np.ndarray:
    return np.arange(H * W, dtype=np.uint16).reshape(H, W)


def origin(crop: np.ndarray) -> tuple[int, int]:
    y, x = divmod(int(crop[0, 0]), W)
    return y, x


def extract(hr: Path, out: Path, **lr) -> Extracted:
    """10x10 crops every 8 pixels, no threshold, fastest PNG level."""
    return extract_subimages(hr, out, crop_size=10, step=8, thresh_size=0, png_level=0, **lr)


@pytest.fixture
def write_spy(monkeypatch) -> list[str]:
    """Names of the files written through the module from now on."""
    written: list[str] = []

    def spy(path, img, png_level=None):
        written.append(Path(path).name)
        real_write(path, img, png_level)

    real_write = prepare.write_raw
    monkeypatch.setattr(prepare, "write_raw", spy)
    return written


@pytest.fixture
def decode_spy(monkeypatch) -> list[str]:
    """Names of the files decoded through the module from now on."""
    decoded: list[str] = []

    def spy(path):
        decoded.append(Path(path).name)
        return real_read(path)

    real_read = prepare.read_raw
    monkeypatch.setattr(prepare, "read_raw", spy)
    return decoded


# ------------------------------------------------------------------------------------------ crop positions
@pytest.mark.parametrize(
    ("length", "thresh", "expected"),
    [
        (1000, 0, [0, 240, 480, 520]),  # 40 pixels left after the crop at 480: one more, at the end
        (1000, 39, [0, 240, 480, 520]),
        (1000, 40, [0, 240, 480]),  # 40 left is not more than the threshold 40
        (960, 0, [0, 240, 480]),  # the crop at 480 ends exactly at the edge
        (480, 0, [0]),
        (479, 0, []),  # shorter than the crop
    ],
)
def test_crop_positions_step_along_the_axis_and_cover_the_end_remainder(length, thresh, expected):
    assert crop_positions(length, 480, 240, thresh) == expected


def test_crop_positions_reject_a_zero_step():
    with pytest.raises(ValueError, match="must be positive"):
        crop_positions(100, 10, 0, 0)


def test_crop_grid_is_row_major():
    assert crop_grid(H, W, 10, 8, 0) == GRID


def test_with_a_scale_the_end_aligned_crop_moves_up_to_a_multiple_of_it():
    assert crop_grid(H, W, 10, 8, 0, scale=2) == GRID_X2


def test_an_end_aligned_crop_moved_onto_the_previous_crop_is_dropped():
    # Rows: 0, 8 and the end-aligned 9 (1 pixel left), which scale 2 moves onto 8.
    assert crop_grid(19, 10, 10, 8, 0, scale=2) == [(0, 0), (8, 0)]


@pytest.mark.parametrize(("crop_size", "step"), [(10, 7), (9, 8)])
def test_with_a_scale_crop_size_and_step_must_be_multiples_of_it(crop_size, step):
    with pytest.raises(ValueError, match="must be multiples of the scale"):
        check_crop_settings(crop_size, step, 0, scale=2)


def test_crop_names_have_three_digits():
    assert crop_names("img", 2) == ["img_s001.png", "img_s002.png"]


def test_crop_names_have_more_digits_past_999_crops():
    assert crop_names("img", 999)[-1] == "img_s999.png"
    assert crop_names("img", 1000)[0] == "img_s0001.png"
    assert crop_names("img", 1000)[-1] == "img_s1000.png"


# ------------------------------------------------------------------------------------------ extraction
def test_crops_are_numbered_row_major_and_cut_at_the_grid_positions(tmp_path):
    hr = coordinate_image()
    out = tmp_path / "out"
    assert extract(write_raw(tmp_path / "img.png", hr), out) == Extracted(crops=12, written=12)
    names = crop_names("img", 12)
    assert sorted(p.name for p in out.iterdir()) == names
    for name, (y, x) in zip(names, GRID, strict=True):
        crop = read_raw(out / name)
        assert origin(crop) == (y, x)
        np.testing.assert_array_equal(crop, hr[y : y + 10, x : x + 10])


def test_lr_crops_are_the_hr_crops_scaled_down_and_have_the_same_names(tmp_path):
    hr = coordinate_image()
    # Nearest decimation: LR pixel (i, j) is HR pixel (2i, 2j), so aligned crops match exactly.
    lr = modcrop(hr, 2)[::2, ::2]
    hr_path, lr_path = write_raw(tmp_path / "img.png", hr), write_raw(tmp_path / "lr" / "imgx2.png", lr)
    result = extract(hr_path, tmp_path / "gt", lr_path=lr_path, lr_out_dir=tmp_path / "lq", scale=2)
    assert result == Extracted(crops=12, written=12)
    assert sorted(p.name for p in (tmp_path / "lq").iterdir()) == crop_names("img", 12)
    for name, corner in zip(crop_names("img", 12), GRID_X2, strict=True):
        gt, lq = read_raw(tmp_path / "gt" / name), read_raw(tmp_path / "lq" / name)
        assert origin(gt) == corner
        assert lq.shape == (5, 5)
        np.testing.assert_array_equal(lq, gt[::2, ::2])


def test_an_lr_image_of_the_wrong_size_is_rejected_naming_both_files(tmp_path):
    hr_path = write_raw(tmp_path / "hr.png", coordinate_image())
    lr_path = write_raw(tmp_path / "lr.png", coordinate_image()[:11, :15])  # 21x30 at x2 needs 10 rows
    with pytest.raises(ValueError, match=r"LR image .*lr\.png is 15x11, but HR image .*hr\.png .* needs 15x10"):
        extract(hr_path, tmp_path / "gt", lr_path=lr_path, lr_out_dir=tmp_path / "lq", scale=2)


def test_crop_names_keep_the_whole_stem(tmp_path):
    extract(write_raw(tmp_path / "0801x4_rock.png", coordinate_image()), tmp_path / "out")
    assert (tmp_path / "out" / "0801x4_rock_s001.png").exists()


def test_an_image_smaller_than_the_crop_has_no_crops(tmp_path):
    small = write_raw(tmp_path / "small.png", coordinate_image()[:9])
    assert extract(small, tmp_path / "out") == Extracted(crops=0, written=0)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "shape_dtype", [((8, 12), np.uint8), ((8, 12, 3), np.uint8), ((8, 12, 4), np.uint16)], ids=["gray", "bgr", "bgra16"]
)
def test_crops_keep_the_samples_as_stored(tmp_path, shape_dtype):
    shape, dtype = shape_dtype
    img = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    extract_subimages(write_raw(tmp_path / "img.png", img), tmp_path / "out", 8, 4, 0, 0)
    crop = read_raw(tmp_path / "out" / "img_s002.png")
    assert crop.dtype == dtype
    np.testing.assert_array_equal(crop, img[:, 4:12])


# ------------------------------------------------------------------------------------------ resuming
def test_a_rerun_writes_only_the_missing_crop(tmp_path, write_spy):
    hr_path = write_raw(tmp_path / "img.png", coordinate_image())
    extract(hr_path, tmp_path / "out")
    (tmp_path / "out" / "img_s005.png").unlink()
    write_spy.clear()
    assert extract(hr_path, tmp_path / "out") == Extracted(crops=12, written=1)
    assert write_spy == ["img_s005.png"]
    assert origin(read_raw(tmp_path / "out" / "img_s005.png")) == GRID[4]


def test_a_rerun_writes_only_the_missing_lr_crop_and_decodes_only_the_lr_image(tmp_path, write_spy, decode_spy):
    hr = coordinate_image()
    hr_path, lr_path = write_raw(tmp_path / "img.png", hr), write_raw(tmp_path / "lr.png", modcrop(hr, 2)[::2, ::2])
    lr_args = {"lr_path": lr_path, "lr_out_dir": tmp_path / "lq", "scale": 2}
    extract(hr_path, tmp_path / "gt", **lr_args)
    (tmp_path / "lq" / "img_s003.png").unlink()
    write_spy.clear()
    decode_spy.clear()
    assert extract(hr_path, tmp_path / "gt", **lr_args) == Extracted(crops=12, written=1)
    assert write_spy == ["img_s003.png"]
    assert decode_spy == ["lr.png"]


def test_an_image_whose_crops_all_exist_is_not_decoded(tmp_path, decode_spy):
    hr_path = write_raw(tmp_path / "img.png", coordinate_image())
    extract(hr_path, tmp_path / "out")
    decode_spy.clear()
    assert extract(hr_path, tmp_path / "out") == Extracted(crops=12, written=0)
    assert decode_spy == []


# ------------------------------------------------------------------------------------------ LR matching
def test_an_lr_image_with_the_same_stem_matches():
    assert match_lr("0001", {"0001": Path("a.png"), "0001x4": Path("b.png")}, 4) == Path("a.png")


def test_a_div2k_lr_name_with_the_scale_suffix_matches():
    assert match_lr("0001", {"0001x4": Path("0001x4.png")}, 4) == Path("0001x4.png")


def test_a_stem_with_the_scale_suffix_inside_is_not_cut_short():
    lr_files = {"0801_rock": Path("wrong.png"), "0801x4_rockx4": Path("right.png")}
    assert match_lr("0801x4_rock", lr_files, 4) == Path("right.png")


def test_a_missing_lr_image_names_the_stems_looked_for():
    # The suffix of another scale does not match.
    with pytest.raises(FileNotFoundError, match="looked for the stems 0001 and 0001x4"):
        match_lr("0001", {"0001x3": Path("0001x3.png")}, 4)


def test_hidden_files_are_not_listed_as_images(tmp_path):
    image = write_raw(tmp_path / "a.png", coordinate_image())
    (tmp_path / "._a.png").write_bytes(b"macOS metadata")
    assert images_by_stem(tmp_path) == {"a": image}


def test_two_images_with_one_stem_are_rejected(tmp_path):
    write_raw(tmp_path / "a.png", coordinate_image())
    write_raw(tmp_path / "a.tif", coordinate_image())
    with pytest.raises(ValueError, match=r"differ only by extension.*a\.png / a\.tif"):
        images_by_stem(tmp_path)


# ------------------------------------------------------------------------------------------ LR generation
def random_image(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(1).integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def generate_all(tmp_path: Path, hr: np.ndarray, scale: int) -> dict[str, np.ndarray]:
    """Run generate_lr with all three outputs and read them back."""
    hr_path = write_raw(tmp_path / "hr.png", hr)
    outs = {key: tmp_path / f"{key}.png" for key in ("lr", "hr_mod", "bic")}
    assert generate_lr(hr_path, outs["lr"], scale, 0, hr_mod_out=outs["hr_mod"], bic_out=outs["bic"])
    return {key: read_raw(path) for key, path in outs.items()}


@pytest.mark.parametrize(
    ("scale", "lr_shape", "hr_mod_shape"), [(2, (18, 25), (36, 50)), (3, (12, 16), (36, 48)), (4, (9, 12), (36, 48))]
)
def test_lr_sizes_are_the_mod_cropped_sizes_divided_by_the_scale(tmp_path, scale, lr_shape, hr_mod_shape):
    out = generate_all(tmp_path, random_image((37, 50, 3)), scale)
    assert out["lr"].shape == (*lr_shape, 3)
    assert out["hr_mod"].shape == (*hr_mod_shape, 3)
    assert out["bic"].shape == (*hr_mod_shape, 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_is_matlab_imresize_of_the_mod_cropped_image(tmp_path, scale):
    hr = random_image((37, 50, 3))
    out = generate_all(tmp_path, hr, scale)
    np.testing.assert_array_equal(out["lr"], imresize(modcrop(hr, scale), 1 / scale))


def test_hr_mod_is_the_top_left_of_the_image(tmp_path):
    hr = random_image((37, 50, 3))
    np.testing.assert_array_equal(generate_all(tmp_path, hr, 4)["hr_mod"], hr[:36, :48])


def test_bic_is_the_lr_upsampled_by_the_scale(tmp_path):
    out = generate_all(tmp_path, random_image((37, 50, 3)), 4)
    np.testing.assert_array_equal(out["bic"], imresize(out["lr"], 4))


def test_a_16_bit_image_gives_16_bit_outputs(tmp_path):
    hr = random_image((37, 50), np.uint16)
    out = generate_all(tmp_path, hr, 3)
    assert {img.dtype for img in out.values()} == {np.dtype(np.uint16)}
    np.testing.assert_array_equal(out["lr"], imresize(modcrop(hr, 3), 1 / 3))


def test_generate_lr_writes_only_missing_outputs(tmp_path, write_spy):
    generate_all(tmp_path, random_image((37, 50, 3)), 4)
    (tmp_path / "bic.png").unlink()
    write_spy.clear()
    outs = {key: tmp_path / f"{key}.png" for key in ("lr", "hr_mod", "bic")}
    assert generate_lr(tmp_path / "hr.png", outs["lr"], 4, 0, hr_mod_out=outs["hr_mod"], bic_out=outs["bic"])
    assert write_spy == ["bic.png"]


def test_generate_lr_does_not_decode_an_image_whose_outputs_exist(tmp_path, decode_spy):
    hr_path = write_raw(tmp_path / "hr.png", random_image((37, 50, 3)))
    assert generate_lr(hr_path, tmp_path / "lr.png", 4, 0) is True
    decode_spy.clear()
    assert generate_lr(hr_path, tmp_path / "lr.png", 4, 0) is False
    assert decode_spy == []


def test_an_image_smaller_than_the_scale_is_rejected(tmp_path):
    hr_path = write_raw(tmp_path / "hr.png", random_image((3, 50)))
    with pytest.raises(ValueError, match=r"hr\.png \(50x3\) is smaller than the scale 4"):
        generate_lr(hr_path, tmp_path / "lr.png", 4, 0)


# ------------------------------------------------------------------------------------------ running jobs
@pytest.mark.parametrize("workers", [1, 2])
def test_failing_jobs_are_collected_while_the_others_run(workers):
    results, errors = run_jobs(int, [("7",), ("x",), ("9",)], workers, "test")
    assert results == [(("7",), 7), (("9",), 9)]
    assert errors == [(("x",), "ValueError: invalid literal for int() with base 10: 'x'")]


WORKER_DIES = """
import os, signal, sys
from pathlib import Path
from esrgan.data import lmdb_io, prepare

def job(name, *args, **kwargs):
    if Path(name).stem == "b":
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
    return name

if sys.argv[1] == "run_jobs":
    prepare.run_jobs(job, [("a",), ("b",), ("c",)], 2, "cropping")
else:
    lmdb_io._encode_image = job
    lmdb_io.create_lmdb(sys.argv[2], sys.argv[3], progress=False, workers=2)
"""


@pytest.mark.parametrize("runner", ["run_jobs", "create_lmdb"])
def test_a_worker_that_dies_stops_the_run_with_an_error_instead_of_a_hang(tmp_path, runner):
    for name in "abc":
        write_raw(tmp_path / "in" / f"{name}.png", random_image((4, 4)))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "codes")}
    done = subprocess.run([sys.executable, "-c", WORKER_DIES, runner, tmp_path / "in", tmp_path / "out.lmdb"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1
    assert "ChildProcessError: " in done.stderr and "a worker process died" in done.stderr


# ------------------------------------------------------------------------------------------ scripts
@pytest.mark.parametrize("script", ["extract_subimages.py", "generate_lr.py"])
def test_script_help_exits_0(script, capsys):
    main = runpy.run_path(str(REPO_ROOT / "scripts" / script))["main"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--png-level" in capsys.readouterr().out


def test_an_output_folder_that_is_an_input_or_another_output_is_refused_by_role():
    from esrgan.data.prepare import check_distinct_folders

    with pytest.raises(ValueError, match=r"^output folder hr is also the input folder hr; give it one of its own$"):
        check_distinct_folders(["hr"], ["hr"])
    with pytest.raises(ValueError, match=r"^output folder out/ is also the output folder out; give it one"):
        check_distinct_folders(["hr", "lr"], ["out", "out/"])


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "scripts" / script), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_extract_subimages_script_crops_a_folder_with_its_lr_images(tmp_path):
    hr = coordinate_image()
    write_raw(tmp_path / "hr" / "0001.png", hr)
    write_raw(tmp_path / "hr" / "0002.png", hr[:9])
    write_raw(tmp_path / "lr" / "0001x2.png", modcrop(hr, 2)[::2, ::2])
    write_raw(tmp_path / "lr" / "0002x2.png", modcrop(hr[:9], 2)[::2, ::2])
    result = run_script("extract_subimages.py", "--input", "hr", "--output", "gt", "--lr-input", "lr",
                        "--lr-output", "lq", "--scale", "2", "--crop-size", "10", "--step", "8", "--workers", "2",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote 12 crops of 1 image(s)" in result.stdout
    assert "smaller than the 10x10 crop: 0002.png" in result.stdout
    assert [p.name for p in list_images(tmp_path / "lq")] == crop_names("0001", 12)


@pytest.mark.parametrize("script, args", [("extract_subimages.py", ["--crop-size", "10", "--step", "8"]),
                                          ("generate_lr.py", ["--scale", "2"])])
def test_a_script_given_a_folder_without_images_says_so_and_claims_no_output(tmp_path, script, args):
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "notes.txt").write_text("not an image")
    result = run_script(script, "--input", "hr", "--output", "out", *args, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == "error: no images in hr\n"
    result = run_script(script, "--input", "nothere", "--output", "out", *args, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == "error: the input folder nothere does not exist\n"
    result = run_script(script, "--input", "hr/notes.txt", "--output", "out", *args, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == "error: the input folder hr/notes.txt is not a folder\n"
    assert not (tmp_path / "out").exists()


def test_scale_and_workers_below_their_minimum_are_refused_by_the_parser(tmp_path):
    result = run_script("generate_lr.py", "--input", "hr", "--output", "out", "--scale", "1", cwd=tmp_path)
    assert result.returncode == 2 and "argument --scale: must be an integer of at least 2, got 1" in result.stderr
    result = run_script("extract_subimages.py", "--input", "hr", "--output", "out", "--workers", "0", cwd=tmp_path)
    assert result.returncode == 2 and "argument --workers: must be an integer of at least 1, got 0" in result.stderr


def test_the_crops_of_an_image_replaced_since_are_made_again_from_it(tmp_path, write_spy):
    hr_path = write_raw(tmp_path / "img.png", coordinate_image())
    extract(hr_path, tmp_path / "out")
    crops = [tmp_path / "out" / name for name in crop_names("img", 12)]
    flipped = coordinate_image()[::-1, ::-1].copy()
    write_raw(hr_path, flipped)  # the image replaced by another of its size
    for crop in crops:  # on a coarse clock the crops could share the new image's time
        os.utime(crop, ns=(hr_path.stat().st_mtime_ns - 1,) * 2)
    write_spy.clear()
    assert extract(hr_path, tmp_path / "out") == Extracted(crops=12, written=12)
    assert sorted(write_spy) == [crop.name for crop in crops]
    for crop, (y, x) in zip(crops, GRID, strict=True):
        np.testing.assert_array_equal(read_raw(crop), flipped[y : y + 10, x : x + 10])
    write_spy.clear()
    assert extract(hr_path, tmp_path / "out") == Extracted(crops=12, written=0)  # up to date now
    assert write_spy == []


def test_crops_of_an_earlier_larger_image_of_the_same_name_are_removed(tmp_path):
    hr = coordinate_image()
    hr_path, lr_path = write_raw(tmp_path / "img.png", hr), write_raw(tmp_path / "lr.png", modcrop(hr, 2)[::2, ::2])
    lr_args = {"lr_path": lr_path, "lr_out_dir": tmp_path / "lq", "scale": 2}
    assert extract(hr_path, tmp_path / "gt", **lr_args) == Extracted(crops=12, written=12)
    write_raw(hr_path, hr[:10, :18])  # 2 crops now
    write_raw(lr_path, hr[:10:2, :18:2])
    for crop in list_images(tmp_path / "gt") + list_images(tmp_path / "lq"):  # older than the images
        os.utime(crop, ns=(hr_path.stat().st_mtime_ns - 1,) * 2)
    assert extract(hr_path, tmp_path / "gt", **lr_args) == Extracted(crops=2, written=2)
    for folder in ("gt", "lq"):
        assert [p.name for p in list_images(tmp_path / folder)] == ["img_s001.png", "img_s002.png"]
    write_raw(hr_path, hr[:9])  # smaller than the crop: no crops at all
    assert extract(hr_path, tmp_path / "gt") == Extracted(crops=0, written=0)
    assert list_images(tmp_path / "gt") == []


def test_leftover_crops_are_removed_only_when_older_than_the_image_and_never_a_current_crop(tmp_path):
    source = write_raw(tmp_path / "img.png", coordinate_image())
    out = tmp_path / "out"
    out.mkdir()
    old = [out / f"img_s{i:03d}.png" for i in range(1, 1000)] + [out / "img_s1000.png"]
    for path in old:
        path.touch()
        os.utime(path, ns=(source.stat().st_mtime_ns - 1,) * 2)
    prepare._remove_leftover_crops(out, "img", 1000, source)  # 1000 crops: img_s0001 ... img_s1000
    assert sorted(p.name for p in out.iterdir()) == ["img_s1000.png"]
    newer = write_raw(out / "img_s003.png", coordinate_image())  # a crop newer than the image: not its to judge
    prepare._remove_leftover_crops(out, "img", 2, source)
    assert newer.exists()


def test_generate_lr_remakes_outputs_older_than_the_hr_image(tmp_path, write_spy):
    generate_all(tmp_path, random_image((37, 50, 3)), 4)
    hr = random_image((37, 50, 3)) // 2
    hr_path = write_raw(tmp_path / "hr.png", hr)
    for name in ("lr.png", "hr_mod.png", "bic.png"):
        os.utime(tmp_path / name, ns=(hr_path.stat().st_mtime_ns - 1,) * 2)
    write_spy.clear()
    outs = {key: tmp_path / f"{key}.png" for key in ("lr", "hr_mod", "bic")}
    assert generate_lr(hr_path, outs["lr"], 4, 0, hr_mod_out=outs["hr_mod"], bic_out=outs["bic"])
    assert sorted(write_spy) == ["bic.png", "hr_mod.png", "lr.png"]
    np.testing.assert_array_equal(read_raw(outs["lr"]), imresize(modcrop(hr, 4), 1 / 4))


def test_a_folder_whose_images_are_all_smaller_than_the_crop_is_an_error(tmp_path):
    write_raw(tmp_path / "hr" / "0001.png", coordinate_image()[:9])
    result = run_script("extract_subimages.py", "--input", "hr", "--output", "gt", "--crop-size", "10", "--step",
                        "8", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert "skipped 1 image(s) smaller than the 10x10 crop: 0001.png" in result.stdout
    assert result.stderr.endswith("\nerror: no image of hr is as large as the 10x10 crop, so there are no crops: "
                                  "lower --crop-size (and --step)\n")  # after the progress bar


def test_a_rerun_with_another_crop_grid_is_refused_and_leaves_the_crops_alone(tmp_path):
    write_raw(tmp_path / "hr" / "0001.png", coordinate_image())
    first = run_script("extract_subimages.py", "--input", "hr", "--output", "gt", "--crop-size", "10", "--step",
                       "8", "--workers", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in list_images(tmp_path / "gt")}
    again = run_script("extract_subimages.py", "--input", "hr", "--output", "gt", "--crop-size", "10", "--step",
                       "4", "--workers", "1", cwd=tmp_path)
    assert again.returncode == 1
    assert "gt holds images made with other settings (step 8 there, 4 now; see .esrgan_prepare.json)" in again.stderr
    assert {p.name: p.read_bytes() for p in list_images(tmp_path / "gt")} == before
    same = run_script("extract_subimages.py", "--input", "hr", "--output", "gt", "--crop-size", "10", "--step",
                      "8", "--workers", "1", cwd=tmp_path)
    assert same.returncode == 0 and "skipped 1 image(s) whose crops are all up to date" in same.stdout


def test_a_record_in_a_folder_without_images_gives_way_to_the_next_run(tmp_path):
    write_raw(tmp_path / "hr" / "0001.png", coordinate_image())
    write_raw(tmp_path / "lr" / "0001x4.png", coordinate_image()[:5, :7])
    failed = run_script("extract_subimages.py", "--input", "hr", "--output", "gt", "--lr-input", "lr",
                        "--lr-output", "lq", "--scale", "2", "--crop-size", "10", "--step", "8", "--workers", "1",
                        cwd=tmp_path)  # no LR image of the x2 names: nothing written
    assert failed.returncode == 1 and not list_images(tmp_path / "gt")
    fixed = run_script("extract_subimages.py", "--input", "hr", "--output", "gt", "--lr-input", "lr",
                       "--lr-output", "lq", "--scale", "4", "--crop-size", "8", "--step", "8", "--workers", "1",
                       cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert len(list_images(tmp_path / "gt")) == len(list_images(tmp_path / "lq")) == 12
    assert '"scale": 4' in (tmp_path / "gt" / ".esrgan_prepare.json").read_text()


def test_a_folder_of_images_without_a_settings_record_is_refused(tmp_path):
    write_raw(tmp_path / "hr" / "0001.png", coordinate_image())
    write_raw(tmp_path / "gt" / "0001_s001.png", coordinate_image()[:10, :10])
    result = run_script("extract_subimages.py", "--input", "hr", "--output", "gt", "--crop-size", "10", "--step",
                        "8", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert "gt already holds images, with no readable record" in result.stderr


def test_a_damaged_record_counts_as_none_and_a_file_is_no_output_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / prepare.SETTINGS_FILE).write_text("[1]")
    prepare.claim_folders([(tmp_path / "out", {"scale": 4})])  # no images: the run's settings replace it
    assert json.loads((tmp_path / "out" / prepare.SETTINGS_FILE).read_text()) == {"scale": 4}
    (tmp_path / "out" / prepare.SETTINGS_FILE).write_text("{not json")
    write_raw(tmp_path / "out" / "a.png", coordinate_image())
    with pytest.raises(ValueError, match=r"out already holds images, with no readable record"):
        prepare.claim_folders([(tmp_path / "out", {"scale": 4})])
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"output folder .*file is a file"):
        prepare.claim_folders([(tmp_path / "out2", {"scale": 4}), (tmp_path / "file", {"scale": 4})])
    assert not (tmp_path / "out2").exists()  # all checked before anything is written


def test_generate_lr_refuses_an_output_folder_of_another_scale(tmp_path):
    write_raw(tmp_path / "hr" / "a.png", random_image((36, 48, 3)))
    assert run_script("generate_lr.py", "--input", "hr", "--output", "lr", "--scale", "2", "--workers", "1",
                      cwd=tmp_path).returncode == 0
    result = run_script("generate_lr.py", "--input", "hr", "--output", "lr", "--scale", "4", "--workers", "1",
                        cwd=tmp_path)
    assert result.returncode == 1
    assert "lr holds images made with other settings (scale 2 there, 4 now;" in result.stderr
    assert cv2.imread(str(tmp_path / "lr" / "a.png")).shape[:2] == (18, 24)


def test_generate_lr_script_reports_a_broken_image_and_converts_the_others(tmp_path):
    write_raw(tmp_path / "hr" / "good.png", random_image((37, 50, 3)))
    (tmp_path / "hr" / "broken.png").write_bytes(b"not a png")
    result = run_script("generate_lr.py", "--input", "hr", "--output", "lr", "--scale", "4", "--workers", "2",
                        cwd=tmp_path)
    assert result.returncode == 1
    assert "failed on 1 image:" in result.stderr
    assert "broken.png" in result.stderr
    assert read_raw(tmp_path / "lr" / "good.png").shape == (9, 12, 3)


def test_generate_lr_removes_outputs_of_removed_images_only_when_asked(tmp_path):
    for name in ("a", "b"):
        write_raw(tmp_path / "hr" / f"{name}.png", coordinate_image())
    args = ["--input", "hr", "--output", "lr", "--bic-output", "bic", "--scale", "2"]
    assert run_script("generate_lr.py", *args, cwd=tmp_path).returncode == 0
    (tmp_path / "hr" / "b.png").unlink()
    (tmp_path / "lr" / "notes.txt").write_text("not an output")
    assert run_script("generate_lr.py", *args, cwd=tmp_path).returncode == 0
    assert [p.name for p in list_images(tmp_path / "lr")] == ["a.png", "b.png"]  # kept without the flag
    result = run_script("generate_lr.py", *args, "--remove-missing", cwd=tmp_path)
    assert result.returncode == 0 and "deleted 2 output(s) whose image is no longer in hr" in result.stdout
    assert [p.name for p in list_images(tmp_path / "lr")] == [p.name for p in list_images(tmp_path / "bic")] == \
        ["a.png"]
    assert (tmp_path / "lr" / "notes.txt").is_file()


def test_extract_subimages_removes_the_crops_of_removed_images_only_when_asked(tmp_path):
    """A crop's image is its name less `_s<number>`: the crops of `a_s001.png` (`a_s001_s001.png`, ...) stay when
    `a.png`, whose crop `a_s001.png` is, goes."""
    for name in ("a", "a_s001", "b"):
        write_raw(tmp_path / "hr" / f"{name}.png", random_image((16, 32, 3)))
    args = ["--input", "hr", "--output", "crops", "--crop-size", "16", "--step", "16"]  # 2 crops each
    assert run_script("extract_subimages.py", *args, cwd=tmp_path).returncode == 0
    (tmp_path / "hr" / "a.png").unlink()
    (tmp_path / "hr" / "b.png").unlink()
    assert run_script("extract_subimages.py", *args, cwd=tmp_path).returncode == 0
    assert len(list_images(tmp_path / "crops")) == 6  # kept without the flag
    result = run_script("extract_subimages.py", *args, "--remove-missing", cwd=tmp_path)
    assert result.returncode == 0 and "deleted 4 crop(s) whose image is no longer in hr" in result.stdout
    assert [p.name for p in list_images(tmp_path / "crops")] == ["a_s001_s001.png", "a_s001_s002.png"]
