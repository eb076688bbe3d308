"""Network interpolation (ESRGAN paper, section 4.4): blend a PSNR-oriented and a GAN generator.

``theta = (1 - alpha) * theta_PSNR + alpha * theta_GAN`` for each alpha in [0, 1]: alpha 0 is the PSNR model, alpha 1
the GAN model, values between trade PSNR for perceptual quality without retraining. Both inputs may be in any
published layout (and .pth or .safetensors); the outputs are in this project's layout.

Usage::

    python scripts/net_interp.py --psnr RRDB_PSNR_x4.pth --gan RRDB_ESRGAN_x4.pth --alpha 0.8 -o interp_08.pth
    python scripts/net_interp.py --psnr psnr.pth --gan gan.pth --alpha 0.2 0.5 0.8 -o interp/
    python scripts/net_interp.py --psnr psnr.pth --gan gan.pth --alpha 0.2 0.8 -o 'models/interp_{alpha}.pth'
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.archs.layouts import (
    describe_hparams,
    interpolate_states,
    key_differences,
    load_generator_state,
    save_generator_state,
)
from esrgan.utils.files import cannot_write

DIFFERENCES_SHOWN = 5
PLACEHOLDER = "{alpha}"


def alpha(text: str) -> float:  # argparse names the type by this name
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 (the PSNR model) and 1 (the GAN model), got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interpolate two ESRGAN generators: (1 - alpha) * PSNR + alpha * GAN (paper, section 4.4).")
    parser.add_argument("--psnr", required=True, type=Path, help="weights of the PSNR-oriented generator")
    parser.add_argument("--gan", required=True, type=Path, help="weights of the GAN generator")
    parser.add_argument("--alpha", required=True, type=alpha, nargs="+",
                        help="weight of the GAN model, in [0, 1]; several values write several files")
    parser.add_argument("-o", "--output", required=True,
                        help="output file for one alpha; a folder (ending in /, or existing: files "
                        f"interp_<alpha>.pth) or a pattern containing {PLACEHOLDER}, e.g. "
                        f"'interp_{PLACEHOLDER}.safetensors'")
    return parser.parse_args(argv)


def differences(psnr: dict[str, torch.Tensor], gan: dict[str, torch.Tensor]) -> list[str]:
    """Why the two state dicts cannot be blended: keys of one only, and tensors of different shapes."""
    psnr_only, gan_only, shapes = key_differences(psnr, gan)
    return ([f"{k} only in the PSNR model" for k in psnr_only] + [f"{k} only in the GAN model" for k in gan_only]
            + [f"{k}: {tuple(psnr[k].shape)} vs {tuple(gan[k].shape)}" for k in shapes])


def output_paths(output: str, alphas: list[float]) -> list[Path]:
    if PLACEHOLDER in output:
        return [Path(output.replace(PLACEHOLDER, f"{a:g}")) for a in alphas]
    if len(alphas) > 1 or Path(output).is_dir() or output.endswith(("/", os.sep)):
        return [Path(output) / f"interp_{a:g}.pth" for a in alphas]
    return [Path(output)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outputs = output_paths(args.output, args.alpha)
    if len(set(outputs)) != len(outputs):
        print(f"error: several alphas would be written to the same file: {args.alpha}", file=sys.stderr)
        return 1
    inputs = {args.psnr.resolve(), args.gan.resolve()}
    overwritten = [str(path) for path in outputs if path.resolve() in inputs]
    if overwritten:
        print(f"error: refusing to overwrite an input model with a blend: {', '.join(overwritten)}; choose another "
              "output", file=sys.stderr)
        return 1
    try:
        psnr, hparams, psnr_description = load_generator_state(args.psnr)
        gan, _, gan_description = load_generator_state(args.gan)
        problems = differences(psnr, gan)
        if problems:
            more = f" ... (+{len(problems) - DIFFERENCES_SHOWN} more)" if len(problems) > DIFFERENCES_SHOWN else ""
            raise ValueError(f"{args.psnr} and {args.gan} are not the same network ({len(problems)} differences): "
                             + "; ".join(problems[:DIFFERENCES_SHOWN]) + more)
        print(f"PSNR model {args.psnr}: {psnr_description}; GAN model {args.gan}: {gan_description}; "
              f"{describe_hparams(hparams)}")
        for alpha, path in zip(args.alpha, outputs, strict=True):
            try:
                save_generator_state(interpolate_states(psnr, gan, alpha), path)
            except OSError as err:  # its folder cannot be made (a file of that name), no permission, no space
                raise ValueError(cannot_write(path, err)) from None
            print(f"alpha {alpha:g} -> {path}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
