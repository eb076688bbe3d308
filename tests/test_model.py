"""One training step of the ESRGAN model: which network each step touches, phases, losses logged."""

import copy
import io
import random

import numpy as np
import pytest
import torch

from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.engine.trainer import Resume, _restore
from esrgan.models.esrgan import ESRGANModel, SRModel
from esrgan.options import GanPhaseOpt, OptimOpt, PsnrPhaseOpt
from esrgan.utils.misc import rng_state

CPU = torch.device("cpu")


def tiny_model(psnr_iters: int = 2, **gan_overrides) -> ESRGANModel:
    torch.manual_seed(0)
    net_g = RRDBNet(3, 3, nf=8, nb=1, gc=4, scale=4)
    net_d = Discriminator_VGG_128(3, nf=4)
    net_f = VGGFeatureExtractor(feature_layer=4)
    gan = GanPhaseOpt(niter=5, optim_G=OptimOpt(lr=1e-3), optim_D=OptimOpt(lr=1e-3), **gan_overrides)
    return ESRGANModel(net_g, net_d, net_f, PsnrPhaseOpt(niter=psnr_iters), gan, CPU)


def feed(model: SRModel, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    model.feed_data({"LQ": torch.rand(2, 3, 32, 32, generator=g), "GT": torch.rand(2, 3, 128, 128, generator=g)})


def params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def changed(before: list[torch.Tensor], net: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_psnr_phase_trains_g_and_never_touches_d():
    model = tiny_model(psnr_iters=3)
    g0, d0 = params(model.net_g), params(model.net_d)
    d_buffers = [b.clone() for b in model.net_d.buffers()]
    for step in (1, 2, 3):
        feed(model, step)
        model.optimize_parameters(step)
    assert changed(g0, model.net_g)
    assert not changed(d0, model.net_d)
    assert all(torch.equal(a, b) for a, b in zip(d_buffers, model.net_d.buffers(), strict=True))
    assert model.optimizers["D"].state == {} and model.optimizers["G"].state == {}
    assert set(model.log_dict) == {"l_g_pix", "lr_G"}


def test_phase_switches_after_n_iterations():
    model = tiny_model(psnr_iters=2)
    assert [model.phase(s) for s in (1, 2, 3, 4)] == ["psnr", "psnr", "gan", "gan"]
    for step in (1, 2):
        feed(model, step)
        model.optimize_parameters(step)
    assert model.optimizers["G"].state == {}
    feed(model, 3)
    model.optimize_parameters(3)
    assert model.optimizers["G"].state != {} and model.optimizers["D"].state != {}
    assert len(model.optimizers["G_psnr"].state) > 0


def test_gan_g_step_changes_g_and_not_d_parameters():
    model = tiny_model()
    feed(model)
    model.fake = model.net_g(model.lq)
    g0, d0 = params(model.net_g), params(model.net_d)
    model.optimize_generator()
    assert changed(g0, model.net_g)
    assert not changed(d0, model.net_d)
    assert all(p.grad is None for p in model.net_d.parameters())  # D was frozen: no gradient accumulated
    assert all(p.requires_grad for p in model.net_d.parameters())  # and unfrozen again for its own step


def test_gan_d_step_changes_d_and_not_g():
    model = tiny_model()
    feed(model)
    model.fake = model.net_g(model.lq)
    g0, d0 = params(model.net_g), params(model.net_d)
    model.optimize_discriminator()
    assert changed(d0, model.net_d)
    assert not changed(g0, model.net_g)
    assert all(p.grad is None for p in model.net_g.parameters())  # the fake was detached


def test_adversarial_term_alone_sends_gradient_into_g():
    model = tiny_model(pixel_weight=0.0, feature_weight=0.0, gan_weight=1.0)
    assert model.net_f is None  # feature_weight 0 drops the VGG
    feed(model)
    model.fake = model.net_g(model.lq)
    g0 = params(model.net_g)
    model.optimize_generator()
    grads = [p.grad for p in model.net_g.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert changed(g0, model.net_g)


def test_gan_step_logs_every_loss_as_a_device_tensor():
    model = tiny_model(psnr_iters=0)
    feed(model)
    model.optimize_parameters(1)
    tensors = {"l_g_pix", "l_g_fea", "l_g_gan", "l_d_real", "l_d_fake", "D_real", "D_fake"}
    assert set(model.log_dict) == tensors | {"lr_G", "lr_D"}
    assert all(isinstance(model.log_dict[k], torch.Tensor) and model.log_dict[k].ndim == 0 for k in tensors)
    assert model.log_dict["lr_G"] == pytest.approx(1e-3)


def bce_with_logits(x: torch.Tensor, target: float) -> torch.Tensor:
    """-[t log s(x) + (1 - t) log(1 - s(x))] = softplus(x) - t x, averaged."""
    return (torch.nn.functional.softplus(x) - target * x).mean()


def test_a_gan_step_equals_the_papers_step_written_out():
    """G on w_pix L1 + w_fea L1(VGG(SR), VGG(GT)) + w_gan L_G^Ra (eq. 3) with D frozen, then D on L_D^Ra (eq. 1-2)
    with the pre-update fake detached, then the EMA: the logged terms, both networks' gradients, G's first Adam
    update and the EMA against a step written out here (weights unlike the defaults, so that each one shows)."""
    torch.manual_seed(0)
    gan = GanPhaseOpt(niter=5, pixel_weight=0.3, feature_weight=0.7, gan_weight=0.11,
                      optim_G=OptimOpt(lr=1e-3), optim_D=OptimOpt(lr=1e-3))
    nets = RRDBNet(3, 3, nf=8, nb=1, gc=4, scale=4), Discriminator_VGG_128(3, nf=4), VGGFeatureExtractor(4)
    model = ESRGANModel(*(net.double() for net in nets), PsnrPhaseOpt(niter=0, pixel_criterion="l2"), gan, CPU,
                        ema_decay=0.9)
    feed(model)
    model.lq, model.gt = model.lq.double(), model.gt.double()  # float64: the two steps agree to rounding
    g, d, vgg, lq, gt = (copy.deepcopy(model.net_g), copy.deepcopy(model.net_d).train(), model.net_f, model.lq,
                         model.gt)
    g0, ema0 = params(g), params(model.net_g_ema)

    fake = g(lq)
    pred_fake, pred_real = d(fake), d(gt).detach()
    l_pix = 0.3 * (fake - gt).abs().mean()
    l_fea = 0.7 * (vgg(fake) - vgg(gt)).abs().mean()
    l_gan = 0.11 * (bce_with_logits(pred_real - pred_fake.mean(), 0)
                    + bce_with_logits(pred_fake - pred_real.mean(), 1)) / 2
    grads_g = torch.autograd.grad(l_pix + l_fea + l_gan, list(g.parameters()))
    d_real, d_fake = d(gt), d(fake.detach())
    l_d_real = bce_with_logits(d_real - d_fake.mean(), 1)
    l_d_fake = bce_with_logits(d_fake - d_real.mean(), 0)
    grads_d = torch.autograd.grad((l_d_real + l_d_fake) / 2, list(d.parameters()))

    model.optimize_parameters(1)
    expected = {"l_g_pix": l_pix, "l_g_fea": l_fea, "l_g_gan": l_gan, "l_d_real": l_d_real, "l_d_fake": l_d_fake,
                "D_real": d_real.mean(), "D_fake": d_fake.mean()}
    for name, value in expected.items():
        assert model.log_dict[name].item() == pytest.approx(value.item(), rel=1e-12), name
    for net, grads in ((model.net_g, grads_g), (model.net_d, grads_d)):
        for p, grad in zip(net.parameters(), grads, strict=True):
            assert torch.allclose(p.grad, grad, rtol=1e-9, atol=1e-14)
    for p, p0, grad, e0, e in zip(model.net_g.parameters(), g0, grads_g, ema0, model.net_g_ema.parameters(),
                                  strict=True):
        # Adam's first step (bias-corrected): lr * g / (|g| + eps), whatever the betas
        assert torch.allclose(p, p0 - 1e-3 * grad / (grad.abs() + 1e-8), rtol=0, atol=1e-12)
        assert torch.allclose(e, 0.9 * e0 + 0.1 * p, rtol=0, atol=1e-15)
    for p, p0, grad in zip(model.net_d.parameters(), params(d), grads_d, strict=True):
        assert torch.allclose(p, p0 - 1e-3 * grad / (grad.abs() + 1e-8), rtol=0, atol=1e-12)


def test_each_adam_takes_its_phases_and_networks_settings():
    psnr = PsnrPhaseOpt(niter=1, optim_G=OptimOpt(lr=3e-4, beta1=0.8, beta2=0.95, weight_decay=1e-5))
    gan = GanPhaseOpt(niter=1, optim_G=OptimOpt(lr=2e-4, beta1=0.7, beta2=0.9),
                      optim_D=OptimOpt(lr=5e-4, beta1=0.6, beta2=0.85, weight_decay=1e-3))
    model = ESRGANModel(RRDBNet(3, 3, nf=8, nb=1, gc=4, scale=4), Discriminator_VGG_128(3, nf=4),
                        VGGFeatureExtractor(4), psnr, gan, CPU)
    feed(model)
    model.optimize_parameters(1)
    model.optimize_parameters(2)  # the GAN phase: its two optimizers are made
    settings = {name: (g["lr"], g["betas"], g["weight_decay"]) for name, opt in model.optimizers.items()
                for g in opt.param_groups}
    assert settings == {"G_psnr": (3e-4, (0.8, 0.95), 1e-5), "G": (2e-4, (0.7, 0.9), 0.0),
                        "D": (5e-4, (0.6, 0.85), 1e-3)}


def test_d_init_iters_holds_g_while_d_learns():
    model = tiny_model(psnr_iters=0, D_init_iters=2)
    g0, d0 = params(model.net_g), params(model.net_d)
    for step in (1, 2):
        feed(model, step)
        model.optimize_parameters(step)
    assert not changed(g0, model.net_g) and changed(d0, model.net_d)
    assert "l_g_gan" not in model.log_dict
    feed(model, 3)
    model.optimize_parameters(3)
    assert changed(g0, model.net_g)


def test_d_update_ratio_updates_g_every_kth_step():
    model = tiny_model(psnr_iters=0, D_update_ratio=2)
    feed(model)
    model.optimize_parameters(1)
    assert "l_g_gan" not in model.log_dict
    model.optimize_parameters(2)
    assert "l_g_gan" in model.log_dict


def test_d_init_iters_and_d_update_ratio_count_from_the_start_of_the_gan_phase():
    """Iteration psnr.niter + 1 is the GAN phase's first: D_init_iters and D_update_ratio count from there."""
    model = tiny_model(psnr_iters=2, D_init_iters=1)
    for step in (1, 2):
        feed(model, step)
        model.optimize_parameters(step)
    g0 = params(model.net_g)
    feed(model, 3)
    model.optimize_parameters(3)  # the GAN phase's first iteration: D only
    assert "l_g_gan" not in model.log_dict and not changed(g0, model.net_g)
    model.optimize_parameters(4)
    assert "l_g_gan" in model.log_dict and changed(g0, model.net_g)

    model = tiny_model(psnr_iters=1, D_update_ratio=2)
    feed(model)
    model.optimize_parameters(1)
    model.optimize_parameters(2)  # the GAN phase's first iteration: 1 % 2 != 0
    assert "l_g_gan" not in model.log_dict
    model.optimize_parameters(3)
    assert "l_g_gan" in model.log_dict


def test_both_gan_schedules_count_every_gan_iteration_also_those_without_a_g_step():
    """As in the original code: G's and D's learning rates follow the phase's iterations, whether G stepped."""
    from esrgan.options import SchedulerOpt

    model = tiny_model(psnr_iters=0, D_update_ratio=2, scheduler=SchedulerOpt(milestones=[1, 2], gamma=0.5))
    feed(model)
    rates = []
    for step in (1, 2, 3):
        model.optimize_parameters(step)
        rates += [model.log_dict["lr_G"], model.log_dict["lr_D"]]
    assert rates == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])  # G's and D's rate at steps 1, 2, 3
    assert model.schedulers["G"].last_epoch == model.schedulers["D"].last_epoch == 3


def test_the_perceptual_loss_uses_the_feature_criterion_and_the_pixel_loss_the_pixel_criterion():
    model = tiny_model(psnr_iters=0, pixel_criterion="l1", feature_criterion="l2", feature_weight=0.7,
                       pixel_weight=0.3)
    feed(model)
    model.optimize_parameters(1)
    fake, gt = model.fake.detach(), model.gt  # the G output the step's losses were computed on
    with torch.no_grad():
        l_fea = 0.7 * ((model.net_f(fake) - model.net_f(gt)) ** 2).mean()
    assert model.log_dict["l_g_fea"].item() == pytest.approx(l_fea.item(), rel=1e-5)
    assert model.log_dict["l_g_pix"].item() == pytest.approx(0.3 * (fake - gt).abs().mean().item(), rel=1e-5)


def test_state_saved_and_loaded_safely_continues_identically():
    model = tiny_model(psnr_iters=1)
    for step in (1, 2):
        feed(model, step)
        model.optimize_parameters(step)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = tiny_model(psnr_iters=1)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    feed(model, 3)
    feed(fresh, 3)
    model.optimize_parameters(3)
    fresh.optimize_parameters(3)
    assert all(torch.equal(a, b) for a, b in zip(model.net_g.parameters(), fresh.net_g.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(model.net_d.parameters(), fresh.net_d.parameters(), strict=True))


def test_resuming_restores_the_python_numpy_and_torch_random_states_of_the_saved_run():
    model = tiny_model(psnr_iters=1)
    state = {"iter": 0, "model": model.state_dict(), "rng": rng_state()}
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # what the saved run draws next
    _restore(model, Resume(state, "saved.state", "path.resume_state"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_sr_model_has_no_gan_phase():
    torch.manual_seed(0)
    model = SRModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), PsnrPhaseOpt(niter=3), CPU)
    feed(model)
    model.optimize_parameters(5)
    assert model.phase(5) == "psnr" and set(model.networks()) == {"G"}


def test_a_non_finite_loss_skips_the_step_on_the_device_and_is_counted():
    model = tiny_model(psnr_iters=5)
    feed(model)
    model.gt = model.gt.clone()
    model.gt[0, 0, 0, 0] = float("nan")
    g0 = params(model.net_g)
    model.optimize_parameters(1)
    model.optimize_parameters(2)
    assert not changed(g0, model.net_g)
    health = {k: int(v) for k, v in model.health().items()}
    assert health == {"skipped_G": 2, "consecutive_G": 2, "nonfinite_l_g_pix": 2}
    feed(model)
    model.optimize_parameters(3)
    assert changed(g0, model.net_g)
    assert int(model.health()["consecutive_G"]) == 0 and int(model.health()["skipped_G"]) == 2


def test_a_non_finite_d_loss_skips_only_the_d_step():
    model = tiny_model(psnr_iters=0)
    feed(model)
    model.fake = model.net_g(model.lq)
    model.gt = torch.full_like(model.gt, float("inf"))
    d0 = params(model.net_d)
    model.optimize_discriminator()
    assert not changed(d0, model.net_d)
    assert int(model.health()["skipped_D"]) == 1


def test_the_logged_learning_rate_is_the_one_the_step_used():
    """As the original code logs it: the milestone's lower rate first shows at the first step that uses it."""
    from esrgan.options import SchedulerOpt

    torch.manual_seed(0)
    psnr = PsnrPhaseOpt(niter=2, optim_G=OptimOpt(lr=1e-3), scheduler=SchedulerOpt(milestones=[1], gamma=0.5))
    gan = GanPhaseOpt(niter=2, optim_G=OptimOpt(lr=1e-4), optim_D=OptimOpt(lr=1e-4),
                      scheduler=SchedulerOpt(milestones=[1], gamma=0.1))
    model = ESRGANModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), Discriminator_VGG_128(3, nf=4),
                        VGGFeatureExtractor(feature_layer=4), psnr, gan, CPU)
    logged, used = [], []
    for step in (1, 2, 3, 4):
        name = "G_psnr" if step <= 2 else "G"
        used.append(model.optimizers[name].param_groups[0]["lr"])
        feed(model, step)
        model.optimize_parameters(step)
        logged.append(model.log_dict["lr_G"])
    assert logged == used == pytest.approx([1e-3, 5e-4, 1e-4, 1e-5])
    assert model.log_dict["lr_D"] == pytest.approx(1e-5)


