"""Launcher: `python train.py -opt options/<file>.yml [--set key=value ...]` from anywhere."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "codes"))

from esrgan.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
