"""Long runs: exact resume, auto-resume, signals, SIGKILL at a random moment, non-finite losses, EMA, pruning."""

import logging
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from esrgan.engine import checkpoint
from esrgan.engine.trainer import train
from esrgan.options import REPO_ROOT, TrainOptions, apply_overrides, parse_options

# The small validation photos as training set: the same code path, less decoding per sample.
TINY = {"datasets.train.dataroot_GT": str(REPO_ROOT / "datasets" / "demo" / "val"),
        "network_G.nf": 8, "network_G.nb": 1, "network_G.gc": 4, "network_D.nf": 4,
        "datasets.train.batch_size": 2, "datasets.train.n_workers": 0, "datasets.val": None,
        "network_F.feature_layer": 8, "logger.print_freq": 1, "logger.use_tb_logger": False}


def options(root: Path, **overrides) -> TrainOptions:
    raw = yaml.safe_load((REPO_ROOT / "options" / "train_demo.yml").read_text())
    settings = TINY | {"name": "run", "path.experiments_root": str(root)} | overrides
    return parse_options(TrainOptions, apply_overrides(raw, [f"{k}={as_yaml(v)}" for k, v in settings.items()]))


def as_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("psnr_iters", [3, 2], ids=["resume-at-phase-switch", "resume-inside-gan-phase"])
def test_stop_and_resume_gives_bitwise_the_same_weights_as_a_straight_run(tmp_path, psnr_iters):
    settings = {"train.psnr.niter": psnr_iters, "train.gan.niter": 6 - psnr_iters, "logger.save_freq": 3,
                "train.ema_decay": 0.9, "datasets.train.dataset_enlarge_ratio": 1}
    straight = train(options(tmp_path / "a", **settings))
    state = straight / "training_state" / "3.state"
    resumed = train(options(tmp_path / "b", **settings, **{"path.resume_state": str(state)}))
    a, b = checkpoint.load_training_state(straight / "training_state" / "6.state"), \
        checkpoint.load_training_state(resumed / "training_state" / "6.state")
    for net in ("G", "G_ema", "D"):
        for key, value in a["model"]["networks"][net].items():
            assert torch.equal(value, b["model"]["networks"][net][key]), f"{net}.{key}"
    for name in ("6_G.pth", "6_D.pth"):
        assert all(torch.equal(v, weights(resumed / "models" / name)[k])
                   for k, v in weights(straight / "models" / name).items())


def test_resuming_inside_an_epoch_continues_with_its_next_batch(tmp_path):
    """3 images visited 4 times an epoch in batches of 2: 6 iterations an epoch, and iteration 3's state resumes
    at the epoch's 7th sample (its 4th batch), not at its 4th sample."""
    settings = {"model": "sr", "train.psnr.niter": 6, "train.gan.niter": 0, "logger.save_freq": 3,
                "datasets.train.dataset_enlarge_ratio": 4}
    straight = train(options(tmp_path / "a", **settings))
    resumed = train(options(tmp_path / "b", **settings,
                            **{"path.resume_state": str(straight / "training_state" / "3.state")}))
    assert checkpoint.load_training_state(straight / "training_state" / "3.state")["epoch_position"] == [0, 3]
    a, b = weights(straight / "models" / "6_G.pth"), weights(resumed / "models" / "6_G.pth")
    assert all(torch.equal(value, b[key]) for key, value in a.items())


def final_networks(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return checkpoint.load_training_state(run / "training_state" / "6.state")["model"]["networks"]


def log_text(run: Path) -> str:
    (log_file,) = run.glob("train_*.log")
    return log_file.read_text()


def test_resuming_inside_the_gan_phase_keeps_the_saved_settings_and_names_the_options_it_ignores(tmp_path):
    settings = {"train.psnr.niter": 2, "train.gan.niter": 4, "logger.save_freq": 3,
                "datasets.train.dataset_enlarge_ratio": 1}
    straight = train(options(tmp_path / "a", **settings))
    changed = {"train.gan.optim_G.lr": 5e-4, "train.gan.optim_D.beta2": 0.9, "train.gan.scheduler.milestones": [1],
               "train.psnr.optim_G.lr": 5e-3}  # the PSNR phase is over: not worth a word
    resumed = train(options(tmp_path / "b", **settings, **changed,
                            **{"path.resume_state": str(straight / "training_state" / "3.state")}))
    for net, values in final_networks(straight).items():  # the saved settings were used
        assert all(torch.equal(v, final_networks(resumed)[net][k]) for k, v in values.items()), net
    lines = log_text(resumed).splitlines()
    (at,) = [i for i, line in enumerate(lines) if "these options of this run have no effect" in line]
    assert lines[at + 1 : at + 5] == [  # each difference, and nothing else
        "  train.gan.optim_D.beta2: 0.99 in the training state, 0.9 in the options",
        "  train.gan.optim_G.lr: 0.0001 in the training state, 0.0005 in the options",
        "  train.gan.scheduler.milestones: [40] in the training state, [1] in the options",
        "To train with them, start a new run from the saved weights (path.pretrain_model_G / pretrain_model_D)."]


def test_a_state_of_the_psnr_phase_leaves_the_gan_phase_settings_to_the_options(tmp_path):
    settings = {"train.psnr.niter": 3, "train.gan.niter": 3, "logger.save_freq": 2,
                "datasets.train.dataset_enlarge_ratio": 1}
    first = train(options(tmp_path / "a", **settings))
    gan = {"train.gan.optim_G.lr": 5e-4, "train.gan.optim_D.lr": 3e-4, "train.gan.scheduler.milestones": [1]}
    straight = train(options(tmp_path / "b", **settings, **gan))
    resumed = train(options(tmp_path / "c", **settings, **gan,
                            **{"path.resume_state": str(first / "training_state" / "2.state")}))
    for net, values in final_networks(straight).items():
        assert all(torch.equal(v, final_networks(resumed)[net][k]) for k, v in values.items()), net
    assert "Resumed from" in log_text(resumed) and "have no effect" not in log_text(resumed)


def test_auto_resume_without_a_state_starts_fresh_and_with_one_continues(tmp_path):
    run = train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 2}),
                auto_resume=True)
    assert checkpoint.saved_iterations(run) == [2]
    again = train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 4}),
                  auto_resume=True)
    assert again == run and checkpoint.saved_iterations(run) == [2, 4]
    assert not list(tmp_path.glob("run_archived_*"))
    # Found again once finished (a re-queued job, a torchrun restart after the last save): nothing to do.
    done = train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 4}),
                 auto_resume=True)
    assert done == run and checkpoint.saved_iterations(run) == [2, 4]
    with pytest.raises(ValueError, match=r"--auto_resume: .*4\.state is at iteration 4, and this run has 3 "
                                         r"iterations in all .*: nothing is left"):
        train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 3}), auto_resume=True)
    assert not list(tmp_path.glob("run_archived_*"))


def test_the_latest_marker_names_the_newest_complete_state(tmp_path):
    run = tmp_path / "run"
    net = torch.nn.Linear(1, 1)
    checkpoint.save_checkpoint(run, 5, {"G": net}, {"iter": 5})
    checkpoint.save_checkpoint(run, 10, {"G": net}, {"iter": 10})
    assert checkpoint.find_resume_state(run) == run / "training_state" / "10.state"
    (run / "training_state" / "latest").write_text("5\n")
    assert checkpoint.find_resume_state(run) == run / "training_state" / "5.state"
    (run / "training_state" / "latest").unlink()
    assert checkpoint.find_resume_state(run) == run / "training_state" / "10.state"


