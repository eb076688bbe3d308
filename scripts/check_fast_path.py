"""Quality check of a speed setting: train twice from the same weights and data order, plain fp32 and fast.

Both runs are ordinary train.py runs of one option file (same seed, so the same initial networks and the same
batches), the second with the speed overrides given by --fast. The reference stays fp32; --reference may give it
speed overrides that keep its numbers, such as speed.cuda_graph=true (a captured step is the eager step bit for bit,
which tests/test_speed.py checks on a GPU; only the learning rate is then read as a float32 tensor), to shorten the
check: on a GPU the plain fp32 path is launch-bound and several times slower than its captured steps. After
--psnr-iters PSNR-phase iterations both are validated; the check passes when their validation PSNR differs by at most
--tolerance dB (the GPU-speed issue asks for 0.05 dB after 2,000 iterations). With --gan-iters, the GAN-phase losses
of the two runs are compared at every print (they should track each other; they are reported, not judged, since the
adversarial game amplifies any difference). Run on the GPU, e.g.:

    python scripts/check_fast_path.py -opt options/train_ESRGAN.yml --psnr-iters 2000 --gan-iters 500 \\
        --fast speed.precision=bf16 speed.channels_last=true speed.compile=true

Exit status 0 when the check passes, 1 when it fails, 2 when it cannot run (options that train.py would refuse, or
no validation set: found before either run starts), 3 when --time-limit stopped it (it then prints how far each run
got).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.options import TrainOptions, load_options

REPO_ROOT = Path(__file__).resolve().parents[1]
LOSSES = ("l_g_pix", "l_g_fea", "l_g_gan", "l_d_real", "l_d_fake")


STOP_TIMEOUT = 120  # default seconds a stopped run may take to save its checkpoint before it is killed


class Run:
    """One train.py run in a subprocess, its output in <log_dir>/<name>.log (log_dir: by default root)."""

    def __init__(self, option_file: str, overrides: list[str], root: Path, name: str,
                 log_dir: Path | None = None) -> None:
        args = [sys.executable, str(REPO_ROOT / "train.py"), "-opt", option_file]
        for item in run_overrides(overrides, root, name):
            args += ["--set", item]
        print(f"training {name} ...", flush=True)
        self.name, self.tb_dir, self.log = name, root / name / "tb_logger", (log_dir or root) / f"{name}.log"
        self.start = time.perf_counter()
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)

    def wait(self) -> float:
        """Wall seconds of the run; raises with the end of its log when it failed."""
        if self.process.wait() != 0:
            raise RuntimeError(f"the {self.name} run failed:\n{self.log.read_text()[-6000:]}")
        return time.perf_counter() - self.start

    def warnings(self) -> list[str]:
        """The warnings of the run's log (a speed setting that fell back to eager says so there)."""
        return [line for line in self.log.read_text().splitlines() if " WARNING: " in line]


def run_overrides(overrides: list[str], root: Path, name: str) -> list[str]:
    """The --set items of a run: `overrides`, then its name and folder, and TensorBoard on (the check reads it)."""
    return [*overrides, f"name={name}", f"path.experiments_root={root}", "logger.use_tb_logger=true"]


def options_problem(option_file: str, overrides: list[str]) -> str | None:
    """Why a run cannot serve the check, found before any training: train.py would refuse its options, or it has
    no validation set (the check compares validation PSNR). None when it can."""
    try:
        o = load_options(TrainOptions, option_file, overrides)
    except (ValueError, OSError) as err:
        return str(err)
    if o.datasets.val is None:
        return "the option file has no validation set (datasets.val); the check compares validation PSNR"
    return None


def stop(runs: Iterable[Run], timeout: float = STOP_TIMEOUT) -> None:
    """Ask the runs still going to stop (train.py saves a checkpoint and stops); kill those that have not stopped
    `timeout` seconds later (all of them together: the stop takes `timeout` at most, however many runs)."""
    going = [run for run in runs if run.process.poll() is None]
    for run in going:
        run.process.terminate()
    end = time.perf_counter() + timeout
    for run in going:
        try:
            run.process.wait(timeout=max(end - time.perf_counter(), 0.0))
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()


def wait_all(runs: dict[str, Run], deadline: float | None = None, stop_timeout: float = STOP_TIMEOUT
             ) -> tuple[dict[str, float], bool]:
    """Wall seconds of runs going at once, and whether the `deadline` (a time.perf_counter() value) stopped
    them before they finished; the first failure stops the others and raises."""
    seconds: dict[str, float] = {}
    while len(seconds) < len(runs):
        if deadline is not None and time.perf_counter() > deadline:
            stop(runs.values(), stop_timeout)
            return {label: time.perf_counter() - run.start for label, run in runs.items()}, True
        for label, run in runs.items():
            if label not in seconds and run.process.poll() is not None:
                if run.process.returncode != 0:
                    stop(runs.values(), stop_timeout)
                seconds[label] = run.wait()
        time.sleep(0.2)
    return seconds, False


def last_report(log: Path) -> str:
    """The last `iter` line of a train.py log (its pace and losses), or a note that there is none."""
    lines = [line for line in log.read_text().splitlines() if " iter " in line and "s/it" in line]
    return lines[-1].strip() if lines else "no iteration reported yet"


