"""LMDB storage: BasicSR-compatible layout, exact round trips, resumable and parallel creation, per-process
readers, and the create_lmdb.py command line."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from esrgan.data import lmdb_io
from esrgan.data.lmdb_io import LmdbImageReader, create_lmdb, read_meta_info, write_meta_info
from esrgan.utils.image import read_image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "create_lmdb.py"


def _image(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def _folder(root: Path, names: list[str], shape: tuple[int, ...] = (3, 4, 3)) -> Path:
    """A folder of small random images; cv2.imwrite keeps the array as given (channel order is irrelevant)."""
    root.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        assert cv2.imwrite(str(root / name), _image(shape, seed=seed))
    return root


def _stored_values(lmdb_path: Path) -> dict[str, bytes]:
    with lmdb.open(str(lmdb_path), readonly=True, lock=False) as env, env.begin() as txn:
        return {k.decode(): v for k, v in txn.cursor()}


def test_keys_with_dots_spaces_and_unicode_round_trip(tmp_path):
    names = ["0001.x4.png", "a b.png", "日本語_画像.png"]
    src = _folder(tmp_path / "in", names)

    create_lmdb(src, tmp_path / "out.lmdb", progress=False)

    keys = ["0001.x4", "a b", "日本語_画像"]
    assert list(read_meta_info(tmp_path / "out.lmdb")) == keys
    reader = LmdbImageReader(tmp_path / "out.lmdb")
    for key, name in zip(keys, names, strict=True):
        assert np.array_equal(reader.read(key), read_image(src / name))


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((3, 4, 3), np.uint8), ((3, 4, 3), np.uint16), ((3, 4), np.uint8), ((3, 4, 4), np.uint8)],
    ids=["rgb8", "rgb16", "gray", "rgba"],
)
def test_read_decodes_exactly_like_read_image(tmp_path, shape, dtype):
    (tmp_path / "in").mkdir()
    assert cv2.imwrite(str(tmp_path / "in" / "img.png"), _image(shape, dtype))

    create_lmdb(tmp_path / "in", tmp_path / "out.lmdb", progress=False)
    got = LmdbImageReader(tmp_path / "out.lmdb").read("img")

    assert got.dtype == np.float32
    assert np.array_equal(got, read_image(tmp_path / "in" / "img.png"))


def test_meta_info_lists_key_shape_and_level_per_line_sorted_by_key(tmp_path):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "b.png"), _image((3, 4, 3)))
    cv2.imwrite(str(tmp_path / "in" / "a.jpg"), _image((2, 5)))

    create_lmdb(tmp_path / "in", tmp_path / "out.lmdb", compress_level=3, progress=False)

    assert (tmp_path / "out.lmdb" / "meta_info.txt").read_text(encoding="utf-8") == (
        "a.png (2,5,1) 3\nb.png (3,4,3) 3\n"
    )


def test_read_meta_info_parses_a_basicsr_file(tmp_path):
    (tmp_path / "meta_info.txt").write_text("0001_s001.png (480,480,3) 1\nimg.v2.png (120,80,1) 9\n")

    assert read_meta_info(tmp_path) == {"0001_s001": (480, 480, 3), "img.v2": (120, 80, 1)}


def test_read_meta_info_takes_lines_without_the_compression_level(tmp_path):
    (tmp_path / "meta_info.txt").write_text("0001_s001.png (480,480,3)\n0002.png (4,6,3) 1\n")
    assert read_meta_info(tmp_path) == {"0001_s001": (480, 480, 3), "0002": (4, 6, 3)}


def test_read_meta_info_takes_lines_with_spaces_around_and_windows_line_ends(tmp_path):
    (tmp_path / "meta_info.txt").write_bytes(b"0001_s001.png (480,480,3) 1 \r\n  0002.png (4,6,3)\t\r\n")
    assert read_meta_info(tmp_path) == {"0001_s001": (480, 480, 3), "0002": (4, 6, 3)}


def test_an_mmsr_lmdb_is_named_as_such(tmp_path):
    (tmp_path / "meta_info.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(FileNotFoundError, match=r"meta_info\.txt not found \(this is the older mmsr layout"):
        read_meta_info(tmp_path)


def test_write_meta_info_sorts_by_key(tmp_path):
    write_meta_info(tmp_path, {"b": (1, 2, 3), "a": (4, 5, 1)}, compress_level=0)

    assert (tmp_path / "meta_info.txt").read_text() == "a.png (4,5,1) 0\nb.png (1,2,3) 0\n"


def test_malformed_meta_info_line_is_reported_with_its_number(tmp_path):
    (tmp_path / "meta_info.txt").write_text("a.png (1,2,3) 1\nb.png (1,2) 1\n")

    with pytest.raises(ValueError, match=r"meta_info\.txt, line 2: 'b\.png \(1,2\) 1'"):
        read_meta_info(tmp_path)


def test_missing_meta_info_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"meta_info\.txt not found.*create_lmdb"):
        read_meta_info(tmp_path)


def test_rerun_encodes_only_images_not_yet_stored(tmp_path, monkeypatch):
    src = _folder(tmp_path / "in", ["1.png", "2.png", "3.png"])
    create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    _folder(src, ["4.png", "5.png"])
    encoded = []
    real_encode = lmdb_io._encode_image

    def spy(path: Path, compress_level: int) -> bytes:
        encoded.append(path.name)
        return real_encode(path, compress_level)

    monkeypatch.setattr(lmdb_io, "_encode_image", spy)

    assert create_lmdb(src, tmp_path / "out.lmdb", progress=False) == 5

    assert encoded == ["4.png", "5.png"]
    assert list(read_meta_info(tmp_path / "out.lmdb")) == ["1", "2", "3", "4", "5"]


def test_an_image_replaced_since_the_lmdb_was_written_is_stored_again(tmp_path):
    src = _folder(tmp_path / "in", ["1.png", "2.png"])
    out = tmp_path / "out.lmdb"
    create_lmdb(src, out, progress=False)
    before = _stored_values(out)
    assert cv2.imwrite(str(src / "2.png"), _image((5, 2, 3), seed=9))  # another image of another size
    written_ns = (out / "data.mdb").stat().st_mtime_ns
    if (src / "2.png").stat().st_mtime_ns <= written_ns:  # a coarse clock: make the replacement the newer
        os.utime(src / "2.png", ns=(written_ns + 1,) * 2)

    assert create_lmdb(src, out, progress=False) == 2

    after = _stored_values(out)
    assert after["1"] == before["1"]
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(after["2"], np.uint8), cv2.IMREAD_UNCHANGED),
                                  _image((5, 2, 3), seed=9))
    assert read_meta_info(out)["2"][:2] == (5, 2)


def test_an_image_replaced_while_a_run_encodes_the_others_is_stored_again_by_the_next_run(tmp_path, monkeypatch):
    src = _folder(tmp_path / "in", ["1.png", "2.png"])
    out = tmp_path / "out.lmdb"
    real_encode = lmdb_io._encode_image

    def replace_1_after_encoding_it(path: Path, compress_level: int) -> bytes:
        value = real_encode(path, compress_level)
        if path.name == "1.png":
            assert cv2.imwrite(str(src / "1.png"), _image((3, 4, 3), seed=7))
            later = time.time_ns() + 10**9  # after the run began, whatever the file system's clock resolution
            os.utime(src / "1.png", ns=(later, later))
        return value

    monkeypatch.setattr(lmdb_io, "_encode_image", replace_1_after_encoding_it)
    create_lmdb(src, out, progress=False)
    late_commit = (src / "1.png").stat().st_mtime_ns + 1  # the run's last commit came after the replacement
    os.utime(out / "data.mdb", ns=(late_commit, late_commit))
    monkeypatch.setattr(lmdb_io, "_encode_image", real_encode)

    create_lmdb(src, out, progress=False)

    stored = cv2.imdecode(np.frombuffer(_stored_values(out)["1"], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(stored, _image((3, 4, 3), seed=7))


def test_an_image_replaced_during_an_interrupted_first_run_is_stored_again_by_the_next(tmp_path, monkeypatch):
    src = _folder(tmp_path / "in", ["1.png", "2.png", "3.png"])
    out = tmp_path / "out.lmdb"
    real_commit = lmdb_io._commit

    def commit_then_stop(env, batch):
        real_commit(env, batch)
        assert cv2.imwrite(str(src / "1.png"), _image((3, 4, 3), seed=7))  # replaced after being stored
        later = time.time_ns() + 10**9
        os.utime(src / "1.png", ns=(later, later))
        raise KeyboardInterrupt

    monkeypatch.setattr(lmdb_io, "_commit", commit_then_stop)
    with pytest.raises(KeyboardInterrupt):
        create_lmdb(src, out, commit_every=1, progress=False)
    assert list(_stored_values(out)) == ["1"]
    late_commit = (src / "1.png").stat().st_mtime_ns + 1  # as if the run had committed more afterwards
    os.utime(out / "data.mdb", ns=(late_commit, late_commit))
    monkeypatch.setattr(lmdb_io, "_commit", real_commit)

    assert create_lmdb(src, out, progress=False) == 3

    stored = cv2.imdecode(np.frombuffer(_stored_values(out)["1"], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(stored, _image((3, 4, 3), seed=7))


def test_interrupted_run_keeps_committed_batches_and_a_rerun_finishes(tmp_path, monkeypatch):
    src = _folder(tmp_path / "in", [f"{i:02d}.png" for i in range(10)])
    real_encode = lmdb_io._encode_image

    def fail_on_last(path: Path, compress_level: int) -> bytes:
        if path.name == "09.png":
            raise KeyboardInterrupt
        return real_encode(path, compress_level)

    monkeypatch.setattr(lmdb_io, "_ESTIMATE_SAMPLES", 2)  # batches are written only once the samples are encoded
    monkeypatch.setattr(lmdb_io, "_encode_image", fail_on_last)
    with pytest.raises(KeyboardInterrupt):
        create_lmdb(src, tmp_path / "out.lmdb", commit_every=2, progress=False)
    monkeypatch.setattr(lmdb_io, "_encode_image", real_encode)

    assert len(_stored_values(tmp_path / "out.lmdb")) == 8  # 00-07; 08 was in the uncommitted batch
    assert not (tmp_path / "out.lmdb" / "meta_info.txt").exists()
    assert create_lmdb(src, tmp_path / "out.lmdb", progress=False) == 10
    assert len(read_meta_info(tmp_path / "out.lmdb")) == 10


def test_a_disk_that_fills_says_so_in_one_error_naming_the_lmdb_and_a_rerun_finishes(tmp_path, monkeypatch):
    """LMDB reports a full disk as a commit's I/O error (lmdb.Error), which used to end in a traceback."""
    src = _folder(tmp_path / "in", [f"{i:02d}.png" for i in range(10)])
    real_commit, commits = lmdb_io._commit, []

    class FullDisk:
        def __init__(self, env: lmdb.Environment) -> None:
            self.path = env.path

        def begin(self, write: bool):
            raise lmdb.Error("mdb_txn_commit: Input/output error")

    def fills_at_the_second(env, batch):
        commits.append(len(batch))
        real_commit(FullDisk(env) if len(commits) == 2 else env, batch)

    monkeypatch.setattr(lmdb_io, "_ESTIMATE_SAMPLES", 2)
    monkeypatch.setattr(lmdb_io, "_commit", fills_at_the_second)
    with pytest.raises(OSError) as info:
        create_lmdb(src, tmp_path / "out.lmdb", commit_every=2, progress=False)
    assert str(info.value) == (f"cannot write the LMDB {tmp_path / 'out.lmdb'} (mdb_txn_commit: Input/output error); "
                               "if its disk is full, free some space and run the same command again: it keeps the "
                               "images already stored")
    assert len(_stored_values(tmp_path / "out.lmdb")) == 2
    monkeypatch.setattr(lmdb_io, "_commit", real_commit)
    assert create_lmdb(src, tmp_path / "out.lmdb", progress=False) == 10


