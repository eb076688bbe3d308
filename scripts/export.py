"""Export an ESRGAN generator for deployment: safetensors, ONNX (dynamic height / width) or TorchScript.

The input may be in any published layout (.pth or .safetensors); the network size is read from the weights.

- ``safetensors``: the weights in this project's layout, with in_nc, out_nc, nf, nb, gc and scale as metadata
  (needs the optional safetensors package).
- ``onnx``: input ``lr`` (batch, in_nc, height, width) -> output ``sr``, with batch, height and width dynamic; made by
  torch's torch.export-based exporter (needs onnx and onnxscript). When onnxruntime is installed its output is
  compared with PyTorch's on an input of another size than the one exported with.
- ``torchscript``: a traced module for ``torch.jit.load`` / libtorch; checked on an input of another size.

Usage::

    python scripts/export.py RRDB_ESRGAN_x4.pth --format onnx -o RRDB_ESRGAN_x4.onnx
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.archs.layouts import describe_hparams, load_generator_state, save_generator_state
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.utils.files import atomic_output, atomic_write_bytes, cannot_write, output_problem

TOLERANCE = 1e-4
EXPORT_SIZE = (16, 16)
# Height and width differ from each other and from EXPORT_SIZE, so a graph with a frozen size fails the check.
CHECK_SIZE = (23, 17)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export ESRGAN generator weights (any published layout) as "
                                     "safetensors, ONNX with dynamic height/width, or TorchScript.")
    parser.add_argument("input", type=Path, metavar="IN", help="weights file (.pth or .safetensors)")
    parser.add_argument("--format", required=True, choices=("safetensors", "onnx", "torchscript"))
    parser.add_argument("-o", "--output", required=True, type=Path, help="file to write")
    return parser.parse_args(argv)


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def check(difference: float, what: str) -> str:
    if difference > TOLERANCE:
        raise ValueError(f"the {what} output differs from PyTorch's by {difference:.2e} (more than {TOLERANCE:g})")
    return (f"{what} output matches PyTorch on a {CHECK_SIZE[0]}x{CHECK_SIZE[1]} input "
            f"(max difference {difference:.1e})")


def export_onnx(net: RRDBNet, in_nc: int, path: Path) -> str:
    """Write `net` as ONNX and say how it was checked."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs both, and fails less clearly without them)
        import onnxscript  # noqa: F401
    except ImportError:
        raise ValueError("ONNX export needs the optional onnx and onnxscript packages: pip install onnx onnxscript "
                         "(and onnxruntime to check the result)") from None
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    with atomic_output(path) as tmp:
        torch.onnx.export(net, (torch.rand(1, in_nc, *EXPORT_SIZE),), tmp, input_names=["lr"], output_names=["sr"],
                          dynamic_shapes=(dims,), dynamo=True, external_data=False, verbose=False)
        try:
            import onnxruntime
        except ImportError:
            return "outputs not checked against PyTorch (onnxruntime is not installed)"
        x = torch.rand(1, in_nc, *CHECK_SIZE)
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])
        return check(max_difference(got, net(x)), "onnxruntime")


def export_torchscript(net: RRDBNet, in_nc: int, path: Path) -> str:
    """Write `net` as a traced TorchScript module and say how it was checked."""
    # torch.jit is deprecated upstream (torch >= 2.10) but its files still load with torch.jit.load and libtorch.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        # torch's own trace check reruns the example input; the check below on another size is the stronger one.
        traced = torch.jit.trace(net, torch.rand(1, in_nc, *EXPORT_SIZE), check_trace=False)
        # In memory, then written by Python: torch.jit.save's own writer aborts the process on a full disk.
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        x = torch.rand(1, in_nc, *CHECK_SIZE)
        buffer.seek(0)
        note = check(max_difference(torch.jit.load(buffer)(x), net(x)), "TorchScript")
    atomic_write_bytes(path, buffer.getbuffer())
    return note


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = output_problem(args.output, args.input)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        state, hparams, description = load_generator_state(args.input)
        print(f"{args.input}: {description}, {describe_hparams(hparams)}")
        if args.format == "safetensors":
            if args.output.suffix != ".safetensors":
                raise ValueError(f"the output of --format safetensors must end in .safetensors, got {args.output}")
            save_generator_state(state, args.output)
            note = "weights with in_nc, out_nc, nf, nb, gc, scale as metadata"
        else:
            net = RRDBNet(**hparams)
            net.load_state_dict(state)
            net.eval()
            export = export_onnx if args.format == "onnx" else export_torchscript
            with torch.no_grad():
                note = export(net, hparams["in_nc"], args.output)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the output's folder cannot be made, no permission (reading errors are ValueErrors)
        print(f"error: {cannot_write(args.output, err)}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({args.format}): {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