def test_keep_last_prunes_old_checkpoints_only_after_the_new_one(tmp_path):
    net = torch.nn.Linear(1, 1)
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(tmp_path, step, {"G": net, "D": net}, {"iter": step}, keep_last=2)
    assert checkpoint.saved_iterations(tmp_path) == [2, 3]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "2_D.pth", "2_G.pth", "3_D.pth", "3_G.pth", "latest_G.pth"]


def test_a_checkpoint_is_models_then_state_then_marker_each_atomic_and_pruning_comes_last(tmp_path, monkeypatch):
    net = torch.nn.Linear(1, 1)
    for step in (1, 2):
        checkpoint.save_checkpoint(tmp_path, step, {"G": net, "D": net}, {"iter": step}, keep_last=2)
    events = []
    real_replace, real_unlink = os.replace, Path.unlink

    def replace(src, dst):
        assert Path(src).parent == Path(dst).parent and Path(src).name.startswith(".")  # a temporary beside it
        events.append(f"write {Path(dst).relative_to(tmp_path)}")
        real_replace(src, dst)

    def unlink(path, missing_ok=False):
        if not path.name.startswith("."):  # not a temporary of atomic_output
            events.append(f"delete {path.relative_to(tmp_path)}")
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    checkpoint.save_checkpoint(tmp_path, 3, {"G": net, "D": net}, {"iter": 3}, keep_last=2)
    assert events[:5] == ["write models/3_G.pth", "write models/latest_G.pth", "write models/3_D.pth",
                          "write training_state/3.state", "write training_state/latest"]
    assert sorted(events[5:]) == ["delete models/1_D.pth", "delete models/1_G.pth", "delete training_state/1.state"]


def test_a_crash_while_the_state_is_written_leaves_the_previous_checkpoint_current(tmp_path, monkeypatch):
    net = torch.nn.Linear(1, 1)
    checkpoint.save_checkpoint(tmp_path, 1, {"G": net}, {"iter": 1}, keep_last=1)
    from esrgan.utils import files

    real_replace = files.os.replace

    def replace(source, target):
        if str(target).endswith(".state"):
            raise OSError("disk gone")  # the state's bytes are out, the rename has not happened
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        checkpoint.save_checkpoint(tmp_path, 2, {"G": net}, {"iter": 2}, keep_last=1)
    states = tmp_path / "training_state"
    assert sorted(p.name for p in states.iterdir()) == ["1.state", "latest"]  # no 2.state, no temporary
    assert (states / "latest").read_text() == "1\n"
    assert torch.load(checkpoint.find_resume_state(tmp_path), weights_only=True) == {"iter": 1}
    assert (tmp_path / "models" / "1_G.pth").is_file()  # not pruned: the new checkpoint never completed


def test_the_end_of_the_psnr_phase_moves_only_while_the_state_is_inside_it():
    inside, at_end, past = ({"iter": i, "psnr_niter": 4} for i in (2, 4, 6))
    assert checkpoint.check_phase_split(inside, "s", 4) is None
    assert checkpoint.check_phase_split(inside, "s", 10) == "the PSNR phase now ends at iteration 10 (it was to " \
                                                          "end at 4)"
    assert checkpoint.check_phase_split(at_end, "s", 6) is not None  # a longer PSNR phase, from its last state
    with pytest.raises(ValueError, match=r"path\.resume_state: s was saved at iteration 6 of a run whose PSNR phase "
                                         r"ended at 4; train\.psnr\.niter 5 would move that end under the GAN phase "
                                         r"it has started .* Set train\.psnr\.niter: 4"):
        checkpoint.check_phase_split(past, "s", 5)
    with pytest.raises(ValueError, match="would move that end before the state"):
        checkpoint.check_phase_split(at_end, "s", 3)
    assert checkpoint.check_phase_split({"iter": 6}, "s", 5) is None  # older states: not recorded, not checked


def test_keep_last_spares_the_protected_checkpoints(tmp_path):
    net = torch.nn.Linear(1, 1)
    for step in range(1, 6):
        checkpoint.save_checkpoint(tmp_path, step, {"G": net}, {"iter": step}, keep_last=2, keep=(2,))
    assert checkpoint.saved_iterations(tmp_path) == [2, 4, 5]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["2_G.pth", "4_G.pth", "5_G.pth",
                                                                       "latest_G.pth"]


def test_the_psnr_phase_end_is_saved_and_kept_whatever_save_freq_and_keep_last(tmp_path):
    run = train(options(tmp_path, **{"train.psnr.niter": 3, "train.gan.niter": 3, "logger.save_freq": 5,
                                     "logger.keep_last": 1}))
    assert checkpoint.saved_iterations(run) == [3, 6]
    assert sorted(p.name for p in (run / "models").iterdir()) == ["3_G.pth", "6_D.pth", "6_G.pth", "latest_G.pth"]


def test_after_resuming_an_older_state_keep_last_never_prunes_what_was_just_saved(tmp_path):
    """States 12 and 15 of an earlier continuation; resumed from 3, the run saves 6 and 9: those two are kept
    and `latest` names 9, whatever lies beyond."""
    net = torch.nn.Linear(1, 1)
    for step in (3, 12, 15):
        checkpoint.save_checkpoint(tmp_path, step, {"G": net}, {"iter": step})
    for step in (6, 9):
        checkpoint.save_checkpoint(tmp_path, step, {"G": net}, {"iter": step}, keep_last=2)
    assert checkpoint.saved_iterations(tmp_path) == [6, 9, 12, 15]
    assert checkpoint.find_resume_state(tmp_path) == tmp_path / "training_state" / "9.state"


def test_a_save_without_enough_disk_space_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: type("U", (), {"free": 1000})())
    with pytest.raises(checkpoint.DiskFullError) as info:
        checkpoint.save_checkpoint(tmp_path, 1, {"G": torch.nn.Linear(100, 100)}, {"iter": 1})
    # 1.2 x the weights' 40,400 bytes twice (models/1_G.pth and latest_G.pth)
    assert str(info.value) == (f"only 1.0 KiB free in {tmp_path}, a checkpoint needs about 95 KiB: free some space "
                               "or set logger.keep_last (to keep only the newest states)")
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())
    with pytest.raises(checkpoint.DiskFullError, match=r"free some space or lower logger\.keep_last$"):
        checkpoint.save_checkpoint(tmp_path, 1, {"G": torch.nn.Linear(100, 100)}, {"iter": 1}, keep_last=3)


def test_a_save_needs_a_fifth_more_room_than_the_tensors_take(tmp_path, monkeypatch):
    """The weights' 80,800 bytes (two files) fit in 90,000 free bytes, but with the margin for the encoding they
    need about 97,000: refused before anything is written."""
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: type("U", (), {"free": 90_000})())
    with pytest.raises(checkpoint.DiskFullError, match=r"^only 88 KiB free in .*, a checkpoint needs about 95 KiB"):
        checkpoint.save_checkpoint(tmp_path, 1, {"G": torch.nn.Linear(100, 100)}, {"iter": 1})
    assert checkpoint.saved_iterations(tmp_path) == []


