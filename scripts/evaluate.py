"""Score a folder of SR images (from this project or any other tool) against a folder of ground truth.

Images are paired by file name without extension (`--suffix` strips a tag such as `_ESRGAN` from the SR names),
read as test.py reads them (gray files as RGB, alpha dropped, 16-bit rounded to 8 bits) and scored with its
conventions: GT cut to the SR size where its side is not a multiple of `--scale` (4 by default), `--crop`
pixels removed at every border (the scale by default), PSNR/SSIM on MATLAB's Y channel, NIQE on the 8-bit Y
(or gray) channel, LPIPS on RGB. NIQE needs no ground truth: without `--gt` it is the only
metric. With `--ma-scores` (Ma et al.'s scores, computed elsewhere, keyed by image or SR file name) the perceptual
index PI = ((10 - Ma) + NIQE) / 2 is added.

Usage::

    python scripts/evaluate.py --gt datasets/Set14/HR --sr results/RRDB_ESRGAN_x4/Set14
    python scripts/evaluate.py --gt HR/ --sr other_tool/ --suffix _x4_SR --metrics psnr,ssim,niqe,lpips --csv scores.csv
    python scripts/evaluate.py --sr results/gan/Set14 --metrics niqe --ma-scores ma.csv
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.engine.evaluate import LABELS, METRICS, NO_REFERENCE, Evaluator, format_value, mean_row
from esrgan.metrics import perceptual_index, read_ma_scores
from esrgan.utils.image import images_by_stem, read_image, to_uint8
from esrgan.utils.misc import listing, select_device

log = logging.getLogger("evaluate")


def read_for_scoring(path: Path) -> np.ndarray:
    """A uint8 RGB image as test.py scores it: gray replicated to RGB, alpha dropped, 16-bit rounded to 8 bits."""
    return to_uint8(read_image(path))


def pair_images(gt_dir: Path | None, sr_dir: Path, suffix: str) -> list[tuple[str, Path | None, Path]]:
    """(name, GT path, SR path) for every image, in name order; unmatched names on either side are an error."""
    sr = {}
    for stem, path in images_by_stem(sr_dir).items():
        if not stem.endswith(suffix):
            raise ValueError(f"{path}: the SR file name does not end with --suffix {suffix!r}")
        sr[stem[: len(stem) - len(suffix)] if suffix else stem] = path
    if not sr:
        raise ValueError(f"--sr {sr_dir}: no images found")
    if gt_dir is None:
        return [(name, None, sr[name]) for name in sorted(sr)]
    gt = images_by_stem(gt_dir)
    only_gt, only_sr = sorted(set(gt) - set(sr)), sorted(set(sr) - set(gt))
    if only_gt or only_sr:
        problems = ([f"{len(only_gt)} GT images have no SR image ({listing(only_gt)})"] if only_gt else []) + (
            [f"{len(only_sr)} SR images have no GT image ({listing(only_sr)})"] if only_sr else [])
        raise ValueError(f"the names in --gt {gt_dir} and --sr {sr_dir} do not match: {'; '.join(problems)}. "
                         "Images pair by file name without extension; use --suffix if the SR names carry a tag")
    return [(name, gt[name], sr[name]) for name in sorted(gt)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Score SR images against ground truth (PSNR/SSIM on Y, NIQE, "
                                                 "LPIPS, the perceptual index), SR-paper conventions.")
    parser.add_argument("--gt", type=Path, help="folder of ground-truth images (leave out for NIQE alone)")
    parser.add_argument("--sr", type=Path, required=True, help="folder of SR images named like the GT images")
    parser.add_argument("--metrics", default=None,
                        help=f"comma-separated, of {', '.join(METRICS)} (default: psnr,ssim,niqe with --gt, "
                             "niqe without)")
    parser.add_argument("--scale", type=int, default=4,
                        help="the SR factor (default 4): a GT image whose height or width is not a multiple of it "
                             "is cut at the bottom and right to the multiple below (its mod-crop), as test.py cuts "
                             "it, when that is the SR image's size")
    parser.add_argument("--crop", type=int, default=None,
                        help="pixels cropped at every border (default: the scale)")
    parser.add_argument("--suffix", default="", help="tag at the end of the SR file names, e.g. _ESRGAN")
    parser.add_argument("--ma-scores", type=Path, help="CSV (columns name, ma) of Ma scores of the SR images: adds "
                                                       "the perceptual index (needs niqe)")
    parser.add_argument("--niqe-channel", choices=("y", "gray"), default="y",
                        help="NIQE on rgb2ycbcr's Y (PIRM, default) or rgb2gray (the NIQE release)")
    parser.add_argument("--lpips-net", choices=("alex", "vgg", "squeeze"), default="alex")
    parser.add_argument("--lpips-weights", help="torchvision weights of the LPIPS backbone (default: torch cache)")
    parser.add_argument("--device", default="auto", help="where LPIPS runs: auto, cpu, cuda, cuda:N")
    parser.add_argument("--csv", type=Path, help="also write the per-image scores and their mean to this CSV file")
    args = parser.parse_args(argv)
    default = "psnr,ssim,niqe" if args.gt else "niqe"
    args.metrics = [m.strip() for m in (args.metrics or default).split(",") if m.strip()]
    if not args.metrics:
        parser.error(f"--metrics: name at least one of {', '.join(METRICS)}")
    unknown = [m for m in args.metrics if m not in METRICS]
    if unknown:
        parser.error(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if args.gt is None and any(m not in NO_REFERENCE for m in args.metrics):
        parser.error(f"--metrics {','.join(args.metrics)} needs --gt (only {', '.join(NO_REFERENCE)} works without)")
    if args.ma_scores and "niqe" not in args.metrics:
        parser.error("--ma-scores: the perceptual index needs niqe in --metrics")
    if args.ma_scores and not args.ma_scores.is_file():
        parser.error(f"--ma-scores {args.ma_scores}: no such file")
    if args.scale < 1:
        parser.error("--scale must be positive")
    args.crop = args.scale if args.crop is None else args.crop
    if args.crop < 0:
        parser.error("--crop must be non-negative")
    if args.csv is not None and args.csv.is_dir():
        parser.error(f"--csv {args.csv} is a folder; give the CSV file to write, e.g. {args.csv / 'scores.csv'}")
    return args


def evaluate(args: argparse.Namespace) -> list[dict]:
    """The per-image rows (name and scores), then the mean row."""
    for flag, folder in (("--gt", args.gt), ("--sr", args.sr)):
        if folder is not None and not folder.is_dir():
            raise ValueError(f"{flag} {folder}: no such folder")
    pairs = pair_images(args.gt, args.sr, args.suffix)
    ma = read_ma_scores(args.ma_scores) if args.ma_scores else None
    if ma is not None:
        # Ma scores are keyed by the image name (as paired) or by the SR file's own name.
        ma = {name: ma.get(name, ma.get(sr.stem)) for name, _, sr in pairs}
        missing = [name for name, value in ma.items() if value is None]
        if missing:
            raise ValueError(f"{args.ma_scores}: no Ma score for {listing(missing)}")
    elif "niqe" in args.metrics:
        log.info("No --ma-scores: the perceptual index is not computed; NIQE is reported alone")
    device = select_device(args.device, "--device") if "lpips" in args.metrics else "cpu"  # only LPIPS uses it
    evaluator = Evaluator(args.metrics, args.crop, args.niqe_channel, args.lpips_net, args.lpips_weights, device)
    rows = []
    for name, gt_path, sr_path in pairs:
        sr = read_for_scoring(sr_path)
        gt = read_for_scoring(gt_path) if gt_path is not None else None
        if gt is not None and gt.shape != sr.shape and gt.shape[2:] == sr.shape[2:] and all(
                r == g - g % args.scale for g, r in zip(gt.shape[:2], sr.shape[:2], strict=True)):
            gt = gt[: sr.shape[0], : sr.shape[1]]  # a GT side that is not a multiple of the scale, mod-cropped
        if gt is not None and gt.shape != sr.shape:
            raise ValueError(f"{sr_path} is {width_height(sr)} but {gt_path} is {width_height(gt)}: SR and GT "
                             "images must have the same size")
        if 2 * args.crop >= min(sr.shape[:2]):
            raise ValueError(f"--crop {args.crop} removes the whole of {sr_path} ({width_height(sr)}); crop less")
        scores = evaluator.score(sr, gt, name)
        if ma is not None:
            scores |= {"ma": ma[name], "pi": perceptual_index(ma[name], scores["niqe"])}
        rows.append({"name": name} | scores)
    rows.append(mean_row(rows))
    return rows


def width_height(img: np.ndarray) -> str:
    return f"{img.shape[1]}x{img.shape[0]}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        rows = evaluate(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    columns = [k for k in rows[0] if k != "name"]
    width = max(len("image"), *(len(r["name"]) for r in rows))
    print(f"{'image':<{width}} " + " ".join(f"{LABELS[k]:>8}" for k in columns)
          + f"   ({args.crop} border pixels cropped; NIQE/LPIPS/PI: lower is better)")
    for r in rows:
        print(f"{r['name']:<{width}} " + " ".join(f"{format_value(k, r[k]):>8}" for k in columns))
    if args.csv:
        try:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            with open(args.csv, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=["name", *columns])
                writer.writeheader()
                writer.writerows(rows)
        except OSError as err:
            print(f"error: --csv: cannot write {args.csv}: {err}", file=sys.stderr)
            return 2
        print(f"scores written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
