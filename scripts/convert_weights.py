"""Convert ESRGAN generator weights between the published key layouts and between .pth and .safetensors.

Reads any layout (this project's / the original ESRGAN repository's, its old arch, BasicSR / Real-ESRGAN x4; raw or
wrapped in params_ema / params / state_dict / model) and writes the one asked for. The output format follows the
suffix of OUT: ``.safetensors`` (hyperparameters stored as metadata; needs the optional safetensors package) or
anything else for a torch.save file (a raw state dict; BasicSR's wrapped as ``{'params': ...}``).

Usage::

    python scripts/convert_weights.py RRDB_ESRGAN_x4_old_arch.pth RRDB_ESRGAN_x4.pth
    python scripts/convert_weights.py RRDB_ESRGAN_x4.pth ESRGAN_x4_basicsr.pth --to basicsr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.archs.layouts import (
    LAYOUT_NAMES,
    LAYOUTS,
    describe_hparams,
    load_generator_state,
    save_generator_state,
)
from esrgan.utils.files import cannot_write, output_problem


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert ESRGAN generator weights (any published layout, .pth or .safetensors) to another "
        "layout; the output format follows the suffix of OUT (.safetensors, else a torch.save file).")
    parser.add_argument("input", type=Path, metavar="IN", help="weights file to read")
    parser.add_argument("output", type=Path, metavar="OUT", help="file to write (.pth, .safetensors, ...)")
    parser.add_argument("--to", choices=LAYOUTS, default="esrgan",
                        help="key layout to write: esrgan (this project's and the original repository's, default), "
                        "basicsr (BasicSR / Real-ESRGAN, x4 only) or old (the original repository's old arch)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = output_problem(args.output, args.input)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        state, hparams, description = load_generator_state(args.input)
        try:
            save_generator_state(state, args.output, args.to)
        except OSError as err:  # its folder cannot be made, no permission, no space
            raise ValueError(cannot_write(args.output, err)) from None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.input}: {description}, {describe_hparams(hparams)}\n-> {args.output} ({LAYOUT_NAMES[args.to]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