def test_ema_follows_g_with_its_decay_and_ignores_skipped_steps():
    torch.manual_seed(0)
    model = SRModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), PsnrPhaseOpt(niter=3), CPU, ema_decay=0.9)
    ema0 = params(model.net_g_ema)
    assert not changed(ema0, model.net_g)  # starts as a copy of G
    feed(model)
    model.optimize_parameters(1)
    for e0, g, e in zip(ema0, model.net_g.parameters(), model.net_g_ema.parameters(), strict=True):
        assert torch.allclose(e, 0.9 * e0 + 0.1 * g, atol=1e-7)
    ema1 = params(model.net_g_ema)
    model.gt = torch.full_like(model.gt, float("nan"))
    model.optimize_parameters(2)
    assert not changed(ema1, model.net_g_ema)
    assert model.deployable_generator() is model.net_g_ema


@pytest.mark.parametrize("psnr_iters", [1, 2])
def test_with_ema_the_gan_phase_starts_from_the_saved_psnr_model(psnr_iters):
    """One run through both phases equals a GAN-only run started from that run's PSNR model (its EMA, the file
    it saved), as with psnr.niter 0 and pretrain_model_G: G, its EMA and D bitwise after two GAN steps."""
    def model(psnr_iters: int, net_g: torch.nn.Module) -> ESRGANModel:
        torch.manual_seed(1)
        net_d, net_f = Discriminator_VGG_128(3, nf=4), VGGFeatureExtractor(feature_layer=4)
        gan = GanPhaseOpt(niter=2, optim_G=OptimOpt(lr=1e-3), optim_D=OptimOpt(lr=1e-3))
        return ESRGANModel(net_g, net_d, net_f, PsnrPhaseOpt(niter=psnr_iters, optim_G=OptimOpt(lr=1e-2)), gan,
                           CPU, ema_decay=0.5)

    torch.manual_seed(0)
    both = model(psnr_iters, RRDBNet(3, 3, nf=8, nb=1, gc=4))
    for step in range(1, psnr_iters + 1):
        feed(both, step)
        both.optimize_parameters(step)
    psnr_model = both.deployable_generator().state_dict()
    assert changed(params(both.net_g_ema), both.net_g)  # the EMA lags G: the phases would start apart
    net_g = RRDBNet(3, 3, nf=8, nb=1, gc=4)
    net_g.load_state_dict(psnr_model)
    gan_only = model(0, net_g)
    for step in (psnr_iters + 1, psnr_iters + 2):
        feed(both, step)
        both.optimize_parameters(step)
        feed(gan_only, step)
        gan_only.optimize_parameters(step - psnr_iters)
    for name in ("G", "G_ema", "D"):
        ours, theirs = both.networks()[name].state_dict(), gan_only.networks()[name].state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name


