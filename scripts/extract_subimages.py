"""Crop the images of a folder into overlapping sub-images, optionally with the matching LR crops.

Training reads a random patch of every image; reading it from a 480x480 crop instead of a 2K image
keeps data loading fast. Crops are named ``<stem>_s001.png``, ... row-major; LR crops get the names
of their HR crops, so the two folders pair by name. A finished image is skipped, so an interrupted
run is resumed by running the same command again (crops older than their image are made again); an
output folder made with another crop size, step, edge threshold or scale is refused.

Usage::

    python scripts/extract_subimages.py --input datasets/DIV2K/DIV2K_train_HR \\
        --output datasets/DIV2K/DIV2K_train_HR_sub
    python scripts/extract_subimages.py --input datasets/DIV2K/DIV2K_train_HR \\
        --output datasets/DIV2K/DIV2K_train_HR_sub --lr-input datasets/DIV2K/DIV2K_train_LR_bicubic/X4 \\
        --lr-output datasets/DIV2K/DIV2K_train_LR_bicubic_X4_sub --scale 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.data.prepare import (
    add_run_arguments,
    check_crop_settings,
    check_distinct_folders,
    crop_source,
    extract_subimages,
    match_lr,
    remove_outputs_without_source,
    report_errors,
    run_jobs,
    source_images,
    stopped_by_ctrl_c,
)
from esrgan.utils.image import images_by_stem


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Crop every image of a folder into overlapping sub-images (and, with --lr-input, the "
        "LR images into the matching LR crops). Crops start every --step pixels; if more than --thresh-size "
        "pixels remain at the right / bottom edge, one more crop is aligned to that edge. Images smaller "
        "than the crop are skipped. LR images are matched by stem, or by the DIV2K name <stem>x<scale>.")
    parser.add_argument("--input", required=True, type=Path, help="folder of HR images")
    parser.add_argument("--output", required=True, type=Path, help="folder for the HR crops")
    parser.add_argument("--lr-input", type=Path, help="folder of the LR images of the HR images")
    parser.add_argument("--lr-output", type=Path, help="folder for the LR crops (with --lr-input)")
    parser.add_argument("--scale", type=int, help="HR size / LR size (with --lr-input)")
    parser.add_argument("--crop-size", type=int, default=480, help="HR crop side in pixels (default: %(default)s)")
    parser.add_argument("--step", type=int, default=240, help="HR distance between crops (default: %(default)s)")
    parser.add_argument("--thresh-size", type=int, default=0,
                        help="edge remainder above which one more crop is taken (default: %(default)s)")
    parser.add_argument("--remove-missing", action="store_true",
                        help="delete the crops (and LR crops) whose HR image is no longer in --input")
    add_run_arguments(parser)
    args = parser.parse_args(argv)

    lr_args = (args.lr_input, args.lr_output, args.scale)
    if any(a is not None for a in lr_args) and any(a is None for a in lr_args):
        parser.error("--lr-input, --lr-output and --scale go together")
    try:
        check_crop_settings(args.crop_size, args.step, args.thresh_size, args.scale)
        inputs = [args.input] + ([args.lr_input] if args.lr_input else [])
        outputs = [args.output] + ([args.lr_output] if args.lr_output else [])
        check_distinct_folders(inputs, outputs)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    grid = {"made_by": "extract_subimages.py", "crop_size": args.crop_size, "step": args.step,
            "thresh_size": args.thresh_size, "scale": args.scale}
    try:
        lr_files = images_by_stem(args.lr_input) if args.lr_input else {}
        hr_files = source_images(args.input, [(args.output, {**grid, "images": "HR crops"})]
                                 + ([(args.lr_output, {**grid, "images": "LR crops"})] if args.lr_output else []))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    jobs: list[tuple] = []
    unmatched: list[tuple[tuple, str]] = []
    for stem, hr_path in hr_files.items():
        job = (hr_path, args.output, args.crop_size, args.step, args.thresh_size, args.png_level)
        if args.lr_input:
            try:
                job += (match_lr(stem, lr_files, args.scale), args.lr_output, args.scale)
            except FileNotFoundError as exc:
                unmatched.append(((hr_path,), str(exc)))
                continue
        jobs.append(job)

    results, errors = run_jobs(extract_subimages, jobs, args.workers, "extract")
    errors = unmatched + errors

    written = [r.written for _, r in results if r.written]
    lr_note = f" (and their LR crops to {args.lr_output})" if args.lr_input else ""
    print(f"wrote {sum(written)} crops of {len(written)} image(s) to {args.output}{lr_note}")
    print(f"skipped {sum(1 for _, r in results if r.crops and not r.written)} image(s) whose crops are all up to date")
    small = [job[0].name for job, r in results if not r.crops]
    if small:
        print(f"skipped {len(small)} image(s) smaller than the {args.crop_size}x{args.crop_size} crop: "
              + ", ".join(small))
    if args.remove_missing:
        removed = remove_outputs_without_source([args.output] + ([args.lr_output] if args.lr_output else []),
                                                hr_files, crop_source)
        print(f"deleted {len(removed)} crop(s) whose image is no longer in {args.input}")
    if results and len(small) == len(results):
        print(f"error: no image of {args.input} is as large as the {args.crop_size}x{args.crop_size} crop, so "
              "there are no crops: lower --crop-size (and --step)", file=sys.stderr)
        return max(report_errors(errors), 1)
    return report_errors(errors)


if __name__ == "__main__":
    sys.exit(stopped_by_ctrl_c(main))
