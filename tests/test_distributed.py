"""Multi-process training with torchrun on CPU (gloo): ranks stay identical, and 2 processes x batch B make the
same update as 1 process x batch 2B."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from esrgan.engine import checkpoint
from esrgan.options import REPO_ROOT

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "codes"), "OMP_NUM_THREADS": "1"}
SETTINGS = {"datasets.train.dataroot_GT": str(REPO_ROOT / "datasets" / "demo" / "val"), "network_G.nf": 8,
            "network_G.nb": 1, "network_G.gc": 4, "datasets.train.n_workers": 0, "datasets.val": "~",
            "logger.print_freq": 1, "logger.use_tb_logger": "false", "model": "sr", "train.gan.niter": 0,
            "train.psnr.niter": 3, "logger.save_freq": 3, "datasets.train.dataset_enlarge_ratio": 2,
            "name": "run"}


def train_args(root: Path, **extra) -> list[str]:
    args = [str(REPO_ROOT / "train.py"), "-opt", str(REPO_ROOT / "options" / "train_demo.yml")]
    for key, value in (SETTINGS | {"path.experiments_root": str(root)} | extra).items():
        args += ["--set", f"{key}={value}"]
    return args


def test_ranks_hold_identical_finite_weights_after_ddp_steps_even_when_one_rank_sees_nan(tmp_path):
    subprocess.run([*TORCHRUN, str(REPO_ROOT / "tests" / "ddp_worker.py"), str(tmp_path)], check=True, env=ENV,
                   capture_output=True, timeout=300)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for net in ("G", "G_ema", "D"):  # G_ema too, although each rank made its own from its own initial G
        for key, value in rank0[net].items():
            assert torch.equal(value, rank1[net][key]), f"{net}.{key}"
            assert torch.isfinite(value).all(), f"{net}.{key}"
    assert int(rank0["skipped_G"]) == int(rank1["skipped_G"]) == 1
    # RaGAN's mean over all ranks passes gradient back to every rank: the one-process gradient of the whole batch
    theta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    x = theta * torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    torch.nn.functional.softplus(x - x.mean()).mean().backward()
    for rank in (rank0, rank1):
        assert float(rank["global_mean_grad"]) == pytest.approx(float(theta.grad), rel=1e-12)


COLLECTIVES_WORKER = """
import sys, torch
from esrgan.engine.distributed import all_mean, any_rank, gather_objects, init_distributed, shutdown
world = init_distributed(torch.device("cpu"))
values = torch.tensor([1.0, 10.0]) * (world.rank + 1)  # rank 0: 1, 10; rank 1: 2, 20
cpu = torch.device("cpu")
result = {"mean": all_mean(values, world), "values": values, "any": any_rank(world.rank == 1, world, cpu),
          "none": any_rank(False, world, cpu), "gathered": gather_objects(world.rank * 2, world)}
