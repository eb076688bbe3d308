"""Checkpoints that survive crashes: atomic writes, a `latest` marker written last, pruning after success.

Layout of a run folder:
    models/<iter>_G.pth, models/latest_G.pth   deployable generator (the EMA when enabled): a raw state dict
                                                with the seed's keys
    models/<iter>_D.pth                         discriminator
    models/best_G.pth                           the generator of the best validation PSNR of the current phase
    training_state/<iter>.state                 everything needed to resume (weights, optimizers, schedulers,
                                                RNG states, iteration, best metrics)
    training_state/latest                       the iteration of the newest complete state (written last)
    abandoned_<time>/                           what the run wrote after the state it was resumed from
"""

from __future__ import annotations

import glob
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..utils.files import atomic_save, atomic_write_text, error_summary
from ..utils.misc import timestamp, unused_path

log = logging.getLogger(__name__)

LATEST = "latest"
BEST_G = "best_G.pth"
DISK_HEADROOM = 1.2  # encoding overhead and a margin over the raw tensor bytes
_STATE_NAME = re.compile(r"^(\d+)\.state$")
_MODEL_NAME = re.compile(r"^(\d+)_[A-Za-z_]+\.pth$")


class DiskFullError(OSError):
    """Not enough free space for a checkpoint."""


def tensor_bytes(obj: Any) -> int:
    """Bytes of all tensors in a nested container (what torch.save will write, give or take headers)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def check_disk_space(folder: Path, needed: int, keep_last: int = 0) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed * DISK_HEADROOM:
        fewer = "lower logger.keep_last" if keep_last > 0 else "set logger.keep_last (to keep only the newest states)"
        raise DiskFullError(f"only {_size(free)} free in {folder}, a checkpoint needs about "
                            f"{_size(needed * DISK_HEADROOM)}: free some space or {fewer}")


def _size(n_bytes: float) -> str:
    """Bytes in the unit that shows them best: 930 KiB, 2.5 MiB, 1300 GiB."""
    unit, scale = ("GiB", 2**30) if n_bytes >= 2**30 else ("MiB", 2**20) if n_bytes >= 2**20 else ("KiB", 2**10)
    value = n_bytes / scale
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A network's state dict, detached and on the CPU: what its weights files hold."""
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, networks: dict[str, torch.nn.Module], state: dict[str, Any],
                    keep_last: int = 0, keep: tuple[int, ...] = ()) -> None:
    """Write the networks of `step`, then the training state, then the `latest` marker; only then prune old
    checkpoints (keep_last > 0; never those of the iterations in `keep`), so that at every moment the newest
    marked state is complete."""
    weights = {name: cpu_state(net) for name, net in networks.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    check_disk_space(run_dir, tensor_bytes(state) + tensor_bytes(weights) * 2, keep_last)
    models = run_dir / "models"
    for name, sd in weights.items():
        atomic_save(sd, models / f"{step}_{name}.pth")
        if name == "G":
            atomic_save(sd, models / "latest_G.pth")
    states = run_dir / "training_state"
    atomic_save(state, states / f"{step}.state")
    atomic_write_text(states / LATEST, f"{step}\n")
    if keep_last > 0:
        prune(run_dir, keep_last, step, keep)


def save_best(run_dir: Path, net: torch.nn.Module) -> None:
    """models/best_G.pth: the generator `net` of the best validation so far."""
    atomic_save(cpu_state(net), run_dir / "models" / BEST_G)


def drop_psnr_best(run_dir: Path, psnr_end: int) -> None:
    """The GAN phase starts its own best record: models/best_G.pth, the PSNR phase's (or that of a GAN phase
    abandoned by a resume), is deleted, so that it is never taken for the best GAN model (before the GAN phase's
    first validation, say). The PSNR phase's end stays in models/<psnr_end>_G.pth."""
    best_file = run_dir / "models" / BEST_G
    if best_file.is_file():
        best_file.unlink()
        log.info("models/%s deleted: the GAN phase keeps its own best (the PSNR phase's end is models/%d_G.pth)",
                 BEST_G, psnr_end)


def set_aside_later(run_dir: Path, step: int) -> tuple[Path, list[int]] | None:
    """Resumed at `step` from a state older than what the run wrote after it (later checkpoints, or validation
    images of a run stopped before its next save): move those files and the latest generators into
    <run>/abandoned_<time>/ (as they lay), with a copy of models/best_G.pth, so that this run's writes overwrite
    none of them; models/latest_G.pth becomes iteration `step`'s generator again (`restore_best` sees to
    best_G.pth). Returns the folder and the later iterations, or None when there are none."""
    later = _checkpoint_files(run_dir)
    val_images = run_dir / "val_images"
    for image_dir in val_images.iterdir() if val_images.is_dir() else []:
        for p in image_dir.glob(f"{glob.escape(image_dir.name)}_*.png"):
            if (number := p.stem.removeprefix(f"{image_dir.name}_")).isdigit():
                later[p] = int(number)
    later = {p: i for p, i in later.items() if i > step}
    if not later:
        return None
    aside = unused_path(run_dir / f"abandoned_{timestamp()}")
    (aside / "models").mkdir(parents=True)
    for path in [*later, *(run_dir / "models" / name for name in ("latest_G.pth", "latest_G.safetensors"))]:
        if path.is_file():
            target = aside / path.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
    if (run_dir / "models" / BEST_G).is_file():
        shutil.copy2(run_dir / "models" / BEST_G, aside / "models" / BEST_G)
    if (run_dir / "models" / f"{step}_G.pth").is_file():
        atomic_save(torch.load(run_dir / "models" / f"{step}_G.pth", map_location="cpu", weights_only=True),
                    run_dir / "models" / "latest_G.pth")
    atomic_write_text(run_dir / "training_state" / LATEST, f"{step}\n")
    return aside, sorted(set(later.values()))


def restore_best(run_dir: Path, best_iter: int) -> None:
    """After `set_aside_later`: models/best_G.pth may be the abandoned continuation's (a copy is set aside). Make
    it the generator of the resumed best record (of iteration `best_iter`, 0 for none) where that iteration's
    file is there; without a record it goes; otherwise it stays, with a warning."""
    best_file, saved = run_dir / "models" / BEST_G, run_dir / "models" / f"{best_iter}_G.pth"
    if not best_file.is_file():
        return
    if best_iter and saved.is_file():
        atomic_save(torch.load(saved, map_location="cpu", weights_only=True), best_file)
        log.info("models/%s: the generator of iteration %d again, the best of the resumed run", BEST_G, best_iter)
    elif not best_iter:
        best_file.unlink()
        log.info("models/%s deleted: the resumed run had no validation yet", BEST_G)
    else:
        log.warning("models/%s may be the abandoned continuation's: the resumed run's best (iteration %d) was not "
                    "saved as models/%d_G.pth; it is replaced when a validation of this run beats that record",
                    BEST_G, best_iter, best_iter)


def saved_iterations(run_dir: Path) -> list[int]:
    """Iterations with a training state, oldest first."""
    folder = run_dir / "training_state"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _STATE_NAME.match(p.name)))


