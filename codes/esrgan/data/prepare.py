"""Dataset preparation: crop large images into sub-images and make MATLAB-bicubic LR images.

This is the library behind ``scripts/extract_subimages.py`` and ``scripts/generate_lr.py``. Training
reads a random patch of each image, and reading it from a 480x480 sub-image instead of a 2K PNG is
what keeps data loading fast (the ESRGAN / BasicSR recipe). The LR inputs of the SR benchmarks are
MATLAB's ``imresize(hr, 1/scale, 'bicubic')`` of the mod-cropped HR image.

Images are read with ``read_raw`` and written with their samples as stored: 8 or 16 bit, gray, colour or with
alpha (a JPEG turned upright by its EXIF orientation, as every reader of the framework sees it). Every output
is written atomically (temporary file, then rename), so an existing output is complete. As ``make`` does, an
output is remade only when it is missing or older than its source image, so a job whose outputs are all up to
date is skipped, an interrupted run is resumed by running it again, and a source image replaced since is done
again.
Each output folder records the settings its files were made with (``SETTINGS_FILE``): a run with
other settings (another crop grid, another scale) is refused instead of mixing the two.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from tqdm import tqdm

from ..utils.files import atomic_write_text
from ..utils.image import header_size, images_by_stem, list_images, read_raw, write_raw
from .imresize import bicubic_degrade, imresize, modcrop

R = TypeVar("R")


# ------------------------------------------------------------------------------------------ image files
def match_lr(hr_stem: str, lr_files: dict[str, Path], scale: int) -> Path:
    """The LR image of the HR image ``hr_stem``: the one with the same stem, else ``<hr_stem>x<scale>``.

    The second form is the DIV2K naming (``0001.png`` <-> ``0001x4.png``). Only that trailing suffix
    is tried, so a stem with ``x4`` inside (``0801x4_rock``) is never cut short.
    """
    for stem in (hr_stem, f"{hr_stem}x{scale}"):
        if stem in lr_files:
            return lr_files[stem]
    raise FileNotFoundError(f"no LR image for {hr_stem}: looked for the stems {hr_stem} and {hr_stem}x{scale}")


def is_stale(output: Path, source: Path) -> bool:
    """Whether ``output`` is to be (re)made from ``source``: it is missing, or older than the source."""
    try:
        return output.stat().st_mtime_ns < source.stat().st_mtime_ns
    except FileNotFoundError:
        return True


SETTINGS_FILE = ".esrgan_prepare.json"  # hidden: no dataset reader takes it for an image


def claim_folders(claims: Sequence[tuple[str | Path, dict[str, Any]]]) -> None:
    """Make each ``(folder, settings)`` folder (created if missing) an output of its settings, recorded in
    its ``SETTINGS_FILE``; all are checked before any record is written.

    Files are skipped by name when up to date, so a folder already holding images made with other
    settings (another crop size, step or scale) would end up with some of each: that is refused, as is
    a folder of images without a record. The same settings again (a resumed run, or more source images
    added to the same folder) are accepted, and so is anything for a folder without images.
    """
    to_write = []
    for folder, settings in claims:
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"output folder {folder} is a file")
        record = folder / SETTINGS_FILE
        try:
            made = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
        except ValueError:
            made = None
        made = made if isinstance(made, dict) else None  # a damaged record is none
        if made == settings:
            continue
        if folder.is_dir() and list_images(folder):
            if made is None:
                raise ValueError(f"{folder} already holds images, with no readable record ({SETTINGS_FILE}) of what "
                                 "made them (an earlier version, another tool), so they could not be told apart "
                                 "from this run's: choose an empty output folder, or delete its images")
            differences = "; ".join(f"{key} {_shown(made.get(key))} there, {_shown(settings.get(key))} now"
                                    for key in sorted(made.keys() | settings.keys())
                                    if made.get(key) != settings.get(key))
            raise ValueError(f"{folder} holds images made with other settings ({differences}; see "
                             f"{record.name}): choose another output folder, or delete this one to remake it")
        to_write.append((record, settings))
    for record, settings in to_write:
        atomic_write_text(record, json.dumps(settings, sort_keys=True) + "\n")


def _shown(setting: Any) -> Any:
    return "not set" if setting is None else setting


def _read_checked(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode an image (`read_raw`), checking it against its header ``size``."""
    img = read_raw(path)
    # Crops are planned from the header; a disagreeing decoder would silently yield clipped crops.
    if (img.shape[1], img.shape[0]) != size:
        raise OSError(f"image {path} decodes to {img.shape[1]}x{img.shape[0]}, its header says {size[0]}x{size[1]}")
    return img


