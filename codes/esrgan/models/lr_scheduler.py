"""Learning-rate schedules, in closed form of the phase's iteration: multi-step (the paper's halving) and cosine
annealing with restarts, both with an optional linear warm-up.

Each schedule is a small callable object given to `LambdaLR`: its state is plain numbers and lists, so it is
saved in (and restored from) a training state loaded with `weights_only=True`.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..options import SchedulerOpt


class MultiStepFactor:
    """lr factor gamma^(milestones passed), times the warm-up ramp."""

    def __init__(self, milestones: list[int], gamma: float, warmup_iters: int = 0) -> None:
        self.milestones = sorted(milestones)
        self.gamma = gamma
        self.warmup_iters = warmup_iters

    def __call__(self, t: int) -> float:
        return _warmup(t, self.warmup_iters) * self.gamma ** bisect.bisect_right(self.milestones, t)


class CosineRestartFactor:
    """Cosine decay over each period i from eta_min + weight_i * (base - eta_min) (BasicSR's
    CosineAnnealingRestartLR: the weight scales the swing above eta_min) down towards eta_min, restarting after
    each; eta_min after the last period. `eta_min_ratio` is eta_min / base lr. Counted as torch's schedules are
    (the first update of a period uses its peak; BasicSR steps its schedules before the update, one later)."""

    def __init__(self, periods: list[int], restart_weights: list[float], eta_min_ratio: float,
                 warmup_iters: int = 0) -> None:
        if not periods:
            raise ValueError("CosineAnnealingRestartLR needs at least one period")
        if len(restart_weights) != len(periods):
            raise ValueError(f"restart_weights ({len(restart_weights)}) and periods ({len(periods)}) must have "
                             "the same length")
        self.periods = list(periods)
        self.restart_weights = list(restart_weights)
        self.eta_min_ratio = eta_min_ratio
        self.warmup_iters = warmup_iters

    def __call__(self, t: int) -> float:
        cycle, start = 0, 0
        while cycle < len(self.periods) - 1 and t >= start + self.periods[cycle]:
            start += self.periods[cycle]
            cycle += 1
        progress = min((t - start) / self.periods[cycle], 1.0)
        weight = self.restart_weights[cycle]
        cosine = self.eta_min_ratio + weight * (1 - self.eta_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return _warmup(t, self.warmup_iters) * cosine


def _warmup(t: int, warmup_iters: int) -> float:
    """Linear ramp: the first update uses lr/warmup_iters, full lr from update `warmup_iters` on."""
    return min(1.0, (t + 1) / warmup_iters) if warmup_iters > 0 else 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, o: SchedulerOpt) -> LambdaLR:
    if o.type == "MultiStepLR":
        factor = MultiStepFactor(o.milestones, o.gamma, o.warmup_iters)
    else:
        base_lr = optimizer.param_groups[0]["lr"]
        factor = CosineRestartFactor(o.periods, o.restart_weights or [1.0] * len(o.periods),
                                     o.eta_min / base_lr if base_lr > 0 else 0.0, o.warmup_iters)
    return LambdaLR(optimizer, factor)
