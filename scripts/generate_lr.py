"""Make the bicubic LR images of a folder of HR images, as MATLAB's imresize makes them.

The LR inputs of the SR benchmarks (Set5, Set14, DIV2K, ...) are ``imresize(modcrop(hr, s), 1/s,
'bicubic')`` in MATLAB; OpenCV's and PIL's bicubic resizers give other images. Each HR image is
mod-cropped at its bottom / right edges to a multiple of the scale and downscaled in its own sample
type (8 or 16 bit). Outputs are ``<stem>.png``; finished images are skipped, so an interrupted run
is resumed by running the same command again (outputs older than their HR image are made again); an
output folder made at another scale, or holding another kind of output, is refused.

Usage::

    python scripts/generate_lr.py --input datasets/Set14/HR --output datasets/Set14/LR_x4 --scale 4 \\
        --hr-mod-output datasets/Set14/HR_mod4 --bic-output datasets/Set14/Bic_x4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.data.prepare import (
    add_run_arguments,
    check_distinct_folders,
    generate_lr,
    int_at_least,
    remove_outputs_without_source,
    report_errors,
    run_jobs,
    source_images,
    stopped_by_ctrl_c,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write the MATLAB-bicubic LR image of every image of a folder: the image is cropped at its "
        "bottom / right edges to a multiple of --scale, then downscaled by 1/scale. Optionally also writes the "
        "cropped HR images and the LR images upsampled back to HR size (the bicubic baseline).")
    parser.add_argument("--input", required=True, type=Path, help="folder of HR images")
    parser.add_argument("--output", required=True, type=Path, help="folder for the LR images")
    parser.add_argument("--scale", required=True, type=int_at_least(2), help="downscaling factor, an integer >= 2")
    parser.add_argument("--hr-mod-output", type=Path, help="folder for the HR images cropped to a multiple of scale")
    parser.add_argument("--bic-output", type=Path, help="folder for the LR images bicubic-upsampled to HR size")
    parser.add_argument("--remove-missing", action="store_true",
                        help="delete the outputs whose image is no longer in --input")
    add_run_arguments(parser)
    args = parser.parse_args(argv)

    outputs = [f for f in (args.output, args.hr_mod_output, args.bic_output) if f is not None]
    try:
        check_distinct_folders([args.input], outputs)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = {"LR": args.output, "HR mod-cropped": args.hr_mod_output, "LR upsampled": args.bic_output}
    try:
        hr_files = source_images(args.input, [(folder, {"made_by": "generate_lr.py", "scale": args.scale,
                                                        "images": kind})
                                              for kind, folder in kinds.items() if folder is not None])
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def output(folder: Path | None, stem: str) -> Path | None:
        return None if folder is None else folder / f"{stem}.png"

    jobs = [
        (path, output(args.output, stem), args.scale, args.png_level,
         output(args.hr_mod_output, stem), output(args.bic_output, stem))
        for stem, path in hr_files.items()
    ]
    results, errors = run_jobs(generate_lr, jobs, args.workers, f"LR x{args.scale}")

    print(f"wrote the x{args.scale} LR images of {sum(1 for _, w in results if w)} image(s) to {args.output}")
    print(f"skipped {sum(1 for _, w in results if not w)} image(s) whose outputs are all up to date")
    if args.remove_missing:
        removed = remove_outputs_without_source([f for f in kinds.values() if f is not None], hr_files)
        print(f"deleted {len(removed)} output(s) whose image is no longer in {args.input}")
    return report_errors(errors)


if __name__ == "__main__":
    sys.exit(stopped_by_ctrl_c(main))