def test_ema_update_is_three_multi_tensor_ops_whatever_the_number_of_parameters():
    """The overloads that stay in one multi-tensor kernel on CUDA: lists of equal shapes, and one 0-dim weight
    tensor of the parameters' dtype (`_foreach_lerp_` with per-parameter 0-dim weights falls back to one launch
    per parameter there)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[object, tuple]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls.append((func, args))
            return func(*args, **(kwargs or {}))

    model = SRModel(RRDBNet(3, 3, nf=8, nb=2, gc=4), PsnrPhaseOpt(niter=3), CPU, ema_decay=0.9)
    assert len(list(model.net_g.parameters())) == 72  # (2 RRDBs x 15 convs + 6 convs) x (weight, bias)
    with Record() as record:
        model._update_ema(torch.tensor(False))
    foreach = [(func, args) for func, args in record.calls if "_foreach_" in str(func)]
    assert [str(func) for func, _ in foreach] == ["aten._foreach_sub.List", "aten._foreach_mul_.Tensor",
                                                  "aten._foreach_add_.List"]
    weight = foreach[1][1][1]
    assert weight.dim() == 0 and weight.dtype == torch.float32 and float(weight) == pytest.approx(0.1)
    assert len(record.calls) <= 8  # the weight's few scalar ops, then the three above


def test_a_training_step_never_reads_a_device_value_on_the_host():
    """No `.item()`-like read inside optimize_parameters (with EMA on), in either phase."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountReads(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                CountReads.reads += 1
            return func(*args, **(kwargs or {}))

    model = tiny_model(psnr_iters=1)
    model.ema_decay = 0.9
    model.net_g_ema = RRDBNet(3, 3, nf=8, nb=1, gc=4)
    for step in (1, 2):
        feed(model, step)
        with CountReads():
            model.optimize_parameters(step)
    assert CountReads.reads == 0