def test_the_log_names_the_networks_with_their_parameter_counts_and_the_generator_validation_scores(tmp_path):
    """Counted by hand: G nf 8, nb 1, gc 4 x4 = conv_first 224 + one RRDB 3 x 3,768 + trunk_conv, upconv1/2,
    HRconv 4 x 584 + conv_last 219 = 14,083; D nf 4 = 53,880 in its convolutions and batch norms + the linear
    layers 51,300 + 101 = 105,281."""
    def networks_line(run: Path) -> str:
        (log_file,) = run.glob("train_run_*.log")
        (line,) = [line for line in log_file.read_text(encoding="utf-8").splitlines() if " INFO: G: " in line]
        return line.partition(" INFO: ")[2]

    run = train(options(tmp_path / "esrgan", **{"train.psnr.niter": 1, "train.gan.niter": 1,
                                                "train.ema_decay": 0.5}))
    assert networks_line(run) == (
        "G: RRDBNet nf 8, nb 1, gc 4, x4, 14,083 parameters; D: discriminator_vgg_128 nf 4, 105,281 parameters; "
        f"validation and best_G score the EMA of G (train.ema_decay 0.5); PyTorch {torch.__version__}, Python "
        f"{platform.python_version()}")
    run = train(options(tmp_path / "sr", **{"model": "sr", "train.psnr.niter": 1, "train.gan.niter": 0}))
    assert networks_line(run).startswith("G: RRDBNet nf 8, nb 1, gc 4, x4, 14,083 parameters; PyTorch ")


def test_training_state_holds_only_safely_loadable_data(tmp_path):
    run = train(options(tmp_path, **{"train.psnr.niter": 1, "train.gan.niter": 1, "train.ema_decay": 0.5}))
    state = torch.load(run / "training_state" / "2.state", weights_only=True)
    assert set(state) == {"iter", "phase", "psnr_niter", "model", "rng", "best", "epoch_position", "data_order"}
    assert set(state["model"]["optimizers"]) == {"G_psnr", "G", "D"}
    assert state["rng"]["torch"].dtype == torch.uint8


def launch(root: Path, *extra: str, total: int = 24, workers: int = 0) -> subprocess.Popen:
    args = [sys.executable, str(REPO_ROOT / "train.py"), "-opt", str(REPO_ROOT / "options" / "train_demo.yml")]
    settings = TINY | {"name": "run", "path.experiments_root": str(root), "model": "sr", "train.gan.niter": 0,
                       "train.psnr.niter": total, "logger.save_freq": 1, "logger.keep_last": 3,
                       "datasets.train.n_workers": workers}
    for key, value in settings.items():
        args += ["--set", f"{key}={'~' if value is None else value}"]
    # A session of its own, so that a signal can go to the whole process group as schedulers send it.
    return subprocess.Popen([*args, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=root.parent, start_new_session=True)


def wait_for_state(run: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not checkpoint.saved_iterations(run):
        assert time.time() < deadline, "no training state appeared"
        time.sleep(0.05)


def test_sigterm_to_the_process_group_saves_a_complete_state_and_auto_resume_finishes(tmp_path):
    proc = launch(tmp_path / "exp", workers=2)
    wait_for_state(tmp_path / "exp" / "run")
    os.killpg(proc.pid, signal.SIGTERM)  # the training process and its data-loader workers, like Slurm
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err  # stopped, not finished: `&& python test.py` stops here
    assert "SIGTERM received: stopping after this iteration" in err
    assert "Stopped by SIGTERM at iteration" in err
    stopped_at = checkpoint.saved_iterations(tmp_path / "exp" / "run")[-1]
    assert stopped_at < 24
    proc = launch(tmp_path / "exp", "--auto_resume")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"at iteration {stopped_at}" in err
    assert checkpoint.saved_iterations(tmp_path / "exp" / "run")[-1] == 24


def test_sigkill_at_a_random_moment_then_auto_resume_completes(tmp_path):
    rng = random.Random(os.getpid())
    proc = launch(tmp_path / "exp")
    wait_for_state(tmp_path / "exp" / "run")
    time.sleep(rng.uniform(0.0, 1.5))  # saves happen every iteration: the kill often lands inside one
    proc.kill()
    proc.wait(timeout=60)
    proc = launch(tmp_path / "exp", "--auto_resume")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Resumed from" in err
    final = checkpoint.load_training_state(tmp_path / "exp" / "run" / "training_state" / "24.state")
    assert final["iter"] == 24


def test_a_safetensors_copy_of_the_generator_is_written_on_request(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    run = train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 1,
                                     "logger.save_safetensors": True}))
    copy = safetensors.load_file(run / "models" / "latest_G.safetensors")
    assert all(torch.equal(copy[k], v) for k, v in weights(run / "models" / "latest_G.pth").items())


def test_save_safetensors_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ValueError, match="pip install safetensors"):
        train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 1,
                                   "logger.save_safetensors": True}))


# ------------------------------------------------------------------------------------------ bad starts
@pytest.fixture(scope="module")
def saved_state(tmp_path_factory) -> Path:
    """The training state at the end of a 3-iteration ESRGAN run (2 PSNR + 1 GAN)."""
    root = tmp_path_factory.mktemp("state")
    run = train(options(root, **{"train.psnr.niter": 2, "train.gan.niter": 1}))
    return run / "training_state" / "3.state"


def test_a_start_that_fails_leaves_the_earlier_run_where_it_was(tmp_path):
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    (models / "notes.pth").write_text("not weights")
    with pytest.raises(ValueError, match=r"notes\.pth: it is not a torch\.save"):
        train(options(tmp_path, **{"path.pretrain_model_G": str(models / "notes.pth")}))
    assert (models / "notes.pth").read_text() == "not weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing archived, nothing added


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train.psnr.niter": 2, "train.gan.niter": 1}, r"3\.state is at iteration 3, and this run has 3 iterations in "
                                                    r"all \(train\.psnr\.niter \+ train\.gan\.niter\): it is complete"),
    ({"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 5},
     r"does not fit this run's model .*: the training state has networks entries for \['D'\] that this model has not"),
    ({"network_G.nf": 16, "train.psnr.niter": 2, "train.gan.niter": 3},
     r"does not fit this run's model \(was it saved with other model, network_G or network_D options\?\): "
     r"networks entry G: it holds an RRDBNet with nf=8, nb=1, gc=4, scale 4 \(in_nc=3, out_nc=3\), this model is one "
     r"with nf=16"),
    ({"train.psnr.niter": 1, "train.gan.niter": 5}, r"3\.state was saved at iteration 3 of a run whose PSNR phase "
                                                    r"ended at 2; train\.psnr\.niter 1 would move that end"),
    ({"train.psnr.niter": 2, "train.gan.niter": 3, "train.gan.scheduler.type": "CosineAnnealingRestartLR",
      "train.gan.scheduler.periods": [10]},
     r"3\.state: the schedule saved there is MultiStepLR and train\.gan\.scheduler\.type is "
     r"CosineAnnealingRestartLR: a schedule that has started keeps its type"),
], ids=["complete", "other-model", "other-network", "moved-phase-end", "other-schedule-type"])
def test_a_state_that_does_not_fit_the_run_is_refused_before_anything_is_written(tmp_path, saved_state, overrides,
                                                                                message):
    with pytest.raises(ValueError, match=message):
        train(options(tmp_path, **{"path.resume_state": str(saved_state)} | overrides))
    assert not (tmp_path / "run").exists()


def test_a_state_saved_at_the_end_of_the_psnr_phase_resumes_under_another_psnr_schedule(tmp_path):
    """The PSNR phase is over at that state: its schedule's type (which a started schedule keeps) may differ."""
    esrgan = {"train.psnr.niter": 2, "train.gan.niter": 1, "logger.save_freq": 2}
    run = train(options(tmp_path, **esrgan))
    cosine = {"train.psnr.scheduler.type": "CosineAnnealingRestartLR", "train.psnr.scheduler.periods": [2],
              "path.resume_state": str(run / "training_state" / "2.state")}
    train(options(tmp_path, **esrgan, **cosine))
    assert checkpoint.saved_iterations(run) == [2, 3]


