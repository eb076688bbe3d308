"""Metric cost on one CPU core: milliseconds per image for PSNR, SSIM and NIQE at several image sizes.

The images are the bundled demo photos, tiled (mirrored) to each size and scored as an x4 SR result would be
(4 border pixels cropped). Threads are limited to one before NumPy loads, so the figures are per core.

    python scripts/benchmark_metrics.py [--sizes 256 512 1024] [--repeats 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.metrics import calculate_niqe, calculate_psnr, calculate_ssim  # noqa: E402
from esrgan.options import REPO_ROOT  # noqa: E402
from esrgan.utils.image import read_image, to_uint8  # noqa: E402

CROP = 4


def photo(size: int) -> np.ndarray:
    img = to_uint8(read_image(REPO_ROOT / "datasets" / "demo" / "train" / "astronaut.png"))
    reps = -(-size // img.shape[0])
    return np.pad(img, ((0, reps * img.shape[0] - img.shape[0]),) * 2 + ((0, 0),), mode="symmetric")[:size, :size]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def best_ms(repeats: int, fn, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_name()}, Python {platform.python_version()}, "
          f"NumPy {np.__version__}, 1 thread, best of {args.repeats}")
    print("| image | PSNR (Y) ms | SSIM (Y) ms | NIQE ms |")
    print("|---|---|---|---|")
    for size in args.sizes:
        gt = photo(size)
        sr = np.clip(gt.astype(int) + np.random.default_rng(0).integers(-8, 9, gt.shape), 0, 255).astype(np.uint8)
        cells = [best_ms(args.repeats, f, sr, gt, CROP) for f in (calculate_psnr, calculate_ssim)]
        cells.append(best_ms(args.repeats, calculate_niqe, sr, CROP))
        print(f"| {size}x{size} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
