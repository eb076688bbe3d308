"""The training loop: build, iterate, log, validate, checkpoint, resume.

`train` is a whole run's set-up (or resume), read top to bottom; `_Run.iterate` is one iteration and what falls due
at it (report, health check, validation, checkpoint, stop). Loss values stay on the device between prints: the loop
waits for the GPU only to read them (every `print_freq` iterations), to check for skipped steps (every
`max_nonfinite`), and with several processes to agree on a stop (every STOP_CHECK_EVERY), besides validation and
checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from ..archs.layouts import save_generator_state
from ..data.loader import DataWait, build_train_loader, prefetch_to_device, stop_workers
from ..data.paired import PairedImageDataset
from ..models.esrgan import ESRGANModel, SRModel, changed_settings
from ..models.networks import build_discriminator, build_feature_extractor, build_generator, load_weights
from ..options import TrainOptions, dump_yaml
from ..utils.files import claimed, os_problem, remove_temporaries
from ..utils.image import tensor2img, write_image
from ..utils.logger import TensorBoard, add_log_file, setup_logging
from ..utils.misc import (
    archive_existing,
    listing,
    refuse_inputs_inside,
    rng_state,
    select_device,
    set_random_seed,
    set_rng_state,
    timestamp,
)
from .checkpoint import (
    BEST_G,
    check_iterations_left,
    check_phase_split,
    drop_psnr_best,
    find_resume_state,
    load_training_state,
    restore_best,
    save_best,
    save_checkpoint,
    saved_iterations,
    set_aside_later,
)
from .distributed import (
    World,
    all_mean,
    any_rank,
    any_rank_flag,
    barrier,
    gather_objects,
    global_mean,
    init_distributed,
    launched_as_main,
    shutdown,
)
from .evaluate import Evaluator, bicubic_image, describe, format_value, mean_scores
from .fast import DEFAULT_WARMUP, GraphedSteps, cuda_graph_unsupported
from .inference import super_resolve

log = logging.getLogger(__name__)

STOP_CHECK_EVERY = 10  # iterations between the processes' agreement on a stop signal


def build_model(o: TrainOptions, device: torch.device) -> tuple[SRModel, bool]:
    """The model of the options and whether its VGG has random weights."""
    net_g = build_generator(o.network_G, o.scale)
    if o.path.pretrain_model_G:
        load_weights(net_g, o.path.pretrain_model_G, o.path.strict_load, "generator")
        log.info("G initialised from %s", o.path.pretrain_model_G)
    speed = {"precision": o.speed.precision, "channels_last": o.speed.channels_last}
    if o.model == "sr":
        return SRModel(net_g, o.train.psnr, device, o.train.ema_decay, **speed), False
    net_d = build_discriminator(o.network_D)
    if o.path.pretrain_model_D:
        load_weights(net_d, o.path.pretrain_model_D, o.path.strict_load, "discriminator")
        log.info("D initialised from %s", o.path.pretrain_model_D)
    net_f, random_vgg = (None, False)
    if o.train.gan.feature_weight > 0:
        net_f, random_vgg = build_feature_extractor(o.network_F)
    model = ESRGANModel(net_g, net_d, net_f, o.train.psnr, o.train.gan, device, o.train.ema_decay, **speed)
    return model, random_vgg


def configure_backends(cudnn_benchmark: bool, deterministic: bool, tf32: str) -> None:
    """cuDNN autotuning for speed, or deterministic algorithms for bitwise-reproducible GPU runs; where fp32 work
    may run in TensorFloat-32 (`speed.tf32`)."""
    torch.backends.cudnn.allow_tf32 = tf32 in ("conv", "all")
    torch.backends.cuda.matmul.allow_tf32 = tf32 == "all"
    torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True)


def build_datasets(o: TrainOptions, world_size: int = 1) -> tuple[PairedImageDataset, PairedImageDataset | None]:
    """Both datasets, with every pair checked before training starts; the training set is shared by `world_size`
    processes."""
    tr = o.datasets.train
    train_set = PairedImageDataset(tr.name, o.scale, tr.dataroot_GT, tr.dataroot_LQ, gt_size=tr.GT_size,
                                   use_flip=tr.use_flip, use_rot=tr.use_rot, data_type=tr.data_type,
                                   degradation=tr.degradation, skip_corrupt=tr.skip_corrupt)
    if math.ceil(len(train_set) * tr.dataset_enlarge_ratio / world_size) < tr.batch_size:
        raise ValueError(f"datasets.train: {len(train_set)} images x dataset_enlarge_ratio "
                         f"{tr.dataset_enlarge_ratio} shared by {world_size} processes give each fewer than "
                         f"batch_size {tr.batch_size}: no batch could be formed (raise dataset_enlarge_ratio)")
    va = o.datasets.val
    val_set = None if va is None else PairedImageDataset(va.name, o.scale, va.dataroot_GT, va.dataroot_LQ,
                                                         data_type=va.data_type, degradation=va.degradation,
                                                         skip_corrupt=va.skip_corrupt)
    return train_set, val_set


def prepare_run_dir(o: TrainOptions, resuming: bool, world: World, option_file: Path | None = None) -> Path:
    """The run's folder, made (an earlier run there moved aside first) or continued in."""
    run_dir = Path(o.path.experiments_root) / o.name
    if not resuming:  # on every rank, so that all of them stop
        sets = {"train": o.datasets.train, "val": o.datasets.val}
        vgg = o.network_F.weights if o.network_F.weights not in ("imagenet", "random") else None
        refuse_inputs_inside(run_dir, {f"datasets.{key}.{field}": getattr(ds, field) for key, ds in sets.items()
                                       if ds is not None for field in ("dataroot_GT", "dataroot_LQ")}
                             | {"path.pretrain_model_G": o.path.pretrain_model_G,
                                "path.pretrain_model_D": o.path.pretrain_model_D, "network_F.weights": vgg,
                                "metric_options.lpips_weights": o.metric_options.lpips_weights,
                                "the option file": str(option_file) if option_file is not None else None})
    if world.is_main:
        if not resuming:
            archived = archive_existing(run_dir)
            if archived is not None:
                log.warning("An earlier run %s was moved to %s", run_dir, archived)
        for sub in ("models", "training_state", "val_images", "tb_logger"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        # what the previous process was killed in the middle of writing: a save, a validation image
        for folder in [run_dir / "models", run_dir / "training_state", *(run_dir / "val_images").iterdir()]:
            for leftover in remove_temporaries(folder) if folder.is_dir() else []:
                log.info("Deleted %s, the unfinished write of an interrupted run", leftover)
    barrier(world)
    return run_dir


class LossMeter:
    """Sums loss tensors on their device between prints; `read` is the one host-device sync (and, with several
    processes, the one all-reduce that averages the logged values over the ranks)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def add(self, values: dict[str, torch.Tensor | float]) -> None:
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
                self.counts[key] = self.counts.get(key, 0) + 1
            else:
                self.last[key] = value

    def read(self) -> dict[str, float]:
        keys = list(self.sums)
        means = []
        if keys:
            means = all_mean(torch.stack([self.sums[k] / self.counts[k] for k in keys]), self.world).tolist()
        out = dict(zip(keys, means, strict=True)) | self.last
        self.sums, self.counts = {}, {}
        return out


class Pace:
    """Seconds per iteration and the share of them spent waiting for data, between two reports; the time of
    validation and checkpoints (`paused`) is left out, as it is no iteration's."""

    def __init__(self, step: int, data_wait: DataWait) -> None:
        self.data_wait = data_wait
        self._restart(step)

    def _restart(self, step: int) -> None:
        self.start, self.step, self.waited, self.paused = time.time(), step, self.data_wait.seconds, 0.0

    @contextmanager
    def pause(self) -> Iterator[None]:
        begun = time.time()
        try:
            yield
        finally:
            self.paused += time.time() - begun

    def read(self, step: int) -> tuple[int, float, float]:
        """(iterations, seconds per iteration, data-wait fraction) since the last read, which ended at iteration
        self.step."""
        elapsed = max(time.time() - self.start - self.paused, 1e-9)
        window = step - self.step
        per_iter = elapsed / max(window, 1)
        wait = min((self.data_wait.seconds - self.waited) / elapsed, 1.0)
        self._restart(step)
        return window, per_iter, wait


def _own_share(dataset: PairedImageDataset, world: World) -> Iterator[tuple[int, dict]]:
    """(index, sample) of this rank's share of the validation images; an image that cannot be read (with
    skip_corrupt) is left out."""
    for i in range(world.rank, len(dataset), world.world_size):
        sample = dataset.whole_image(i)
        if sample is not None:
            yield i, sample


def _means_over_ranks(rows: list[dict[str, float]], world: World, metrics: Collection[str],
                      dataset: PairedImageDataset) -> dict[str, float]:
    """The means of every rank's `rows` (the images of `dataset` read); every rank gets them."""
    everyone = [row for part in gather_objects(rows, world) for row in part]
    if not everyone:
        raise dataset.none_read()
    return mean_scores(everyone, metrics)


def validate(model: SRModel, dataset: PairedImageDataset, evaluator: Evaluator, scale: int, step: int,
             run_dir: Path, writer: Any, tb_images: int, world: World, tile: int, tile_overlap: int,
             skip: Collection[str] = ()) -> dict[str, float]:
    """Super-resolve the validation set, shared out over the ranks; the means of the evaluator's metrics (but
    `skip`), border `scale` cropped. Every rank gets the same means. The first `tb_images` images, SR beside GT,
    go to TensorBoard through rank 0's `writer`, whichever rank made them. An SR image that cannot be written (a
    full disk) is reported, and validation and training go on: the checkpoints have their own disk check."""
    rows, panels, write_failed = [], [], False
    for i, sample in _own_share(dataset, world):
        name = sample["name"]
        sr = tensor2img(super_resolve(model.deployable_generator(), sample["LQ"][None], scale, tile=tile,
                                      tile_overlap=tile_overlap, device=model.device))
        gt = tensor2img(sample["GT"])
        try:
            write_image(run_dir / "val_images" / name / f"{name}_{step}.png", sr)
        except OSError as err:
            if not write_failed:  # once per validation
                log.error("validation images of iteration %d not written (%s); validation goes on", step, err)
            write_failed = True
        if i < tb_images:
            panels.append((i, name, np.concatenate([sr, gt], axis=1)))
        rows.append(evaluator.score(sr, gt, name, skip, group=dataset.name))
    means = _means_over_ranks(rows, world, [m for m in evaluator.metrics if m not in skip], dataset)
    if tb_images:
        shown = sorted((p for part in gather_objects(panels, world) for p in part), key=lambda p: p[0])
        if writer is not None:
            for _, name, panel in shown:
                writer.add_image(f"val/{name} (SR | GT)", panel, step, dataformats="HWC")
    return means


def bicubic_baseline(dataset: PairedImageDataset, evaluator: Evaluator, scale: int, world: World) -> dict[str, float]:
    """The validation metrics of bicubic upscaling, shared out over the ranks like `validate`."""
    rows = [evaluator.score(bicubic_image(sample["LQ"], scale), tensor2img(sample["GT"]), f"{sample['name']} "
                            "(bicubic)", group=None) for _, sample in _own_share(dataset, world)]
    return _means_over_ranks(rows, world, evaluator.metrics, dataset)


class TrainingStopped(Exception):  # noqa: N818 (a requested stop, not an error)
    """Training stopped on a signal after saving a complete state; train.py exits with 128 + the signal's number,
    as a process the signal ended would."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_status = 128 + signum


class StopRequest:
    """SIGINT / SIGTERM (what a scheduler sends before it kills a job) ask the loop to stop after the current
    iteration and save. After that, Ctrl-C (SIGINT) ends the process at once, while SIGTERM is ignored: it
    often comes twice without anyone asking to quit (a scheduler signals every process of a job, and torchrun
    passes its own copy on to its workers)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            if signum == signal.SIGINT:
                os._exit(128 + signum)
            return
        self.signal = signum
        # Not the logger: a handler that logs while the interrupted code is inside a log call hits the logging
        # lock again (a "reentrant call" error). A plain write is safe; the loop logs the stop.
        os.write(2, f"\n{signal.Signals(signum).name} received: stopping after this iteration with a checkpoint "
                    "(Ctrl-C again to quit at once)\n".encode())

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _check_health(model: SRModel, max_nonfinite: int, step: int) -> None:
    """Report skipped steps and stop when one network skipped `max_nonfinite` steps in a row (one sync)."""
    health = model.health()
    counters = dict(zip(health, torch.stack(list(health.values())).tolist(), strict=True)) if health else {}
    skipped = {k.removeprefix("skipped_"): v for k, v in counters.items() if k.startswith("skipped_") and v}
    if skipped:
        terms = {k.removeprefix("nonfinite_"): v for k, v in counters.items() if k.startswith("nonfinite_") and v}
        log.warning("non-finite losses so far: skipped steps %s; non-finite terms %s", skipped, terms)
    worst = max((v for k, v in counters.items() if k.startswith("consecutive_")), default=0)
    if worst >= max_nonfinite:
        raise FloatingPointError(
            f"iteration {step}: {worst} consecutive steps had a non-finite loss and were skipped. Lower the "
            "learning rate (train.*.optim_*.lr), use fp32 instead of fp16, check the data for broken images, or "
            "resume from an earlier training state.")


def _release_finished_graphs(graphs: GraphedSteps, o: TrainOptions, step: int) -> None:
    """Free the captured steps that will not run again: the PSNR step in the GAN phase, and the D-only step once
    D_init_iters are over when G is updated at every step after them."""
    gan_step = step - o.train.psnr.niter
    if gan_step == 1:
        graphs.release("psnr")
    if o.train.gan.D_update_ratio == 1 and gan_step == o.train.gan.D_init_iters + 1:
        graphs.release("gan_d")


def _no_best() -> dict[str, Any]:
    """The best-validation record before any validation (of the run, or of its GAN phase)."""
    return {"psnr": -math.inf, "ssim": -math.inf, "iter": 0}


def _identity(folder: Path) -> tuple[int, int]:
    """What tells a folder from another one put at its path later: its device and inode."""
    info = folder.stat()
    return info.st_dev, info.st_ino


def _moved(folder: Path, identity: tuple[int, int]) -> bool:
    """Whether `folder` is no longer the folder of `identity` (gone, or another one); a passing error of a network
    file system (ESTALE, EIO) is not taken for that."""
    try:
        return _identity(folder) != identity
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False


def _track_best(best: dict[str, Any], result: dict[str, float], step: int, phase: str
                ) -> tuple[dict[str, Any], bool]:
    """The best-validation record once validation `result` of `step` is in, and whether `result` is the new
    best. Each phase has its own record: the GAN phase starts a new one."""
    if best.get("phase", phase) != phase:
        best = _no_best()
    if not result["psnr"] > best["psnr"]:  # NaN is never the best
        return best, False
    return {"psnr": result["psnr"], "ssim": result.get("ssim", math.nan), "iter": step, "phase": phase}, True


class Resume(NamedTuple):
    """A training state to continue from, its file, and what named the file (for messages)."""

    state: dict[str, Any]
    path: str
    source: str  # "path.resume_state" or "--auto_resume"

    def belongs_to(self, run_root: Path) -> bool:
        """Whether this is a state of the run folder `run_root` (which the run then continues in)."""
        return Path(self.path).resolve().parent == (run_root / "training_state").resolve()


def _describe_networks(model: SRModel, o: TrainOptions) -> str:
    """The networks trained and their parameter counts (what published results are compared by), and which
    generator validation scores."""
    def parameters(net: torch.nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    g = o.network_G
    parts = [f"G: {g.which_model_G} nf {g.nf}, nb {g.nb}, gc {g.gc}, x{o.scale}, {parameters(model.net_g):,} "
             "parameters"]
    if isinstance(model, ESRGANModel):
        parts.append(f"D: {o.network_D.which_model_D} nf {o.network_D.nf}, {parameters(model.net_d):,} parameters")
    if model.net_g_ema is not None:
        parts.append(f"validation and best_G score the EMA of G (train.ema_decay {o.train.ema_decay:g})")
    return "; ".join(parts)


def schedule_warnings(o: TrainOptions, resumed_at: int | None = None) -> list[str]:
    """Schedule settings that cannot act within their phase: a milestone at or past the phase's last iteration
    (they count from the phase's start, where BasicSR's count from the run's), a warm-up as long as the phase;
    and a GAN phase that starts from a random generator. A run resumed at iteration `resumed_at` is not told
    about a phase it has finished."""
    notes = []
    if o.model == "esrgan" and o.train.psnr.niter == 0 and o.path.pretrain_model_G is None and resumed_at is None:
        notes.append("train.psnr.niter is 0 and path.pretrain_model_G is not set: the GAN phase starts from a "
                     "RANDOM generator. The paper's starts from the PSNR-oriented model: give it as "
                     "path.pretrain_model_G, or train phase 1 (train.psnr.niter)")
    for phase in ("psnr", "gan") if o.model == "esrgan" else ("psnr",):
        p = getattr(o.train, phase)
        key = f"train.{phase}.scheduler"
        if p.niter == 0 or (phase == "psnr" and resumed_at is not None and resumed_at >= p.niter):
            continue
        late = [m for m in p.scheduler.milestones if m >= p.niter] if p.scheduler.type == "MultiStepLR" else []
        if late:
            notes.append(f"{key}.milestones {late} never take effect: milestones count from the start of the "
                         f"phase, which has {p.niter} iterations (train.{phase}.niter)")
        if p.scheduler.warmup_iters >= p.niter:
            notes.append(f"{key}.warmup_iters {p.scheduler.warmup_iters}: the lr warms up for the whole phase of "
                         f"{p.niter} iterations")
    return notes


def _load_resume(o: TrainOptions, auto_resume: bool, run_root: Path) -> Resume | None:
    """The training state to continue from: with `auto_resume` the newest one of the run folder if there is one,
    else path.resume_state, else none."""
    path, source = o.path.resume_state, "path.resume_state"
    if auto_resume:
        # The run's own newest state comes first: path.resume_state only starts it (a restarted job keeps
        # both flags, and must not go back to that state every time).
        found = find_resume_state(run_root)
        if found is not None:
            path, source = str(found), "--auto_resume"
        elif not path:
            log.info("--auto_resume: no training state in %s, starting from scratch", run_root)
    if not path:
        return None
    try:
        return Resume(load_training_state(path, source=source), path, source)
    except ValueError as err:
        others = [i for i in saved_iterations(run_root) if Path(path).name != f"{i}.state"]
        if source != "--auto_resume" or not others:
            raise
        raise ValueError(f"{err}; to continue from the state before it, move {path} out of the way (--auto_resume "
                         f"then takes training_state/{others[-1]}.state)") from None


def _run_is_complete(o: TrainOptions, resume: Resume) -> bool:
    """Whether `resume` is the last state of a finished run, found again by --auto_resume (a re-queued job, a
    torchrun restart after the last save): nothing to do, and no error. Any other state this run cannot continue
    from stops it, saying what to do."""
    if resume.source == "--auto_resume" and resume.state["iter"] == o.total_iters:
        log.info("--auto_resume: %s is at the last iteration (%d): the run is complete, nothing to do",
                 resume.path, o.total_iters)
        return True
    check_iterations_left(resume.state, resume.path, o.total_iters, resume.source)  # past the end: says what to do
    if o.model == "esrgan" and (moved := check_phase_split(resume.state, resume.path, o.train.psnr.niter,
                                                           resume.source)):
        log.info("Resuming: %s", moved)
    return False


def _restore(model: SRModel, resume: Resume) -> dict[str, tuple[Any, Any]]:
    """Load a training state into `model` (networks, optimizers, schedules) and into the RNGs. Returns the options
    of this run that the restored optimizers and schedules do not follow (see `changed_settings`)."""
    state, path, source = resume
    changed = {}
    with contextlib.suppress(KeyError, TypeError, IndexError):  # a state of another kind: the load says so
        # The PSNR phase's optimizer no longer matters once it is over.
        changed = changed_settings(state["model"], model,
                                   {"G_psnr"} if model.phase(state["iter"] + 1) == "gan" else set())
    for key, (saved, given) in changed.items():
        if key.endswith(".type"):  # a factor of one type cannot take the other's saved attributes
            raise ValueError(f"{source}: {path}: the schedule saved there is {saved} and {key} is {given}: a "
                             f"schedule that has started keeps its type. Set {key}: {saved}, or start a new run "
                             "from the saved weights (path.pretrain_model_G, and pretrain_model_D)")
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{source}: {path} does not fit this run's model (was it saved with other model, "
                         f"network_G or network_D options?): {str(err).splitlines()[0]}" + (
                             "; to start a new run with these options, give it another name or leave out "
                             "--auto_resume" if source == "--auto_resume" else "")) from None
    set_rng_state(state["rng"])
    return changed


def _report_resume(resume: Resume, model: SRModel, changed: dict[str, tuple[Any, Any]],
                   data_order: dict[str, Any]) -> None:
    """Log where the run continues, the options of this run that the restored state does not follow, and what
    makes its batches differ from those the saved run would have seen."""
    log.info("Resumed from %s at iteration %d (%s phase)", resume.path, resume.state["iter"],
             model.phase(resume.state["iter"] + 1))
    if changed:
        log.warning("%s: the optimizers and schedules continue as saved, so these options of this run have no "
                    "effect (the options file records them as given):\n  %s\nTo train with them, start a new run "
                    "from the saved weights (path.pretrain_model_G / pretrain_model_D).", resume.source,
                    "\n  ".join(f"{key}: {saved} in the training state, {given} in the options"
                                for key, (saved, given) in changed.items()))
    saved_order = resume.state.get("data_order", data_order)  # states of earlier versions did not record it
    reordered = {k: (saved_order.get(k), v) for k, v in data_order.items() if saved_order.get(k) != v}
    if reordered and _draws(saved_order) != _draws(data_order):
        log.warning("%s: the training batches from here on are not those the saved run would have seen, as these "
                    "differ from it (the networks and optimizers continue as saved):\n  %s", resume.source,
                    "\n  ".join(f"{key}: {saved} in the training state, {now} now"
                                for key, (saved, now) in reordered.items()))


def _data_order(o: TrainOptions, images: int, world_size: int) -> dict[str, Any]:
    """What fixes the training batches of each iteration: a resumed run sees the batches the uninterrupted run
    would have seen only if these are those of the saved run."""
    tr = o.datasets.train
    return {"train.manual_seed": o.train.manual_seed, "training images": images,
            "datasets.train.dataset_enlarge_ratio": tr.dataset_enlarge_ratio,
            "datasets.train.batch_size": tr.batch_size, "datasets.train.use_shuffle": tr.use_shuffle,
            "processes": world_size}


def _draws(data_order: dict[str, Any]) -> tuple | dict[str, Any]:
    """What of `data_order` fixes the samples of each iteration. The processes take turns in one order drawn over
    the epoch padded to a multiple of them, so 2 processes with batch B draw what 1 process with batch 2B does
    when both epochs are the same length."""
    try:
        processes, images = data_order["processes"], data_order["training images"]
        per_epoch = images * data_order["datasets.train.dataset_enlarge_ratio"]
        return (data_order["train.manual_seed"], images, data_order["datasets.train.use_shuffle"],
                data_order["datasets.train.batch_size"] * processes, math.ceil(per_epoch / processes) * processes)
    except KeyError:  # a record of another version: compare it as it is
        return data_order


def _set_up_speed(model: SRModel, o: TrainOptions, device: torch.device, world: World) -> None:
    """Multi-process wrapping (SyncBatchNorm in D on request), torch.compile and CUDA-graph capture, as the
    options ask."""
    if world.distributed:
        if o.model == "esrgan" and o.network_D.sync_bn:
            if device.type != "cuda":
                raise ValueError("network_D.sync_bn: PyTorch's SyncBatchNorm runs on GPUs only; turn it off on CPU")
            model.net_d = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.net_d)
        model.wrap_distributed([device.index] if device.type == "cuda" else None, global_mean, any_rank_flag)
    if o.speed.compile:
        model.compile()
    if o.speed.cuda_graph:
        reason = cuda_graph_unsupported(device, o.speed.precision, world.distributed)
        if reason is None:
            model.use_step_runner(GraphedSteps(device, on_fallback=lambda kind, why: log.warning(
                "speed.cuda_graph: the %s step could not be captured and runs eagerly from now on (%s)", kind,
                why)))
            log.info("speed.cuda_graph: each kind of step is captured after %d eager warm-up iterations",
                     DEFAULT_WARMUP)
        else:
            log.warning("speed.cuda_graph: training eagerly, %s", reason)


