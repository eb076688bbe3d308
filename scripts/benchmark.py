"""Training and inference speed: each speed setting next to the plain fp32 eager path, in the same run.

For each mode (precision, channels_last, torch.compile, whole-step CUDA graphs) it times PSNR-phase and GAN-phase
iterations of the ESRGAN model on fixed synthetic batches (warm-up excluded), and reports iterations/s, achieved
TFLOP/s and MFU (model FLOPs counted with torch.utils.flop_counter, over --peak-tflops), and peak GPU memory; then
test.py-style inference in megapixels/s (whole image and tiled). The GPU, versions and settings head the output.

    python scripts/benchmark.py                    # on a GPU: the paper's settings (batch 16, GT 128, nb 23)
    python scripts/benchmark.py --smoke            # seconds on a CPU: tiny network, a few iterations
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

import torch
from torch.utils.flop_counter import FlopCounterMode

from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.engine.fast import GraphedSteps, cuda_graph_unsupported
from esrgan.models.esrgan import ESRGANModel
from esrgan.options import GanPhaseOpt, PsnrPhaseOpt


@dataclass(frozen=True)
class Mode:
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    graph: bool = False  # whole-step CUDA-graph capture (speed.cuda_graph)

    def __str__(self) -> str:
        return "+".join([self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile
                        + ["graph"] * self.graph)


def build(args: argparse.Namespace, mode: Mode, device: torch.device) -> ESRGANModel:
    torch.manual_seed(0)
    net_g = RRDBNet(3, 3, args.nf, args.nb, args.gc, scale=4)
    net_d = Discriminator_VGG_128(3, args.nf_d)
    model = ESRGANModel(net_g, net_d, VGGFeatureExtractor(34), PsnrPhaseOpt(niter=10**9), GanPhaseOpt(niter=1),
                        device, ema_decay=0.999, precision=mode.precision, channels_last=mode.channels_last)
    if mode.compile:
        model.compile()
    if mode.graph:
        reason = cuda_graph_unsupported(device, mode.precision, distributed=False, compiled=mode.compile)
        if reason:
            raise SystemExit(f"mode {mode}: {reason}")
        model.use_step_runner(GraphedSteps(device))
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_phase(model: ESRGANModel, phase: str, args: argparse.Namespace, device: torch.device,
               count_flops: bool) -> tuple[float, float]:
    """(seconds per iteration, FLOPs per iteration or nan) of one phase on a fixed batch. FLOPs are counted on an
    eager model (a replayed CUDA graph dispatches no operators to count)."""
    lq = torch.rand(args.batch, 3, args.gt_size // 4, args.gt_size // 4, device=device)
    gt = torch.rand(args.batch, 3, args.gt_size, args.gt_size, device=device)
    model.feed_data({"LQ": lq, "GT": gt})
    if phase == "gan":
        model.psnr_iters = 0

    def step(i: int) -> None:
        model.optimize_parameters(i + 1)

    for i in range(args.warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(args.iters):
        step(args.warmup + i)
    sync(device)
    seconds = (time.perf_counter() - start) / args.iters
    if not count_flops:
        return seconds, float("nan")
    with FlopCounterMode(display=False) as counter:
        step(0)
    return seconds, counter.get_total_flops()


def inference_mpix(model: ESRGANModel, args: argparse.Namespace, device: torch.device, tile: int) -> float:
    """Output megapixels per second of test.py-style upscaling of one image (whole, or in tiles)."""
    net = model.deployable_generator().eval()
    size = args.infer_size
    lq = torch.rand(1, 3, size, size, device=device)
    with torch.inference_mode(), model.amp.autocast():
        def run() -> None:
            if tile <= 0:
                net(lq)
                return
            for y in range(0, size, tile):
                for x in range(0, size, tile):
                    net(lq[..., y: y + tile, x: x + tile])

        run()
        sync(device)
        start = time.perf_counter()
        for _ in range(args.infer_iters):
            run()
        sync(device)
    return args.infer_iters * (size * 4) ** 2 / 1e6 / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny network and few iterations (CPU check)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--gt-size", type=int, default=128)
    parser.add_argument("--nf", type=int, default=64)
    parser.add_argument("--nb", type=int, default=23)
    parser.add_argument("--gc", type=int, default=32)
    parser.add_argument("--nf-d", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--infer-size", type=int, default=256, help="LR side of the inference test image")
    parser.add_argument("--infer-iters", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="for MFU (H100 dense bf16: about 790)")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="e.g. fp32 bf16 bf16+channels_last bf16+channels_last+compile (fp32 always first)")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.smoke:
        args.batch, args.nf, args.nb, args.gc, args.nf_d = 2, 8, 1, 4, 8
        args.warmup, args.iters, args.infer_size, args.infer_iters = 1, 1, 32, 1
    names = args.modes or (["fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile",
                            "bf16+channels_last+graph"] if device.type == "cuda" else ["fp32", "bf16+channels_last"])
    names = ["fp32"] + [n for n in names if n != "fp32"]
    modes = [Mode(n.split("+")[0], "channels_last" in n, "compile" in n, "graph" in n) for n in names]

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device {device} ({gpu}); torch {torch.__version__}, CUDA {torch.version.cuda}, Python "
          f"{platform.python_version()}")
    print(f"batch {args.batch}, GT {args.gt_size}, RRDBNet nf {args.nf} nb {args.nb} gc {args.gc}, D nf {args.nf_d}, "
          f"VGG19 conv5_4, EMA; {args.warmup} warm-up + {args.iters} timed iterations; MFU over "
          f"{args.peak_tflops:g} TFLOP/s")
    print("| mode | phase | it/s | ms/it | TFLOP/s | MFU | peak mem GiB | speed-up vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    baseline: dict[str, float] = {}
    phase_flops: dict[str, float] = {}
    for mode in modes:
        for phase in ("psnr", "gan"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            model = build(args, mode, device)
            seconds, flops = time_phase(model, phase, args, device, count_flops=phase not in phase_flops)
            baseline.setdefault(phase, seconds)
            flops = phase_flops.setdefault(phase, flops)  # the model's FLOPs, counted in the fp32 eager mode
            tflops = flops / seconds / 1e12
            memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            print(f"| {mode} | {phase} | {1 / seconds:.2f} | {seconds * 1e3:.1f} | {tflops:.2f} | "
                  f"{tflops / args.peak_tflops:.1%} | {memory:.2f} | {baseline[phase] / seconds:.2f}x |", flush=True)
    print("\n| mode | inference | output MP/s |")
    print("|---|---|---|")
    for mode in dict.fromkeys(Mode(m.precision, m.channels_last) for m in modes):
        model = build(args, mode, device)
        for tile in (0, args.infer_size // 2):
            label = "whole image" if tile == 0 else f"tiles of {tile}"
            print(f"| {mode} | {label} | "
                  f"{inference_mpix(model, args, device, tile):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