def test_a_state_file_that_would_run_code_is_refused_without_torchs_advice_to_unpickle_it(tmp_path,
                                                                                           code_running_pickle):
    torch.save({"iter": code_running_pickle}, tmp_path / "evil.state")
    with pytest.raises(ValueError, match=r"cannot load the training state .*evil\.state: it is not a file that "
                                         r"train\.py saved, or it is damaged \(UnpicklingError: it asks for "
                                         r"(posix|nt|os)\.system, which could run arbitrary code\)") as info:
        checkpoint.load_training_state(tmp_path / "evil.state")
    assert "weights_only" not in str(info.value)


def test_a_damaged_newest_state_under_auto_resume_says_how_to_continue_from_the_one_before(tmp_path):
    sr = {"model": "sr", "train.gan.niter": 0, "logger.save_freq": 1}
    run = train(options(tmp_path, **sr, **{"train.psnr.niter": 2}))
    newest = run / "training_state" / "2.state"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short: not a zip archive any more
    with pytest.raises(ValueError) as info:
        train(options(tmp_path, **sr, **{"train.psnr.niter": 3}), auto_resume=True)
    message = str(info.value)
    # torch's long message is cut after a whole sentence
    assert "(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory. This " \
           "is an internal miniz error.). Training states are" in message
    assert message.endswith(f"; to continue from the state before it, move {newest} out of the way (--auto_resume "
                            "then takes training_state/1.state)")
    newest.rename(tmp_path / "damaged.state")
    train(options(tmp_path, **sr, **{"train.psnr.niter": 3}), auto_resume=True)
    assert checkpoint.saved_iterations(run) == [1, 2, 3]


