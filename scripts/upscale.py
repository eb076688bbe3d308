"""Upscale your own images with ESRGAN weights: no option file, no test set, just images in and images out.

Usage::

    python scripts/upscale.py photo.jpg scans/ -o upscaled/ --model RRDB_ESRGAN_x4.pth
    python scripts/upscale.py big.png -o out/ --model model.pth --tile 256 --precision bf16

The architecture and scale are read from the weights (any published ESRGAN layout, .pth or .safetensors).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.archs.layouts import describe_hparams, load_generator_state
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.engine.inference import (
    PRECISIONS,
    check_precision,
    read_for_inference,
    super_resolve,
    upscale_alpha,
    write_inference_result,
)
from esrgan.utils.image import img2tensor, list_images
from esrgan.utils.misc import select_device

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EPILOG = f"""\
Each result is written as OUT/<name>.png (PNG whatever the input format) in the kind of its input: 8 or 16 bits,
gray or RGB, with alpha when the input has it (the alpha channel is upscaled by MATLAB-style bicubic
interpolation; the network sees RGB only; a gray image with alpha comes back as RGBA). Files in OUT of the same
name are replaced; input files never are: the run is refused when an output would replace an input, or when two
inputs would get the same output name.
Folders are read without subfolders; a file named twice (on its own and in its folder) is upscaled once. A file
that cannot be read is skipped with a message.

Exit status: {EXIT_OK} when at least one image was upscaled and the run went through (skipped unreadable files do
not count against it); {EXIT_FAILED} when no image was upscaled, or the run stopped early (out of GPU memory, fp16
overflow, an output that could not be written); {EXIT_USAGE} for bad arguments, an unusable model or a refused run
(nothing is written then).
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Upscale images with ESRGAN generator weights.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files and/or folders of them")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                        help="output folder (created if needed)")
    parser.add_argument("--model", required=True, type=Path, help="generator weights (.pth or .safetensors)")
    parser.add_argument("--tile", type=int, default=0, metavar="N",
                        help="work in tiles of N x N input pixels, for images too large for the GPU memory "
                             "(e.g. 256); 0 (default): whole images")
    parser.add_argument("--tile-overlap", type=int, default=16, metavar="N",
                        help="input pixels of context around each tile, cropped from the output (default 16)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default); bf16 (CUDA or CPU; within about one level of fp32 in 8-bit images, "
                             "not 16-bit-exact); fp16 (CUDA only)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the results of the 8 flipped/transposed inputs (slightly better, 8x slower)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto (default): CUDA when available, else the CPU")
    args = parser.parse_args(argv)
    if args.tile < 0 or args.tile_overlap < 0:
        parser.error("--tile and --tile-overlap must be >= 0")
    return args


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """The image files named, and the images directly inside the folders named, in the order given; a file named
    twice (say, on its own and in its folder) comes once."""
    files = []
    for path in inputs:
        if path.is_dir():
            files += list_images(path)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"input {path} does not exist")
    first: dict[tuple[Path, str], Path] = {}
    for file in files:  # the same file under the same name (not a link of another name to it)
        first.setdefault((file.parent.resolve(), file.name), file)
    return list(first.values())


def output_paths(files: list[Path], out_dir: Path) -> list[Path]:
    """OUT/<stem>.png for each input; refuses to overwrite an input and to write two inputs to one file."""
    outputs = [out_dir / f"{f.stem}.png" for f in files]
    inputs = {f.resolve() for f in files}
    hits = list(dict.fromkeys(str(o) for o in outputs if o.resolve() in inputs))  # once each (a.png and a.jpg)
    if hits:
        raise ValueError(f"refusing to overwrite input files: {', '.join(hits)}; choose another output folder")
    by_output: dict[Path, list[Path]] = {}
    for file, out in zip(files, outputs, strict=True):
        by_output.setdefault(out.resolve(), []).append(file)
    clashes = [" and ".join(map(str, group)) for group in by_output.values() if len(group) > 1]
    if clashes:
        raise ValueError(f"several inputs would be written to the same output file: {'; '.join(clashes)}; "
                         "upscale them into different output folders")
    return outputs


def load_generator(path: Path) -> tuple[RRDBNet, int]:
    state, hparams, description = load_generator_state(path)
    if hparams["in_nc"] != 3 or hparams["out_nc"] != 3:
        raise ValueError(f"{path}: the network maps {hparams['in_nc']} to {hparams['out_nc']} channels; images are "
                         "upscaled as RGB, which needs 3 to 3")
    net = RRDBNet(**hparams)
    net.load_state_dict(state)
    print(f"{path}: {description}, {describe_hparams(hparams)}", file=sys.stderr)
    return net, hparams["scale"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        files = collect_inputs(args.inputs)
        if not files:
            raise ValueError(f"no images found in {', '.join(map(str, args.inputs))}")
        if args.output.exists() and not args.output.is_dir():
            raise ValueError(f"the output {args.output} is a file; name a folder")
        outputs = output_paths(files, args.output)
        device = select_device(args.device, "--device")
        check_precision(args.precision, device)
        net, scale = load_generator(args.model)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    net.to(device)
    skipped = []
    for file, out in zip(tqdm(files, desc=f"x{scale} on {device}", unit="image"), outputs, strict=True):
        try:
            rgb, info = read_for_inference(file)
        except OSError as err:
            skipped.append(file)
            tqdm.write(f"skipped {file}: {err}", file=sys.stderr)
            continue
        try:
            sr = super_resolve(net, img2tensor(rgb)[None], scale, tile=args.tile, tile_overlap=args.tile_overlap,
                               precision=args.precision, self_ensemble=args.self_ensemble, device=device)
            alpha = upscale_alpha(info.alpha, scale) if info.alpha is not None else None
            write_inference_result(out, sr[0].numpy().transpose(1, 2, 0), info, alpha)
        except torch.cuda.OutOfMemoryError:
            print(f"error: out of GPU memory on {file} ({rgb.shape[1]}x{rgb.shape[0]}); use --tile (e.g. 256, or "
                  "smaller) to upscale large images piece by piece", file=sys.stderr)
            return EXIT_FAILED
        except (ValueError, OSError) as err:  # fp16 overflow or a full disk: the next images would fail alike
            print(f"error: {file}: {err}", file=sys.stderr)
            return EXIT_FAILED
    done = len(files) - len(skipped)
    print(f"{done} images upscaled x{scale} into {args.output}" + (
        f"; {len(skipped)} skipped (unreadable): {', '.join(map(str, skipped))}" if skipped else ""), file=sys.stderr)
    return EXIT_OK if done else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
