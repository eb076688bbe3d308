"""Image files <-> arrays <-> tensors. The framework is RGB throughout; OpenCV's BGR stops at this module (and
at `read_raw` / `write_raw`, for the data-preparation code that copies pixels as stored).

Conversions of unusual inputs are explicit: grayscale is replicated to three channels, an alpha channel is
dropped, 16-bit images are scaled to [0, 1] like 8-bit ones. Each kind is reported once per process.
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

from .files import atomic_output
from .misc import listing

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_warned: set[str] = set()


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        log.warning(message)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name. Hidden files (macOS `._*` companions, the temporary
    files of an interrupted atomic write) are not images of the dataset."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


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
    """Decode an image file as stored: 8 or 16 bits, gray or OpenCV's BGR(A) channel order."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot decode image {path}: the file is missing, truncated or not an image")
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 RGB HxWx3 in [0, 1]."""
    return to_float_rgb(read_raw(path), str(path))


_NO_PIXEL_LIMIT = threading.Lock()


def header_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except Image.DecompressionBombError:
        # PIL's guard against decoding huge images; only the header is read here, and OpenCV decodes them. The
        # limit is PIL's global: lifted for this open only, one thread at a time.
        with _NO_PIXEL_LIMIT:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as img:
                    return img.size
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
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_PNG_COMPRESSION, png_level] if png_level is not None else []
    with atomic_output(path) as tmp:
        if not cv2.imwrite(os.fspath(tmp), np.ascontiguousarray(img), params):
            raise OSError(f"could not write image {path}")


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