def train(o: TrainOptions, auto_resume: bool = False, option_file: Path | None = None) -> Path:
    """Run (or resume) the training described by `o` (read from `option_file`); returns the run folder. A stop
    signal (SIGINT, SIGTERM) ends it early with a complete state saved, raising TrainingStopped. Another
    train.py on the same run folder is refused (rank 0 holds it for all ranks)."""
    main = launched_as_main()
    with claimed(Path(o.path.experiments_root) / o.name, "train.py") if main else contextlib.nullcontext():
        return _train(o, auto_resume, option_file)


def _train(o: TrainOptions, auto_resume: bool, option_file: Path | None) -> Path:
    device = select_device(o.device)
    world = init_distributed(device, o.train.dist_timeout)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    run_root = Path(o.path.experiments_root) / o.name
    # Everything that can fail on bad input runs before the run folder is touched (an earlier run there is moved
    # aside only then); the log file gets the set-up's records afterwards.
    setup_logging(level=logging.INFO if world.is_main else logging.WARNING, backlog=world.is_main,
                  own_news_only=not world.is_main)
    resume = _load_resume(o, auto_resume, run_root)
    if resume is not None and _run_is_complete(o, resume):
        shutdown(world)
        return run_root
    configure_backends(o.speed.cudnn_benchmark, o.speed.deterministic, o.speed.tf32)
    # The same seed on every rank: identical initial networks (and EMA copies); the data differs by rank
    # through the sampler's shards.
    set_random_seed(o.train.manual_seed)

    if o.logger.save_safetensors:
        try:
            import safetensors  # noqa: F401
        except ImportError:
            raise ValueError("logger.save_safetensors needs the optional safetensors package: pip install "
                             "safetensors") from None
    model, random_vgg = build_model(o, device)
    if random_vgg:
        o.network_F.weights = "random"  # so that the resolved options say what was really used
    train_set, val_set = build_datasets(o, world.world_size)
    tr = o.datasets.train
    train_loader = build_train_loader(train_set, tr.batch_size, tr.n_workers, o.train.manual_seed, tr.use_shuffle,
                                      tr.dataset_enlarge_ratio, pin_memory=device.type == "cuda",
                                      rank=world.rank, world_size=world.world_size)
    data_order = _data_order(o, len(train_set), world.world_size)
    changed = _restore(model, resume) if resume is not None else {}
    # A state of this run's own folder continues it there; one from elsewhere (another run's) starts a new folder,
    # an earlier run of this name being moved aside as for any new run, so that its checkpoints stay as they are.
    continuing = resume is not None and resume.belongs_to(run_root)
    run_dir = prepare_run_dir(o, resuming=continuing, world=world, option_file=option_file)
    start_step, best = (resume.state["iter"], resume.state["best"]) if resume is not None else (0, _no_best())
    if not world.is_main:  # what only this rank saw is told there: the run's log is rank 0's
        add_log_file(run_dir / f"train_{o.name}_{timestamp()}_rank{world.rank}.log", own_news_only=True)
    else:
        add_log_file(run_dir / f"train_{o.name}_{timestamp()}.log")
        dump_yaml(o, run_dir / f"options_{timestamp()}.yml")
        for note in schedule_warnings(o, None if resume is None else start_step):
            log.warning("%s", note)
        if resume is not None:
            _report_resume(resume, model, changed, data_order)
        aside = set_aside_later(run_dir, start_step) if continuing else None
        if aside is not None:
            log.warning("%s: this run had gone on past iteration %d; what it wrote for iterations %s "
                        "(checkpoints, validation images, its latest generator and a copy of best_G.pth) was moved "
                        "to %s, so that this run's saves do not overwrite it", resume.source, start_step,
                        listing([str(i) for i in aside[1]], 6), aside[0])
            if o.logger.save_safetensors:
                save_generator_state(model.deployable_generator().state_dict(),
                                     run_dir / "models" / "latest_G.safetensors")
        if continuing and best.get("phase") == "psnr" and model.phase(start_step + 1) == "gan":
            drop_psnr_best(run_dir, o.train.psnr.niter)  # resumed in the GAN phase before its first validation
        elif aside is not None:
            restore_best(run_dir, best["iter"])
    _set_up_speed(model, o, device, world)
    log.info("Run %s on %s x %d: %d iterations (PSNR phase %d, GAN phase %d), %d training images, batch %d per "
             "process (%d in all)", o.name, device, world.world_size, o.total_iters, o.train.psnr.niter,
             o.total_iters - o.train.psnr.niter, len(train_set), tr.batch_size, tr.batch_size * world.world_size)
    log.info("%s; PyTorch %s, Python %s", _describe_networks(model, o), torch.__version__, platform.python_version())

    with contextlib.ExitStack() as cleanup:  # each release runs, even when one before it raised
        cleanup.callback(shutdown, world)
        cleanup.callback(stop_workers, train_loader)  # they ignore SIGTERM: left to Python's exit, they hang it
        run = _Run(o, model, world, run_dir, val_set, start_step, best, data_order, len(train_loader))
        cleanup.callback(run.close)
        run.loop(train_loader)
    log.info("Done. Generator: %s%s", run_dir / "models" / "latest_G.pth",
             f"; TensorBoard: tensorboard --logdir {run_dir / 'tb_logger'}" if run.writer is not None else "")
    return run_dir