def test_weights_given_as_a_training_state_say_what_a_state_is(tmp_path, saved_state):
    weights_file = saved_state.parent.parent / "models" / "3_G.pth"
    with pytest.raises(ValueError, match=r"3_G\.pth is not a training state \(no iter, model, rng, best\): "
                                         r"training states are .*; to start from a generator's weights use "
                                         r"path\.pretrain_model_G"):
        train(options(tmp_path, **{"path.resume_state": str(weights_file)}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_asked_for_on_a_machine_without_it_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="device: 'cuda' was asked for but CUDA is not available; use auto or cpu"):
        train(options(tmp_path, device="cuda"))


def test_a_run_that_crashes_with_loader_workers_exits_instead_of_hanging(tmp_path):
    """Workers ignore SIGTERM (so that a scheduler's signal reaches only the trainer); an uncaught error must
    still end the process, not leave Python's exit waiting for them."""
    crash = """
import sys
from esrgan.cli import train_main
from esrgan.models.esrgan import SRModel

def broken(self):
    raise RuntimeError("injected failure")

SRModel._psnr_step = broken
sys.exit(train_main(sys.argv[1:]))
"""
    args = [sys.executable, "-c", crash, "-opt", str(REPO_ROOT / "options" / "train_demo.yml")]
    settings = TINY | {"name": "run", "path.experiments_root": str(tmp_path), "model": "sr", "train.gan.niter": 0,
                       "train.psnr.niter": 5, "datasets.train.n_workers": 2}
    for key, value in settings.items():
        args += ["--set", f"{key}={'~' if value is None else value}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "codes")}
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 1 and "RuntimeError: injected failure" in result.stderr


# ------------------------------------------------------------------------------------------ what is logged
def test_the_psnr_phase_losses_are_reported_before_the_gan_phase_starts(tmp_path):
    """A print window that spans the switch would average L1 with the GAN phase's weighted terms."""
    run = train(options(tmp_path, **{"train.psnr.niter": 3, "train.gan.niter": 2, "logger.print_freq": 50}))
    (log_file,) = run.glob("train_*.log")
    reports = [line.split("INFO: ", 1)[1] for line in log_file.read_text(encoding="utf-8").splitlines()
               if "s/it, data wait" in line]
    assert [r.split(")")[0] + ")" for r in reports] == ["iter 3 (psnr)", "iter 5 (gan)"]
    assert "l_g_pix" in reports[0] and "l_d_real" not in reports[0] and "l_d_real" in reports[1]


def test_the_pace_leaves_out_validation_and_checkpoints():
    from esrgan.data.loader import DataWait
    from esrgan.engine.trainer import Pace

    pace = Pace(10, DataWait())
    with pace.pause():
        time.sleep(0.3)  # a validation
    time.sleep(0.02)
    window, seconds_per_iter, wait = pace.read(12)
    assert window == 2 and 0.005 < seconds_per_iter < 0.1 and wait == 0.0
    assert pace.step == 12 and pace.paused == 0.0


def test_resuming_an_older_state_sets_the_later_files_aside_and_puts_its_best_generator_back(tmp_path, package_log):
    import numpy as np

    from esrgan.engine.checkpoint import restore_best, set_aside_later
    from esrgan.utils.image import write_image

    for step in (3, 6, 10):
        checkpoint.save_checkpoint(tmp_path, step, {"G": torch.nn.Linear(1, 1)}, {"iter": step})
        write_image(tmp_path / "val_images" / "a_1" / f"a_1_{step}.png", np.zeros((2, 2, 3), np.uint8))
    write_image(tmp_path / "val_images" / "a_1" / "a_1_x.png", np.zeros((2, 2, 3), np.uint8))  # not an iteration's
    best_file = tmp_path / "models" / "best_G.pth"
    torch.save({"weight": torch.zeros(1, 1)}, best_file)  # the best of the abandoned continuation
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    aside, later = set_aside_later(tmp_path, 3)
    assert later == [6, 10] and aside.parent == tmp_path and aside.name.startswith("abandoned_")
    moved = {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()}
    assert sorted(map(str, moved)) == sorted(
        ["models/best_G.pth", "models/latest_G.pth", "models/6_G.pth", "models/10_G.pth", "training_state/6.state",
         "training_state/10.state", "val_images/a_1/a_1_6.png", "val_images/a_1/a_1_10.png"])
    assert all(before[path] == data for path, data in moved.items())  # as they lay
    assert best_file.read_bytes() == before[Path("models/best_G.pth")]  # copied: restore_best decides
    assert (tmp_path / "training_state" / "latest").read_text() == "3\n"
    assert all(torch.equal(v, weights(tmp_path / "models" / "3_G.pth")[k])
               for k, v in weights(tmp_path / "models" / "latest_G.pth").items())
    assert (tmp_path / "val_images" / "a_1" / "a_1_x.png").is_file()
    assert checkpoint.find_resume_state(tmp_path) == tmp_path / "training_state" / "3.state"
    assert set_aside_later(tmp_path, 3) is None  # nothing later now

    restore_best(tmp_path, 2)  # the resumed best was not saved as a model: kept, with a warning
    assert best_file.read_bytes() == before[Path("models/best_G.pth")]
    assert "best_G.pth may be the abandoned continuation's: the resumed run's best (iteration 2) was not saved as " \
           "models/2_G.pth" in package_log.text
    restore_best(tmp_path, 3)
    assert all(torch.equal(v, weights(tmp_path / "models" / "3_G.pth")[k]) for k, v in weights(best_file).items())
    restore_best(tmp_path, 0)  # no validation before the resumed state: best_G.pth was the continuation's
    assert not best_file.exists()


def test_auto_resume_after_a_stop_between_a_validation_and_the_next_save_keeps_the_best_generator(tmp_path,
                                                                                                  monkeypatch):
    """Validation images of the iterations after the newest state are set aside, but best_G.pth, of a validation
    before that state and never saved as a model of its own, stays."""
    from esrgan.engine import trainer

    check_health, validate, crash_at = trainer._check_health, trainer.validate, [6]

    def crash(model, max_nonfinite, step):
        check_health(model, max_nonfinite, step)
        if step in crash_at:
            raise RuntimeError("killed")

    def best_at_3(model, dataset, evaluator, scale, step, *args, **kwargs):
        return validate(model, dataset, evaluator, scale, step, *args, **kwargs) | {"psnr": 30.0 if step == 3 else 10.0}

    monkeypatch.setattr(trainer, "_check_health", crash)
    monkeypatch.setattr(trainer, "validate", best_at_3)
    val = {"name": "v", "dataroot_GT": str(REPO_ROOT / "datasets" / "demo" / "val")}
    sr = {"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 8, "train.val_freq": 1, "logger.save_freq": 4,
          "datasets.val": val}
    with pytest.raises(RuntimeError, match="killed"):
        train(options(tmp_path, **sr))
    run = tmp_path / "run"
    best = (run / "models" / "best_G.pth").read_bytes()  # iteration 3's, not saved as models/3_G.pth
    crash_at.clear()
    train(options(tmp_path, **sr), auto_resume=True)
    assert (run / "models" / "best_G.pth").read_bytes() == best
    (aside,) = run.glob("abandoned_*")
    assert sorted(p.name for p in (aside / "val_images").rglob("*.png")) == [
        f"{name}_5.png" for name in ("brick", "grass", "gravel")]  # iteration 6 stopped before its validation
    assert (aside / "models" / "best_G.pth").read_bytes() == best


def test_resuming_an_older_state_of_the_run_puts_that_states_best_generator_back(tmp_path, monkeypatch):
    """The run went on to a better iteration 6 after the state of iteration 3 (its best); resumed from that state,
    whose later validations do not beat it, models/best_G.pth is iteration 3's generator again."""
    from esrgan.engine import trainer

    validate, scores = trainer.validate, {3: 30.0, 6: 40.0}

    def best_at_3_then_6(model, dataset, evaluator, scale, step, *args, **kwargs):
        return validate(model, dataset, evaluator, scale, step, *args, **kwargs) | {"psnr": scores.get(step, 10.0)}

    monkeypatch.setattr(trainer, "validate", best_at_3_then_6)
    val = {"name": "v", "dataroot_GT": str(REPO_ROOT / "datasets" / "demo" / "val")}
    sr = {"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 6, "train.val_freq": 3, "logger.save_freq": 3,
          "datasets.val": val}
    run = train(options(tmp_path, **sr))
    assert (run / "models" / "best_G.pth").read_bytes() != (run / "models" / "3_G.pth").read_bytes()
    scores.clear()
    train(options(tmp_path, **sr, **{"path.resume_state": str(run / "training_state" / "3.state")}))
    best, at_3 = weights(run / "models" / "best_G.pth"), weights(run / "models" / "3_G.pth")
    assert all(torch.equal(value, best[key]) for key, value in at_3.items())


def test_the_best_record_is_kept_per_phase_and_a_nan_psnr_never_wins():
    from esrgan.engine.trainer import _no_best, _track_best

    best, improved = _track_best(_no_best(), {"psnr": 20.0, "ssim": 0.5}, 10, "psnr")
    assert improved and best == {"psnr": 20.0, "ssim": 0.5, "iter": 10, "phase": "psnr"}
    assert _track_best(best, {"psnr": 19.0, "ssim": 0.9}, 20, "psnr") == (best, False)
    assert _track_best(best, {"psnr": math.nan}, 20, "psnr") == (best, False)
    # The GAN phase has its own record: a lower PSNR than the PSNR phase's best is its first best.
    best, improved = _track_best(best, {"psnr": 18.0}, 30, "gan")
    assert improved and best["psnr"] == 18.0 and best["iter"] == 30 and math.isnan(best["ssim"])
    assert _track_best(best, {"psnr": math.nan}, 40, "gan") == (best, False)
    best, improved = _track_best(_no_best(), {"psnr": math.nan}, 30, "gan")
    assert not improved and best == _no_best()


def test_a_training_set_too_small_for_a_batch_per_process_is_refused(tmp_path):
    from esrgan.engine.trainer import build_datasets

    o = options(tmp_path, **{"datasets.train.batch_size": 2, "datasets.train.dataset_enlarge_ratio": 1})
    assert len(build_datasets(o, world_size=2)[0]) == 3  # the 3 demo validation photos: 2 and 1 per process
    with pytest.raises(ValueError, match=r"datasets.train: 3 images x dataset_enlarge_ratio 1 shared by 3 processes "
                                         r"give each fewer than batch_size 2"):
        build_datasets(o, world_size=3)


def test_resuming_another_runs_state_moves_the_earlier_run_of_this_name_aside_instead_of_overwriting_it(tmp_path):
    sr = {"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 2, "logger.save_freq": 2,
          "datasets.train.dataset_enlarge_ratio": 1}
    run_a = train(options(tmp_path, **sr, name="a"))
    run_b = train(options(tmp_path, **sr, name="b", **{"train.manual_seed": 77}))
    b_weights = weights(run_b / "models" / "2_G.pth")
    resumed = train(options(tmp_path, **(sr | {"train.psnr.niter": 4}), name="b",
                            **{"path.resume_state": str(run_a / "training_state" / "2.state")}))
    assert resumed == run_b and checkpoint.saved_iterations(run_b) == [4]  # a's continuation, in a new folder
    (archived,) = tmp_path.glob("b_archived_*")
    assert checkpoint.saved_iterations(archived) == [2]
    assert all(torch.equal(v, b_weights[k]) for k, v in weights(archived / "models" / "2_G.pth").items())
    assert f"An earlier run {run_b} was moved to {archived}" in log_texts(run_b)  # the new run's log says so


@pytest.mark.parametrize("at", [2, 3], ids=["inside-the-run", "at-its-last-step"])
def test_a_stop_signal_raises_training_stopped_unless_the_run_is_complete(tmp_path, monkeypatch, at):
    from esrgan.engine import trainer

    check_health = trainer._check_health

    def signal_at(model, max_nonfinite, step):  # runs at every print, inside the iteration
        check_health(model, max_nonfinite, step)
        if step == at:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer, "_check_health", signal_at)
    o = options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 3, "logger.save_freq": 1})
    if at < 3:
        with pytest.raises(trainer.TrainingStopped) as info:
            train(o)
        assert info.value.exit_status == 128 + signal.SIGTERM
    else:
        assert train(o) == tmp_path / "run"  # finished: exit status 0, nothing to continue
    assert checkpoint.saved_iterations(tmp_path / "run")[-1] == at


def test_the_loader_workers_and_the_process_group_are_released_when_closing_the_run_fails(tmp_path, monkeypatch):
    """The workers ignore SIGTERM: a run whose TensorBoard writer fails to close (a full disk) must still shut them
    down, or the process hangs at exit."""
    from esrgan.engine import trainer

    released = []

    def close_fails(run):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer._Run, "close", close_fails)
    monkeypatch.setattr(trainer, "stop_workers", lambda loader: released.append("workers"))
    monkeypatch.setattr(trainer, "shutdown", lambda world: released.append("process group"))
    with pytest.raises(OSError, match="No space left on device"):
        train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 1}))
    assert released == ["workers", "process group"]