def check_crop_settings(crop_size: int, step: int, thresh_size: int, scale: int | None = None) -> None:
    """Raise ``ValueError`` for crop settings that cannot be used (with LR crops at ``scale`` if given)."""
    if crop_size < 1 or step < 1:
        raise ValueError(f"crop size ({crop_size}) and step ({step}) must be positive")
    if thresh_size < 0:
        raise ValueError(f"thresh size must not be negative, got {thresh_size}")
    if scale is not None:
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if crop_size % scale or step % scale:
            raise ValueError(f"crop size ({crop_size}) and step ({step}) must be multiples of the scale ({scale}), "
                             "so that every HR crop has an LR crop of exactly 1/scale its size and position")


def crop_positions(length: int, crop_size: int, step: int, thresh_size: int) -> list[int]:
    """Start offsets of the crops along one axis of ``length`` pixels.

    Crops start at 0, step, 2*step, ... while they fit. If the pixels left after the last one are more
    than ``thresh_size``, one more crop is aligned to the end. An axis shorter than the crop has none.
    """
    check_crop_settings(crop_size, step, thresh_size)
    if length < crop_size:
        return []
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


def crop_grid(
    height: int, width: int, crop_size: int, step: int, thresh_size: int, scale: int | None = None
) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the crops of a ``height x width`` image, row-major.

    With ``scale`` every corner is a multiple of it, so the LR crop sits exactly at ``corner / scale``:
    the end-aligned crop is moved up / left to the scale grid, and dropped if that puts it on the crop
    before it (fewer than ``scale`` pixels were left).
    """
    check_crop_settings(crop_size, step, thresh_size, scale)
    axes = [crop_positions(length, crop_size, step, thresh_size) for length in (height, width)]
    if scale is not None:
        axes = [list(dict.fromkeys(p - p % scale for p in positions)) for positions in axes]
    return [(y, x) for y in axes[0] for x in axes[1]]


def _digits(count: int) -> int:
    """Digits of the crop numbers of an image with ``count`` crops: 3, more past 999."""
    return max(3, len(str(count)))


def crop_names(stem: str, count: int) -> list[str]:
    """File names of the ``count`` crops of image ``stem``: ``<stem>_s001.png``, ... (more digits past 999)."""
    return [f"{stem}_s{i:0{_digits(count)}d}.png" for i in range(1, count + 1)]


def crop_source(crop_stem: str) -> str:
    """The stem of the image a crop was cut from: ``a_s001`` -> ``a`` (``a_s001_s002`` -> ``a_s001``)."""
    match = re.fullmatch(r"(.*)_s\d{3,}", crop_stem)
    return match.group(1) if match else crop_stem


class Extracted(NamedTuple):
    """What ``extract_subimages`` did with one image."""

    crops: int  # crops the image has; 0 when it is smaller than the crop size
    written: int  # crops written now (the others existed already, newer than the image)


def extract_subimages(
    hr_path: str | Path,
    out_dir: str | Path,
    crop_size: int,
    step: int,
    thresh_size: int,
    png_level: int,
    lr_path: str | Path | None = None,
    lr_out_dir: str | Path | None = None,
    scale: int | None = None,
) -> Extracted:
    """Crop one image into ``out_dir/<stem>_s001.png``, ... (see ``crop_grid`` and ``crop_names``).

    With ``lr_path``, ``lr_out_dir`` and ``scale``, the LR image of ``hr_path`` is cropped at the
    same places divided by ``scale``, into files of the same names, so GT and LQ crops pair by name.
    Only missing crops and crops older than their image are written, and an image is not decoded
    when none of its crops is; crops of an earlier, larger image of the same name past this image's
    count, older than it, are deleted.
    """
    hr_path, out_dir = Path(hr_path), Path(out_dir)
    with_lr = (lr_path is not None, lr_out_dir is not None, scale is not None)
    if any(with_lr) and not all(with_lr):
        raise ValueError("LR crops need all of lr_path, lr_out_dir and scale")

    hr_size = header_size(hr_path)
    if lr_path is not None:
        lr_path, lr_out_dir = Path(lr_path), Path(lr_out_dir)
        lr_size = header_size(lr_path)
        expected = (hr_size[0] // scale, hr_size[1] // scale)
        if lr_size != expected:
            raise ValueError(f"LR image {lr_path} is {lr_size[0]}x{lr_size[1]}, but HR image {hr_path} "
                             f"({hr_size[0]}x{hr_size[1]}) at scale {scale} needs {expected[0]}x{expected[1]}")

    corners = crop_grid(hr_size[1], hr_size[0], crop_size, step, thresh_size, scale)
    names = crop_names(hr_path.stem, len(corners))
    # (image, its size, the factor its crop corners are divided by, the folder of its crops)
    sources = [(hr_path, hr_size, 1, out_dir)]
    if lr_path is not None:
        sources.append((lr_path, lr_size, scale, lr_out_dir))
    written: set[int] = set()
    for path, size, factor, folder in sources:
        # The crops missing or older than the image; the image is decoded only if there is one.
        todo = [i for i, name in enumerate(names) if is_stale(folder / name, path)]
        if todo:
            img = _read_checked(path, size)
            side = crop_size // factor
            for i in todo:
                y, x = corners[i][0] // factor, corners[i][1] // factor
                write_raw(folder / names[i], img[y : y + side, x : x + side], png_level)
            written.update(todo)
        _remove_leftover_crops(folder, hr_path.stem, len(names), path)
    return Extracted(len(corners), len(written))


def _remove_leftover_crops(folder: Path, stem: str, count: int, source: Path) -> None:
    """Delete the crops of ``stem`` past its ``count`` current ones that are older than ``source``: those an
    earlier, larger image of that name had (numbered with 3 digits, or more past 999). A newer one is left
    alone (it is not this image's to judge). Each run of numbers ends at the first missing file, so an
    image without leftovers costs a few lookups."""
    width = _digits(count) if count else 0
    for digits in range(3, 8):
        i = count + 1 if digits == width else 1
        while i < 10**digits and (path := folder / f"{stem}_s{i:0{digits}d}.png").is_file():
            if is_stale(path, source):
                path.unlink()
            i += 1


# ------------------------------------------------------------------------------------------ LR images
def generate_lr(
    hr_path: str | Path,
    lr_out: str | Path,
    scale: int,
    png_level: int,
    hr_mod_out: str | Path | None = None,
    bic_out: str | Path | None = None,
) -> bool:
    """Write the MATLAB-bicubic LR image of ``hr_path``, ``imresize(modcrop(hr, scale), 1/scale)``.

    The HR image is mod-cropped at its bottom / right edges to a multiple of ``scale`` and resized in
    its own sample type (uint8 or uint16). Optionally also written: the mod-cropped HR image
    (``hr_mod_out``) and the LR image bicubic-upsampled back to its size (``bic_out``).
    Only missing outputs and outputs older than ``hr_path`` are written; returns False, without
    decoding, when there is none.
    """
    hr_path = Path(hr_path)
    outputs = {"lr": lr_out, "hr_mod": hr_mod_out, "bic": bic_out}
    missing = {key for key, path in outputs.items() if path is not None and is_stale(Path(path), hr_path)}
    if not missing:
        return False

    size = header_size(hr_path)
    if min(size) < scale:
        raise ValueError(f"image {hr_path} ({size[0]}x{size[1]}) is smaller than the scale {scale}")
    hr = _read_checked(hr_path, size)
    hr_mod = modcrop(hr, scale)
    if "hr_mod" in missing:
        write_raw(Path(hr_mod_out), hr_mod, png_level)
    lr = bicubic_degrade(hr, scale)
    if "lr" in missing:
        write_raw(Path(lr_out), lr, png_level)
    if "bic" in missing:
        write_raw(Path(bic_out), imresize(lr, output_shape=hr_mod.shape[:2]), png_level)
    return True


def remove_outputs_without_source(folders: Sequence[Path], stems: Collection[str],
                                  source_of: Callable[[str], str] = str) -> list[Path]:
    """Delete the PNG outputs in ``folders`` whose source, ``source_of`` their stem, is not among the source
    images' ``stems`` (their image was removed from the source folder); returns them."""
    removed = [path for folder in folders if folder.is_dir() for path in list_images(folder)
               if path.suffix == ".png" and source_of(path.stem) not in stems]
    for path in removed:
        path.unlink()
    return removed


# ------------------------------------------------------------------------------------------ running jobs
def _run_guarded(fn: Callable[..., Any], indexed_job: tuple[int, tuple]) -> tuple[int, bool, Any]:
    """Call ``fn(*job)``; an exception becomes its message, so one bad image does not stop the others."""
    index, job = indexed_job
    try:
        return index, True, fn(*job)
    except Exception as exc:
        return index, False, f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def worker_processes(workers: int, task: str) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` processes for `task`. A worker that dies (killed for memory, a crash in a decoder)
    stops the run with an error instead of leaving it waiting for that worker for ever; an error (or Ctrl-C)
    in the caller drops the work not yet started. The workers ignore Ctrl-C, which a terminal sends to them
    too: each finishes its image and then takes the caller's order to stop."""
    pool = ProcessPoolExecutor(workers, initializer=_ignore_ctrl_c)
    try:
        yield pool
    except BrokenProcessPool:
        raise ChildProcessError(f"{task}: a worker process died (killed for memory, or a crash while decoding "
                                "an image); what was finished is kept: run again, with --workers 1 to see the "
                                "image it stops at") from None
    finally:
        pool.shutdown(cancel_futures=True)


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stopped_by_ctrl_c(main: Callable[[], int]) -> int:
    """Run a preparation script's `main`; Ctrl-C ends it with one line and exit status 130 (each script keeps
    what it finished and continues from there when run again)."""
    try:
        return main()
    except KeyboardInterrupt:
        print("stopped by Ctrl-C: what was finished is kept; run the same command again to continue",
              file=sys.stderr)
        return 128 + signal.SIGINT


def run_jobs(
    fn: Callable[..., R], jobs: Sequence[tuple], workers: int, desc: str
) -> tuple[list[tuple[tuple, R]], list[tuple[tuple, str]]]:
    """Call ``fn(*job)`` for every job, in ``workers`` processes when more than one, with a progress bar.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one) when
    ``workers > 1``. Returns ``(job, result)`` of the jobs that succeeded and ``(job, error message)``
    of those that raised, both in job order.
    """
    call = functools.partial(_run_guarded, fn)
    outcomes: list[tuple[int, bool, Any]] = []
    with tqdm(total=len(jobs), desc=desc, unit="img") as bar:
        if workers > 1 and len(jobs) > 1:
            with worker_processes(min(workers, len(jobs)), desc) as pool:
                for future in as_completed([pool.submit(call, indexed) for indexed in enumerate(jobs)]):
                    outcomes.append(future.result())
                    bar.update()
        else:
            for outcome in map(call, enumerate(jobs)):
                outcomes.append(outcome)
                bar.update()
    outcomes.sort(key=lambda outcome: outcome[0])
    results = [(jobs[i], value) for i, ok, value in outcomes if ok]
    errors = [(jobs[i], value) for i, ok, value in outcomes if not ok]
    return results, errors


# ------------------------------------------------------------------------------------------ script helpers
def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer of at least {low}, got {value}")
        return value

    return parse


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--png-level`` and ``--workers`` options shared by the preparation scripts."""
    parser.add_argument("--png-level", type=int, choices=range(10), default=3, metavar="0-9",
                        help="PNG compression level, 0 (fastest, largest) to 9 (default: %(default)s)")
    parser.add_argument("--workers", type=int_at_least(1), default=os.cpu_count() or 1,
                        help="parallel processes (default: the number of CPUs, %(default)s here)")


def source_images(input_dir: Path, claims: Sequence[tuple[str | Path, dict[str, Any]]]) -> dict[str, Path]:
    """The images of a script's ``input_dir`` by stem, its output folders claimed for them (`claim_folders`);
    raises ValueError (or OSError) when there are none or a folder is refused."""
    if not Path(input_dir).is_dir():
        raise ValueError(f"the input folder {input_dir} " + ("is not a folder" if Path(input_dir).exists() else
                                                               "does not exist"))
    files = images_by_stem(input_dir)
    if not files:
        raise ValueError(f"no images in {input_dir}")
    claim_folders(claims)
    return files


def check_distinct_folders(inputs: Sequence[str | Path], outputs: Sequence[str | Path]) -> None:
    """Raise ``ValueError`` unless every output folder differs from the inputs and from the other outputs.

    Outputs are named after the input stems, so a shared folder would overwrite inputs or other outputs.
    """
    seen = {Path(p).resolve(): f"the input folder {p}" for p in inputs}
    for folder in outputs:
        resolved = Path(folder).resolve()
        if resolved in seen:
            raise ValueError(f"output folder {folder} is also {seen[resolved]}; give it one of its own")
        seen[resolved] = f"the output folder {folder}"


def report_errors(errors: Sequence[tuple[tuple, str]]) -> int:
    """Print the failed jobs (named by their first argument, the input image) to stderr; the script's exit
    status: 1 when a job failed, else 0."""
    if not errors:
        return 0
    noun = "image" if len(errors) == 1 else "images"
    print(f"failed on {len(errors)} {noun}:", file=sys.stderr)
    for job, message in errors:
        print(f"  {job[0]}: {message}", file=sys.stderr)
    return 1