torch.save(result, f"{sys.argv[1]}/rank{world.rank}.pt")
shutdown(world)
"""


def test_the_collectives_give_every_rank_the_mean_and_the_any_of_all_ranks(tmp_path):
    """What the loss reports (all_mean) and the agreed decisions (any_rank: stop, a failed save) rest on."""
    (tmp_path / "worker.py").write_text(COLLECTIVES_WORKER)
    done = subprocess.run([*TORCHRUN, str(tmp_path / "worker.py"), str(tmp_path)], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["mean"].tolist() == [1.5, 15.0]
        assert result["values"].tolist() == [1.0 * (rank + 1), 10.0 * (rank + 1)]  # all_mean leaves its input
        assert (result["any"], result["none"], result["gathered"]) == (True, False, [0, 2])


def test_two_processes_with_batch_b_update_like_one_process_with_batch_2b(tmp_path):
    one = subprocess.run([sys.executable, *train_args(tmp_path / "one", **{"datasets.train.batch_size": 2})],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*TORCHRUN, *train_args(tmp_path / "two", **{"datasets.train.batch_size": 1})],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    a = torch.load(tmp_path / "one" / "run" / "models" / "3_G.pth", weights_only=True)
    b = torch.load(tmp_path / "two" / "run" / "models" / "3_G.pth", weights_only=True)
    for key, value in a.items():
        assert torch.allclose(value, b[key], rtol=1e-4, atol=1e-6), key
    assert "x 2:" in two.stderr and "batch 1 per process (2 in all)" in two.stderr  # the run reported both
    assert [p.name for p in (tmp_path / "two" / "run").glob("train_*.log") if "_rank" in p.name] == []  # no error


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_worker_is_restarted_by_torchrun_and_the_job_resumes_and_finishes(tmp_path, find_processes):
    args = [*TORCHRUN[:-1], "--nproc_per_node=2", "--max-restarts=1",
            *train_args(tmp_path, **{"train.psnr.niter": 30, "logger.save_freq": 1, "datasets.train.batch_size": 1,
                                     "train.dist_timeout": 60}),
            "--auto_resume"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "run"
    deadline = time.time() + 120
    while not checkpoint.saved_iterations(run):
        assert time.time() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.05)
    workers = find_processes(parent=proc.pid)
    assert len(workers) == 2
    os.kill(workers[1], 9)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Resumed from" in err
    assert checkpoint.saved_iterations(run)[-1] == 30


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
@pytest.mark.parametrize("signalled", ["workers then torchrun", "one worker"])
def test_sigterm_under_torchrun_saves_a_state_and_the_job_does_not_pass_for_finished(tmp_path, signalled,
                                                                                     find_processes):
    """As a scheduler does, the workers get SIGTERM and then torchrun passes its own copy on: the second SIGTERM
    must not cut the save short. A worker signalled alone exits 143, so torchrun reports a failure, not a
    finished job."""
    args = [*TORCHRUN, *train_args(tmp_path, **{"train.psnr.niter": 100000, "logger.save_freq": 100000,
                                                "datasets.train.batch_size": 1, "train.dist_timeout": 60})]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "run"
    deadline = time.time() + 120
    while not any("s/it" in log.read_text() for log in run.glob("train_run_*.log")):
        assert time.time() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.05)
    workers = find_processes(parent=proc.pid)
    assert len(workers) == 2
    for worker in workers if signalled == "workers then torchrun" else workers[1:]:
        os.kill(worker, signal.SIGTERM)
    if signalled == "workers then torchrun":
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err
    (stopped_at,) = checkpoint.saved_iterations(run)
    assert (run / "training_state" / f"{stopped_at}.state").is_file()
    by = "SIGTERM" if signalled == "workers then torchrun" else "another process"  # rank 0's words
    assert f"Stopped by {by} at iteration {stopped_at}; continue with --auto_resume" in err


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm runs on GPUs only; needs 2 GPUs")
def test_gan_phase_with_sync_bn_two_processes_update_like_one_with_the_double_batch(tmp_path):
    gan = {"model": "esrgan", "train.psnr.niter": 1, "train.gan.niter": 2, "network_D.nf": 4,
           "network_F.allow_random_weights": "true", "device": "cuda"}
    one = subprocess.run([sys.executable, *train_args(tmp_path / "one", **gan, **{"datasets.train.batch_size": 2})],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*TORCHRUN, *train_args(tmp_path / "two", **gan, **{"datasets.train.batch_size": 1,
                                                                              "network_D.sync_bn": "true"})],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    for name in ("3_G.pth", "3_D.pth"):
        a = torch.load(tmp_path / "one" / "run" / "models" / name, weights_only=True)
        b = torch.load(tmp_path / "two" / "run" / "models" / name, weights_only=True)
        for key, value in a.items():
            if value.is_floating_point():
                assert torch.allclose(value, b[key], rtol=1e-3, atol=1e-5), f"{name} {key}"


def test_validation_metrics_shared_out_over_two_ranks_are_the_means_over_every_image(tmp_path):
    import cv2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from esrgan.archs.rrdbnet import RRDBNet
    from esrgan.data.paired import PairedImageDataset
    from esrgan.engine.evaluate import Evaluator, bicubic_image
    from esrgan.engine.inference import super_resolve
    from esrgan.utils.image import tensor2img

    val = tmp_path / "val"
    val.mkdir()
    photo = cv2.imread(str(REPO_ROOT / "datasets" / "demo" / "train" / "coffee.png"))
    for k in range(3):  # three images for two ranks: uneven shares
        cv2.imwrite(str(val / f"crop{k}.png"), photo[:200, 100 * k : 100 * k + 200])
    two = subprocess.run([*TORCHRUN, *train_args(tmp_path, **{
        "datasets.train.batch_size": 1, "datasets.val.dataroot_GT": str(val), "train.val_freq": 3,
        "train.val_metrics": "[psnr,niqe]", "logger.use_tb_logger": "true"})],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    events = EventAccumulator(str(tmp_path / "run" / "tb_logger"), size_guidance={"scalars": 0}).Reload()
    logged = {k: events.Scalars(f"val/{k}")[0].value for k in ("psnr", "niqe", "psnr_bicubic", "niqe_bicubic")}
    # every image in TensorBoard (tb_images 4), rank 1's included
    assert sorted(events.Tags()["images"]) == [f"val/crop{k} (SR | GT)" for k in range(3)]

    net = RRDBNet(3, 3, nf=8, nb=1, gc=4)
    net.load_state_dict(torch.load(tmp_path / "run" / "models" / "3_G.pth", weights_only=True))
    evaluator = Evaluator(["psnr", "niqe"], crop_border=4)
    ours, bicubic = [], []
    for sample in PairedImageDataset("val", 4, str(val), None):
        gt = tensor2img(sample["GT"])
        ours.append(evaluator.score(tensor2img(super_resolve(net, sample["LQ"][None], 4)), gt))
        bicubic.append(evaluator.score(bicubic_image(sample["LQ"], 4), gt))
    for key in ("psnr", "niqe"):
        assert logged[key] == pytest.approx(sum(r[key] for r in ours) / 3, rel=1e-5), key
        assert logged[f"{key}_bicubic"] == pytest.approx(sum(r[key] for r in bicubic) / 3, rel=1e-5), key


def test_an_error_of_a_rank_other_than_0_is_in_a_log_file_of_its_own(tmp_path):
    """The run's log is rank 0's: rank 1's own error goes to train_<name>_<time>_rank1.log beside it (made only
    when there is one)."""
    data = tmp_path / "truncated"  # headers intact: the start-up check passes, decoding fails on every rank
    data.mkdir()
    for image in (REPO_ROOT / "datasets" / "demo" / "val").glob("*.png"):
        (data / image.name).write_bytes(image.read_bytes()[: image.stat().st_size // 3])
    result = subprocess.run([*TORCHRUN, *train_args(tmp_path, **{"datasets.train.dataroot_GT": str(data),
                                                              "datasets.train.batch_size": 1})],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    (rank_log,) = (tmp_path / "run").glob("train_run_*_rank1.log")
    text = rank_log.read_text(encoding="utf-8")
    assert "ERROR: error: " in text and "cannot decode image" in text and "INFO" not in text


def test_a_rank_other_than_0_reports_only_its_errors_and_what_only_it_saw(tmp_path, capsys):
    """Its other warnings repeat rank 0's (same options, same networks): on the console they were duplicates."""
    import logging

    from esrgan.utils.logger import RANK_LOCAL, add_log_file, setup_logging

    log = logging.getLogger("esrgan.data.paired")
    try:
        setup_logging(logging.WARNING, own_news_only=True)
        add_log_file(tmp_path / "rank1.log", own_news_only=True)
        log.warning("network_F: a warning every rank gives")
        assert not (tmp_path / "rank1.log").exists()
        log.warning("dataset train: skipped unreadable image a.png", extra=RANK_LOCAL)
        log.error("error: cannot decode image b.png")
        lines = [line.split(" ", 2)[2] for line in capsys.readouterr().err.splitlines()]
        assert lines == ["WARNING: dataset train: skipped unreadable image a.png",
                         "ERROR: error: cannot decode image b.png"]
        assert [line.split(" ", 2)[2] for line in (tmp_path / "rank1.log").read_text().splitlines()] == lines
    finally:
        setup_logging()