def test_in_the_gan_phase_best_g_is_never_a_psnr_phase_model(tmp_path, monkeypatch):
    """Not before the GAN phase's first validation either, nor after a resume at the switch that abandoned a GAN
    continuation (whose best_G.pth was written before any of its checkpoints)."""
    from esrgan.engine import trainer

    check_health, crash_at = trainer._check_health, [4]

    def crash(model, max_nonfinite, step):
        check_health(model, max_nonfinite, step)
        if step in crash_at:
            crash_at.clear()
            raise RuntimeError("killed")

    monkeypatch.setattr(trainer, "_check_health", crash)
    val = {"name": "v", "dataroot_GT": str(REPO_ROOT / "datasets" / "demo" / "val")}
    settings = {"train.psnr.niter": 2, "train.gan.niter": 4, "datasets.val": val}
    models = tmp_path / "run" / "models"
    with pytest.raises(RuntimeError, match="killed"):  # after iteration 3's validation, before its checkpoint
        train(options(tmp_path, **settings, **{"train.val_freq": 1, "logger.save_freq": 100}))
    assert (models / "best_G.pth").is_file() and checkpoint.saved_iterations(tmp_path / "run") == [2]
    crash_at.append(3)  # resumed at the switch: stopped at the GAN phase's first iteration, before validating
    with pytest.raises(RuntimeError, match="killed"):
        train(options(tmp_path, **settings, **{"train.val_freq": 100}), auto_resume=True)
    assert not (models / "best_G.pth").exists()
    assert sorted(p.name for p in models.iterdir()) == ["2_G.pth", "latest_G.pth"]



def test_resuming_an_older_gan_phase_state_before_its_first_validation_leaves_no_best_g(tmp_path, monkeypatch):
    """The state's best record is the PSNR phase's: its model must not come back as models/best_G.pth, which the
    straight run had deleted at the switch."""
    from esrgan.engine import trainer

    check_health, crash_at = trainer._check_health, []

    def crash(model, max_nonfinite, step):
        check_health(model, max_nonfinite, step)
        if step in crash_at:
            raise RuntimeError("killed")

    monkeypatch.setattr(trainer, "_check_health", crash)
    val = {"name": "v", "dataroot_GT": str(REPO_ROOT / "datasets" / "demo" / "val")}
    settings = {"train.psnr.niter": 2, "train.gan.niter": 4, "datasets.val": val, "train.val_freq": 2,
                "logger.save_freq": 1}
    run = train(options(tmp_path, **settings))
    assert (run / "models" / "best_G.pth").is_file() and checkpoint.saved_iterations(run) == [1, 2, 3, 4, 5, 6]
    crash_at.append(4)  # before iteration 4's validation, the resumed GAN phase's first
    with pytest.raises(RuntimeError, match="killed"):
        train(options(tmp_path, **settings, **{"path.resume_state": str(run / "training_state" / "3.state")}))
    assert not (run / "models" / "best_G.pth").exists()
    (aside,) = run.glob("abandoned_*")  # the straight run's best, with its later checkpoints
    assert (aside / "models" / "best_G.pth").is_file() and checkpoint.saved_iterations(aside) == [4, 5, 6]


def test_resuming_an_older_state_of_the_run_keeps_the_later_checkpoints_it_would_overwrite(tmp_path):
    val = {"name": "v", "dataroot_GT": str(REPO_ROOT / "datasets" / "demo" / "val")}
    sr = {"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 4, "logger.save_freq": 2, "train.val_freq": 2,
          "datasets.val": val}
    run = train(options(tmp_path, **sr))
    later = {name: (run / name).read_bytes() for name in ("models/4_G.pth", "training_state/4.state")}
    train(options(tmp_path, **sr, **{"train.manual_seed": 5,
                                      "path.resume_state": str(run / "training_state" / "2.state")}))
    (aside,) = run.glob("abandoned_*")
    assert all((aside / name).read_bytes() == data for name, data in later.items())
    assert (run / "models" / "4_G.pth").read_bytes() != later["models/4_G.pth"]  # the resumed run's own
    assert sorted(p.name for p in (aside / "val_images").rglob("*.png")) == ["brick_4.png", "grass_4.png",
                                                                                "gravel_4.png"]
    assert (f"path.resume_state: this run had gone on past iteration 2; what it wrote for iterations 4 "
            f"(checkpoints, validation images, its latest generator and a copy of best_G.pth) was moved to {aside}"
            ) in log_texts(run)

def test_validation_images_that_cannot_be_written_are_reported_and_training_goes_on(tmp_path, monkeypatch):
    from esrgan.engine import trainer

    def disk_full(path, img, png_level=None):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(trainer, "write_image", disk_full)
    val = {"name": "v", "dataroot_GT": str(REPO_ROOT / "datasets" / "demo" / "val")}
    run = train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 2,
                                     "train.val_freq": 1, "datasets.val": val}))
    assert checkpoint.saved_iterations(run) == [2]
    text = log_text(run)
    for step in (1, 2):  # once per validation, not per image
        assert text.count(f"validation images of iteration {step} not written ([Errno 28] No space left on "
                          "device: ") == 1
    assert "Validation v at iter 2: PSNR" in text


def test_training_data_inside_the_run_folder_a_new_run_would_move_aside_is_refused(tmp_path):
    data = tmp_path / "run" / "crops"
    data.mkdir(parents=True)
    for photo in (REPO_ROOT / "datasets" / "demo" / "val").iterdir():
        (data / photo.name).write_bytes(photo.read_bytes())
    with pytest.raises(ValueError, match=r"^datasets\.train\.dataroot_GT \(.*/run/crops\) inside .*/run, the "
                                         r"folder of an earlier run of this name"):
        train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 1,
                                   "datasets.train.dataroot_GT": str(data)}))
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and [p.name for p in (tmp_path / "run").iterdir()] == \
        ["crops"]


def test_an_option_file_or_vgg_weights_inside_the_run_folder_a_new_run_would_move_aside_is_refused(tmp_path,
                                                                                                     capsys):
    """A copy of the options kept in the run folder (as BasicSR keeps its own) and run again would be moved into
    the archive, and the same command would fail the next time."""
    from esrgan.cli import train_main

    run = tmp_path / "run"
    run.mkdir()
    settings = {**TINY, "name": "run", "path.experiments_root": str(tmp_path), "model": "sr", "train.gan.niter": 0}
    options_file = run / "my.yml"
    options_file.write_text((REPO_ROOT / "options" / "train_demo.yml").read_text())
    args = ["-opt", str(options_file), "--set", *[f"{k}={as_yaml(v)}" for k, v in settings.items()]]
    assert train_main(args) == 2
    assert f"error: the option file ({options_file}) inside {run}, the folder of an earlier run" in \
        capsys.readouterr().err
    import torchvision

    torch.save(torchvision.models.vgg19().features[:9].state_dict(), run / "vgg.pth")  # TINY's feature_layer 8
    with pytest.raises(ValueError, match=r"^network_F\.weights \(.*/run/vgg\.pth\) inside .*/run, the folder"):
        train(options(tmp_path, **{"network_F.weights": str(run / "vgg.pth")}))
    assert sorted(p.name for p in run.iterdir()) == ["my.yml", "vgg.pth"]