def test_the_psnr_phase_learns_a_fixed_batch():
    """40 L1 steps on one batch (smooth 32x32 GT, its 4x average-pooled LR) take the loss below 40% of where
    it started: the step descends, not merely moves."""
    torch.manual_seed(0)
    model = SRModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), PsnrPhaseOpt(niter=40, optim_G=OptimOpt(lr=1e-3)), CPU)
    g = torch.Generator().manual_seed(0)
    gt = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=32, mode="bilinear")
    model.feed_data({"LQ": torch.nn.functional.avg_pool2d(gt, 4), "GT": gt})
    losses = []
    for step in range(1, 41):
        model.optimize_parameters(step)
        losses.append(model.log_dict["l_g_pix"].item())
    assert losses[-1] < 0.4 * losses[0]


def test_a_state_of_other_network_sizes_says_how_they_differ():
    saved = tiny_model().state_dict()
    torch.manual_seed(0)
    other = ESRGANModel(RRDBNet(3, 3, nf=8, nb=2, gc=4), Discriminator_VGG_128(3, nf=4),
                        VGGFeatureExtractor(feature_layer=4), PsnrPhaseOpt(niter=2), GanPhaseOpt(niter=5), CPU)
    with pytest.raises(ValueError, match=r"^networks entry G: it holds an RRDBNet with nf=8, nb=1, gc=4, scale 4 "
                                         r"\(in_nc=3, out_nc=3\), this model is one with nf=8, nb=2, gc=4, scale 4 "
                                         r"\(in_nc=3, out_nc=3\); 30 missing keys: RRDB_trunk\.1\.RDB1\.conv1\.weight"):
        other.load_state_dict(saved)
    wider_d = ESRGANModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), Discriminator_VGG_128(3, nf=8),
                          VGGFeatureExtractor(feature_layer=4), PsnrPhaseOpt(niter=2), GanPhaseOpt(niter=5), CPU)
    with pytest.raises(ValueError, match=r"^networks entry D: 48 tensors of another shape \(file vs network\): "
                                         r"conv0_0\.weight \(4, 3, 3, 3\) vs \(8, 3, 3, 3\)"):
        wider_d.load_state_dict(saved)
