"""The SR (PSNR-only) and ESRGAN models: networks, losses, optimizers, and one training step.

`optimize_parameters(step)` is the whole of an iteration. In the PSNR phase (steps 1..N) only G is trained,
with the pixel loss. From step N+1 on, ESRGAN alternates a G step on

    L_G = w_pix * L_pix + w_fea * L_percep + w_gan * L_G^Ra        (paper, eq. 3)

with D frozen, and a D step on L_D^Ra with the fake detached from G (paper, eq. 1-2).

Nothing here waits for the device: losses stay device tensors in `log_dict`, and a non-finite loss skips its
optimizer step on the device (fused Adam's `found_inf`), counted in device tensors that the training loop
reads only when it prints.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import warnings
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..archs.layouts import describe_differences, describe_hparams, infer_hparams
from ..archs.rrdbnet import RRDBNet
from ..losses import GANLoss, pixel_loss
from ..options import GanPhaseOpt, OptimOpt, PsnrPhaseOpt
from .lr_scheduler import build_scheduler

logger = logging.getLogger(__name__)

BatchMean = Callable[[torch.Tensor], torch.Tensor]


def build_adam(params: Any, o: OptimOpt) -> torch.optim.Adam:
    # Fused Adam takes `found_inf` and skips the update on the device when it is set: no sync to decide.
    return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, fused=True)


class MixedPrecision:
    """Autocast for the forward passes and, in fp16, one gradient scaler per network. Scaler steps skip
    non-finite gradients on the device too (fused Adam takes the scaler's `found_inf`)."""

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("speed.precision: fp16 needs CUDA; use bf16 or fp32 on the CPU")
        self.precision = precision
        self.device_type = device.type
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    def autocast(self) -> torch.autocast:
        """Autocast without its weight-cast cache. The cache saves a cast only where one region uses a weight twice
        (D on real and on fake patches in the D step), and there it adds the two uses' gradients in the low
        precision before the one cast back; without it each use's gradient reaches fp32 first. So a step computes
        the same numbers eager and graph-captured (where a cache would keep capture-time casts)."""
        return torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None,
                              cache_enabled=False)

    def scaler(self, name: str) -> torch.amp.GradScaler | None:
        if self.precision != "fp16":
            return None
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler(self.device_type)
        return self.scalers[name]


def _counter(counters: dict[str, torch.Tensor], key: str, device: torch.device) -> torch.Tensor:
    if key not in counters:
        counters[key] = torch.zeros((), dtype=torch.long, device=device)
    return counters[key]


