"""The test loop: super-resolve each test set, write the images, score them against GT when there is one."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.paired import PairedImageDataset
from ..models.networks import build_generator, load_weights
from ..options import TestOptions, dump_yaml
from ..utils.image import tensor2img, write_image
from ..utils.logger import setup_logging
from ..utils.misc import archive_existing, select_device, timestamp
from .evaluate import bicubic_upscale, score

log = logging.getLogger(__name__)


def test(o: TestOptions) -> Path:
    """Run every test set of `o`; returns the results folder."""
    out_dir = Path(o.path.results_root) / o.name
    archived = archive_existing(out_dir)
    out_dir.mkdir(parents=True)
    setup_logging(out_dir / f"test_{o.name}_{timestamp()}.log")
    if archived is not None:
        log.info("Earlier results moved to %s", archived)
    dump_yaml(o, out_dir / f"options_{timestamp()}.yml")
    device = select_device(o.device)
    net_g = build_generator(o.network_G, o.scale)
    load_weights(net_g, o.path.pretrain_model_G, o.path.strict_load, "generator")
    net_g.to(device).eval()
    log.info("Testing %s (x%d) on %s", o.path.pretrain_model_G, o.scale, device)

    for ds_opt in o.datasets.values():
        dataset = PairedImageDataset(ds_opt.name, o.scale, ds_opt.dataroot_GT, ds_opt.dataroot_LQ)
        set_dir = out_dir / ds_opt.name
        rows = []
        for batch in DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0):
            name = batch["name"][0]
            start = time.perf_counter()
            with torch.no_grad():
                sr = tensor2img(net_g(batch["LQ"].to(device)))
            seconds = time.perf_counter() - start
            write_image(set_dir / f"{name}.png", sr)
            row = {"name": name, "seconds": seconds}
            if "GT" in batch:
                gt = tensor2img(batch["GT"])
                ours = score(sr, gt, crop_border=o.scale)
                bic = score(bicubic_upscale(batch["LQ"][0].numpy().transpose(1, 2, 0), o.scale), gt, o.scale)
                row |= {"psnr": ours.psnr, "ssim": ours.ssim, "psnr_bicubic": bic.psnr, "ssim_bicubic": bic.ssim}
                log.info("%s/%s: PSNR %.2f dB, SSIM %.4f (bicubic %.2f dB, %.4f)", ds_opt.name, name, ours.psnr,
                         ours.ssim, bic.psnr, bic.ssim)
            rows.append(row)
        _write_csv(set_dir / "metrics.csv", rows)
        if "psnr" in rows[0]:
            means = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "psnr_bicubic",
                                                                        "ssim_bicubic", "seconds")}
            log.info("%s (%d images, Y channel, crop %d): PSNR %.2f dB, SSIM %.4f | bicubic PSNR %.2f dB, "
                     "SSIM %.4f | %.3f s/image", ds_opt.name, len(rows), o.scale, means["psnr"], means["ssim"],
                     means["psnr_bicubic"], means["ssim_bicubic"], means["seconds"])
        else:
            log.info("%s: %d images upscaled (no GT, no metrics)", ds_opt.name, len(rows))
        log.info("%s: images and metrics.csv in %s", ds_opt.name, set_dir)
    return out_dir


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        if "psnr" in rows[0]:
            writer.writerow({"name": "mean"} | {k: float(np.mean([r[k] for r in rows])) for k in rows[0]
                                                if k != "name"})