def test_map_grows_when_the_size_estimate_is_too_small(tmp_path, monkeypatch):
    # Random pixels do not compress: three 128x128 RGB images take about 150 KB, more than twice the 64 KiB map.
    src = _folder(tmp_path / "in", ["a.png", "b.png", "c.png"], shape=(128, 128, 3))
    monkeypatch.setattr(lmdb_io, "_estimate_map_size", lambda samples, rest: 64 << 10)

    create_lmdb(src, tmp_path / "out.lmdb", commit_every=10, progress=False)

    reader = LmdbImageReader(tmp_path / "out.lmdb")
    assert all(np.array_equal(reader.read(k), read_image(src / f"{k}.png")) for k in "abc")


def test_parallel_workers_store_the_same_bytes_as_one(tmp_path):
    src = _folder(tmp_path / "in", [f"{i}.png" for i in range(6)])

    create_lmdb(src, tmp_path / "serial.lmdb", progress=False)
    create_lmdb(src, tmp_path / "parallel.lmdb", workers=2, commit_every=2, progress=False)

    assert _stored_values(tmp_path / "parallel.lmdb") == _stored_values(tmp_path / "serial.lmdb")


def test_files_sharing_a_stem_are_rejected_by_name(tmp_path):
    _folder(tmp_path / "in", ["a.png", "a.jpg", "b.png"])

    with pytest.raises(ValueError, match=r"a\.jpg / a\.png"):
        create_lmdb(tmp_path / "in", tmp_path / "out.lmdb", progress=False)


