"""The benchmark's CPU smoke mode runs every part and prints the tables (speed targets are checked on GPUs by
the benchmark itself, never by a timed unit test)."""

import os
import re
import subprocess
import sys

import torchvision

from esrgan.options import REPO_ROOT


def test_benchmark_smoke_mode_prints_training_and_inference_tables():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--smoke", "--device", "cpu"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| fp32 |")]
    # The timing table, the launch table, then inference.
    assert [row.split("|")[2].strip() for row in rows] == ["psnr", "gan", "psnr", "gan", "whole image", "tiles of 16"]
    assert "| bf16+channels_last | gan |" in result.stdout
    assert "| fp32 | psnr |" in result.stdout and "1.00x" in result.stdout
    assert "cuDNN autotuning on; TF32 in fp32 work: conv (cuDNN convolutions True, matrix products False)" in \
        result.stdout  # training's defaults (speed.cudnn_benchmark, speed.tf32)
    # The PSNR step's FLOPs by hand (smoke G: nf 8, nb 1, gc 4, LR 32x32, batch 2), in multiply-adds per image:
    # conv_first 9*3*8*32^2, 3 dense blocks of 9*4*(8+12+16+20)*32^2 + 9*24*8*32^2, trunk_conv 9*8*8*32^2,
    # upconv1 9*8*8*64^2, upconv2, HRconv 9*8*8*128^2 each, conv_last 9*8*3*128^2: 37,085,184. Forward and
    # backward are 3 x 2 FLOPs a multiply-add, but conv_first needs no input gradient: 444,137,472 FLOPs for 2.
    assert "model FLOPs per iteration (counted in the fp32 eager step; a multiply-add is 2 FLOPs, as in the peak): " \
        "psnr 0.0004441 TFLOP, gan " in result.stdout
    # Launches and syncs: operators dispatched per iteration, and not one host read of a device value.
    operators, host_reads = rows[2].split("|")[3:5]
    assert int(operators) > 200 and int(host_reads) == 0
    # Fed by the real loader, with the share of the time spent waiting for data.
    (fed,) = [line for line in result.stdout.splitlines() if line.startswith("| bf16+channels_last | psnr |") and
              line.endswith("% |")]
    assert 0 <= float(fed.split("|")[-2].strip(" %")) < 100


def test_metric_benchmark_prints_milliseconds_per_image():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "benchmark_metrics.py"), "--sizes", "200",
                             "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| image | PSNR (Y) ms | SSIM (Y) ms | NIQE ms |" in result.stdout
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| 200x200 |")]
    assert all(float(cell) > 0 for cell in row.strip("| \n").split("|")[1:])


def test_the_gpu_check_script_answers_help_and_refuses_an_unknown_stage_before_checking_the_machine():
    script = str(REPO_ROOT / "scripts" / "gpu_checks.sh")
    usage = "usage: bash scripts/gpu_checks.sh [core|speed|quality|tests|compile|all]"
    helped = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and helped.stdout.startswith(usage + "\n")
    assert "bash scripts/gpu_checks.sh core" in helped.stdout and "set -euo" not in helped.stdout
    refused = subprocess.run(["bash", script, "cores"], capture_output=True, text=True, timeout=30)
    assert (refused.returncode, refused.stderr) == (2, usage + "\n")


