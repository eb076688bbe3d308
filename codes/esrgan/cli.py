"""Command-line entry points: `train.py` / `esrgan-train` and `test.py` / `esrgan-test`."""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from .options import OptionError, TestOptions, TrainOptions, load_options


def _parser(description: str, example: str, files: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog=f"Example option files: {files}. Every option, its default and its range: docs/OPTIONS.md.")
    parser.add_argument("-opt", "--opt", required=True, help="path to the YAML option file")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help=f"override options, e.g. --set {example} (values parsed as YAML; several after one "
                             "--set, or --set repeated)")
    return parser


def _run(job: Callable[[], object]) -> int:
    """Run a job; bad input (options, files, weights) ends with a one-line message instead of a traceback, and
    a training stopped by a signal (after saving; the log says how to continue) with 128 + its number, and
    Ctrl-C outside the training loop (at start-up, in test.py) with 130 and one line."""
    from .engine.trainer import TrainingStopped

    try:
        job()
    except TrainingStopped as stopped:
        # Also under torchrun: a worker that exits 0 tells it the job is done. When torchrun itself got the
        # signal it stops without restarting; when only its workers did, it restarts them (--max-restarts,
        # resuming with --auto_resume) or reports the failure, as for workers the signal had ended.
        return stopped.exit_status
    except (OptionError, ValueError, OSError, FloatingPointError) as err:
        from .utils.logger import log_error_to_file

        log_error_to_file(f"error: {err}")
        if os.environ.get("ESRGAN_TRACEBACK"):
            raise
        print(f"error: {_message(err)}\n(set ESRGAN_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C where the training loop's stop handling is not installed: start-up, test.py
        from .utils.logger import log_error_to_file

        log_error_to_file("stopped by Ctrl-C (SIGINT)")
        print("stopped by Ctrl-C (SIGINT)", file=sys.stderr)
        return 128 + 2
    except Exception:  # out of GPU memory, a bug: the traceback on the console, and in the log file too
        from .utils.logger import log_error_to_file

        log_error_to_file(f"error: the run ended with an unexpected error\n{traceback.format_exc()}")
        raise
    return 0


def _message(err: Exception) -> str:
    """An error's message; for one raised in a data-loader worker, which the DataLoader re-raises with the
    worker's whole traceback as its message, the worker's own message and the worker's number."""
    text = str(err)
    worker = re.match(r"Caught \w+ in DataLoader worker process (\d+)\.\nOriginal Traceback", text)
    if worker is None:
        return text
    own = re.sub(r"^[\w.]+: ", "", text.rstrip().splitlines()[-1], count=1)  # "OSError: <its message>"
    return f"{own} (in data-loader worker {worker.group(1)})"


def train_main(argv: list[str] | None = None) -> int:
    parser = _parser("Train ESRGAN (or a PSNR-oriented RRDBNet) from a YAML option file.", "train.gan.niter=1000",
                     "options/train_ESRGAN.yml (the paper's settings, every option commented), "
                     "options/train_demo.yml")
    parser.add_argument("--auto_resume", "--auto-resume", action="store_true",
                        help="continue from the newest complete training state of this run, if there is one")
    # What BasicSR's and torch.distributed.launch's command lines pass: answered with what to run instead.
    parser.add_argument("--launcher", help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.launcher is not None or args.local_rank is not None:
        parser.error("--launcher and --local_rank are not needed: run `python train.py ...` for one process and "
                     "`torchrun --nproc_per_node=N train.py ...` for several (README, 'Several GPUs')")

    def job() -> None:
        from .engine.trainer import train

        train(load_options(TrainOptions, args.opt, args.set), auto_resume=args.auto_resume,
              option_file=Path(args.opt))

    return _run(job)


def test_main(argv: list[str] | None = None) -> int:
    args = _parser("Super-resolve test sets with a trained generator and score them.", "test.tile=256",
                   "options/test.yml, options/test_demo.yml").parse_args(argv)

    def job() -> None:
        from .engine.tester import test

        test(load_options(TestOptions, args.opt, args.set), option_file=Path(args.opt))

    return _run(job)
