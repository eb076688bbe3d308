"""The SR (PSNR-only) and ESRGAN models: networks, losses, optimizers, and one training step.

`optimize_parameters(step)` is the whole of an iteration. In the PSNR phase (steps 1..N) only G is trained,
with the pixel loss. From step N+1 on, ESRGAN alternates a G step on

    L_G = w_pix * L_pix + w_fea * L_percep + w_gan * L_G^Ra        (paper, eq. 3)

with D frozen, and a D step on L_D^Ra with the fake detached from G (paper, eq. 1-2). Losses are kept as
device tensors in `log_dict`; reading them (a host-device sync) is left to the logger at print time.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
from torch import nn

from ..losses import GANLoss, pixel_loss
from ..options import GanPhaseOpt, OptimOpt, PsnrPhaseOpt
from .lr_scheduler import build_scheduler


def build_adam(params: Any, o: OptimOpt) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)


class SRModel:
    """PSNR-oriented training of a generator with a pixel loss."""

    def __init__(self, net_g: nn.Module, psnr: PsnrPhaseOpt, device: torch.device) -> None:
        self.device = device
        self.net_g = net_g.to(device)
        self.psnr_iters = psnr.niter
        self.cri_pix_psnr = pixel_loss(psnr.pixel_criterion)
        self.optimizers: dict[str, torch.optim.Optimizer] = {"G_psnr": build_adam(self.net_g.parameters(),
                                                                                  psnr.optim_G)}
        self.schedulers = {"G_psnr": build_scheduler(self.optimizers["G_psnr"], psnr.scheduler)}
        self.log_dict: dict[str, torch.Tensor | float] = {}
        self.lq = self.gt = self.fake = None

    def phase(self, step: int) -> str:
        return "psnr"

    def feed_data(self, batch: dict[str, Any]) -> None:
        self.lq = batch["LQ"].to(self.device, non_blocking=True)
        self.gt = batch["GT"].to(self.device, non_blocking=True) if "GT" in batch else None

    def optimize_parameters(self, step: int) -> None:
        self._psnr_step()

    def _psnr_step(self) -> None:
        self.net_g.train()
        optimizer = self.optimizers["G_psnr"]
        optimizer.zero_grad(set_to_none=True)
        self.fake = self.net_g(self.lq)
        l_pix = self.cri_pix_psnr(self.fake, self.gt)
        l_pix.backward()
        optimizer.step()
        self.schedulers["G_psnr"].step()
        self.log_dict = {"l_g_pix": l_pix.detach(), "lr_G": optimizer.param_groups[0]["lr"]}

    @torch.no_grad()
    def test(self, lq: torch.Tensor) -> torch.Tensor:
        """Super-resolve a batch of LQ images (any size) in eval mode."""
        was_training = self.net_g.training
        self.net_g.eval()
        try:
            return self.net_g(lq.to(self.device))
        finally:
            self.net_g.train(was_training)

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.net_g}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: weights, optimizers, schedulers (tensors and plain data)."""
        return {"networks": {k: v.state_dict() for k, v in self.networks().items()},
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for group, objects in (("networks", self.networks()), ("optimizers", self.optimizers),
                               ("schedulers", self.schedulers)):
            missing = set(objects) - set(state[group])
            if missing:
                raise ValueError(f"the training state has no {group} entry for {sorted(missing)}; was it saved "
                                 "by another model type?")
            for name, obj in objects.items():
                obj.load_state_dict(state[group][name])


class ESRGANModel(SRModel):
    """PSNR phase for `psnr.niter` steps, then the RaGAN + perceptual + pixel phase."""

    def __init__(self, net_g: nn.Module, net_d: nn.Module, net_f: nn.Module | None, psnr: PsnrPhaseOpt,
                 gan: GanPhaseOpt, device: torch.device) -> None:
        super().__init__(net_g, psnr, device)
        self.net_d = net_d.to(device)
        self.net_f = net_f.to(device) if net_f is not None and gan.feature_weight > 0 else None
        self.gan = gan
        self.cri_pix = pixel_loss(gan.pixel_criterion)
        self.cri_fea = pixel_loss(gan.feature_criterion)
        self.cri_gan = GANLoss(gan.gan_type)
        self.optimizers["G"] = build_adam(self.net_g.parameters(), gan.optim_G)
        self.optimizers["D"] = build_adam(self.net_d.parameters(), gan.optim_D)
        self.schedulers["G"] = build_scheduler(self.optimizers["G"], gan.scheduler)
        self.schedulers["D"] = build_scheduler(self.optimizers["D"], gan.scheduler)

    def phase(self, step: int) -> str:
        return "psnr" if step <= self.psnr_iters else "gan"

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.net_g, "D": self.net_d}

    def optimize_parameters(self, step: int) -> None:
        if step <= self.psnr_iters:
            self._psnr_step()
        else:
            self._gan_step(step - self.psnr_iters)

    def _gan_step(self, gan_step: int) -> None:
        """One GAN-phase iteration (1-based within the phase), in the order of the original ESRGAN code."""
        g = self.gan
        self.net_g.train()
        self.net_d.train()
        self.fake = self.net_g(self.lq)
        log: dict[str, torch.Tensor | float] = {}
        if gan_step % g.D_update_ratio == 0 and gan_step > g.D_init_iters:
            log |= self.optimize_generator()
        log |= self.optimize_discriminator()
        with warnings.catch_warnings():
            # G's schedule counts GAN-phase iterations, as in the original code, even while D_init_iters or
            # D_update_ratio skip G's optimizer; torch warns about exactly that.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.schedulers["G"].step()
        self.schedulers["D"].step()
        log |= {"lr_G": self.optimizers["G"].param_groups[0]["lr"],
                "lr_D": self.optimizers["D"].param_groups[0]["lr"]}
        self.log_dict = log

    def optimize_generator(self) -> dict[str, torch.Tensor]:
        """G step on w_pix * L_pix + w_fea * L_percep + w_gan * L_G, with D frozen (it still runs in train mode,
        as in the original code, so its BN statistics see these batches)."""
        g = self.gan
        self.net_d.requires_grad_(False)
        opt_g = self.optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        l_g_pix = g.pixel_weight * self.cri_pix(self.fake, self.gt)
        log = {"l_g_pix": l_g_pix.detach()}
        l_g_total = l_g_pix
        if self.net_f is not None:
            with torch.no_grad():
                real_fea = self.net_f(self.gt)
            l_g_fea = g.feature_weight * self.cri_fea(self.net_f(self.fake), real_fea)
            l_g_total = l_g_total + l_g_fea
            log["l_g_fea"] = l_g_fea.detach()
        pred_g_fake = self.net_d(self.fake)
        pred_d_real = self.net_d(self.gt).detach() if g.gan_type == "ragan" else None
        l_g_gan = g.gan_weight * self.cri_gan.generator_loss(pred_g_fake, pred_d_real)
        log["l_g_gan"] = l_g_gan.detach()
        (l_g_total + l_g_gan).backward()
        opt_g.step()
        self.net_d.requires_grad_(True)
        return log

    def optimize_discriminator(self) -> dict[str, torch.Tensor]:
        """D step on real patches and on the current fake detached from G."""
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        pred_d_real = self.net_d(self.gt)
        pred_d_fake = self.net_d(self.fake.detach())
        l_d_total, l_d_real, l_d_fake = self.cri_gan.discriminator_loss(pred_d_real, pred_d_fake)
        l_d_total.backward()
        opt_d.step()
        return {"l_d_real": l_d_real.detach(), "l_d_fake": l_d_fake.detach(),
                "D_real": pred_d_real.detach().mean(), "D_fake": pred_d_fake.detach().mean()}
