"""Losses of ESRGAN: pixel, perceptual (on VGG features) and adversarial (gan / ragan / lsgan).

The relativistic average GAN (paper, eq. 1-2) asks the discriminator how much more realistic a real image is
than the *average* fake one, and the generator gets gradient from both the real and the fake term.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .options import GanType, PixelCriterion

CHARBONNIER_EPS = 1e-3  # LapSRN's epsilon: sqrt(d^2 + eps^2) is smooth at 0 and L1-like beyond eps


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = CHARBONNIER_EPS) -> torch.Tensor:
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def pixel_loss(criterion: PixelCriterion):
    """The distance function for a pixel or feature criterion name."""
    losses = {"l1": F.l1_loss, "l2": F.mse_loss, "charbonnier": charbonnier_loss}
    if criterion not in losses:
        raise ValueError(f"unknown pixel/feature criterion {criterion!r}; choose one of {sorted(losses)}")
    return losses[criterion]


class GANLoss(nn.Module):
    """Loss of a logit against the label 'real' (1) or 'fake' (0): BCE-with-logits, or MSE for lsgan."""

    def __init__(self, gan_type: GanType) -> None:
        super().__init__()
        if gan_type not in ("gan", "ragan", "lsgan"):
            raise ValueError(f"unknown gan_type {gan_type!r}; choose gan, ragan or lsgan")
        self.gan_type = gan_type
        # RaGAN compares with the mean logit of the batch; with several processes the model replaces this by a
        # mean over all their batches, so the loss is that of one large batch.
        self.batch_mean: Callable[[torch.Tensor], torch.Tensor] = torch.mean

    def forward(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        if self.gan_type == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def generator_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None) -> torch.Tensor:
        """Adversarial loss of G. `real_logits` (ragan only) must be detached: D is frozen in the G step."""
        if self.gan_type == "ragan":
            mean = self.batch_mean
            return (self(real_logits - mean(fake_logits), False) + self(fake_logits - mean(real_logits), True)) / 2
        return self(fake_logits, True)

    def discriminator_loss(self, real_logits: torch.Tensor,
                           fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, real term, fake term) of D. `fake_logits` come from a fake detached from G."""
        if self.gan_type == "ragan":
            l_real = self(real_logits - self.batch_mean(fake_logits), True)
            l_fake = self(fake_logits - self.batch_mean(real_logits), False)
            return (l_real + l_fake) / 2, l_real, l_fake
        l_real = self(real_logits, True)
        l_fake = self(fake_logits, False)
        return l_real + l_fake, l_real, l_fake