def scalars(tb_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-opt", "--opt", required=True, help="the training option file")
    parser.add_argument("--fast", nargs="+", required=True, metavar="KEY=VALUE",
                        help="the speed overrides of the fast run, e.g. speed.precision=bf16 speed.channels_last=true")
    parser.add_argument("--reference", nargs="+", default=[], metavar="KEY=VALUE",
                        help="speed overrides of the fp32 reference run (default: none, the plain fp32 eager path), "
                             "e.g. speed.cuda_graph=true")
    parser.add_argument("--psnr-iters", type=int, default=2000)
    parser.add_argument("--gan-iters", type=int, default=0)
    parser.add_argument("--print-freq", type=int, default=100, help="iterations between the compared losses")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest allowed PSNR difference in dB")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="further overrides for both runs (e.g. a smaller network for a CPU check)")
    parser.add_argument("--workdir", type=Path, help="keep both runs here (default: a temporary folder)")
    parser.add_argument("--parallel", action="store_true",
                        help="run both trainings at once (on a GPU with room for both; each is launch-bound)")
    parser.add_argument("--log-dir", type=Path, help="write the two runs' train.py output here, as it comes "
                                                     "(default: the workdir)")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="stop both runs after this many seconds and report how far they got (exit status 3)")
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT, metavar="SECONDS",
                        help="how long a run stopped at the time limit may take to save before it is killed")
    args = parser.parse_args(argv)
    for flag, items in (("--fast", args.fast), ("--reference", args.reference)):
        for item in items:
            key, equals, value = item.partition("=")
            if not key.startswith("speed.") or not equals:
                parser.error(f"{flag} {item!r}: expected speed.<option>=<value>")
            if flag == "--reference" and key == "speed.precision" and value != "fp32":
                parser.error("--reference: the reference run is the fp32 one; give other precisions with --fast")

    common = [*args.set, f"train.psnr.niter={args.psnr_iters}", f"train.gan.niter={args.gan_iters}",
              f"train.val_freq={args.psnr_iters}", f"logger.print_freq={args.print_freq}",
              f"logger.save_freq={args.psnr_iters + args.gan_iters}"]
    if args.gan_iters == 0:
        common.append("model=sr")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        for folder in (root, args.log_dir or root):
            folder.mkdir(parents=True, exist_ok=True)
        for label, overrides in (("fp32", [*common, *args.reference]), ("fast", [*common, *args.fast])):
            problem = options_problem(args.opt, run_overrides(overrides, root, f"check_{label}"))
            if problem:
                print(f"error: the {label} run: {problem}", file=sys.stderr)
                return 2
        deadline = time.perf_counter() + args.time_limit if args.time_limit else None  # the runs' own time
        runs = {"fp32": Run(args.opt, [*common, *args.reference], root, "check_fp32", args.log_dir)}
        if args.parallel:
            runs["fast"] = Run(args.opt, [*common, *args.fast], root, "check_fast", args.log_dir)
            seconds, stopped = wait_all(runs, deadline, args.stop_timeout)
        else:
            seconds, stopped = wait_all({"fp32": runs["fp32"]}, deadline, args.stop_timeout)
            if not stopped:
                runs["fast"] = Run(args.opt, [*common, *args.fast], root, "check_fast", args.log_dir)
                more, stopped = wait_all({"fast": runs["fast"]}, deadline, args.stop_timeout)
                seconds |= more
        if stopped:
            print(f"\nINCOMPLETE: stopped at the time limit of {args.time_limit:g} s")
            for label, run in runs.items():
                print(f"{label} run, {seconds[label]:.0f} s: {last_report(run.log)}")
            return 3
        plain, fast = scalars(runs["fp32"].tb_dir), scalars(runs["fast"].tb_dir)
        notes = {label: run.warnings() for label, run in runs.items()}
    for label, lines in notes.items():
        for line in lines:
            print(f"{label} run: {line}")
    print(f"\nwall time of the whole train.py run{' (both at once)' if args.parallel else ''}: fp32 "
          f"{seconds['fp32']:.0f} s, fast {seconds['fast']:.0f} s")
    for label, tags in (("fp32", plain), ("fast", fast)):
        waits = tags.get("train/data_wait_fraction", {})
        if waits:
            print(f"{label}: data wait {sum(waits.values()) / len(waits):.1%} of the wall time on average "
                  f"(largest {max(waits.values()):.1%})")

    print(f"\nfast path: {' '.join(args.fast)}")
    print(f"fp32 reference: {' '.join(args.reference) or 'the plain fp32 eager path'}")
    print("| iteration | fp32 val PSNR | fast val PSNR | difference (dB) |")
    print("|---|---|---|---|")
    for step in sorted(plain["val/psnr"]):
        a, b = plain["val/psnr"][step], fast["val/psnr"].get(step, float("nan"))
        print(f"| {step} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    step = args.psnr_iters
    difference = abs(fast["val/psnr"].get(step, float("nan")) - plain["val/psnr"][step])
    passed = difference <= args.tolerance
    print(f"\nPSNR phase, iteration {step}: |difference| {difference:.3f} dB, tolerance {args.tolerance} dB: "
          + ("PASS" if passed else "FAIL"))

    gan_losses = [k for k in LOSSES if f"train/{k}" in plain]
    if args.gan_iters and gan_losses:
        print("\n| iteration | " + " | ".join(f"{k} fp32 / fast" for k in gan_losses) + " |")
        print("|---|" + "---|" * len(gan_losses))
        for step in sorted(s for s in plain[f"train/{gan_losses[0]}"] if s > args.psnr_iters):
            cells = [f"{plain[f'train/{k}'][step]:.4g} / {fast[f'train/{k}'].get(step, float('nan')):.4g}"
                     for k in gan_losses]
            print(f"| {step} | " + " | ".join(cells) + " |")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
