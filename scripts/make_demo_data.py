"""Regenerate the bundled demo dataset (``datasets/demo``) from scikit-image's sample images.

Only the photographs physically shipped inside the scikit-image wheel (``skimage/data/``) are used;
nothing is downloaded. scikit-image is needed only to run this script, not at runtime of the
ESRGAN framework (the generated PNG files are committed to the repository).

Usage::

    python scripts/make_demo_data.py [--output datasets/demo]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

REPO_ROOT = Path(__file__).resolve().parents[1]
VAL_CROP = 192

# (output name, skimage/data file, operation, target (width, height))
TRAIN: list[tuple[str, str, str, tuple[int, int] | None]] = [
    ("astronaut", "astronaut.png", "keep", None),
    ("chelsea", "chelsea.png", "crop", (448, 300)),
    ("coffee", "coffee.png", "keep", None),
    ("rocket", "rocket.jpg", "crop", (640, 424)),
    ("hubble_deep_field", "hubble_deep_field.jpg", "keep", None),
    ("immunohistochemistry", "ihc.png", "keep", None),
    ("retina", "retina.jpg", "resize", (1024, 1024)),
]
VAL: list[tuple[str, str]] = [("brick", "brick.png"), ("grass", "grass.png"), ("gravel", "gravel.png")]


def read_bgr(path: Path) -> NDArray[np.uint8]:
    """Read an image as 8-bit 3-channel BGR, converting gray / alpha explicitly."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read {path}")
    if img.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8, got {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.asarray(img, dtype=np.uint8)


def center_crop(img: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    h, w = img.shape[:2]
    if width > w or height > h:
        raise ValueError(f"crop {width}x{height} larger than image {w}x{h}")
    top, left = (h - height) // 2, (w - width) // 2
    return img[top : top + height, left : left + width]


def write_png(img: NDArray[np.uint8], path: Path) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {path}")
    print(f"{path}: {img.shape[1]}x{img.shape[0]}, {path.stat().st_size / 1024:.0f} KiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the ESRGAN demo dataset.")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "datasets" / "demo", help="output folder")
    args = parser.parse_args(argv)

    import skimage  # imported here: only this script needs scikit-image

    data_dir = Path(skimage.__file__).parent / "data"
    (args.output / "train").mkdir(parents=True, exist_ok=True)
    (args.output / "val").mkdir(parents=True, exist_ok=True)

    for name, src, op, size in TRAIN:
        if not (data_dir / src).is_file():
            print(f"warning: {src} not in {data_dir}, skipped", file=sys.stderr)
            continue
        img = read_bgr(data_dir / src)
        if op == "crop" and size is not None:
            img = center_crop(img, *size)
        elif op == "resize" and size is not None:
            img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        write_png(img, args.output / "train" / f"{name}.png")

    for name, src in VAL:
        img = center_crop(read_bgr(data_dir / src), VAL_CROP, VAL_CROP)
        write_png(img, args.output / "val" / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