def prune(run_dir: Path, keep_last: int, newest: int, protected: tuple[int, ...] = ()) -> None:
    """Delete the states and per-iteration model files of all but the `keep_last` iterations up to `newest` (the
    one just saved) and the `protected` ones. Later ones are not counted and not touched (a resume from an older
    state moves them away first: `set_aside_later`)."""
    saved = saved_iterations(run_dir)
    keep = set([i for i in saved if i <= newest][-keep_last:] + [i for i in saved if i > newest]) | set(protected)
    for path, iteration in _checkpoint_files(run_dir).items():
        if iteration not in keep:
            path.unlink()


def _checkpoint_files(run_dir: Path) -> dict[Path, int]:
    """Every training state and per-iteration model file of a run, with its iteration."""
    return {p: int(m.group(1)) for folder, pattern in ((run_dir / "training_state", _STATE_NAME),
                                                       (run_dir / "models", _MODEL_NAME))
            for p in folder.iterdir() if (m := pattern.match(p.name))}


def find_resume_state(run_dir: Path) -> Path | None:
    """The newest complete training state of a run: the `latest` marker's, else the highest-numbered one."""
    marker = run_dir / "training_state" / LATEST
    if marker.is_file():
        path = run_dir / "training_state" / f"{marker.read_text().strip()}.state"
        if path.is_file():
            return path
    iterations = saved_iterations(run_dir)
    return run_dir / "training_state" / f"{iterations[-1]}.state" if iterations else None


STATE_KEYS = ("iter", "model", "rng", "best")


def load_training_state(path: str | Path, source: str = "path.resume_state") -> dict[str, Any]:
    """A training state written by save_checkpoint, checked to be one. `source` says in messages where the path
    came from."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # text, truncated or foreign files raise assorted errors
        raise ValueError(f"{source}: cannot load the training state {path}: it is not a file that "
                         f"train.py saved, or it is damaged ({error_summary(err)}). Training "
                         "states are experiments/<name>/training_state/<iter>.state") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{source}: {path} is not a training state (no {', '.join(missing)}): training "
                         "states are experiments/<name>/training_state/<iter>.state; to start from a generator's "
                         "weights use path.pretrain_model_G")
    return state


def check_iterations_left(state: dict[str, Any], path: str | Path, total_iters: int,
                          source: str = "path.resume_state") -> None:
    if state["iter"] >= total_iters:
        raise ValueError(f"{source}: {path} is at iteration {state['iter']}, and this run has "
                         f"{total_iters} iterations in all (train.psnr.niter + train.gan.niter): "
                         + ("it is complete" if state["iter"] == total_iters else "nothing is left")
                         + ". Raise the niter of the last phase to train on, or start afresh without a state")


def check_phase_split(state: dict[str, Any], path: str | Path, psnr_niter: int, source: str = "path.resume_state"
                      ) -> str | None:
    """Refuse a resume that would move the end of the PSNR phase under a state already past it (or make it end
    before the state): the GAN phase counts its iterations, schedules included, from that end. Lengthening or
    shortening a PSNR phase still in progress is allowed: returns a line saying so. States written before the
    phase split was recorded are not checked."""
    saved = state.get("psnr_niter")
    if saved is None or saved == psnr_niter:
        return None
    at = state["iter"]
    if at > saved or at > psnr_niter:
        raise ValueError(f"{source}: {path} was saved at iteration {at} of a run whose PSNR phase ended at "
                         f"{saved}; train.psnr.niter {psnr_niter} would move that end "
                         + ("under the GAN phase it has started" if at > saved else "before the state")
                         + f" (the GAN phase counts its iterations and schedules from it). Set train.psnr.niter: "
                         f"{saved}, or start the GAN phase afresh from a PSNR model with path.pretrain_model_G")
    return f"the PSNR phase now ends at iteration {psnr_niter} (it was to end at {saved})"