def test_empty_input_folder_is_rejected(tmp_path):
    (tmp_path / "in").mkdir()

    with pytest.raises(ValueError, match="no images in"):
        create_lmdb(tmp_path / "in", tmp_path / "out.lmdb", progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_float_image_is_refused_by_name_rather_than_stored_as_8_bits(tmp_path, workers):
    folder = _folder(tmp_path / "in", ["a.png"])
    assert cv2.imwrite(str(folder / "b.tiff"), np.full((4, 4, 3), 0.5, dtype=np.float32))
    with pytest.raises(OSError, match=r"b\.tiff has sample type float32; only 8- and 16-bit"):
        create_lmdb(folder, tmp_path / "out.lmdb", progress=False, workers=workers)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_unreadable_image_is_listed_after_the_others_are_stored(tmp_path, workers):
    folder = _folder(tmp_path / "in", ["a.png", "c.png", "e.png"])
    (folder / "b.png").write_bytes(b"not a png")
    assert cv2.imwrite(str(folder / "d.tiff"), np.full((4, 4, 3), 0.5, dtype=np.float32))
    out = tmp_path / "out.lmdb"

    with pytest.raises(OSError) as err:
        create_lmdb(folder, out, progress=False, workers=workers, commit_every=1)
    lines = str(err.value).splitlines()
    assert lines[0] == f"2 images of {folder} could not be stored in {out}:"
    assert lines[1].startswith(f"  {folder / 'b.png'}: ") and lines[2].startswith(f"  {folder / 'd.tiff'}: ")
    assert "sample type float32" in lines[2]
    assert lines[3] == "The other 3 are stored. Replace or remove these and run again: it stores only what is missing."
    assert sorted(_stored_values(out)) == ["a", "c", "e"] and not (out / "meta_info.txt").exists()

    (folder / "b.png").unlink()
    (folder / "d.tiff").unlink()
    assert create_lmdb(folder, out, progress=False, workers=workers) == 3
    assert sorted(read_meta_info(out)) == ["a", "c", "e"]


def test_an_image_that_became_unreadable_leaves_no_stale_copy_and_no_meta_info(tmp_path):
    folder = _folder(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out.lmdb"
    create_lmdb(folder, out, progress=False)
    time.sleep(0.01)
    (folder / "b.png").write_bytes(b"truncated")

    with pytest.raises(OSError, match=r"1 image of .* could not be stored") as err:
        create_lmdb(folder, out, progress=False)
    assert f"  {folder / 'b.png'}: " in str(err.value)
    assert sorted(_stored_values(out)) == ["a", "c"] and not (out / "meta_info.txt").exists()

    (folder / "b.png").unlink()  # removed, as the message offers: the next run completes the LMDB without it
    assert create_lmdb(folder, out, progress=False) == 2
    assert sorted(read_meta_info(out)) == ["a", "c"]


def test_lmdb_made_from_another_folder_is_not_completed(tmp_path):
    out = tmp_path / "out.lmdb"
    create_lmdb(_folder(tmp_path / "one", ["x.png"]), out, progress=False)
    before = _stored_values(out)
    # The same names in another folder (DIV2K's HR and LR sub-images share theirs).
    with pytest.raises(ValueError) as info:
        create_lmdb(_folder(tmp_path / "two", ["x.png"]), out, progress=False)
    assert str(info.value) == (f"{out} was made from {tmp_path / 'one'}, not from {tmp_path / 'two'}: choose "
                               f"another output path, or delete {out} to make it again from {tmp_path / 'two'}")
    assert _stored_values(out) == before
    moved = (tmp_path / "one").rename(tmp_path / "moved")  # the same folder elsewhere: its images as they were
    assert create_lmdb(moved, out, progress=False) == 1 and _stored_values(out) == before
    assert json.loads((out / lmdb_io._SOURCES).read_text())["input"] == str(moved)
    (out / lmdb_io._SOURCES).unlink()  # an LMDB of another tool or version: its keys tell what they can
    with pytest.raises(ValueError, match=r"1 images that are not in .* \(x\)"):
        create_lmdb(_folder(tmp_path / "three", ["y.png"]), out, progress=False)


def test_an_image_replaced_by_one_with_an_older_time_is_stored_again(tmp_path, package_log):
    # unzip, cp -p and rsync -a keep a file's own modification time, older than the LMDB.
    src = _folder(tmp_path / "in", ["1.png", "2.png"])
    out = tmp_path / "out.lmdb"
    create_lmdb(src, out, progress=False)
    before = _stored_values(out)
    assert cv2.imwrite(str(src / "2.png"), _image((5, 2, 3), seed=9))
    os.utime(src / "2.png", ns=(10**18, 10**18))  # 2001

    with package_log.at_level("INFO", logger="esrgan"):
        assert create_lmdb(src, out, progress=False) == 2

    after = _stored_values(out)
    assert after["1"] == before["1"]
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(after["2"], np.uint8), cv2.IMREAD_UNCHANGED),
                                  _image((5, 2, 3), seed=9))
    assert f"{out}: 1 images stored, 1 unchanged ones kept" in package_log.text


