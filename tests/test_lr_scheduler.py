"""Learning-rate schedules: closed forms checked value by value, and their state survives a safe save/load."""

import io
import math

import pytest
import torch

from esrgan.models.lr_scheduler import build_scheduler
from esrgan.options import SchedulerOpt


def lrs(o: SchedulerOpt, steps: int, base: float = 1.0) -> list[float]:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = build_scheduler(optimizer, o)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_multistep_halves_at_each_milestone_like_torch():
    assert lrs(SchedulerOpt(milestones=[2, 4], gamma=0.5), 6) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_warmup_ramps_linearly_then_follows_the_schedule():
    assert lrs(SchedulerOpt(milestones=[5], gamma=0.1, warmup_iters=4), 7) == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 0.1, 0.1])
    cosine = SchedulerOpt(type="CosineAnnealingRestartLR", periods=[8], eta_min=0.0, warmup_iters=4)
    assert lrs(cosine, 8) == pytest.approx(
        [min(1.0, (t + 1) / 4) * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])


def test_cosine_restarts_follow_the_closed_form():
    o = SchedulerOpt(type="CosineAnnealingRestartLR", periods=[4, 4], restart_weights=[1.0, 0.5], eta_min=0.0)
    expected = [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    expected += [0.5 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert lrs(o, 8) == pytest.approx(expected)
    assert lrs(o, 10)[-1] == pytest.approx(0.0)  # eta_min after the last period


def test_cosine_restart_weights_scale_the_swing_above_eta_min_as_in_basicsr():
    """BasicSR: eta_min + weight * (base - eta_min) * (1 + cos) / 2; the second period peaks at
    0.1 + 0.5 * 0.9 = 0.55 (not 0.5 * base), and every period ends near eta_min."""
    o = SchedulerOpt(type="CosineAnnealingRestartLR", periods=[4, 4], restart_weights=[1.0, 0.5], eta_min=0.1)
    expected = [0.1 + w * 0.9 * 0.5 * (1 + math.cos(math.pi * t / 4)) for w in (1.0, 0.5) for t in range(4)]
    assert lrs(o, 8) == pytest.approx(expected)
    assert lrs(o, 8)[4] == pytest.approx(0.55)


def test_scheduler_state_round_trips_through_a_weights_only_load():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, SchedulerOpt(milestones=[1], gamma=0.5, warmup_iters=2))
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    fresh_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = build_scheduler(fresh_opt, SchedulerOpt(milestones=[1], gamma=0.5, warmup_iters=2))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.last_epoch == 3 and fresh.get_last_lr() == scheduler.get_last_lr()


def test_a_saved_schedule_reads_back_as_the_options_that_built_it():
    from esrgan.models.esrgan import training_settings
    from esrgan.options import OptimOpt

    def saved(lr: float, o: SchedulerOpt) -> dict:
        adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr, betas=(0.9, 0.999))
        schedule = build_scheduler(adam, o)
        return {"optimizers": {"G": adam.state_dict()}, "schedulers": {"G": schedule.state_dict()}}

    cosine = SchedulerOpt(type="CosineAnnealingRestartLR", periods=[10, 20], restart_weights=[1, 0.5], eta_min=1e-7)
    assert training_settings(saved(3e-4, cosine)) == {
        "train.gan.optim_G.lr": 3e-4, "train.gan.optim_G.beta1": 0.9, "train.gan.optim_G.beta2": 0.999,
        "train.gan.optim_G.weight_decay": 0.0, "train.gan.scheduler.type": "CosineAnnealingRestartLR",
        "train.gan.scheduler.periods": [10, 20], "train.gan.scheduler.restart_weights": [1, 0.5],
        "train.gan.scheduler.eta_min": 1e-7, "train.gan.scheduler.warmup_iters": 0}
    multistep = SchedulerOpt(milestones=[5, 9], gamma=0.5, warmup_iters=2)
    assert {k: v for k, v in training_settings(saved(OptimOpt().lr, multistep)).items() if ".scheduler." in k} == {
        "train.gan.scheduler.type": "MultiStepLR", "train.gan.scheduler.milestones": [5, 9],
        "train.gan.scheduler.gamma": 0.5, "train.gan.scheduler.warmup_iters": 2}


def test_schedule_settings_that_cannot_act_within_their_phase_are_named():
    import yaml

    from esrgan.engine.trainer import schedule_warnings
    from esrgan.options import REPO_ROOT, TrainOptions, parse_options

    raw = yaml.safe_load((REPO_ROOT / "options" / "train_ESRGAN.yml").read_text(encoding="utf-8"))
    o = parse_options(TrainOptions, raw, check_paths=False)
    assert schedule_warnings(o) == []  # the paper's schedule
    o.train.gan.niter = 100_000  # a shorter GAN phase: milestones 200k and 300k are never reached
    o.train.psnr.scheduler.warmup_iters = o.train.psnr.niter
    assert schedule_warnings(o) == [
        "train.psnr.scheduler.warmup_iters 1000000: the lr warms up for the whole phase of 1000000 iterations",
        "train.gan.scheduler.milestones [100000, 200000, 300000] never take effect: milestones count from the "
        "start of the phase, which has 100000 iterations (train.gan.niter)"]
    # A run resumed in the GAN phase hears only of that phase's settings.
    assert schedule_warnings(o, resumed_at=o.train.psnr.niter) == schedule_warnings(o)[1:]
    assert schedule_warnings(o, resumed_at=o.train.psnr.niter - 1) == schedule_warnings(o)


def test_a_gan_phase_from_a_random_generator_is_warned_about_unless_resumed():
    import yaml

    from esrgan.engine.trainer import schedule_warnings
    from esrgan.options import REPO_ROOT, TrainOptions, parse_options

    raw = yaml.safe_load((REPO_ROOT / "options" / "train_ESRGAN.yml").read_text(encoding="utf-8"))
    o = parse_options(TrainOptions, raw, check_paths=False)
    o.train.psnr.niter = 0
    assert schedule_warnings(o) == [
        "train.psnr.niter is 0 and path.pretrain_model_G is not set: the GAN phase starts from a RANDOM generator. "
        "The paper's starts from the PSNR-oriented model: give it as path.pretrain_model_G, or train phase 1 "
        "(train.psnr.niter)"]
    assert schedule_warnings(o, resumed_at=0) == []
    o.path.pretrain_model_G = "RRDB_PSNR_x4.pth"
    assert schedule_warnings(o) == []
