"""The training loop: build, iterate, log, validate, checkpoint, resume.

Read top to bottom, `train` is one iteration of ESRGAN training plus its bookkeeping. Loss values stay on the
device between prints: they are summed there and read once every `print_freq` iterations, so the loop does
not wait for the GPU every step.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.loader import build_train_loader, prefetch_to_device
from ..data.paired import PairedImageDataset
from ..models.esrgan import ESRGANModel, SRModel
from ..models.networks import build_discriminator, build_feature_extractor, build_generator, load_weights
from ..options import TrainOptions, dump_yaml
from ..utils.image import tensor2img, write_image
from ..utils.logger import setup_logging
from ..utils.misc import archive_existing, rng_state, select_device, set_random_seed, set_rng_state, timestamp
from .checkpoint import load_training_state, save_checkpoint
from .evaluate import Scores, bicubic_upscale, score

log = logging.getLogger(__name__)


def build_model(o: TrainOptions, device: torch.device) -> tuple[SRModel, bool]:
    """The model of the options and whether its VGG has random weights."""
    net_g = build_generator(o.network_G, o.scale)
    if o.path.pretrain_model_G:
        load_weights(net_g, o.path.pretrain_model_G, o.path.strict_load, "generator")
        log.info("G initialised from %s", o.path.pretrain_model_G)
    if o.model == "sr":
        return SRModel(net_g, o.train.psnr, device), False
    net_d = build_discriminator(o.network_D)
    if o.path.pretrain_model_D:
        load_weights(net_d, o.path.pretrain_model_D, o.path.strict_load, "discriminator")
        log.info("D initialised from %s", o.path.pretrain_model_D)
    net_f, random_vgg = (None, False)
    if o.train.gan.feature_weight > 0:
        net_f, random_vgg = build_feature_extractor(o.network_F)
    return ESRGANModel(net_g, net_d, net_f, o.train.psnr, o.train.gan, device), random_vgg


def build_datasets(o: TrainOptions) -> tuple[PairedImageDataset, PairedImageDataset | None]:
    """Both datasets, with every pair checked before training starts."""
    tr = o.datasets.train
    train_set = PairedImageDataset(tr.name, o.scale, tr.dataroot_GT, tr.dataroot_LQ, gt_size=tr.GT_size,
                                   use_flip=tr.use_flip, use_rot=tr.use_rot, data_type=tr.data_type,
                                   degradation=tr.degradation, skip_corrupt=tr.skip_corrupt)
    if len(train_set) * tr.dataset_enlarge_ratio < tr.batch_size:
        raise ValueError(f"datasets.train: {len(train_set)} images are fewer than batch_size {tr.batch_size}; "
                         "with drop_last no batch could be formed (raise dataset_enlarge_ratio)")
    va = o.datasets.val
    val_set = None if va is None else PairedImageDataset(va.name, o.scale, va.dataroot_GT, va.dataroot_LQ,
                                                         data_type=va.data_type, degradation=va.degradation,
                                                         skip_corrupt=va.skip_corrupt)
    return train_set, val_set


def prepare_run_dir(o: TrainOptions, resuming: bool) -> Path:
    run_dir = Path(o.path.experiments_root) / o.name
    if not resuming:
        archived = archive_existing(run_dir)
        if archived is not None:
            print(f"An earlier run {run_dir} was moved to {archived}")
    for sub in ("models", "training_state", "val_images", "tb_logger"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    return run_dir


class LossMeter:
    """Sums loss tensors on their device between prints; `read` is the one host-device sync."""

    def __init__(self) -> None:
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
        means = torch.stack([self.sums[k] / self.counts[k] for k in keys]).tolist() if keys else []
        out = dict(zip(keys, means, strict=True)) | self.last
        self.sums, self.counts = {}, {}
        return out


def validate(model: SRModel, loader: DataLoader, scale: int, step: int, run_dir: Path,
             writer: Any, tb_images: int) -> Scores:
    """Super-resolve the whole validation set; mean Y-channel PSNR/SSIM with the border of `scale` cropped."""
    psnrs, ssims = [], []
    for i, batch in enumerate(loader):
        name = batch["name"][0]
        sr = tensor2img(model.test(batch["LQ"]))
        gt = tensor2img(batch["GT"])
        result = score(sr, gt, crop_border=scale)
        psnrs.append(result.psnr)
        ssims.append(result.ssim)
        write_image(run_dir / "val_images" / name / f"{name}_{step}.png", sr)
        if writer is not None and i < tb_images:
            side_by_side = np.concatenate([sr, gt], axis=1)
            writer.add_image(f"val/{name} (SR | GT)", side_by_side, step, dataformats="HWC")
    return Scores(float(np.mean(psnrs)), float(np.mean(ssims)))


def bicubic_baseline(loader: DataLoader, scale: int) -> Scores:
    psnrs, ssims = [], []
    for batch in loader:
        lq = batch["LQ"][0].numpy().transpose(1, 2, 0)
        result = score(bicubic_upscale(lq, scale), tensor2img(batch["GT"]), crop_border=scale)
        psnrs.append(result.psnr)
        ssims.append(result.ssim)
    return Scores(float(np.mean(psnrs)), float(np.mean(ssims)))


def train(o: TrainOptions) -> Path:
    """Run (or resume) the training described by `o`; returns the run folder."""
    resume = load_training_state(o.path.resume_state) if o.path.resume_state else None
    run_dir = prepare_run_dir(o, resuming=resume is not None)
    setup_logging(run_dir / f"train_{o.name}_{timestamp()}.log")
    set_random_seed(o.train.manual_seed)
    device = select_device(o.device)

    model, random_vgg = build_model(o, device)
    if random_vgg:
        o.network_F.weights = "random"  # so that the resolved options say what was really used
    dump_yaml(o, run_dir / f"options_{timestamp()}.yml")
    train_set, val_set = build_datasets(o)
    tr = o.datasets.train
    train_loader = build_train_loader(train_set, tr.batch_size, tr.n_workers, o.train.manual_seed, tr.use_shuffle,
                                      tr.dataset_enlarge_ratio, pin_memory=device.type == "cuda")
    val_loader = None if val_set is None else DataLoader(val_set, batch_size=1, shuffle=False, num_workers=0)

    start_step = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        set_rng_state(resume["rng"])
        start_step = resume["iter"]
        log.info("Resumed from %s at iteration %d (%s phase)", o.path.resume_state, start_step,
                 model.phase(start_step + 1))
    total = o.total_iters
    log.info("Run %s on %s: %d iterations (PSNR phase %d, GAN phase %d), %d training images, batch %d",
             o.name, device, total, o.train.psnr.niter, total - o.train.psnr.niter, len(train_loader.dataset),
             o.datasets.train.batch_size)

    writer = None
    if o.logger.use_tb_logger:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(log_dir=str(run_dir / "tb_logger"), purge_step=start_step + 1)
    if val_loader is not None:
        bicubic = bicubic_baseline(val_loader, o.scale)
        log.info("Validation %s, bicubic baseline: PSNR %.2f dB, SSIM %.4f (Y, crop %d)",
                 o.datasets.val.name, bicubic.psnr, bicubic.ssim, o.scale)

    meter = LossMeter()
    step = start_step
    # Outside a terminal (CI, nohup) a bar redrawn 10x a second only fills the log.
    bar = tqdm(total=total, initial=start_step, dynamic_ncols=True, desc=model.phase(step + 1),
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    tick, tick_step = time.time(), step
    iters_per_epoch = len(train_loader)
    while step < total:
        # The data position follows from the iteration, so a resumed run continues with the very next batch.
        epoch, position = divmod(step, iters_per_epoch)
        train_loader.sampler.set_epoch(epoch, start=position * tr.batch_size)
        for batch in prefetch_to_device(iter(train_loader), device):
            step += 1
            if step == o.train.psnr.niter + 1 and o.model == "esrgan" and step > 1:
                log.info("Iteration %d: PSNR phase done, GAN phase starts", step)
            bar.set_description(model.phase(step))
            model.feed_data(batch)
            model.optimize_parameters(step)
            meter.add(model.log_dict)
            bar.update(1)

            if step % o.logger.print_freq == 0 or step == total:
                values = meter.read()
                seconds_per_iter = (time.time() - tick) / (step - tick_step)
                tick, tick_step = time.time(), step
                bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if not k.startswith("lr")})
                log.info("iter %d (%s) %.3fs/it | %s", step, model.phase(step), seconds_per_iter,
                         ", ".join(f"{k} {v:.4e}" for k, v in values.items()))
                if writer is not None:
                    for key, value in values.items():
                        writer.add_scalar(f"train/{key}", value, step)

            if val_loader is not None and (step % o.train.val_freq == 0 or step == total):
                result = validate(model, val_loader, o.scale, step, run_dir, writer, o.logger.tb_images)
                log.info("Validation %s at iter %d: PSNR %.2f dB (bicubic %.2f), SSIM %.4f (bicubic %.4f)",
                         o.datasets.val.name, step, result.psnr, bicubic.psnr, result.ssim, bicubic.ssim)
                if writer is not None:
                    writer.add_scalar("val/psnr", result.psnr, step)
                    writer.add_scalar("val/ssim", result.ssim, step)
                    writer.add_scalar("val/psnr_bicubic", bicubic.psnr, step)
                    writer.add_scalar("val/ssim_bicubic", bicubic.ssim, step)

            if step % o.logger.save_freq == 0 or step == total:
                state = {"iter": step, "phase": model.phase(step), "model": model.state_dict(), "rng": rng_state()}
                save_checkpoint(run_dir, step, model.networks(), state)
                log.info("Saved models/%d_G.pth and training_state/%d.state", step, step)
            if step >= total:
                break
    bar.close()
    if writer is not None:
        writer.close()
    log.info("Done. Generator: %s; TensorBoard: tensorboard --logdir %s", run_dir / "models" / "latest_G.pth",
             run_dir / "tb_logger")
    return run_dir