class _Run:
    """The loop of a run's iterations, and what falls due between them: loss reports, health checks, validation
    with the best model, checkpoints, stop signals."""

    def __init__(self, o: TrainOptions, model: SRModel, world: World, run_dir: Path,
                 val_set: PairedImageDataset | None, step: int, best: dict[str, Any], data_order: dict[str, Any],
                 iters_per_epoch: int) -> None:
        self.o, self.model, self.world, self.run_dir, self.val_set = o, model, world, run_dir, val_set
        self.step, self.best, self.total = step, best, o.total_iters
        self.data_order, self.iters_per_epoch = data_order, iters_per_epoch
        # The PSNR phase's end (when a GAN phase follows it) is validated, saved and kept like the run's end,
        # whatever val_freq, save_freq and keep_last: its model is the one to fine-tune from or interpolate with
        # (paper, 4.4).
        self.psnr_end = o.train.psnr.niter if o.model == "esrgan" and o.train.psnr.niter > 0 else None
        tensorboard = o.logger.use_tb_logger and world.is_main
        self.writer = TensorBoard(run_dir / "tb_logger", purge_step=step + 1) if tensorboard else None
        self.run_dir_id = _identity(run_dir)
        if val_set is not None:
            m = o.metric_options
            self.evaluator = Evaluator(o.train.val_metrics, o.scale, m.niqe_channel, m.lpips_net, m.lpips_weights,
                                       model.device)
            self.bicubic = bicubic_baseline(val_set, self.evaluator, o.scale, world)
            log.info("Validation %s, bicubic baseline: %s (%d border pixels cropped)", val_set.name,
                     describe(self.bicubic), o.scale)
        self.meter = LossMeter(world)
        self.data_wait = DataWait()
        self.pace = Pace(step, self.data_wait)
        # Outside a terminal (CI, nohup) a bar redrawn 10x a second only fills the log.
        self.bar = tqdm(total=self.total, initial=step, dynamic_ncols=True, desc=model.phase(step + 1),
                        mininterval=0.1 if sys.stderr.isatty() else 30.0, disable=not world.is_main)
        self.stop = StopRequest()

    def close(self) -> None:
        self.stop.restore()
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def loop(self, loader: Any) -> None:
        """Iterate from the current step to the last, with batches of `loader` moved to the device ahead."""
        batch_size, device = self.o.datasets.train.batch_size, self.model.device
        copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None  # one for every epoch
        while self.step < self.total:
            # The data position follows from the iteration, so a resumed run continues with the very next batch.
            epoch, position = divmod(self.step, self.iters_per_epoch)
            loader.sampler.set_epoch(epoch, start=position * batch_size)
            for batch in prefetch_to_device(self.data_wait.timed(loader), device, copy_stream):
                self.step += 1
                self.iterate(batch)
                if self.step >= self.total:
                    break

    def iterate(self, batch: dict[str, torch.Tensor]) -> None:
        """Iteration `self.step`, then what falls due at it."""
        o, model, step = self.o, self.model, self.step
        self._begin(step)
        model.feed_data(batch)
        try:
            model.optimize_parameters(step)
        except torch.cuda.OutOfMemoryError as err:
            raise torch.cuda.OutOfMemoryError(
                f"{err}\nOut of GPU memory at iteration {step}: lower datasets.train.batch_size or "
                "datasets.train.GT_size (with model sr), or network_G.nf / nb.") from None
        self.meter.add(model.log_dict)
        self.bar.update(1)

        phase_end = step in (self.total, self.psnr_end)
        printing = step % o.logger.print_freq == 0 or phase_end
        if printing:
            self.report(step)
        if printing or step % o.train.max_nonfinite == 0:
            _check_health(model, o.train.max_nonfinite, step)
        if self.val_set is not None and (step % o.train.val_freq == 0 or phase_end):
            with self.pace.pause():
                self.validate_and_keep_best(step, phase_end)
        stopping = self._stop_agreed(step, printing)
        saved = False
        if step % o.logger.save_freq == 0 or phase_end or stopping:
            with self.pace.pause():
                saved = self.save(step)
        if stopping and step < self.total:  # a stop at the last step is a finished run
            self._stop(step, saved)

    def _begin(self, step: int) -> None:
        """What changes as iteration `step` begins: at the GAN phase's start the PSNR phase's best model is
        dropped; captured steps that will not run again are freed; the bar names the phase."""
        if self.psnr_end is not None and step == self.psnr_end + 1:
            log.info("Iteration %d: PSNR phase done, GAN phase starts", step)
            if self.world.is_main:
                drop_psnr_best(self.run_dir, self.psnr_end)
        if isinstance(self.model.run_step, GraphedSteps):
            _release_finished_graphs(self.model.run_step, self.o, step)
        self.bar.set_description(self.model.phase(step), refresh=False)

    def report(self, step: int) -> None:
        """Log (and write to TensorBoard) the losses averaged since the last report, and the pace; a mean over
        fewer or more than print_freq iterations (after a resume, at the PSNR phase's end) says so."""
        values = self.meter.read()
        window, seconds_per_iter, wait_fraction = self.pace.read(step)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if not k.startswith("lr")})
        log.info("iter %d (%s) %.3fs/it, data wait %.1f%% | %s%s", step, self.model.phase(step), seconds_per_iter,
                 100 * wait_fraction, ", ".join(f"{k} {v:.4e}" for k, v in values.items()),
                 "" if window == self.o.logger.print_freq else
                 f" (means over {window} iteration{'s' * (window != 1)})")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)
            self.writer.add_scalar("train/data_wait_fraction", wait_fraction, step)

    def validate_and_keep_best(self, step: int, phase_end: bool) -> None:
        """Validate, log and keep the best model of the phase. NIQE is scored at every val_niqe_every-th
        validation, counted from the iteration so that a resumed run keeps the rhythm, and at a phase's end."""
        o, model = self.o, self.model
        self._check_run_dir()
        niqe_now = (step // o.train.val_freq) % o.train.val_niqe_every == 0 or phase_end
        result = validate(model, self.val_set, self.evaluator, o.scale, step, self.run_dir, self.writer,
                          o.logger.tb_images if o.logger.use_tb_logger else 0, self.world, o.train.val_tile,
                          o.train.val_tile_overlap, skip=() if niqe_now else ("niqe",))
        log.info("Validation %s at iter %d: %s", self.val_set.name, step, ", ".join(
            f"{describe({k: v})} (bicubic {format_value(k, self.bicubic[k])})" for k, v in result.items()))
        if self.writer is not None:
            for key, value in result.items():
                self.writer.add_scalar(f"val/{key}", value, step)
                self.writer.add_scalar(f"val/{key}_bicubic", self.bicubic[key], step)
        best, improved = _track_best(self.best, result, step, model.phase(step))
        failed = False
        if improved and self.world.is_main:
            try:
                save_best(self.run_dir, model.deployable_generator())
            except OSError as err:
                log.error("models/%s NOT updated to iteration %d (%s); it keeps the best so far, and training goes "
                          "on", BEST_G, step, os_problem(err))
                failed = True
        if improved and any_rank(failed, self.world, model.device):
            # The record is what models/best_G.pth holds: the phase's record without this result.
            best, _ = _track_best(self.best, {"psnr": math.nan}, step, model.phase(step))
        self.best = best
        if best["iter"] == 0:  # NaN, or a first best that could not be written
            log.info("No best validation of the %s phase yet", model.phase(step))
            return
        log.info("Best validation of the %s phase: PSNR %.2f dB%s at iter %d", model.phase(step), best["psnr"],
                 f", SSIM {best['ssim']:.4f}" if "ssim" in result else "", best["iter"])

    def _check_run_dir(self) -> None:
        """Stop, on every rank, when rank 0 finds the run folder moved or deleted: writing on would make a bare
        folder of its name, and split the run's checkpoints between the two."""
        gone = self.world.is_main and _moved(self.run_dir, self.run_dir_id)
        if any_rank(gone, self.world, self.model.device):
            raise OSError(f"the run folder {self.run_dir} was moved or deleted during the run; put it back and "
                          "continue with --auto_resume")

    def save(self, step: int) -> bool:
        """Save the checkpoint of `step`; False on every rank (after logging why) when it did not fit on the
        disk."""
        o, model, world = self.o, self.model, self.world
        self._check_run_dir()
        state = {"iter": step, "phase": model.phase(step), "psnr_niter": o.train.psnr.niter,
                 "model": model.state_dict(), "rng": rng_state(), "best": self.best, "data_order": self.data_order,
                 "epoch_position": list(divmod(step, self.iters_per_epoch))}  # for a reader: resuming derives it
        saved = True
        if world.is_main:
            # D's own file only once it trains: in the PSNR phase it is the initial D (the state holds it anyway).
            nets = {"G": model.deployable_generator()} | ({"D": model.net_d} if model.phase(step) == "gan" else {})
            try:
                save_checkpoint(self.run_dir, step, nets, state, o.logger.keep_last,
                                keep=(self.psnr_end,) if self.psnr_end else ())
                log.info("Saved %s and training_state/%d.state", ", ".join(f"models/{step}_{n}.pth" for n in nets),
                         step)
            except OSError as err:  # a full disk (found before writing, or while), no permission
                if step == self.total:
                    raise
                log.error("checkpoint of iteration %d NOT saved (%s); training goes on, and the next save tries "
                          "again", step, os_problem(err))
                saved = False
            if saved and o.logger.save_safetensors:
                try:
                    save_generator_state(nets["G"].state_dict(), self.run_dir / "models" / "latest_G.safetensors")
                except OSError as err:
                    log.error("models/latest_G.safetensors NOT updated (%s); the checkpoint of iteration %d is "
                              "saved", os_problem(err), step)
        # Rank 0's answer for every rank; the all-reduce also holds them until its save is done.
        return not any_rank(not saved, world, model.device)

    def _stop_agreed(self, step: int, printing: bool) -> bool:
        """Whether a signal stops the run at `step`, the same answer on all ranks: a single process checks its
        flag every iteration; several agree every STOP_CHECK_EVERY iterations (one small all-reduce)."""
        asked = self.stop.signal is not None
        if not self.world.distributed:
            return asked
        return (printing or step % STOP_CHECK_EVERY == 0) and any_rank(asked, self.world, self.model.device)

    def _stop(self, step: int, saved: bool) -> None:
        received = signal.Signals(self.stop.signal).name if self.stop.signal is not None else "another process"
        if saved:
            log.warning("Stopped by %s at iteration %d; continue with --auto_resume (or path.resume_state=%s)",
                        received, step, self.run_dir / "training_state" / f"{step}.state")
        else:
            log.warning("Stopped by %s at iteration %d without its checkpoint (see above); --auto_resume "
                        "continues from the newest state that was saved", received, step)
        # A process that another one's signal stopped reports SIGTERM, what a scheduler sends.
        raise TrainingStopped(self.stop.signal or signal.SIGTERM)