def test_the_gpu_check_script_runs_its_core_and_speed_stages_in_smoke_mode(tmp_path):
    """SMOKE=1: tiny networks on the CPU, so that the commands and option keys the GPU session will run are
    checked here (the graph mode is left out on a CPU, and says so). `core` runs the CUDA tests (skipped here),
    the benchmark and the quality check with the fp32 reference's steps captured."""
    # The stage limits are sized for the GPU; a busy CPU must not turn this check of commands into a race.
    env = os.environ | {"SMOKE": "1", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
                        "FAST": "speed.channels_last=true", "PYTHON": sys.executable,
                        "BUDGET": "1500", "TESTS_LIMIT": "600", "SPEED_LIMIT": "600"}
    for stage in ("core", "speed"):
        result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_checks.sh"), stage], env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    tests = (tmp_path / "out" / "tests_core.txt").read_text()
    assert re.search(r"\n3 skipped, \d+ deselected", tests) and "CUDA graphs need a GPU" in tests  # fp32, bf16, fp16
    machine = (tmp_path / "out" / "machine.txt").read_text()
    assert f"torchvision {torchvision.__version__}" in machine and "for torch.compile: C compiler" in machine
    benchmark = (tmp_path / "out" / "benchmark.md").read_text()
    assert "mode bf16+channels_last+graph left out: CUDA graphs need a CUDA device" in benchmark
    assert "| bf16+channels_last | gan |" in benchmark  # the speed stage's modes (it ran last)
    quality = (tmp_path / "out" / "check_fast_path.md").read_text()
    assert "fp32 reference: speed.cuda_graph=true" in quality
    assert "fp32 run: " in quality and "speed.cuda_graph: training eagerly, CUDA graphs need a CUDA device" in quality
    assert re.search(r"PSNR phase, iteration 3: \|difference\| 0\.0\d\d dB, tolerance 0.05 dB: PASS", quality)
    for run in ("check_fp32", "check_fast"):  # the train.py logs, beside the report
        assert "iter 5 (gan)" in (tmp_path / "out" / f"{run}.log").read_text()
    assert sorted(p.name for p in (tmp_path / "work" / "demo_LR").glob("*.png"))[0] == "astronaut.png"
    timings = (tmp_path / "out" / "timings.txt").read_text().splitlines()
    assert [line.split(" : ")[0] for line in timings] == ["run_tests_core", "run_speed_core", "run_quality",
                                                          "run_speed"]
    assert all(re.fullmatch(r"\S+ : \d+ s, exit status 0", line) for line in timings)


def test_core_bounds_each_stage_and_compares_with_the_eager_path_when_the_cuda_tests_fail(tmp_path):
    """A stage that overruns its limit is stopped (status 124) and the next ones run; failed CUDA tests make the
    quality check's reference the plain eager path; with too little of BUDGET left the check is not started
    (status 3). The command's status is that of the last stage that failed."""
    script = str(REPO_ROOT / "scripts" / "gpu_checks.sh")
    env = os.environ | {"SMOKE": "1", "FAST": "speed.channels_last=true", "PYTHON": sys.executable}
    # 1 s: not even enough for Python to import torch.
    failed_tests = env | {"OUT": str(tmp_path / "a"), "WORK": str(tmp_path / "work"), "TESTS_LIMIT": "1"}
    result = subprocess.run(["bash", script, "core"], env=failed_tests, capture_output=True, text=True, timeout=600)
    assert result.returncode == 124, result.stdout + result.stderr
    timings = (tmp_path / "a" / "timings.txt").read_text().splitlines()
    assert re.fullmatch(r"run_tests_core : \d+ s, exit status 124", timings[0])
    assert timings[1] == "the CUDA tests failed: the quality check's fp32 reference runs eagerly"
    assert [line.split(" : ")[1].split(", ")[1] for line in timings[2:]] == ["exit status 0"] * 2
    quality = (tmp_path / "a" / "check_fast_path.md").read_text()
    assert "fp32 reference: the plain fp32 eager path" in quality and ": PASS" in quality

    no_time = env | {"OUT": str(tmp_path / "b"), "WORK": str(tmp_path / "work"), "SPEED_LIMIT": "1", "BUDGET": "100"}
    result = subprocess.run(["bash", script, "core"], env=no_time, capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stdout + result.stderr
    statuses = [line.rsplit(" ", 1)[1] for line in (tmp_path / "b" / "timings.txt").read_text().splitlines()]
    assert statuses == ["0", "124", "3"]
    assert re.fullmatch(r"quality check not started: -?\d+ s of BUDGET left, too few to reach a validation\n",
                        (tmp_path / "b" / "check_fast_path.md").read_text())
