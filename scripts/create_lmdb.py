"""Pack a folder of images into an LMDB (BasicSR's layout) for faster training I/O.

Usage: python scripts/create_lmdb.py --input datasets/DIV2K/HR_sub --output datasets/DIV2K/HR_sub.lmdb
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.data.lmdb_io import META_INFO, create_lmdb
from esrgan.data.prepare import stopped_by_ctrl_c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Store every image directly inside --input as a PNG-encoded value in the LMDB --output, keyed by "
            f"its file name without extension, and write {META_INFO} beside it. The result is readable by this "
            "framework (use the .lmdb folder as a dataset root) and by BasicSR. 16-bit, gray and alpha images "
            "are stored unchanged. An interrupted run is finished by running the same command again."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="folder of images (not searched recursively)")
    parser.add_argument("--output", required=True, help="LMDB folder to create or complete; must end in .lmdb")
    parser.add_argument("--png-level", "--compress-level", dest="compress_level", type=int, default=1,
                        choices=range(10), metavar="0-9",
                        help="PNG compression level, as in the other scripts (--compress-level: BasicSR's name): "
                             "higher is smaller and slower to write, equally fast to read")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes encoding images")
    parser.add_argument("--commit-every", type=int, default=1000,
                        help="images per transaction: what an interrupted run loses at most")
    parser.add_argument("--remove-missing", action="store_true",
                        help="delete from the LMDB the images that are no longer in --input (without it, such "
                             "images are refused as a sign of another folder's LMDB)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    output = Path(args.output)
    # Dataset options pick the LMDB backend by this suffix, and BasicSR requires it too.
    if output.suffix != ".lmdb" or output.is_file():
        parser.error(f"--output must be a folder name ending in .lmdb, got {args.output}")
    try:
        count = create_lmdb(args.input, output, compress_level=args.compress_level, workers=args.workers,
                            commit_every=args.commit_every, remove_missing=args.remove_missing)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    print(f"{count} images in {output}; image list: {output / META_INFO}")
    return 0


if __name__ == "__main__":
    sys.exit(stopped_by_ctrl_c(main))