class PairForward(nn.Module):
    """D on real and on fake patches as two separate forwards (BN statistics per batch, as in the original
    code) inside one module call, so that a DistributedDataParallel wrapper sees one forward per backward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(real), self.net(fake)


class SRModel:
    """PSNR-oriented training of a generator with a pixel loss, with an optional EMA of its weights."""

    def __init__(self, net_g: nn.Module, psnr: PsnrPhaseOpt, device: torch.device, ema_decay: float = 0.0,
                 precision: str = "fp32", channels_last: bool = False) -> None:
        self.device = device
        self.amp = MixedPrecision(precision, device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net_g = net_g.to(device, memory_format=self.memory_format)
        self.train_g: nn.Module = self.net_g  # the DDP wrapper when distributed
        self.psnr_iters = psnr.niter
        self.cri_pix_psnr = pixel_loss(psnr.pixel_criterion)
        self.optimizers: dict[str, torch.optim.Optimizer] = {"G_psnr": build_adam(self.net_g.parameters(),
                                                                                  psnr.optim_G)}
        self.schedulers = {"G_psnr": build_scheduler(self.optimizers["G_psnr"], psnr.scheduler)}
        self.ema_decay = ema_decay
        self.net_g_ema = None
        if ema_decay > 0:
            self.net_g_ema = copy.deepcopy(self.net_g).eval().requires_grad_(False)
        self.any_rank: Callable[[torch.Tensor], torch.Tensor] | None = None  # set when distributed
        self.log_dict: dict[str, torch.Tensor | float] = {}
        # Device-side health counters: skipped steps per network, consecutive skips, non-finite loss terms.
        self.skipped: dict[str, torch.Tensor] = {}
        self.consecutive: dict[str, torch.Tensor] = {}
        self.nonfinite_terms: dict[str, torch.Tensor] = {}
        self.lq = self.gt = self.fake = None
        # How the device work of a step runs: called as run(kind, work). Eager by default; the engine's CUDA-graph
        # runner (engine/fast.py) captures and replays it, with inputs in static tensors.
        self.run_step: Callable[[str, Callable[[], Any]], Any] = lambda kind, work: work()
        self.static_inputs = False

    def phase(self, step: int) -> str:
        return "psnr"

    def feed_data(self, batch: dict[str, Any]) -> None:
        inputs = {"lq": batch["LQ"]} | ({"gt": batch["GT"]} if "GT" in batch else {})
        for name, value in inputs.items():
            value = value.to(self.device, non_blocking=True, memory_format=self.memory_format)
            static = getattr(self, name)
            if not self.static_inputs or static is None:
                setattr(self, name, value.clone() if self.static_inputs else value)
            elif static.shape != value.shape:
                raise ValueError(f"speed.cuda_graph: a batch of shape {tuple(value.shape)} after batches of "
                                 f"{tuple(static.shape)}; graph-captured steps need one batch shape")
            else:
                static.copy_(value, non_blocking=True)  # the captured graph reads this tensor
        if "GT" not in batch:
            self.gt = None

    def optimize_parameters(self, step: int) -> None:
        self._psnr_step()

    def _psnr_step(self) -> None:
        self.train_g.train()
        l_pix = self.run_step("psnr", self._psnr_work)
        lr = self._lr("G_psnr")  # the rate this update used, read before the schedule moves on
        self.schedulers["G_psnr"].step()
        self.log_dict = {"l_g_pix": l_pix, "lr_G": lr}

    def _psnr_work(self) -> torch.Tensor:
        """The device work of a PSNR step: forward, L_pix, backward, Adam, EMA; returns the detached loss."""
        optimizer = self.optimizers["G_psnr"]
        optimizer.zero_grad(set_to_none=True)
        with self.amp.autocast():
            self.fake = self.train_g(self.lq)
            l_pix = self.cri_pix_psnr(self.fake, self.gt)
        skipped = self._backward_and_step("G", optimizer, l_pix, {"l_g_pix": l_pix})
        self._update_ema(skipped)
        return l_pix.detach()

    def _lr(self, name: str) -> float:
        """An optimizer's current learning rate, from its schedule (`LambdaLR`) on the host: the number the schedule
        wrote into the optimizer, without reading it back from the device in CUDA-graph mode."""
        schedule = self.schedulers[name]
        return schedule.base_lrs[0] * schedule.lr_lambdas[0](schedule.last_epoch)

    def _backward_and_step(self, name: str, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                           terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """backward + optimizer.step(), the step skipped on the device when `loss` is not finite (in fp16 the
        gradient scaler skips it, and also steps whose gradients overflowed); returns the skip flag (0-dim)."""
        bad = ~torch.isfinite(loss.detach())
        if self.any_rank is not None:
            # One rank's NaN reaches every rank through the averaged gradients: all must skip together.
            bad = self.any_rank(bad)
        scaler = self.amp.scaler(name)
        if scaler is None:
            loss.backward()
            optimizer.found_inf = bad.float()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        # In place, so that a captured step keeps counting in the same tensors when replayed.
        _counter(self.skipped, name, bad.device).add_(bad.long())
        _counter(self.consecutive, name, bad.device).add_(1).mul_(bad.long())
        for term, value in terms.items():
            _counter(self.nonfinite_terms, term, bad.device).add_((~torch.isfinite(value.detach())).long())
        return bad

    @torch.no_grad()
    def _update_ema(self, skipped: torch.Tensor) -> None:
        """ema += (1 - decay) * (G - ema), with weight 0 when G's step was skipped, in three multi-tensor ops.

        Not `_foreach_lerp_`: its only overload with a device weight takes one weight tensor per parameter, and
        on CUDA weights shaped unlike the parameters leave the multi-tensor kernel for one `lerp_` launch per
        parameter (about 700 for RRDBNet). A single 0-dim device tensor is read by the kernel itself."""
        if self.net_g_ema is None:
            return
        ema = list(self.net_g_ema.parameters())
        weight = (1.0 - self.ema_decay) * (~skipped).to(ema[0].dtype)
        step = torch._foreach_sub(list(self.net_g.parameters()), ema)
        torch._foreach_mul_(step, weight)
        torch._foreach_add_(ema, step)

    def health(self) -> dict[str, torch.Tensor]:
        """The device counters, for the loop to read when it prints."""
        out = {f"skipped_{k}": v for k, v in self.skipped.items()}
        out |= {f"consecutive_{k}": v for k, v in self.consecutive.items()}
        out |= {f"nonfinite_{k}": v for k, v in self.nonfinite_terms.items()}
        return {k: torch.as_tensor(v, device=self.device) for k, v in out.items()}

    def deployable_generator(self) -> nn.Module:
        """The generator to validate and ship: the EMA when enabled, else G itself."""
        return self.net_g_ema if self.net_g_ema is not None else self.net_g

    def networks(self) -> dict[str, nn.Module]:
        nets = {"G": self.net_g}
        if self.net_g_ema is not None:
            nets["G_ema"] = self.net_g_ema
        return nets

    def wrap_distributed(self, device_ids: list[int] | None, batch_mean: BatchMean,
                         any_rank: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Train through DistributedDataParallel; the raw networks stay available for saving and evaluation.
        `batch_mean` is the mean over all processes' batches (for RaGAN's relativistic term); `any_rank` ORs a
        flag over the processes on the device (a collective, no host synchronisation)."""
        self.train_g = DistributedDataParallel(self.net_g, device_ids=device_ids)  # broadcasts rank 0's G
        self.any_rank = any_rank
        if self.net_g_ema is not None:
            # The EMA too (once, here): every rank must validate, save and start the GAN phase from the same one.
            for tensor in self.net_g_ema.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

    def compile(self, backend: str = "inductor") -> None:
        """torch.compile the training forwards (the raw networks stay as they are for saving)."""
        self.train_g = torch.compile(self.train_g, backend=backend)

    def use_step_runner(self, runner: Callable[[str, Callable[[], Any]], Any]) -> None:
        """Run the device work of every step through `runner` (engine/fast.py's CUDA-graph runner): inputs in
        static tensors, Adam capturable with its learning rate as a device tensor (the schedules fill it in
        place). Call it after loading a training state."""
        self.run_step = runner
        self.static_inputs = True
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["capturable"] = True
                if not isinstance(group["lr"], torch.Tensor):
                    # float32: fused Adam's CUDA kernels read a tensor learning rate as a float.
                    group["lr"] = torch.tensor(group["lr"], dtype=torch.float32, device=self.device)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: weights, optimizers, schedulers, fp16 gradient scalers
        (tensors and plain data)."""
        return {"networks": {k: v.state_dict() for k, v in self.networks().items()},
                "optimizers": {k: _portable_optimizer_state(v) for k, v in self.optimizers.items()},
                "schedulers": {k: _portable_scheduler_state(v) for k, v in self.schedulers.items()},
                "scalers": {k: v.state_dict() for k, v in self.amp.scalers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for group, objects in (("networks", self.networks()), ("optimizers", self.optimizers),
                               ("schedulers", self.schedulers)):
            missing, extra = set(objects) - set(state[group]), set(state[group]) - set(objects)
            if missing or extra:
                found = ([f"no {group} entry for {sorted(missing)}"] if missing else []) + (
                    [f"{group} entries for {sorted(extra)} that this model has not"] if extra else [])
                raise ValueError(f"the training state has {' and '.join(found)}; was it saved by another model type "
                                 "or with other options (ema_decay)?")
            for name, obj in objects.items():
                if group == "networks":
                    _check_network_fits(name, obj, state[group][name])
                elif name in unstarted(state):
                    continue  # it carries nothing but settings, and this run's options set those
                try:
                    obj.load_state_dict(state[group][name])
                except (RuntimeError, ValueError, KeyError) as err:
                    raise ValueError(f"{group} entry {name}: {str(err).splitlines()[0] or type(err).__name__}"
                                     ) from None
        for name, scaler_state in state.get("scalers", {}).items():
            scaler = self.amp.scaler(name)
            if scaler is not None:
                scaler.load_state_dict(scaler_state)


def unstarted(state: dict[str, Any]) -> set[str]:
    """The optimizers of a model's `state_dict` that have not stepped yet, nor their schedules (the GAN phase's
    during the PSNR phase): they hold only the settings the options gave them when the state was saved."""
    return {name for name, optimizer in state["optimizers"].items()
            if not optimizer["state"] and state["schedulers"].get(name, {}).get("last_epoch") == 0}


# The options that set each optimizer and its schedule.
_OPTION_KEYS = {"G_psnr": ("train.psnr.optim_G", "train.psnr.scheduler"),
                "G": ("train.gan.optim_G", "train.gan.scheduler"), "D": ("train.gan.optim_D", "train.gan.scheduler")}


def training_settings(state: dict[str, Any]) -> dict[str, Any]:
    """The optimizer and schedule settings a model's `state_dict` carries, by option key: the learning rate the
    schedule scales, Adam's betas and weight decay, and the schedule's type and parameters (a schedule is a
    `LambdaLR` whose factor object `state_dict` saves as its attributes: milestones, gamma, warmup_iters, ...)."""
    settings: dict[str, Any] = {}
    for name, optimizer in state["optimizers"].items():
        key = _OPTION_KEYS[name][0]
        group = optimizer["param_groups"][0]
        settings[f"{key}.lr"] = float(group["initial_lr"])
        settings[f"{key}.beta1"], settings[f"{key}.beta2"] = (float(b) for b in group["betas"])
        settings[f"{key}.weight_decay"] = float(group["weight_decay"])
    for name, schedule in state["schedulers"].items():
        key = _OPTION_KEYS[name][1]
        for factor in schedule["lr_lambdas"]:
            factor = dict(factor or {})
            settings[f"{key}.type"] = "MultiStepLR" if "milestones" in factor else "CosineAnnealingRestartLR"
            if "eta_min_ratio" in factor:  # the option is eta_min itself (the same for G and D)
                lr = float(state["optimizers"][name]["param_groups"][0]["initial_lr"])
                factor["eta_min"] = float(f"{factor.pop('eta_min_ratio') * lr:.10g}")
            settings.update({f"{key}.{k}": v for k, v in factor.items()})
    return settings


def changed_settings(saved: dict[str, Any], model: SRModel,
                     ignore: AbstractSet[str] = frozenset()) -> dict[str, tuple]:
    """What the training state `saved` (a model's `state_dict`) sets otherwise than `model`, built from this
    run's options, does, for the optimizers that `load_state_dict` restores (those that have stepped) other
    than those named in `ignore`: {option key: (value in the training state, value in the options)}."""
    restored = (saved["optimizers"].keys() & model.optimizers.keys()) - unstarted(saved) - ignore
    now = training_settings({"optimizers": {k: model.optimizers[k].state_dict() for k in restored},
                             "schedulers": {k: model.schedulers[k].state_dict() for k in restored}})
    before = training_settings({"optimizers": {k: saved["optimizers"][k] for k in restored},
                                "schedulers": {k: saved["schedulers"][k] for k in restored}})
    return {key: (before.get(key, "(none)"), now.get(key, "(none)"))
            for key in sorted(before.keys() | now.keys()) if before.get(key) != now.get(key)}


def _check_network_fits(name: str, net: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Refuse a saved network of other keys or shapes, saying how it differs (for G: both sizes)."""
    differences = describe_differences(net.state_dict(), saved)
    if differences is None:
        return
    sizes = ""
    if isinstance(net, RRDBNet):
        with contextlib.suppress(KeyError, ValueError, IndexError):  # too damaged to size: the differences say it
            sizes = (f"it holds an RRDBNet with {describe_hparams(infer_hparams(saved))}, this model is one with "
                     f"{describe_hparams(infer_hparams(net.state_dict()))}; ")
    raise ValueError(f"networks entry {name}: {sizes}{differences}")


def _portable_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state as an eager run saves it: a CUDA-graph run's device learning rates (read here, at
    checkpoint time) become numbers again and `capturable` is off, so that either kind of run can resume it."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = group["lr"].item()
            group["capturable"] = False
    return state