def test_missing_key_error_names_key_and_lmdb(tmp_path):
    create_lmdb(_folder(tmp_path / "in", ["a.png"]), tmp_path / "out.lmdb", progress=False)

    with pytest.raises(KeyError, match=r"'nope' is not in the LMDB .*out\.lmdb"):
        LmdbImageReader(tmp_path / "out.lmdb").get_bytes("nope")


def test_reader_of_a_missing_lmdb_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.lmdb is not an LMDB"):
        LmdbImageReader(tmp_path / "absent.lmdb").read("a")


def _read_in_child(reader: LmdbImageReader, opens: list[int], queue: multiprocessing.Queue) -> None:
    try:
        queue.put((reader.read("a"), len(opens)))
    except Exception as exc:  # reported to the test instead of leaving it waiting
        queue.put((repr(exc), len(opens)))


def test_forked_child_opens_its_own_environment_and_parent_keeps_reading(tmp_path, monkeypatch):
    src = _folder(tmp_path / "in", ["a.png"])
    create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    opens: list[int] = []
    real_open = lmdb.open

    def counting_open(*args, **kwargs) -> lmdb.Environment:
        opens.append(1)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(lmdb, "open", counting_open)
    reader = LmdbImageReader(tmp_path / "out.lmdb")
    reader.read("a")  # the parent's environment, inherited by the child

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(reader, opens, queue))
    child.start()
    image, opens_in_child = queue.get(timeout=10)
    child.join(timeout=10)

    assert opens_in_child == 2
    assert np.array_equal(image, read_image(src / "a.png"))
    assert np.array_equal(reader.read("a"), image)  # the child closing its copy leaves the parent's open


