"""Training-loader throughput: samples per second for folder vs LMDB data, with 1, 2 and N workers.

Generates a synthetic DIV2K-like set (480x480 HR sub-images with photo-like spectra, their MATLAB-bicubic LR),
stores it as PNG folders and as LMDBs, and times the training loader at the paper's settings (batch 16, GT 128,
flips and rotations), the first batches (worker start-up, and the batches the workers made meanwhile) excluded.

    python scripts/benchmark_data.py [--images 64] [--workers 1 2 4] [--batches 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

import cv2
import numpy as np

from esrgan.data.imresize import imresize
from esrgan.data.lmdb_io import create_lmdb
from esrgan.data.loader import build_train_loader, stop_workers
from esrgan.data.paired import PairedImageDataset

WARMUP_BATCHES = 3  # besides the batches the workers keep ready (prefetch_factor per worker)


def synthetic_photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """An RGB uint8 image with a 1/f-like spectrum, so it compresses like a photograph rather than noise."""
    img = np.zeros((size, size, 3), np.float64)
    for octave in range(1, 8):
        cells = 2**octave
        noise = rng.standard_normal((cells, cells, 3))
        img += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) / octave
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).round().astype(np.uint8)


def make_data(root: Path, images: int, size: int, scale: int, lmdb: bool = True) -> dict[str, tuple[str, str]]:
    rng = np.random.default_rng(0)
    (root / "GT").mkdir(parents=True, exist_ok=True)
    (root / "LQ").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        hr = synthetic_photo(rng, size)
        cv2.imwrite(str(root / "GT" / f"{i:04d}_s001.png"), hr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        cv2.imwrite(str(root / "LQ" / f"{i:04d}_s001.png"), imresize(hr, scale=1 / scale),
                    [cv2.IMWRITE_PNG_COMPRESSION, 3])
    sources = {"folder": (str(root / "GT"), str(root / "LQ"))}
    if lmdb:
        for part in ("GT", "LQ"):
            create_lmdb(root / part, root / f"{part}.lmdb", compress_level=1, workers=1, progress=False)
        sources["lmdb"] = (str(root / "GT.lmdb"), str(root / "LQ.lmdb"))
    return sources


def samples_per_second(gt: str, lq: str, scale: int, gt_size: int, batch: int, workers: int, batches: int) -> float:
    dataset = PairedImageDataset("bench", scale, gt, lq, gt_size=gt_size, use_flip=True, use_rot=True)
    loader = build_train_loader(dataset, batch, workers, seed=0, shuffle=True, enlarge_ratio=1000,
                                pin_memory=False)
    try:
        iterator = iter(loader)
        for _ in range(WARMUP_BATCHES + (loader.prefetch_factor or 0) * workers):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return batches * batch / (time.perf_counter() - start)
    finally:
        stop_workers(loader)  # they ignore SIGTERM: left to Python's exit after an error, they would hang it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="synthetic HR sub-images to generate")
    parser.add_argument("--size", type=int, default=480, help="HR sub-image size")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--gt-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, 2, os.cpu_count() or 1}))
    parser.add_argument("--batches", type=int, default=40, help="timed batches per setting")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the data (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        sources = make_data(root, args.images, args.size, args.scale)
        print(f"{args.images} synthetic {args.size}x{args.size} pairs, x{args.scale}, batch {args.batch}, "
              f"GT {args.gt_size}, flips+rotations, {os.cpu_count()} CPU cores")
        print("| backend | workers | samples/s | batches/s |")
        print("|---|---|---|---|")
        for backend, (gt, lq) in sources.items():
            for workers in args.workers:
                rate = samples_per_second(gt, lq, args.scale, args.gt_size, args.batch, workers, args.batches)
                print(f"| {backend} | {workers} | {rate:.0f} | {rate / args.batch:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
