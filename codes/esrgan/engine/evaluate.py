"""Scoring SR results the way SR papers do, shared by test.py, validation and scripts/evaluate.py.

Images are scored as the uint8 files they are written as, `crop_border` (usually the scale) pixels cropped at
every border for every metric: PSNR/SSIM on the Y channel, NIQE on the 8-bit Y (or gray) channel, LPIPS on RGB.
NIQE needs no ground truth, so it is also reported for sets without GT. A metric that cannot be computed is
reported as nan with the reason in the log, never left out quietly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..data.imresize import imresize
from ..metrics import calculate_niqe, calculate_psnr, calculate_ssim
from ..metrics.niqe import NIQEImageTooSmallError
from ..metrics.psnr_ssim import SSIMImageTooSmallError
from ..utils.image import to_uint8

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "niqe", "lpips")
NO_REFERENCE = frozenset({"niqe"})
LABELS = {"psnr": "PSNR", "ssim": "SSIM", "niqe": "NIQE", "lpips": "LPIPS", "ma": "Ma", "pi": "PI"}
_FORMATS = {"psnr": ".2f"}  # the others with four decimals


def format_value(metric: str, value: float | None) -> str:
    """A metric's value as SR tables print it ('psnr' and 'psnr_bicubic' with two decimals); n/a for nan."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:{_FORMATS.get(metric.removesuffix('_bicubic'), '.4f')}}"


def describe(scores: dict[str, float]) -> str:
    """'PSNR 24.77 dB, SSIM 0.6603, NIQE 5.1234' for the metrics in `scores`."""
    return ", ".join(f"{LABELS.get(k, k)} {format_value(k, v)}" + (" dB" if k == "psnr" else "")
                     for k, v in scores.items())


def mean_scores(rows: Iterable[dict[str, float]], metrics: Sequence[str]) -> dict[str, float]:
    """The mean of each metric that every row has; nan if any image's value is nan (so that a metric missing
    for some images never passes for the set's mean)."""
    rows = list(rows)
    return {m: float(np.mean([r[m] for r in rows])) for m in metrics if rows and all(m in r for r in rows)}


def mean_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The row of a metrics table that follows its image rows: 'mean' and the mean of each score column
    ('(mean)' when an image is itself named mean, so that the two rows cannot be taken for each other)."""
    name = "(mean)" if any(row["name"] == "mean" for row in rows) else "mean"
    return {"name": name} | mean_scores(rows, [k for k in rows[0] if k != "name"])


class Evaluator:
    """Computes a list of metrics for SR images. Built once per run: the LPIPS network is loaded here.

    Args:
        metrics: Names from METRICS.
        crop_border: Pixels cropped at every border before any metric.
        niqe_channel: 'y' (rgb2ycbcr, the PIRM convention) or 'gray' (rgb2gray, niqe_release's).
        lpips_net, lpips_weights: LPIPS backbone and its torchvision weights file (None: the torch cache).
        device: Where LPIPS runs.
    """

    def __init__(self, metrics: Sequence[str], crop_border: int, niqe_channel: str = "y",
                 lpips_net: str = "alex", lpips_weights: str | None = None,
                 device: torch.device | str = "cpu") -> None:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {', '.join(unknown)}; choose from {', '.join(METRICS)}")
        self.metrics = tuple(dict.fromkeys(metrics))
        self.crop_border = crop_border
        self.niqe_channel = niqe_channel
        self.unavailable: dict[str, str] = {}
        self._too_small: set[tuple[str, str]] = set()  # (metric, set) already reported as too small
        self._lpips = None
        if "lpips" in self.metrics:
            from ..metrics.lpips import MetricUnavailableError, load_lpips

            try:
                self._lpips = load_lpips(lpips_net, lpips_weights, device)
            except MetricUnavailableError as err:
                self.unavailable["lpips"] = str(err)
                log.warning("LPIPS is unavailable and reported as n/a: %s", err)

    def score(self, img: np.ndarray, gt: np.ndarray | None, name: str = "", skip: Collection[str] = (),
              group: str | None = "") -> dict[str, float]:
        """The metrics of a uint8 RGB image, against `gt` (uint8, same size) where they need one.

        Without `gt` only the no-reference metrics are computed; metrics in `skip` are left out. An image too
        small for a windowed metric gets n/a, with a warning for the first such image of its `group` (its set)
        only; none with `group` None (a bicubic baseline, whose SR image is as small).
        """
        return {metric: math.nan if metric in self.unavailable else self._compute(metric, img, gt, name, group)
                for metric in self.applicable(gt is not None, skip)}

    def applicable(self, has_gt: bool, skip: Collection[str] = ()) -> tuple[str, ...]:
        """The metrics `score` computes for an image with or without GT, `skip` left out."""
        return tuple(m for m in self.metrics if m not in skip and (has_gt or m in NO_REFERENCE))

    def _compute(self, metric: str, img: np.ndarray, gt: np.ndarray | None, name: str, group: str | None
                 ) -> float:
        if metric == "psnr":
            return calculate_psnr(img, gt, self.crop_border)
        if metric == "lpips":
            from ..metrics.lpips import calculate_lpips

            return calculate_lpips(self._lpips, img, gt, self.crop_border)
        # Windowed metrics need a few pixels: a smaller image is n/a (nan) for them, as a missing value. Said once
        # per set: a set of small images would repeat it for every image at every validation.
        try:
            if metric == "ssim":
                return calculate_ssim(img, gt, self.crop_border)
            return calculate_niqe(img, self.crop_border, self.niqe_channel)
        except (SSIMImageTooSmallError, NIQEImageTooSmallError) as err:
            if group is not None and (metric, group) not in self._too_small:
                self._too_small.add((metric, group))
                further = f" of {group}" if group else ""
                log.warning("%s: %s is n/a: %s (further images%s too small for it are not reported)",
                            name or "image", LABELS[metric], err, further)
            return math.nan


def bicubic_upscale(lq: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB bicubic upscaling of the 8-bit LQ image (MATLAB rounds after each axis)."""
    return imresize(to_uint8(lq), scale=float(scale))


def bicubic_image(lq: torch.Tensor, scale: int) -> np.ndarray:
    """The bicubic baseline of a CxHxW [0, 1] LQ tensor, as a uint8 RGB image."""
    return bicubic_upscale(lq.numpy().transpose(1, 2, 0), scale)