def _portable_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """The schedule's state with numbers where a CUDA-graph run keeps (copies of) device learning rates."""
    state = scheduler.state_dict()
    state["_last_lr"] = [v.item() if isinstance(v, torch.Tensor) else v for v in state.get("_last_lr", [])]
    return state


class ESRGANModel(SRModel):
    """PSNR phase for `psnr.niter` steps, then the RaGAN + perceptual + pixel phase."""

    def __init__(self, net_g: nn.Module, net_d: nn.Module, net_f: nn.Module | None, psnr: PsnrPhaseOpt,
                 gan: GanPhaseOpt, device: torch.device, ema_decay: float = 0.0, precision: str = "fp32",
                 channels_last: bool = False) -> None:
        super().__init__(net_g, psnr, device, ema_decay, precision, channels_last)
        self.net_d = net_d.to(device, memory_format=self.memory_format)
        self.d_pair: nn.Module = PairForward(self.net_d)
        self.d_frozen: nn.Module = self.net_d  # D as the G step calls it (compiled or not, never DDP)
        self.net_f = None
        if net_f is not None and gan.feature_weight > 0:
            self.net_f = net_f.to(device, memory_format=self.memory_format)
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
        return super().networks() | {"D": self.net_d}

    def wrap_distributed(self, device_ids: list[int] | None, batch_mean: BatchMean,
                         any_rank: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().wrap_distributed(device_ids, batch_mean, any_rank)
        self.d_pair = DistributedDataParallel(PairForward(self.net_d), device_ids=device_ids)
        self.d_frozen = self.net_d
        self.cri_gan.batch_mean = batch_mean

    def compile(self, backend: str = "inductor") -> None:
        super().compile(backend)
        self.d_pair = torch.compile(self.d_pair, backend=backend)
        self.d_frozen = torch.compile(self.net_d, backend=backend)
        if self.net_f is not None:
            self.net_f = torch.compile(self.net_f, backend=backend)

    def optimize_parameters(self, step: int) -> None:
        if step <= self.psnr_iters:
            self._psnr_step()
            return
        if step == self.psnr_iters + 1 and self.psnr_iters > 0:
            self.start_gan_phase()
        self._gan_step(step - self.psnr_iters)

    @torch.no_grad()
    def start_gan_phase(self) -> None:
        """With an EMA, the GAN phase starts from it, the PSNR model that was validated and saved (as BasicSR
        starts from a PSNR model's params_ema, and as psnr.niter 0 with that model as pretrain_model_G does); the
        EMA then starts afresh from the same weights. In place: captured steps keep their tensors."""
        if self.net_g_ema is None:
            return
        torch._foreach_copy_(list(self.net_g.parameters()), list(self.net_g_ema.parameters()))
        for own, ema in zip(self.net_g.buffers(), self.net_g_ema.buffers(), strict=True):
            own.copy_(ema)
        logger.info("GAN phase: G starts from the EMA of the PSNR phase (the saved PSNR model)")

    def _gan_step(self, gan_step: int) -> None:
        """One GAN-phase iteration (1-based within the phase), in the order of the original ESRGAN code."""
        g = self.gan
        self.train_g.train()
        self.net_d.train()
        update_g = gan_step % g.D_update_ratio == 0 and gan_step > g.D_init_iters
        # A copy: the runner keeps a captured step's outputs, and the host adds to this dict.
        log: dict[str, torch.Tensor | float] = dict(
            self.run_step("gan_g_d" if update_g else "gan_d", lambda: self._gan_work(update_g)))
        log |= {"lr_G": self._lr("G"), "lr_D": self._lr("D")}  # the rates this step used
        with warnings.catch_warnings():
            # G's schedule counts GAN-phase iterations, as in the original code, even while D_init_iters or
            # D_update_ratio skip G's optimizer; torch warns about exactly that.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.schedulers["G"].step()
        self.schedulers["D"].step()
        self.log_dict = log

    def _gan_work(self, update_g: bool) -> dict[str, torch.Tensor]:
        """The device work of a GAN-phase step: G's forward, the G step (when due), the D step."""
        # Without a G step nothing back-propagates into G: its activations need not be kept.
        with self.amp.autocast(), torch.set_grad_enabled(update_g):
            self.fake = self.train_g(self.lq)
        log = self.optimize_generator() if update_g else {}
        return log | self.optimize_discriminator()

    def optimize_generator(self) -> dict[str, torch.Tensor]:
        """G step on w_pix * L_pix + w_fea * L_percep + w_gan * L_G, with D frozen (it still runs in train mode,
        as in the original code, so its BN statistics see these batches). D runs unwrapped here: it gets no
        gradient, so there is nothing for DDP to synchronise."""
        g = self.gan
        self.net_d.requires_grad_(False)
        opt_g = self.optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        with self.amp.autocast():
            terms = {"l_g_pix": g.pixel_weight * self.cri_pix(self.fake, self.gt)}
            if self.net_f is not None:
                with torch.no_grad():
                    real_fea = self.net_f(self.gt)
                terms["l_g_fea"] = g.feature_weight * self.cri_fea(self.net_f(self.fake), real_fea)
            pred_g_fake = self.d_frozen(self.fake)
            pred_d_real = self.d_frozen(self.gt).detach() if g.gan_type == "ragan" else None
            terms["l_g_gan"] = g.gan_weight * self.cri_gan.generator_loss(pred_g_fake, pred_d_real)
            l_g_total = sum(terms.values())
        self._update_ema(self._backward_and_step("G", opt_g, l_g_total, terms))
        self.net_d.requires_grad_(True)
        return {k: v.detach() for k, v in terms.items()}

    def optimize_discriminator(self) -> dict[str, torch.Tensor]:
        """D step on real patches and on the current fake detached from G."""
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        with self.amp.autocast():
            pred_d_real, pred_d_fake = self.d_pair(self.gt, self.fake.detach())
            l_d_total, l_d_real, l_d_fake = self.cri_gan.discriminator_loss(pred_d_real, pred_d_fake)
        self._backward_and_step("D", opt_d, l_d_total, {"l_d_real": l_d_real, "l_d_fake": l_d_fake})
        return {"l_d_real": l_d_real.detach(), "l_d_fake": l_d_fake.detach(),
                "D_real": pred_d_real.detach().mean(), "D_fake": pred_d_fake.detach().mean()}
