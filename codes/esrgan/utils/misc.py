"""Seeding, RNG state capture, device choice, run folders, and the name lists of messages."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def listing(names: list[str], limit: int = 10) -> str:
    """The first `limit` names, comma-separated, and how many more there are: for messages naming what is wrong."""
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def set_random_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain data (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A run may resume on a machine with fewer GPUs than it was saved on.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def select_device(name: str, what: str = "device") -> torch.device:
    """'auto' picks CUDA when it is available, else the CPU. `what` names the option or flag in messages."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{what}: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}: {name!r} was asked for but CUDA is not available; use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{what}: {name!r}, but this machine has {torch.cuda.device_count()} GPUs (cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1})")
    return device


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def refuse_inputs_inside(folder: Path, inputs: dict[str, str | None]) -> None:
    """A new run moves an existing run `folder` aside (`archive_existing`): refuse the inputs (option key ->
    path) that lie inside it, before anything is moved."""
    if not folder.exists():
        return
    root = folder.resolve()
    inside = [f"{key} ({path})" for key, path in inputs.items()
              if path and root in (Path(path).resolve(), *Path(path).resolve().parents)]
    if inside:
        raise ValueError(f"{', '.join(inside)} inside {folder}, the folder of an earlier run of this name, which a "
                         "new run moves aside: give the run another name, or move the data out of it")


def archive_existing(path: Path) -> Path | None:
    """Move an existing folder aside as <name>_archived_<time> so that a new run never overwrites it."""
    if not path.exists():
        return None
    target = unused_path(path.with_name(f"{path.name}_archived_{timestamp()}"))
    path.rename(target)
    return target


def unused_path(path: Path) -> Path:
    """`path`, or `path`_1, _2, ... when it exists."""
    target, suffix = path, 1
    while target.exists():
        target, suffix = path.with_name(f"{path.name}_{suffix}"), suffix + 1
    return target
