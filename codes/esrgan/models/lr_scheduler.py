"""Learning-rate schedules: MultiStepLR (the paper's halving) and cosine annealing with restarts."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR

from ..options import SchedulerOpt


class CosineAnnealingRestartLR(LRScheduler):
    """Cosine decay from `weight_i * base_lr` to `eta_min` over each period i, restarting after each one."""

    def __init__(self, optimizer: torch.optim.Optimizer, periods: list[int], restart_weights: list[float],
                 eta_min: float = 0.0, last_epoch: int = -1) -> None:
        if not periods:
            raise ValueError("CosineAnnealingRestartLR needs at least one period")
        if len(restart_weights) != len(periods):
            raise ValueError(f"restart_weights ({len(restart_weights)}) and periods ({len(periods)}) must have "
                             "the same length")
        self.periods = list(periods)
        self.restart_weights = list(restart_weights)
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        cycle = 0
        while cycle < len(self.periods) - 1 and t >= self.periods[cycle]:
            t -= self.periods[cycle]
            cycle += 1
        # After the last period the lr stays at eta_min.
        progress = min(t / self.periods[cycle], 1.0)
        weight = self.restart_weights[cycle]
        return [self.eta_min + (weight * base - self.eta_min) * 0.5 * (1 + math.cos(math.pi * progress))
                for base in self.base_lrs]


def build_scheduler(optimizer: torch.optim.Optimizer, o: SchedulerOpt) -> LRScheduler:
    if o.type == "MultiStepLR":
        return MultiStepLR(optimizer, milestones=o.milestones, gamma=o.gamma)
    weights = o.restart_weights or [1.0] * len(o.periods)
    return CosineAnnealingRestartLR(optimizer, o.periods, weights, o.eta_min)
