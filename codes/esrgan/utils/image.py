"""Image files <-> arrays <-> tensors. The framework is RGB throughout; OpenCV's BGR stops at this module (and
at `read_raw` / `write_raw`, for the data-preparation code that copies pixels unconverted).

Conversions of unusual inputs are explicit: grayscale is replicated to three channels, an alpha channel is
dropped, 16-bit images are scaled to [0, 1] like 8-bit ones. Each kind is reported once per process. Every
reader decodes through `read_raw`, which turns a JPEG upright by its EXIF orientation (and `header_size` gives
the size so decoded).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from .files import atomic_write_bytes
from .logger import RANK_LOCAL
from .misc import listing

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_warned: set[str] = set()


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        log.warning(message, extra=RANK_LOCAL)  # each process reads its own images


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name. Hidden files (macOS `._*` companions, the temporary
    files of an interrupted atomic write) are not images of the dataset. A broken symbolic link is listed, so
    that reading it names it (a dataset moved from under its links is not silently smaller)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith(".") and not p.is_dir())


def images_by_stem(folder: str | Path) -> dict[str, Path]:
    """The images of `folder` keyed by file name without extension (the key that pairs GT with LQ).

    Two files that differ only by extension would get one key: that is an error listing all such clashes.
    """
    by_stem: dict[str, list[Path]] = {}
    for path in list_images(folder):
        by_stem.setdefault(path.stem, []).append(path)
    clashes = [" / ".join(p.name for p in paths) for paths in by_stem.values() if len(paths) > 1]
    if clashes:
        raise ValueError(f"{folder}: several files share a name and differ only by extension, so they would get "
                         f"the same key: {listing(clashes, 20)}")
    return {stem: paths[0] for stem, paths in by_stem.items()}


def read_raw(path: str | Path) -> np.ndarray:
    """Decode an image file: 8 or 16 bits, gray or OpenCV's BGR(A) channel order, the pixels as stored except
    that a JPEG is turned upright by its EXIF orientation, as image viewers and BasicSR's reader show it.

    The file is read by NumPy and decoded from memory: OpenCV's own file functions crash on some names that
    are not valid UTF-8 (Latin-1 names from an old archive, say).
    """
    data = np.fromfile(os.fspath(path), dtype=np.uint8)  # a missing file: FileNotFoundError naming it
    # OpenCV applies the EXIF orientation except under IMREAD_UNCHANGED, which keeps alpha (a JPEG has none).
    jpeg = data[:2].tobytes() == b"\xff\xd8"
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if jpeg else cv2.IMREAD_UNCHANGED
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise OSError(f"cannot decode image {path}: the file is truncated or not an image")
    if img.dtype not in (np.uint8, np.uint16):
        raise OSError(f"image {path} has sample type {img.dtype}; only 8- and 16-bit images are supported")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        raise OSError(f"image {path} has {img.shape[2]} channels; expected gray, RGB or RGBA")
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 RGB HxWx3 in [0, 1]."""
    return to_float_rgb(read_raw(path), str(path))


_NO_PIXEL_LIMIT = threading.Lock()


_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _upright_size(img: Image.Image) -> tuple[int, int]:
    """`img`'s size as `read_raw` decodes it: a JPEG turned by its EXIF orientation."""
    width, height = img.size
    if img.format in ("JPEG", "MPO") and img.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def header_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as `read_raw` decodes it, read from its header without decoding the
    pixels."""
    try:
        with Image.open(path) as img:
            return _upright_size(img)
    except Image.DecompressionBombError:
        # PIL's guard against decoding huge images; only the header is read here, and OpenCV decodes them. The
        # limit is PIL's global: lifted for this open only, one thread at a time.
        with _NO_PIXEL_LIMIT:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as img:
                    return _upright_size(img)
            finally:
                Image.MAX_IMAGE_PIXELS = limit


def to_float_rgb(img: np.ndarray, source: str) -> np.ndarray:
    """A decoded OpenCV array (uint8/uint16; gray, BGR or BGRA) -> float32 RGB HxWx3 in [0, 1].

    `source` names the file (or LMDB key) in warnings and errors.
    """
    if img.dtype == np.uint16:
        _warn_once("16bit", f"16-bit image {source} (and any others) scaled to [0, 1] by 65535")
        img = img.astype(np.float32) / 65535.0
    elif img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    else:
        raise OSError(f"image {source} has unsupported sample type {img.dtype}; use 8- or 16-bit images")
    if img.ndim == 2:
        _warn_once("gray", f"grayscale image {source} (and any others) replicated to 3 channels")
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        _warn_once("alpha", f"image {source} (and any others) has an alpha channel; it is dropped")
        img = img[:, :, :3]
    return np.ascontiguousarray(img[:, :, ::-1])


def write_image(path: str | Path, img: np.ndarray, png_level: int | None = None) -> None:
    """Write an RGB (or gray / RGBA, written as given) uint8 or uint16 image atomically (see `write_raw`)."""
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[:, :, [2, 1, 0, 3][: img.shape[2]]]  # RGB(A) -> OpenCV's BGR(A)
    write_raw(path, img, png_level)


def write_raw(path: str | Path, img: np.ndarray, png_level: int | None = None) -> None:
    """Write an image in OpenCV's channel order (gray, BGR or BGRA; uint8 or uint16) atomically: to a temporary
    file in the same folder, then renamed, so that an interrupted run never leaves a truncated image behind.
    `png_level` is the PNG compression level 0-9 (OpenCV's default 1 when None)."""
    path = Path(path)
    params = [cv2.IMWRITE_PNG_COMPRESSION, png_level] if png_level is not None else []
    try:  # encoded in memory and written by Python, for the names OpenCV's own file functions crash on
        ok, encoded = cv2.imencode(path.suffix, np.ascontiguousarray(img), params)
    except cv2.error:
        ok = False
    if not ok:
        raise OSError(f"could not write image {path}: OpenCV cannot encode a {img.dtype} {img.shape} image as "
                      f"{path.suffix or 'a file without extension'}")
    atomic_write_bytes(path, encoded.data)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding, the quantisation SR results are scored after."""
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def img2tensor(img: np.ndarray) -> torch.Tensor:
    """HxWxC float array -> CxHxW float tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def tensor2img(t: torch.Tensor) -> np.ndarray:
    """CxHxW (or 1xCxHxW) tensor in [0, 1] -> HxWxC uint8 RGB, rounded."""
    arr = t.detach().squeeze(0).float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return (arr * 255.0).round().astype(np.uint8)
