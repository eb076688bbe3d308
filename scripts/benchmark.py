"""Training and inference speed: each speed setting next to the plain fp32 eager path, in the same run.

For each mode (precision, channels_last, torch.compile, whole-step CUDA graphs) it times PSNR-phase and GAN-phase
iterations of the ESRGAN model on fixed synthetic batches (warm-up excluded), and reports iterations/s, achieved
TFLOP/s and MFU (model FLOPs counted with torch.utils.flop_counter, over --peak-tflops), and peak GPU memory. Then:

* launches and syncs per iteration: operators dispatched and host reads of device values (eager modes, any device),
  and on CUDA, from torch.profiler, GPU kernels, host-device synchronisations and the time the GPU is busy;
* training fed by the real data loader (synthetic 480x480 PNG pairs, `--workers` workers, batches prefetched to
  the GPU) next to the fixed-batch figure, with the fraction of wall time spent waiting for data;
* inference in megapixels/s as test.py runs it (`super_resolve`, from and to the CPU; whole image and tiled).

The GPU, versions and settings head the output.

    python scripts/benchmark.py                    # on a GPU: the paper's settings (batch 16, GT 128, nb 23)
    python scripts/benchmark.py --smoke            # seconds on a CPU: tiny network, a few iterations
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from benchmark_data import make_data  # scripts/, this script's folder
from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.data.loader import DataWait, build_train_loader, prefetch_to_device, stop_workers
from esrgan.data.paired import PairedImageDataset
from esrgan.engine.fast import DEFAULT_WARMUP, GraphedSteps, cuda_graph_unsupported
from esrgan.engine.inference import super_resolve
from esrgan.engine.trainer import configure_backends
from esrgan.models.esrgan import ESRGANModel
from esrgan.options import GanPhaseOpt, PsnrPhaseOpt

# CUDA runtime calls after which the host waits for the device.
SYNC_CALLS = ("cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy")
ITERATIONS = "benchmark iterations"  # the profiler range around the profiled iterations


@dataclass(frozen=True)
class Mode:
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    graph: bool = False  # whole-step CUDA-graph capture (speed.cuda_graph)

    def __str__(self) -> str:
        return "+".join([self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile
                        + ["graph"] * self.graph)


FELL_BACK: set[Mode] = set()  # graph modes with a step that could not be captured (its figures are eager ones)


def mode_label(mode: Mode) -> str:
    return f"{mode} (NOT captured: eager)" if mode in FELL_BACK else str(mode)


def build(args: argparse.Namespace, mode: Mode, device: torch.device) -> ESRGANModel:
    torch.manual_seed(0)
    net_g = RRDBNet(3, 3, args.nf, args.nb, args.gc, scale=4)
    net_d = Discriminator_VGG_128(3, args.nf_d)
    model = ESRGANModel(net_g, net_d, VGGFeatureExtractor(34), PsnrPhaseOpt(niter=10**9), GanPhaseOpt(niter=1),
                        device, ema_decay=0.999, precision=mode.precision, channels_last=mode.channels_last)
    if mode.compile:
        model.compile()
    if mode.graph:
        def fell_back(kind: str, why: str) -> None:
            print(f"WARNING: mode {mode}: the {kind} step was not captured ({why}); its figures are eager ones",
                  file=sys.stderr, flush=True)
            FELL_BACK.add(mode)

        model.use_step_runner(GraphedSteps(device, on_fallback=fell_back))
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare(model: ESRGANModel, phase: str, args: argparse.Namespace, device: torch.device) -> ESRGANModel:
    """Feed a fixed synthetic batch; iterations 1, 2, ... are then steps of `phase`."""
    lq = torch.rand(args.batch, 3, args.gt_size // 4, args.gt_size // 4, device=device)
    gt = torch.rand(args.batch, 3, args.gt_size, args.gt_size, device=device)
    model.feed_data({"LQ": lq, "GT": gt})
    if phase == "gan":
        model.psnr_iters = 0
    return model


def time_phase(model: ESRGANModel, args: argparse.Namespace, device: torch.device,
               count_flops: bool) -> tuple[float, float]:
    """(seconds per iteration, FLOPs per iteration or nan) of a prepared model on its fixed batch. FLOPs are
    counted on an eager model (a replayed CUDA graph dispatches no operators to count)."""
    for i in range(args.warmup):
        model.optimize_parameters(i + 1)
    sync(device)
    start = time.perf_counter()
    for i in range(args.iters):
        model.optimize_parameters(args.warmup + i + 1)
    sync(device)
    seconds = (time.perf_counter() - start) / args.iters
    if not count_flops:
        return seconds, float("nan")
    with FlopCounterMode(display=False) as counter:
        model.optimize_parameters(1)
    return seconds, counter.get_total_flops()


class CountOperators(TorchDispatchMode):
    """Operators dispatched (each one kernel launch or more on a GPU) and host reads of device values (each a
    host-device synchronisation on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.operators = 0
        self.host_reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.operators += 1
        self.host_reads += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def count_operators(model: ESRGANModel) -> tuple[int, int]:
    """(operators, host reads) of one eager iteration of a prepared, warmed-up model."""
    with CountOperators() as count:
        model.optimize_parameters(1)
    return count.operators, count.host_reads


@dataclass
class Profile:
    kernels: float  # GPU kernels per iteration
    syncs: float  # host-device synchronisations per iteration
    busy_ms: float  # time per iteration the GPU runs at least one kernel or copy
    top: list[tuple[str, float, float]]  # (kernel, launches per iteration, ms per iteration), most time first


def profile_cuda(model: ESRGANModel, device: torch.device, iters: int) -> Profile:
    """torch.profiler over `iters` iterations of a prepared, warmed-up model on CUDA."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function(ITERATIONS):
            for i in range(iters):
                model.optimize_parameters(i + 1)
        sync(device)  # outside the range: neither this nor the profiler's own synchronisation is counted
    events = prof.events()
    # Device events: kernels, copies and memsets; not the GPU-side spans of record_function ranges (torch's
    # own summaries leave those out too), which cover idle gaps.
    on_gpu = [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
              and getattr(e, "activity_type", "") != "gpu_user_annotation"]
    kernels = [e for e in on_gpu if not e.name.startswith(("Memcpy", "Memset"))
               and getattr(e, "activity_type", "") not in ("gpu_memcpy", "gpu_memset")]
    (span,) = [e for e in events if e.device_type == DeviceType.CPU and e.name == ITERATIONS]
    syncs = sum(e.device_type == DeviceType.CPU and e.name in SYNC_CALLS
                and span.time_range.start <= e.time_range.start <= span.time_range.end for e in events)
    busy, end = 0.0, float("-inf")
    for start_us, end_us in sorted((e.time_range.start, e.time_range.end) for e in on_gpu):
        busy += max(0.0, end_us - max(start_us, end))
        end = max(end, end_us)
    per_kernel: dict[str, list[float]] = {}
    for e in kernels:
        entry = per_kernel.setdefault(e.name, [0, 0.0])
        entry[0] += 1
        entry[1] += e.time_range.end - e.time_range.start
    top = sorted(((name, n / iters, us / iters / 1e3) for name, (n, us) in per_kernel.items()),
                 key=lambda row: -row[2])
    return Profile(len(kernels) / iters, syncs / iters, busy / iters / 1e3, top)


def loader_fed(args: argparse.Namespace, mode: Mode, device: torch.device, gt: str, lq: str,
               phase: str) -> tuple[float, float]:
    """(seconds per iteration, data-wait fraction) of training fed as train.py feeds it: the training loader on
    PNG pairs (random crops, flips, rotations) in `args.workers` workers, batches prefetched to the device. The
    batches the workers have ready after the warm-up (prefetch_factor per worker) are used up untimed, so that the
    timed `args.loader_iters` iterations run at the rate the workers make batches, if that is the slower one."""
    dataset = PairedImageDataset("benchmark", 4, gt, lq, gt_size=args.gt_size, use_flip=True, use_rot=True)
    loader = build_train_loader(dataset, args.batch, args.workers, seed=0, shuffle=True, enlarge_ratio=10**4,
                                pin_memory=device.type == "cuda")
    try:
        model = prepare(build(args, mode, device), phase, args, device)
        wait = DataWait()
        batches = prefetch_to_device(wait.timed(loader), device)
        untimed = args.warmup + (loader.prefetch_factor or 0) * args.workers
        for i, batch in zip(range(untimed), batches, strict=False):
            model.feed_data(batch)
            model.optimize_parameters(i + 1)
        sync(device)
        wait.seconds = 0.0
        start = time.perf_counter()
        for i, batch in zip(range(args.loader_iters), batches, strict=False):
            model.feed_data(batch)
            model.optimize_parameters(untimed + i + 1)
        sync(device)
        elapsed = time.perf_counter() - start
    finally:
        stop_workers(loader)  # they ignore SIGTERM: left to Python's exit after an error, they would hang it
    return elapsed / args.loader_iters, wait.seconds / elapsed


def inference_mpix(model: ESRGANModel, mode: Mode, args: argparse.Namespace, device: torch.device,
                   tile: int) -> float:
    """Output megapixels per second of upscaling one image as test.py does (`super_resolve`: from and to the
    CPU, whole or in tiles with test.py's default overlap), in the mode's precision and memory format."""
    net = model.deployable_generator()
    lq = torch.rand(1, 3, args.infer_size, args.infer_size)

    def run() -> None:
        super_resolve(net, lq, 4, tile=tile, precision=mode.precision, channels_last=mode.channels_last,
                      device=device)

    run()  # warm-up (cuDNN autotuning); the output on the CPU ends each run
    start = time.perf_counter()
    for _ in range(args.infer_iters):
        run()
    return args.infer_iters * (args.infer_size * 4) ** 2 / 1e6 / (time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--loader-iters", type=int, default=150, help="timed iterations of the loader-fed run")
    parser.add_argument("--infer-size", type=int, default=256, help="LR side of the inference test image")
    parser.add_argument("--infer-iters", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=790.0,
                        help="for MFU: the GPU's sustained bf16 matrix-product rate (default: the H100 figure of "
                             "issue #6, 790; the datasheet's dense peak is higher)")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="e.g. fp32 bf16 bf16+channels_last bf16+channels_last+compile (fp32 always first)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="data loader workers of the loader-fed run (BasicSR's reference used 8)")
    parser.add_argument("--images", type=int, default=64, help="synthetic 480x480 PNG pairs for the loader-fed run")
    parser.add_argument("--loader-mode", default=None, help="mode of the loader-fed run (default: the last mode)")
    parser.add_argument("--profile-iters", type=int, default=5, help="iterations profiled per mode and phase (CUDA)")
    parser.add_argument("--top-kernels", type=int, default=0,
                        help="also list the N kernels with the most GPU time per mode and phase (CUDA)")
    parser.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                        help="cuDNN autotuning, as in training (speed.cudnn_benchmark) and in BasicSR")
    parser.add_argument("--tf32", choices=("conv", "all", "none"), default="conv",
                        help="where fp32 work may use TensorFloat-32, as speed.tf32 (default conv, PyTorch's)")
    return parser


def select_modes(args: argparse.Namespace, device: torch.device) -> list[Mode]:
    """The modes to run, fp32 first; graph modes the device cannot run are left out, saying why."""
    names = args.modes or (["fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile",
                            "bf16+channels_last+graph", "bf16+channels_last+compile+graph"]
                           if device.type == "cuda" else ["fp32", "bf16+channels_last"])
    names = ["fp32"] + [n for n in names if n != "fp32"]
    modes = [Mode(n.split("+")[0], "channels_last" in n, "compile" in n, "graph" in n) for n in names]
    for mode in [m for m in modes if m.graph]:
        reason = cuda_graph_unsupported(device, mode.precision, distributed=False)
        if reason:
            print(f"mode {mode} left out: {reason}", flush=True)
            modes.remove(mode)
    return modes


def training_tables(args: argparse.Namespace, modes: list[Mode], device: torch.device) -> dict[tuple[Mode, str], float]:
    """The speed table of each mode and phase, then its launches and syncs (and top kernels on CUDA); returns the
    seconds per iteration of each."""
    print("| mode | phase | it/s | ms/it | TFLOP/s | MFU | peak mem GiB | speed-up vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    baseline: dict[str, float] = {}
    phase_flops: dict[str, float] = {}
    timed: dict[tuple[Mode, str], float] = {}
    launches: dict[tuple[Mode, str], tuple[str, str, Profile | None]] = {}
    for mode in modes:
        for phase in ("psnr", "gan"):
            if device.type == "cuda":
                gc.collect()  # the previous mode's model (its networks reference each other) must not count
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            model = prepare(build(args, mode, device), phase, args, device)
            seconds, flops = time_phase(model, args, device, count_flops=phase not in phase_flops)
            memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            baseline.setdefault(phase, seconds)
            timed[mode, phase] = seconds
            flops = phase_flops.setdefault(phase, flops)  # the model's FLOPs, counted in the fp32 eager mode
            tflops = flops / seconds / 1e12
            print(f"| {mode_label(mode)} | {phase} | {1 / seconds:.2f} | {seconds * 1e3:.1f} | {tflops:.2f} | "
                  f"{tflops / args.peak_tflops:.1%} | {memory:.2f} | {baseline[phase] / seconds:.2f}x |", flush=True)
            # Counted after the timing, so that neither disturbs the other. A compiled or replayed step
            # dispatches no eager operators to count.
            operators, reads = ("-", "-") if mode.compile or mode.graph else map(str, count_operators(model))
            profile = profile_cuda(model, device, args.profile_iters) if device.type == "cuda" else None
            launches[mode, phase] = operators, reads, profile
            del model
    print("model FLOPs per iteration (counted in the fp32 eager step; a multiply-add is 2 FLOPs, as in the peak): "
          + ", ".join(f"{phase} {flops / 1e12:.4g} TFLOP" for phase, flops in phase_flops.items()))

    print("\n| mode | phase | operators/it | host reads/it | GPU kernels/it | host-device syncs/it | "
          "GPU busy ms/it | ms/it |")
    print("|---|---|---|---|---|---|---|---|")
    for (mode, phase), (operators, reads, profile) in launches.items():
        gpu = ("-", "-", "-") if profile is None else (
            f"{profile.kernels:.0f}", f"{profile.syncs:.1f}", f"{profile.busy_ms:.1f}")
        print(f"| {mode_label(mode)} | {phase} | {operators} | {reads} | {' | '.join(gpu)} | "
              f"{timed[mode, phase] * 1e3:.1f} |")
    if args.top_kernels > 0 and device.type == "cuda":
        for (mode, phase), (_, _, profile) in launches.items():
            print(f"\n{mode}, {phase} phase: the {args.top_kernels} kernels with the most GPU time")
            print("| kernel | launches/it | GPU ms/it |")
            print("|---|---|---|")
            for name, count, ms in profile.top[: args.top_kernels]:
                print(f"| {name[:90]} | {count:.0f} | {ms:.2f} |")
    return timed


def loader_table(args: argparse.Namespace, modes: list[Mode], device: torch.device,
                 timed: dict[tuple[Mode, str], float]) -> None:
    """Training fed by the real data loader, next to the fixed-batch speed, with the share of time spent waiting."""
    loader_mode = next((m for m in modes if str(m) == args.loader_mode), None) if args.loader_mode else modes[-1]
    if loader_mode is None:
        raise SystemExit(f"--loader-mode {args.loader_mode} is not among the modes {[str(m) for m in modes]}")
    print(f"\nTraining fed by the data loader: {args.images} synthetic 480x480 PNG pairs, {args.workers} workers, "
          f"batches prefetched to {device.type}, {args.loader_iters} timed iterations; data wait: the share of wall "
          "time the host waited for a batch (an upper bound on the GPU's wait, as the host runs ahead)")
    print("| mode | phase | it/s fixed batch | it/s from the loader | data wait |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        gt, lq = make_data(Path(tmp), args.images, 480, 4, lmdb=False)["folder"]
        for phase in ("psnr", "gan"):
            seconds, waiting = loader_fed(args, loader_mode, device, gt, lq, phase)
            print(f"| {mode_label(loader_mode)} | {phase} | {1 / timed[loader_mode, phase]:.2f} | {1 / seconds:.2f} | "
                  f"{waiting:.1%} |", flush=True)


def inference_table(args: argparse.Namespace, modes: list[Mode], device: torch.device) -> None:
    """Test.py-style upscaling speed of each precision and memory format, whole image and tiled."""
    print("\n| mode | inference | output MP/s |")
    print("|---|---|---|")
    for mode in dict.fromkeys(Mode(m.precision, m.channels_last) for m in modes):
        model = build(args, mode, device)
        for tile in (0, args.infer_size // 2):
            label = "whole image" if tile == 0 else f"tiles of {tile}"
            print(f"| {mode} | {label} | "
                  f"{inference_mpix(model, mode, args, device, tile):.2f} |", flush=True)


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.nf, args.nb, args.gc, args.nf_d = 2, 8, 1, 4, 8
        # Enough warm-up for graph modes (CUDA): their eager steps and the capture are not timed.
        args.warmup, args.iters, args.loader_iters, args.infer_size, args.infer_iters = DEFAULT_WARMUP + 1, 1, 1, 32, 1
        args.workers, args.images, args.profile_iters = 1, 4, 1
    configure_backends(args.cudnn_benchmark, deterministic=False, tf32=args.tf32)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    modes = select_modes(args, device)
    if any(m.graph for m in modes) and args.warmup <= DEFAULT_WARMUP:
        parser.error(f"--warmup must be more than {DEFAULT_WARMUP} with graph modes: their first {DEFAULT_WARMUP} "
                     "steps run eagerly and the next is captured, which must not be timed as a replay")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device {device} ({gpu}); torch {torch.__version__}, CUDA {torch.version.cuda}, Python "
          f"{platform.python_version()}")
    print(f"batch {args.batch}, GT {args.gt_size}, RRDBNet nf {args.nf} nb {args.nb} gc {args.gc}, D nf {args.nf_d}, "
          f"VGG19 conv5_4, EMA; {args.warmup} warm-up + {args.iters} timed iterations; MFU over "
          f"{args.peak_tflops:g} TFLOP/s")
    print(f"cuDNN autotuning {'on' if args.cudnn_benchmark else 'off'}; TF32 in fp32 work: {args.tf32} "
          f"(cuDNN convolutions {torch.backends.cudnn.allow_tf32}, matrix products "
          f"{torch.backends.cuda.matmul.allow_tf32})")
    timed = training_tables(args, modes, device)
    loader_table(args, modes, device, timed)
    inference_table(args, modes, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