@pytest.mark.parametrize(("env", "message"), [
    ({"WORLD_SIZE": "2"}, "the environment sets WORLD_SIZE=2 but not RANK: start runs of several processes with "
                          "torchrun, which sets both (or unset WORLD_SIZE for one process)"),
    ({"WORLD_SIZE": "two"}, "the environment variable WORLD_SIZE='two' is not a whole number"),
    ({"WORLD_SIZE": "0"}, "the environment variable WORLD_SIZE=0 must be at least 1"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "x"}, "the environment variable LOCAL_RANK='x' is not a whole"),
])
def test_a_multi_process_environment_that_torchrun_did_not_set_is_refused_by_name(monkeypatch, env, message):
    from esrgan.engine.distributed import init_distributed

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        init_distributed(torch.device("cpu"))


@pytest.mark.parametrize("value", ["2.0", "2.5", "1e0"])
def test_a_world_size_that_is_not_written_as_a_whole_number_is_refused(monkeypatch, value):
    from esrgan.engine.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", value)
    with pytest.raises(ValueError, match=f"^the environment variable WORLD_SIZE='{re.escape(value)}' is not a whole "
                                         "number$"):
        init_distributed(torch.device("cpu"))


def test_processes_that_never_join_end_the_wait_with_one_line_after_dist_timeout(monkeypatch, capsys):
    import socket

    from esrgan.engine.distributed import init_distributed

    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(OSError, match=r"^the 2 processes did not all join within train.dist_timeout \(1 s\) \(.*"
                                      r"\); start runs of several processes with torchrun$"):
        init_distributed(torch.device("cpu"), timeout_s=1)
    monkeypatch.setenv("RANK", "1")  # waiting for a rank 0 that never comes up: another error of the same kind
    with pytest.raises(OSError, match=r"^the 2 processes did not all join within train.dist_timeout \(1 s\)"):
        init_distributed(torch.device("cpu"), timeout_s=1)
    assert capsys.readouterr().err == "waiting up to 1 s (train.dist_timeout) for the 2 processes of WORLD_SIZE=2 " \
                                      "to join\n"


def test_image_conversion_warnings_are_what_only_this_rank_saw(monkeypatch, package_log):
    """Each process reads its own share of the images: a gray one read by rank 1 only is told by rank 1."""
    import numpy as np

    from esrgan.utils import image

    monkeypatch.setattr(image, "_warned", set())
    image.to_float_rgb(np.zeros((2, 2), np.uint8), "gray.png")
    records = [r for r in package_log.records if r.getMessage().startswith("grayscale image gray.png")]
    assert records and all(r.rank_local for r in records)


@pytest.mark.parametrize("env, main", [
    ({}, True), ({"RANK": "1"}, True), ({"WORLD_SIZE": "1", "RANK": "3"}, True),  # a world of one, whatever RANK
    ({"WORLD_SIZE": "2", "RANK": "0"}, True), ({"WORLD_SIZE": "2", "RANK": "1"}, False),
])
def test_the_process_that_claims_the_run_folder_is_rank_0_of_the_world_the_environment_describes(monkeypatch,
                                                                                                 env, main):
    from esrgan.engine.distributed import launched_as_main

    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launched_as_main() is main
