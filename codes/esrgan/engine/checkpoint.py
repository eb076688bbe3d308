"""Checkpoints written atomically: a crash during a save never leaves a half-written file behind.

Layout of a run folder:
    models/<iter>_G.pth, models/latest_G.pth   generator, raw state dict with the seed's keys
    models/<iter>_D.pth                         discriminator
    training_state/<iter>.state                 everything else needed to resume (see `save_checkpoint`)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, flush it to disk, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(run_dir: Path, step: int, networks: dict[str, torch.nn.Module], state: dict[str, Any]) -> None:
    """Write the networks of `step` to models/ and the training state to training_state/ (state last, so
    that a state file only ever names weights that are complete)."""
    models = run_dir / "models"
    for name, net in networks.items():
        weights = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        atomic_save(weights, models / f"{step}_{name}.pth")
        if name == "G":
            atomic_save(weights, models / "latest_G.pth")
    atomic_save(state, run_dir / "training_state" / f"{step}.state")


def load_training_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot load the training state {path}: {err}") from None
