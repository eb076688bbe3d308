"""Prepare DIV2K for options/train_ESRGAN.yml in one command: sub-images, x4 LR sub-images, both LMDBs.

Given the unzipped DIV2K folders under --div2k (at least `DIV2K_train_HR/`; `DIV2K_train_LR_bicubic/X4/` is
used when present, since DIV2K's own LR images were made with MATLAB's bicubic):

    DIV2K800_sub/                 480x480 HR crops, step 240            (extract_subimages.py)
    DIV2K800_sub_bicLRx4/         the matching 120x120 LR crops         (extract_subimages.py or generate_lr.py)
    DIV2K800_sub.lmdb, DIV2K800_sub_bicLRx4.lmdb                        (create_lmdb.py)

Every step skips what is already done, so an interrupted run is finished by running the command again.

    python scripts/prepare_div2k.py --div2k datasets/DIV2K
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS.parent / "codes"))

from esrgan.data.prepare import SETTINGS_FILE  # noqa: E402  (how a folder's crops were made)

SCALE = 4


def run(script: str, *args: str | Path) -> None:
    command = [sys.executable, str(SCRIPTS / script), *map(str, args)]
    print("+", " ".join(command), flush=True)
    step = subprocess.Popen(command)
    try:
        returncode = step.wait()
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reached the step too; a SIGINT sent to this process alone is passed on. The step
        # is waited for, not killed: it stops its worker processes, which a killed step would leave behind.
        try:
            step.wait(timeout=5)
        except subprocess.TimeoutExpired:
            step.send_signal(signal.SIGINT)
            step.wait()
        raise KeyboardInterrupt from None
    if returncode == 128 + signal.SIGINT:  # the step alone was stopped by Ctrl-C
        raise KeyboardInterrupt
    if returncode:
        raise subprocess.CalledProcessError(returncode, command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--div2k", type=Path, required=True, help="folder holding DIV2K_train_HR/")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes per step")
    parser.add_argument("--png-level", type=int, default=3, help="PNG compression of the crops (0-9)")
    args = parser.parse_args(argv)
    root = args.div2k
    hr = root / "DIV2K_train_HR"
    if not hr.is_dir():
        parser.error(f"{hr} does not exist: unzip DIV2K_train_HR.zip into {root}")
    lr = root / "DIV2K_train_LR_bicubic" / f"X{SCALE}"
    hr_sub, lr_sub = root / "DIV2K800_sub", root / f"DIV2K800_sub_bicLRx{SCALE}"
    common = ["--workers", str(args.workers), "--png-level", str(args.png_level)]
    use_div2k_lr = lr.is_dir()
    if use_div2k_lr and _made_without_lr(hr_sub):
        # For DIV2K's sizes (multiples of 12) the HR crops are the same either way; DIV2K's LR images were made
        # by MATLAB's bicubic as ours are.
        print(f"{hr_sub} was made before {lr} was there: its LR crops stay the MATLAB-compatible bicubic ones "
              f"(as DIV2K's own); delete {hr_sub} and {lr_sub} (and their .lmdb) to make them from {lr}",
              flush=True)
        use_div2k_lr = False
    try:
        if use_div2k_lr:
            run("extract_subimages.py", "--input", hr, "--output", hr_sub, "--lr-input", lr, "--lr-output", lr_sub,
                "--scale", SCALE, "--remove-missing", *common)
        else:
            if not lr.is_dir():
                print(f"{lr} not found: making the LR sub-images with MATLAB-compatible bicubic", flush=True)
            run("extract_subimages.py", "--input", hr, "--output", hr_sub, "--remove-missing", *common)
            run("generate_lr.py", "--input", hr_sub, "--output", lr_sub, "--scale", SCALE, "--remove-missing",
                *common)
        # The folders are this script's own: what a crop no longer made (a source image replaced by a smaller
        # one) leaves behind goes, in the LR crops above and in the LMDBs.
        for folder in (hr_sub, lr_sub):
            run("create_lmdb.py", "--input", folder, "--output", folder.with_name(folder.name + ".lmdb"),
                "--workers", str(args.workers), "--remove-missing")
    except subprocess.CalledProcessError as err:
        print(f"prepare_div2k.py: a step failed (exit {err.returncode}); fix what it reported and run this "
              "command again: finished work is kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prepare_div2k.py: stopped by Ctrl-C; run this command again to continue: finished work is kept",
              file=sys.stderr)
        return 128 + signal.SIGINT
    print(f"Done: {hr_sub}.lmdb and {lr_sub}.lmdb are ready for options/train_ESRGAN.yml")
    return 0


def _made_without_lr(hr_sub: Path) -> bool:
    """Whether `hr_sub` holds crops that an earlier run made without DIV2K's LR images (no scale recorded)."""
    try:
        return json.loads((hr_sub / SETTINGS_FILE).read_text(encoding="utf-8")).get("scale") is None
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":
    sys.exit(main())