def test_two_readers_of_one_lmdb_read_in_the_same_process(tmp_path):
    src = _folder(tmp_path / "in", ["a.png"])
    create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    first, second = LmdbImageReader(tmp_path / "out.lmdb"), LmdbImageReader(tmp_path / "out.lmdb")

    assert np.array_equal(first.read("a"), second.read("a"))


def test_reader_can_be_pickled_after_use_for_spawned_workers(tmp_path):
    src = _folder(tmp_path / "in", ["a.png"])
    create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    reader = LmdbImageReader(tmp_path / "out.lmdb")
    reader.read("a")

    copy = pickle.loads(pickle.dumps(reader))

    assert np.array_equal(copy.read("a"), read_image(src / "a.png"))


def _load_script():
    spec = importlib.util.spec_from_file_location("create_lmdb_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load_script().main(["--help"])

    assert exit_info.value.code == 0
    assert "--compress-level" in capsys.readouterr().out


def test_cli_refuses_an_output_not_ending_in_lmdb(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load_script().main(["--input", str(tmp_path), "--output", str(tmp_path / "out")])

    assert exit_info.value.code == 2
    assert "must be a folder name ending in .lmdb" in capsys.readouterr().err


def test_cli_run_from_another_directory_creates_the_lmdb(tmp_path):
    _folder(tmp_path / "in", ["a.png", "b.png"])

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--input", "in", "--output", "out.lmdb", "--workers", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert f"2 images in out.lmdb; image list: {Path('out.lmdb', 'meta_info.txt')}" in result.stdout
    assert list(read_meta_info(tmp_path / "out.lmdb")) == ["a", "b"]


def test_folder_datasets_work_without_the_lmdb_package_and_lmdbs_say_what_is_missing(tmp_path):
    """lmdb is imported on first use (some GPU machines lack it): a folder dataset trains without it."""
    folder = tmp_path / "GT"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((16, 16, 3), np.uint8))
    code = f"""
import sys
sys.modules["lmdb"] = None  # import lmdb now raises ImportError
from esrgan.data.paired import PairedImageDataset
from esrgan.data.lmdb_io import create_lmdb
print(len(PairedImageDataset("x", 4, {str(folder)!r}, None, gt_size=8)))
try:
    create_lmdb({str(folder)!r}, {str(tmp_path / "GT.lmdb")!r}, progress=False)
except ImportError as err:
    print(err)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1] / "codes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1", "LMDB datasets need the lmdb package (pip install lmdb, in "
                                          "requirements.txt); image folders work without it"]


def test_data_type_lmdb_on_an_image_folder_names_the_option(tmp_path):
    from esrgan.data.sources import open_source

    with pytest.raises(ValueError, match=r"is not an LMDB \(no data\.mdb\) but data_type is lmdb: set data_type "
                                         r"to auto or folder"):
        open_source(str(tmp_path), "lmdb")


def test_an_lmdb_read_as_a_folder_names_the_option_and_auto_knows_it_by_its_data_mdb(tmp_path):
    from esrgan.data.sources import LmdbSource, open_source

    out = tmp_path / "HR_sub"  # an LMDB without the .lmdb suffix
    create_lmdb(_folder(tmp_path / "in", ["a.png"]), out, progress=False)
    with pytest.raises(ValueError) as info:
        open_source(str(out), "folder")
    assert str(info.value) == f"{out} is an LMDB (it holds data.mdb) but data_type is folder: set data_type to auto " \
                              "or lmdb"
    assert isinstance(open_source(str(out), "auto"), LmdbSource)


def test_images_removed_from_the_folder_are_refused_or_with_remove_missing_deleted(tmp_path):
    src = _folder(tmp_path / "in", ["a.png", "b.png", "c.png"])
    create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    (src / "b.png").unlink()
    with pytest.raises(ValueError, match=r"1 images that are not in .* \(b\).*run again with --remove-missing"):
        create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    assert create_lmdb(src, tmp_path / "out.lmdb", progress=False, remove_missing=True) == 2
    assert sorted(_stored_values(tmp_path / "out.lmdb")) == ["a", "c"]
    assert list(read_meta_info(tmp_path / "out.lmdb")) == ["a", "c"]


def test_images_removed_from_an_lmdb_larger_than_lmdbs_default_map_are_deleted(tmp_path):
    """py-lmdb opens with a 10 MiB map, which an existing LMDB's exact size replaces: a deletion, which copies
    pages before freeing any, found the map full."""
    src = _folder(tmp_path / "in", [f"{i:02d}.png" for i in range(16)], shape=(480, 480, 3))  # ~0.7 MB each
    create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    assert (tmp_path / "out.lmdb" / "data.mdb").stat().st_size > 10 << 20
    for name in ("03.png", "07.png", "11.png"):
        (src / name).unlink()
    assert create_lmdb(src, tmp_path / "out.lmdb", progress=False, remove_missing=True) == 13
    assert len(read_meta_info(tmp_path / "out.lmdb")) == 13 and len(_stored_values(tmp_path / "out.lmdb")) == 13


@pytest.mark.parametrize("change", ["added", "removed"])
def test_an_interrupted_update_leaves_no_meta_info_listing_what_is_not_stored(tmp_path, monkeypatch, change):
    src = _folder(tmp_path / "in", ["a.png", "b.png", "c.png"])
    create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    if change == "added":
        _folder(src, ["d.png"])
    else:
        (src / "b.png").unlink()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmdb_io, "_stored_shapes", interrupted)  # after the images are stored or deleted
    with pytest.raises(KeyboardInterrupt):
        create_lmdb(src, tmp_path / "out.lmdb", progress=False, remove_missing=True)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match=r"meta_info\.txt not found: the scripts/create_lmdb\.py run that "
                                                r"writes .*out\.lmdb did not finish; run it again"):
        read_meta_info(tmp_path / "out.lmdb")
    create_lmdb(src, tmp_path / "out.lmdb", progress=False)
    assert list(read_meta_info(tmp_path / "out.lmdb")) == (["a", "b", "c", "d"] if change == "added" else ["a", "c"])