def test_a_stop_whose_checkpoint_does_not_fit_names_no_state_that_is_not_there(tmp_path, monkeypatch):
    from esrgan.engine import trainer

    check_health, real_save = trainer._check_health, trainer.save_checkpoint

    def signal_at(model, max_nonfinite, step):
        check_health(model, max_nonfinite, step)
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    def disk_full_at_2(run_dir, step, *args, **kwargs):
        if step == 2:
            raise checkpoint.DiskFullError("3 MiB free")
        real_save(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(trainer, "_check_health", signal_at)
    monkeypatch.setattr(trainer, "save_checkpoint", disk_full_at_2)
    o = options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 3, "logger.save_freq": 1})
    with pytest.raises(trainer.TrainingStopped):
        train(o)
    assert checkpoint.saved_iterations(tmp_path / "run") == [1]
    text = log_text(tmp_path / "run")
    assert "checkpoint of iteration 2 NOT saved (3 MiB free); training goes on, and the next save tries again" in text
    assert "Stopped by SIGINT at iteration 2 without its checkpoint (see above); --auto_resume continues from the " \
           "newest state that was saved" in text
    assert "2.state" not in text


def test_the_temporaries_of_a_save_killed_midway_are_deleted_when_the_run_continues(tmp_path):
    sr = {"model": "sr", "train.gan.niter": 0, "logger.save_freq": 1}
    run = train(options(tmp_path, **sr, **{"train.psnr.niter": 1}))
    leftovers = [run / "models" / ".2_G.k3j9_x.tmp.pth", run / "training_state" / ".2.q81hz0.tmp.state",
                 run / "val_images" / "baboon" / ".baboon_2.u7f2c9.tmp.png"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a checkpo")  # what kill -9 during a save leaves: atomic_output's clean-up never ran
    train(options(tmp_path, **sr, **{"train.psnr.niter": 2}), auto_resume=True)
    assert not any(path.exists() for path in leftovers)
    assert checkpoint.saved_iterations(run) == [1, 2]


def test_an_error_that_is_not_bad_input_reaches_the_log_file_with_its_traceback(tmp_path):
    from esrgan.cli import _run
    from esrgan.utils.logger import add_log_file

    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    logger = logging.getLogger("esrgan")
    before = list(logger.handlers)
    add_log_file(tmp_path / "train.log")
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            _run(out_of_memory)
    finally:
        for handler in set(logger.handlers) - set(before):
            logger.removeHandler(handler)
            handler.close()
    text = (tmp_path / "train.log").read_text()
    assert "error: the run ended with an unexpected error" in text and "Traceback" in text
    assert "RuntimeError: CUDA out of memory" in text


def test_resuming_with_other_data_settings_warns_that_the_batches_differ(tmp_path):
    sr = {"model": "sr", "train.gan.niter": 0, "logger.save_freq": 1, "datasets.train.dataset_enlarge_ratio": 1}
    run = train(options(tmp_path, **sr, **{"train.psnr.niter": 2}))
    train(options(tmp_path, **sr, **{"train.psnr.niter": 3}), auto_resume=True)  # the same settings: no warning
    assert "are not those the saved run would have seen" not in log_texts(run)
    other = {"datasets.train.dataset_enlarge_ratio": 3, "train.manual_seed": 7}
    train(options(tmp_path, **sr | other, **{"train.psnr.niter": 4}), auto_resume=True)
    assert ("--auto_resume: the training batches from here on are not those the saved run would have seen, as these "
            "differ from it (the networks and optimizers continue as saved):\n"
            "  train.manual_seed: 10 in the training state, 7 now\n"
            "  datasets.train.dataset_enlarge_ratio: 1 in the training state, 3 now") in log_texts(run)


def test_resuming_with_the_same_total_batch_on_another_number_of_processes_keeps_the_batches():
    """2 processes x batch 2 draw each iteration's samples as 1 process x batch 4 does (the processes take turns in
    one order), when the epoch is the same length for both: no warning then."""
    from esrgan.engine.trainer import _draws

    def order(batch, processes, enlarge=2, images=7):
        return {"train.manual_seed": 10, "training images": images, "datasets.train.dataset_enlarge_ratio": enlarge,
                "datasets.train.batch_size": batch, "datasets.train.use_shuffle": True, "processes": processes}

    assert _draws(order(2, 2)) == _draws(order(4, 1))
    assert _draws(order(2, 2)) != _draws(order(2, 1))  # half the samples per iteration
    assert _draws(order(2, 2, enlarge=1)) != _draws(order(4, 1, enlarge=1))  # 7 samples: padded to 8 for 2
    assert _draws(order(2, 2, images=8, enlarge=1)) == _draws(order(4, 1, images=8, enlarge=1))

    from esrgan.data.loader import TrainSampler

    def iterations(batch, processes, enlarge):  # each iteration's (image, augmentation seed) pairs, all ranks
        shares = [list(TrainSampler(7, 10, True, enlarge, rank, processes)) for rank in range(processes)]
        return [sorted(x for share in shares for x in share[i * batch:(i + 1) * batch])
                for i in range(len(shares[0]) // batch)]

    assert iterations(2, 2, enlarge=2) == iterations(4, 1, enlarge=2)  # what _draws says
    assert iterations(2, 2, enlarge=1)[0] != iterations(4, 1, enlarge=1)[0]


def test_a_resume_warns_of_other_batches_only_when_the_samples_of_each_iteration_change(package_log):
    from esrgan.engine.trainer import Resume, _report_resume

    def order(batch, processes):
        return {"train.manual_seed": 10, "training images": 7, "datasets.train.dataset_enlarge_ratio": 2,
                "datasets.train.batch_size": batch, "datasets.train.use_shuffle": True, "processes": processes}

    class Model:
        def phase(self, step: int) -> str:
            return "psnr"

    saved = Resume({"iter": 3, "data_order": order(2, 2)}, "3.state", "path.resume_state")
    _report_resume(saved, Model(), {}, order(4, 1))  # the same samples per iteration: no warning
    assert not [r for r in package_log.records if r.levelname == "WARNING"]
    _report_resume(saved, Model(), {}, order(2, 1))
    (warning,) = {r.getMessage() for r in package_log.records if r.levelname == "WARNING"}
    assert warning.startswith("path.resume_state: the training batches from here on are not those the saved run "
                              "would have seen")
    assert "processes: 2 in the training state, 1 now" in warning


def test_a_loss_report_over_another_window_than_print_freq_says_so(tmp_path):
    sr = {"model": "sr", "train.gan.niter": 0, "logger.save_freq": 1, "logger.print_freq": 2}
    run = train(options(tmp_path, **sr, **{"train.psnr.niter": 3}))
    train(options(tmp_path, **sr, **{"train.psnr.niter": 4}), auto_resume=True)
    reports = [line.split(" | ")[1] for line in log_texts(run).splitlines() if "s/it, data wait" in line]
    assert [r.startswith("l_g_pix") for r in reports] == [True, True, True]
    # iteration 2: the usual two; 3: the run's end, one; 4: one, since the resume at 3
    assert [r.partition(" (")[2] for r in reports] == ["", "means over 1 iteration)", "means over 1 iteration)"]


def log_texts(run: Path) -> str:
    return "".join(p.read_text() for p in sorted(run.glob("train_*.log")))


def test_auto_resume_takes_the_runs_own_newest_state_over_path_resume_state(tmp_path):
    sr = {"model": "sr", "train.gan.niter": 0, "logger.save_freq": 1, "datasets.train.dataset_enlarge_ratio": 1}
    run = train(options(tmp_path, **sr, **{"train.psnr.niter": 2}))
    first = str(run / "training_state" / "1.state")
    train(options(tmp_path, **sr, **{"train.psnr.niter": 3, "path.resume_state": first}), auto_resume=True)
    logs = "".join(p.read_text() for p in run.glob("train_*.log"))
    assert f"Resumed from {run / 'training_state' / '2.state'} at iteration 2" in logs  # not from 1
    assert checkpoint.saved_iterations(run) == [1, 2, 3]
    assert not list(tmp_path.glob("run_archived_*"))


def test_a_stopped_run_exits_with_the_signals_status_also_under_torchrun(monkeypatch):
    """Under torchrun too: a worker exiting 0 would tell it an unfinished job had finished."""
    from esrgan.cli import _run
    from esrgan.engine.trainer import TrainingStopped

    def stopped(signum):
        def job():
            raise TrainingStopped(signum)
        return job

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert _run(stopped(signal.SIGINT)) == 130
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    assert _run(stopped(signal.SIGTERM)) == 143


def test_after_a_stop_signal_ctrl_c_quits_at_once_and_a_repeated_sigterm_is_ignored(monkeypatch):
    """A scheduler signals every process of a job and torchrun passes its own SIGTERM on to its workers: a
    worker may get SIGTERM twice (or Ctrl-C's SIGINT, then torchrun's SIGTERM) and must still save."""
    from esrgan.engine import trainer

    exits = []
    monkeypatch.setattr(trainer.os, "_exit", exits.append)
    for first in (signal.SIGINT, signal.SIGTERM):
        stop = trainer.StopRequest()
        try:
            os.kill(os.getpid(), first)
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signal == first and exits == []
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.signal == first and exits == [128 + signal.SIGINT]
        finally:
            stop.restore()
            exits.clear()


def test_ctrl_c_outside_the_training_loop_ends_with_one_line_and_130(capsys):
    from esrgan.cli import _run

    def interrupted_start_up():
        raise KeyboardInterrupt

    assert _run(interrupted_start_up) == 130
    assert capsys.readouterr().err == "stopped by Ctrl-C (SIGINT)\n"


# ------------------------------------------------------------------------------------------ write failures mid-run
def disk_fills_at(monkeypatch, name: str) -> None:
    """Saving the file `name` fails as on a disk that filled after the free-space check (another process)."""
    real_save = checkpoint.atomic_save

    def save(obj, path):
        if Path(path).name == name:
            raise OSError(28, "No space left on device", str(path))
        real_save(obj, path)

    monkeypatch.setattr(checkpoint, "atomic_save", save)


def test_a_disk_that_fills_during_a_save_is_logged_and_training_goes_on(tmp_path, monkeypatch):
    """The free-space check passed, and then the disk filled while the state was written (another process)."""
    from esrgan.engine import trainer

    disk_fills_at(monkeypatch, "2.state")
    run = train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 3,
                                     "logger.save_freq": 1}))
    assert checkpoint.saved_iterations(run) == [1, 3]
    assert (f"checkpoint of iteration 2 NOT saved ({run / 'training_state' / '2.state'}: No space left on device); "
            "training goes on, and the next save tries again") in log_text(run)
    assert trainer.find_resume_state(run) == run / "training_state" / "3.state"


