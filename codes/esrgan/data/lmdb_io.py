"""LMDB storage of images in BasicSR's layout, so that LMDBs made by either tool are read by the other.

An `X.lmdb` folder holds LMDB's `data.mdb` / `lock.mdb` and, beside them, `meta_info.txt` with one line per
image, sorted by key: `<key>.png (<h>,<w>,<c>) <compress_level>` (c is 1 for gray images). Keys are image file
names without their extension, UTF-8 encoded; values are the PNG encoding of the image as `read_raw` decodes
it (16-bit, gray and alpha survive, a JPEG is turned upright by its EXIF orientation; conversion to the
framework's float RGB happens when reading).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
from collections.abc import Iterator
from functools import partial
from itertools import chain, islice
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.files import atomic_write_text
from ..utils.image import header_size, images_by_stem, read_raw, to_float_rgb
from ..utils.misc import listing
from .prepare import worker_processes

if TYPE_CHECKING:
    import lmdb

log = logging.getLogger(__name__)


def _lmdb() -> ModuleType:
    """The lmdb package, imported on first use: folder datasets work without it."""
    try:
        import lmdb
    except ImportError as err:
        raise ImportError("LMDB datasets need the lmdb package (pip install lmdb, in requirements.txt); image "
                          "folders work without it") from err
    return lmdb

META_INFO = "meta_info.txt"
# Anchored at the end so that keys keep their dots: BasicSR's reader splits at the first dot, which turns
# `0001.x4` into `0001`.
# The compression level at the end is optional, as for BasicSR's reader.
_META_LINE = re.compile(r"^(?P<key>.*)\.png \((?P<h>\d+),(?P<w>\d+),(?P<c>\d+)\)(?: (?P<level>\d+))?$")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> channels (a palette decodes to RGB)

_ESTIMATE_SAMPLES = 8  # images encoded before the map size is chosen
_MAP_CHUNKSIZE = 4  # amortises inter-process traffic while keeping few large images in flight
# A batch is kept in memory until committed, so that it can be re-written after growing the map; this bounds it
# for large images whatever `commit_every` is.
_MAX_BATCH_BYTES = 256 << 20


def read_meta_info(lmdb_path: str | Path) -> dict[str, tuple[int, int, int]]:
    """key -> (h, w, c) for every image listed in the LMDB's `meta_info.txt`, in file order."""
    meta_path = Path(lmdb_path) / META_INFO
    if not meta_path.is_file():
        old = " (this is the older mmsr layout, meta_info.pkl with raw pixels, which is not read)" if (
            Path(lmdb_path) / "meta_info.pkl").is_file() else ""
        if (Path(lmdb_path) / _STARTED).is_file():
            raise FileNotFoundError(f"{meta_path} not found: the scripts/create_lmdb.py run that writes {lmdb_path} "
                                    "did not finish; run it again (it stores only what is missing)")
        raise FileNotFoundError(
            f"{meta_path} not found{old}: it lists the images of an LMDB and is needed to read one; "
            "make the LMDB with scripts/create_lmdb.py (or BasicSR's create_lmdb), which writes it"
        )
    entries: dict[str, tuple[int, int, int]] = {}
    for number, line in enumerate(meta_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = _META_LINE.match(line.strip())  # BasicSR's reader strips the line too
        if match is None:
            raise ValueError(
                f"{meta_path}, line {number}: {line!r} is not of the form '<key>.png (<h>,<w>,<c>) [<level>]'"
            )
        entries[match["key"]] = (int(match["h"]), int(match["w"]), int(match["c"]))
    return entries


def write_meta_info(lmdb_path: str | Path, entries: dict[str, tuple[int, int, int]], compress_level: int) -> None:
    """Write `meta_info.txt` for `entries` (key -> (h, w, c)), sorted by key, atomically."""
    meta_path = Path(lmdb_path) / META_INFO
    text = "".join(f"{key}.png ({h},{w},{c}) {compress_level}\n" for key, (h, w, c) in sorted(entries.items()))
    atomic_write_text(meta_path, text)


# Read-only environments of this process, by resolved path: py-lmdb refuses to open one environment twice in a
# process, so all readers of an LMDB share one.
_readonly_envs: dict[str, lmdb.Environment] = {}
_readonly_envs_pid = os.getpid()


def _readonly_env(path: Path) -> lmdb.Environment:
    global _readonly_envs_pid
    if _readonly_envs_pid != os.getpid():
        # A forked child (a DataLoader worker) inherits its parent's environments. LMDB forbids using them across
        # processes and py-lmdb still counts them as open, so the child closes its copies (the parent's stay
        # open) and opens its own.
        for env in _readonly_envs.values():
            env.close()
        _readonly_envs.clear()
        _readonly_envs_pid = os.getpid()
    resolved = os.path.realpath(path)
    env = _readonly_envs.get(resolved)
    if env is None:
        if not (path / "data.mdb").is_file():
            raise FileNotFoundError(f"{path} is not an LMDB: it has no data.mdb")
        env = _lmdb().open(resolved, readonly=True, lock=False, readahead=False, meminit=False)
        _readonly_envs[resolved] = env
    return env


class LmdbImageReader:
    """Reads images from an LMDB. The environment is opened on first use, and again in every new process:
    DataLoader workers are forked or spawned, and an LMDB environment must not be shared across processes.
    Readers hold no environment themselves, so they can be pickled for spawned workers."""

    def __init__(self, lmdb_path: str | Path) -> None:
        self.path = Path(lmdb_path)

    def get_bytes(self, key: str) -> bytes:
        """The stored (PNG-encoded) value of `key`."""
        with _readonly_env(self.path).begin(write=False) as txn:
            value = txn.get(key.encode("utf-8"))
        if value is None:
            raise KeyError(f"image {key!r} is not in the LMDB {self.path}")
        return value

    def read(self, key: str) -> np.ndarray:
        """The image `key` as float32 RGB HxWx3 in [0, 1], like `utils.image.read_image`."""
        img = cv2.imdecode(np.frombuffer(self.get_bytes(key), np.uint8), cv2.IMREAD_UNCHANGED)
        source = f"{self.path}:{key}"
        if img is None:
            raise OSError(f"cannot decode image {source}: the stored value is not a valid image")
        return to_float_rgb(img, source)


def _png_shape(png: bytes | memoryview, source: str) -> tuple[int, int, int]:
    """(h, w, c) from a PNG's IHDR chunk, without decoding pixels."""
    head = bytes(png[:26])
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR" or head[25] not in _PNG_CHANNELS:
        raise ValueError(f"{source} is not a PNG image")
    width, height = struct.unpack(">II", head[16:24])
    return height, width, _PNG_CHANNELS[head[25]]


def _encode_image(path: Path, compress_level: int) -> bytes | str:
    """The image file as PNG bytes, pixels unchanged (bit depth, gray and alpha kept); or, when it cannot be
    read or encoded, why (so that one bad image does not stop the others)."""
    try:
        img = read_raw(path)
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
        if not ok:
            raise OSError(f"cannot encode image {path} ({img.dtype}, shape {img.shape}) as PNG")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return buf.tobytes()


def _pixel_count(path: Path) -> int | None:
    try:
        width, height = header_size(path)
    except OSError:
        return None  # the estimate falls back to the samples' mean
    return width * height


def _estimate_map_size(samples: list[bytes], rest: list[Path]) -> int:
    """Map size for the encoded `samples` plus the images in `rest`, extrapolated per pixel from the samples,
    with headroom for LMDB's pages and the estimate's error."""
    sample_pixels = [h * w for h, w, _ in (_png_shape(s, "encoded image") for s in samples)]
    sample_bytes = sum(map(len, samples))
    bytes_per_pixel = sample_bytes / max(sum(sample_pixels), 1)
    mean_pixels = sum(sample_pixels) / max(len(sample_pixels), 1)
    rest_pixels = sum(n if n is not None else mean_pixels for n in map(_pixel_count, rest))
    return int((sample_bytes + bytes_per_pixel * rest_pixels) * 1.5) + (64 << 20)


@contextlib.contextmanager
def _encoded(paths: list[Path], compress_level: int, workers: int) -> Iterator[Iterator[bytes | str]]:
    """PNG encodings of `paths` (or why one failed), in order, computed lazily by `workers` processes."""
    encode = partial(_encode_image, compress_level=compress_level)
    if workers <= 1 or len(paths) <= 1:
        yield map(encode, paths)
        return
    with worker_processes(min(workers, len(paths)), "encoding the images") as pool:
        yield pool.map(encode, paths, chunksize=_MAP_CHUNKSIZE)


def _make_room(env: lmdb.Environment) -> None:
    """Grow the map of an LMDB opened without a map size (py-lmdb's 10 MiB, which an existing larger LMDB
    replaces by its exact size) so that deletions, which copy pages before freeing any, fit."""
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    env.set_mapsize(max(env.info()["map_size"], used + max(used // 8, 64 << 20)))


def _commit(env: lmdb.Environment, batch: list[tuple[bytes, bytes]]) -> None:
    """Write `batch` in one transaction, growing the map until it fits."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in batch:
                    txn.put(key, value)
            return
        except _lmdb().MapFullError:
            # The transaction was aborted on the way out of `with`, so the map can be resized and the batch
            # written again.
            new_size = env.info()["map_size"] * 2
            log.info("LMDB map full; growing it to %.1f MiB", new_size / 2**20)
            env.set_mapsize(new_size)
        except _lmdb().Error as err:  # a full disk reads "mdb_txn_commit: Input/output error"
            raise OSError(f"cannot write the LMDB {env.path()} ({err}); if its disk is full, free some space and "
                          "run the same command again: it keeps the images already stored") from err


def _keys_of(folder: str | Path) -> dict[str, Path]:
    keys = images_by_stem(folder)
    unwritable = [key for key in keys if "\n" in key or "\r" in key]
    if unwritable:
        raise ValueError(f"file names with line breaks cannot be listed in {META_INFO}: {unwritable}")
    return keys


_STARTED, _COMPLETE = ".esrgan_lmdb_started", ".esrgan_lmdb_complete"
# The folder an LMDB was made from and the size and modification time of each image it stored, so that a run on
# another folder is refused and an image replaced by one with an older time (unzip, cp -p, rsync -a) is stored
# again.
_SOURCES = ".esrgan_lmdb_sources.json"


def _signature(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _read_sources(output_path: Path) -> tuple[str | None, dict[str, list[int]]]:
    """The input folder and the image signatures that the last run recorded; (None, {}) for an LMDB without
    them (of another tool, or of an earlier version)."""
    try:
        recorded = json.loads((output_path / _SOURCES).read_text(encoding="utf-8"))
        return str(recorded["input"]), {str(k): list(v) for k, v in recorded["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, {}


def _record_sources(output_path: Path, input_dir: Path, signatures: dict[str, list[int]]) -> None:
    atomic_write_text(output_path / _SOURCES, json.dumps({"input": str(input_dir), "files": signatures}))


def _start_run(output_path: Path) -> int:
    """The time (ns) after which a modified image is stored again: the start of the last complete run.

    That start is the time of a marker touched when a run begins and renamed when it ends (one clock, the file
    system's). Without a complete run, an unfinished run's marker stays as it is: the earliest start of the runs
    so far; with neither (an LMDB of another tool), the time of the last commit; for a new LMDB, 0."""
    started = output_path / _STARTED
    reference = next((f for f in (output_path / _COMPLETE, started, output_path / "data.mdb") if f.exists()), None)
    written_ns = reference.stat().st_mtime_ns if reference is not None else 0
    if reference != started:
        started.write_bytes(b"")
    return written_ns


def _finish_run(output_path: Path) -> None:
    """Mark the run that `_start_run` began as complete."""
    with contextlib.suppress(FileNotFoundError):  # another run on this LMDB finished first and took the marker
        os.replace(output_path / _STARTED, output_path / _COMPLETE)


def _stored_shapes(env: lmdb.Environment, output_path: Path) -> dict[str, tuple[int, int, int]]:
    """(h, w, c) of every image in the LMDB, from the PNG headers."""
    shapes = {}
    with env.begin(buffers=True) as txn:  # buffers: only each value's header is read, not copied whole
        for raw_key, value in txn.cursor():
            key = bytes(raw_key).decode("utf-8")
            shapes[key] = _png_shape(value, f"{output_path}:{key}")
    return shapes


def create_lmdb(
    input_dir: str | Path,
    output_path: str | Path,
    compress_level: int = 1,
    workers: int = 1,
    commit_every: int = 1000,
    progress: bool = True,
    remove_missing: bool = False,
) -> int:
    """Store the images directly in `input_dir` in the LMDB `output_path` and write its `meta_info.txt`;
    returns the number of images.

    Resumable: keys already in the LMDB (batches committed by an interrupted run) are skipped, so re-running
    with the same arguments finishes the job; an image whose size or modification time is not the one recorded
    when it was stored (or, without a record, one modified since the last complete run began) is stored again,
    and an LMDB recorded as made from another folder is refused. Encoding runs in `workers` processes; the map
    grows as needed. Keys of images that are no longer in `input_dir` are refused (the LMDB of another folder,
    say), or with `remove_missing` deleted. Images that cannot be read are listed together in an OSError at the
    end, after the others are stored; an earlier version of them is deleted from the LMDB, and so is
    `meta_info.txt`, which only a complete LMDB has.
    """
    input_dir, output_path = Path(input_dir), Path(output_path)
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0-9, got {compress_level}")
    if commit_every < 1 or workers < 1:
        raise ValueError(f"commit_every and workers must be at least 1, got {commit_every} and {workers}")
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    keys = _keys_of(input_dir)
    if not keys:
        raise ValueError(f"no images in {input_dir}")
    signatures = {key: _signature(path) for key, path in keys.items()}  # before reading: a later change shows

    output_path.mkdir(parents=True, exist_ok=True)
    source, recorded = _read_sources(output_path)
    written_ns = _start_run(output_path)
    env = _lmdb().open(os.fspath(output_path), meminit=False)
    try:
        _make_room(env)
        with env.begin() as txn:
            existing = {bytes(k).decode("utf-8") for k in txn.cursor().iternext(keys=True, values=False)}
        moved = source is not None and source != str(input_dir.resolve())
        if existing and moved and any(recorded.get(k, signatures[k]) != signatures[k] for k in existing & keys.keys()):
            # The same folder moved (mv, rsync -a) keeps every image's size and time; another one does not.
            raise ValueError(f"{output_path} was made from {source}, not from {input_dir}: choose another output "
                             f"path, or delete {output_path} to make it again from {input_dir}")
        foreign = sorted(existing - keys.keys())
        if foreign and not remove_missing:
            raise _foreign_refused(output_path, input_dir, foreign)
        # Missing, or changed since it was stored (without a record: since the last complete run began).
        todo = [key for key in keys if key not in existing or (
            recorded[key] != signatures[key] if key in recorded else signatures[key][1] > written_ns)]
        if foreign or todo:  # until the run completes, the LMDB must not pass for the complete one meta_info.txt lists
            (output_path / META_INFO).unlink(missing_ok=True)
        _remove_foreign(env, output_path, input_dir, foreign)
        failed = _store(env, {key: keys[key] for key in todo}, len(keys), compress_level, workers, commit_every,
                        progress)
        _record_sources(output_path, input_dir.resolve(),
                        {key: signature for key, signature in signatures.items() if key not in failed})
        if failed:
            raise _drop_failed(env, output_path, input_dir, failed, keys)
        # Guards against another process having written to the same LMDB meanwhile.
        entries = env.stat()["entries"]
        if entries != len(keys):
            raise RuntimeError(f"{output_path} holds {entries} images but {input_dir} has {len(keys)}")
        shapes = _stored_shapes(env, output_path)
    finally:
        env.close()
    write_meta_info(output_path, shapes, compress_level)
    _finish_run(output_path)
    log.info("%s: %d images stored, %d unchanged ones kept", output_path, len(todo), len(keys) - len(todo))
    return len(keys)


def _foreign_refused(output_path: Path, input_dir: Path, foreign: list[str]) -> ValueError:
    """The error for images of the LMDB no longer in `input_dir`, without --remove-missing."""
    return ValueError(
        f"{output_path} holds {len(foreign)} images that are not in {input_dir} ({listing(foreign, 5)}): it "
        "was made from another folder (delete it or choose another output path), or these images have "
        "been removed from this one since (then run again with --remove-missing to delete them here too)"
    )


def _remove_foreign(env: lmdb.Environment, output_path: Path, input_dir: Path, foreign: list[str]) -> None:
    """Delete the keys of the images no longer in `input_dir`."""
    if not foreign:
        return
    with env.begin(write=True) as txn:
        for key in foreign:
            txn.delete(key.encode("utf-8"))
    log.info("%s: deleted %d images that are no longer in %s (%s)", output_path, len(foreign), input_dir,
             listing(foreign, 5))


def _store(env: lmdb.Environment, todo: dict[str, Path], total: int, compress_level: int, workers: int,
           commit_every: int, progress: bool) -> dict[str, str]:
    """Encode the images `todo` (key -> file) in `workers` processes and store them, in batches of at most
    `commit_every` images, growing the map as needed; returns key -> why for those that could not be read."""
    keys = list(todo)
    failed: dict[str, str] = {}
    with (
        _encoded(list(todo.values()), compress_level, workers) as encoded,
        tqdm(total=total, initial=total - len(todo), unit="img", desc="LMDB", disable=not progress) as bar,
    ):
        samples = list(islice(encoded, _ESTIMATE_SAMPLES))
        used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        env.set_mapsize(used + _estimate_map_size([s for s in samples if isinstance(s, bytes)],
                                                  [todo[k] for k in keys[len(samples):]]))
        batch: list[tuple[bytes, bytes]] = []
        batch_bytes = 0
        for key, value in zip(keys, chain(samples, encoded), strict=True):
            bar.update()
            if isinstance(value, str):
                failed[key] = value
                continue
            batch.append((key.encode("utf-8"), value))
            batch_bytes += len(value)
            if len(batch) >= commit_every or batch_bytes >= _MAX_BATCH_BYTES:
                _commit(env, batch)
                batch, batch_bytes = [], 0
        if batch:
            _commit(env, batch)
    return failed


def _drop_failed(env: lmdb.Environment, output_path: Path, input_dir: Path, failed: dict[str, str],
                 keys: dict[str, Path]) -> OSError:
    """Delete what an earlier run stored of the images that could not be read now (key -> why): an LMDB that
    holds an image with its old pixels would look complete once meta_info.txt is written; the error naming them."""
    with env.begin(write=True) as txn:
        for key in failed:
            txn.delete(key.encode("utf-8"))
    noun = "image" if len(failed) == 1 else "images"
    return OSError(f"{len(failed)} {noun} of {input_dir} could not be stored in {output_path}:\n"
                  + "".join(f"  {keys[key]}: {why}\n" for key, why in failed.items())
                  + f"The other {len(keys) - len(failed)} are stored. Replace or remove these and run again: it "
                  "stores only what is missing.")