def test_a_disk_that_fills_during_the_last_save_stops_the_run_with_the_error(tmp_path, monkeypatch):
    """No later save would try again: a run whose last checkpoint is not on disk does not end as a finished one."""
    disk_fills_at(monkeypatch, "3.state")
    with pytest.raises(OSError) as info:
        train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 3, "logger.save_freq": 2}))
    assert info.value.filename == str(tmp_path / "run" / "training_state" / "3.state")
    assert checkpoint.saved_iterations(tmp_path / "run") == [2]


def test_a_best_model_that_cannot_be_written_is_logged_and_training_goes_on(tmp_path, monkeypatch):
    from esrgan.engine import trainer

    def full(run_dir, net):
        raise OSError(28, "No space left on device", str(run_dir / "models" / "best_G.pth"))

    monkeypatch.setattr(trainer, "save_best", full)
    run = train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 2,
                                     "train.val_freq": 1, "datasets.val.dataroot_GT": TINY[
                                         "datasets.train.dataroot_GT"]}))
    assert checkpoint.saved_iterations(run) == [2]
    text = log_text(run)
    assert (f"models/best_G.pth NOT updated to iteration 1 ({run / 'models' / 'best_G.pth'}: No space left on "
            "device); it keeps the best so far, and training goes on\n") in text
    assert "No best validation of the psnr phase yet\n" in text
    # the record is what best_G.pth holds: none was written, so the state holds none either
    assert torch.load(run / "training_state" / "2.state", weights_only=True)["best"]["iter"] == 0


def test_a_latest_safetensors_that_cannot_be_written_leaves_the_checkpoint_saved(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    from esrgan.engine import trainer

    def full(sd, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(trainer, "save_generator_state", full)
    run = train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 2,
                                     "logger.save_freq": 1, "logger.save_safetensors": True}))
    assert checkpoint.saved_iterations(run) == [1, 2]
    text = log_text(run)
    assert (f"models/latest_G.safetensors NOT updated ({run / 'models' / 'latest_G.safetensors'}: No space left on "
            "device); the checkpoint of iteration 1 is saved\n") in text
    assert "NOT saved" not in text


def test_only_a_folder_that_is_gone_or_another_one_counts_as_moved(tmp_path, monkeypatch):
    from esrgan.engine.trainer import _identity, _moved

    (tmp_path / "run").mkdir()
    identity = _identity(tmp_path / "run")
    assert not _moved(tmp_path / "run", identity)
    (tmp_path / "run").rename(tmp_path / "moved")
    assert _moved(tmp_path / "run", identity)  # gone
    (tmp_path / "run").mkdir()
    assert _moved(tmp_path / "run", identity)  # another folder of its name
    (tmp_path / "file").write_text("")
    assert _moved(tmp_path / "file" / "run", identity)  # a file where a folder above it was

    def stale(self, **kwargs):
        raise OSError(116, "Stale file handle", str(self))

    monkeypatch.setattr(Path, "stat", stale)
    assert not _moved(tmp_path / "moved", identity)  # a passing error of a network file system


def test_a_run_folder_moved_during_the_run_stops_it_instead_of_starting_a_bare_one(tmp_path, monkeypatch):
    from esrgan.engine import trainer

    check_health = trainer._check_health

    def move_at_2(model, max_nonfinite, step):
        check_health(model, max_nonfinite, step)
        if step == 2:
            (tmp_path / "run").rename(tmp_path / "moved")

    monkeypatch.setattr(trainer, "_check_health", move_at_2)
    with pytest.raises(OSError) as info:
        train(options(tmp_path, **{"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 3,
                                   "logger.save_freq": 1}))
    assert str(info.value) == (f"the run folder {tmp_path / 'run'} was moved or deleted during the run; put it back "
                               "and continue with --auto_resume")
    assert not (tmp_path / "run").exists()
    assert checkpoint.saved_iterations(tmp_path / "moved") == [1]


@pytest.mark.skipif(os.name != "posix", reason="run folders are claimed with POSIX locks")
def test_a_second_training_of_a_run_that_is_running_is_refused_and_moves_nothing(tmp_path):
    """Started twice (a re-queued job while the first still runs): the second moved the first's folder aside
    under it, or with --auto_resume wrote the same checkpoints."""
    from esrgan.utils.files import claimed

    sr = {"model": "sr", "train.gan.niter": 0, "train.psnr.niter": 1}
    run = train(options(tmp_path, **sr))
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with claimed(run, "train.py"):  # the running one (this process holds it through another file description)
        for auto_resume in (False, True):
            with pytest.raises(OSError) as info:
                train(options(tmp_path, **sr | {"train.psnr.niter": 2}), auto_resume=auto_resume)
            assert str(info.value) == (f"{run} is in use by another train.py (process {os.getpid()}); wait for it "
                                       "to end or stop it, or give this one another name")
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
