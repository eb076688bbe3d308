#!/usr/bin/env bash
# The GPU checks behind docs/PERFORMANCE.md, in stages of a few minutes each on one H100/H200 (estimates for the
# paper's settings, from BasicSR's 5.3 it/s fp32 figure and issue #6's timings of captured steps):
#
#   bash scripts/gpu_checks.sh core      # the decisive figures in one command of about 8 min (a 15-minute GPU
#                                        # slot, machine start included, leaves room to rerun part of it):
#                                        # the CUDA tests without compilation (graph steps = eager steps, bit for
#                                        # bit in fp32 and bf16), benchmark.py with fp32 and bf16+channels_last+graph,
#                                        # then the quality check with the fp32 reference's steps captured too
#                                        # (the plain eager path when the CUDA tests failed)
#   bash scripts/gpu_checks.sh speed     # benchmark.py: fp32, bf16+channels_last, ...+graph; launches, syncs,
#                                        # top kernels, loader-fed run (about 4 min)
#   bash scripts/gpu_checks.sh quality   # check_fast_path.py: PSNR_ITERS (2,000) PSNR-phase iterations of the
#                                        # paper's network on the demo photos, the plain fp32 path and FAST at once
#                                        # (about 8 min; REFERENCE=speed.cuda_graph=true: about 4 min)
#   bash scripts/gpu_checks.sh tests     # the CUDA tests: captured steps with eager and compiled networks, fp16
#                                        # scalers (about 3 min)
#   bash scripts/gpu_checks.sh compile   # benchmark.py's torch.compile modes, with and without graphs (compiling
#                                        # the full network takes minutes)
#   bash scripts/gpu_checks.sh all       # speed, quality, tests, compile (a stage that fails does not stop the next)
#
# Where GPU time comes in short slots, run `core` first, as one command (timings.txt says how long each part
# took, for planning the next slot), and the other stages when there is time left. In `core` the quality check's
# fp32 reference runs with captured steps unless REFERENCE says otherwise (REFERENCE= for the plain fp32 path);
# `quality` runs the plain fp32 path.
#
# Everything printed also goes to $OUT (a folder that a remote runner copies back) or experiments/gpu_checks/, one
# file per stage, each written as the stage goes (a command cut short keeps what its finished parts printed).
# The quality check's two train.py logs (check_fp32.log, check_fast.log) are written there too. In `core` the
# tests and the benchmark have time limits of their own (TESTS_LIMIT, SPEED_LIMIT seconds: a hang costs only its
# stage), and the quality check is stopped when the command has run BUDGET seconds less 45 (default 540; give
# BUDGET as the command's own time limit less 30 s); it then prints how far each run got, or is not started with
# less than 150 s left. Exit status: 0, or that of the last stage that failed (3: the quality check was stopped or
# not started; 124, or 137 when it had to be killed: a stage ran out of time).
# FAST (the speed overrides of the quality check), REFERENCE (speed overrides of its fp32 reference that keep its
# numbers, such as speed.cuda_graph=true; default none, the plain fp32 eager path), PSNR_ITERS and PYTHON can be
# set in the environment; SMOKE=1 runs the core, speed and quality stages with tiny networks on a CPU, to check the
# commands (tests/test_benchmark.py does).
set -euo pipefail
usage="usage: bash scripts/gpu_checks.sh [core|speed|quality|tests|compile|all]"
case "${1:-all}" in  # before anything runs: the machine check fails without a GPU
    core|speed|quality|tests|compile|all) ;;
    -h|--help) echo "$usage"; sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1  # what a stage printed reaches its file even when the stage is killed
out="${OUT:-experiments/gpu_checks}"
work="${WORK:-experiments/gpu_checks_runs}"  # checkpoints and data: not copied back with $OUT
mkdir -p "$out" "$work"
PY="${PYTHON:-python3}"
FAST="${FAST:-speed.precision=bf16 speed.channels_last=true speed.cuda_graph=true}"
# core's reference defaults to captured fp32 steps; REFERENCE= (set, empty) asks for the plain eager path there too.
[[ "${1:-all}" != core ]] || REFERENCE="${REFERENCE-speed.cuda_graph=true}"
# core ends its quality check in time to report how far it got when the whole command nears BUDGET seconds.
[[ "${1:-all}" != core ]] || BUDGET="${BUDGET-540}"
TESTS_LIMIT="${TESTS_LIMIT:-180}"
SPEED_LIMIT="${SPEED_LIMIT:-240}"
REFERENCE="${REFERENCE:-}"
PSNR_ITERS="${PSNR_ITERS:-2000}"
GAN_ITERS=100
bench=()
tiny=()
if [[ "${SMOKE:-0}" == 1 ]]; then
    bench=(--smoke --device cpu)
    tiny=(--set network_G.nf=8 --set network_G.nb=1 --set network_G.gc=4 --set network_D.nf=4 --set device=cpu
          --set datasets.train.batch_size=8 --set datasets.train.n_workers=1 --set network_F.allow_random_weights=true)
    PSNR_ITERS=3
    GAN_ITERS=2
fi

SMOKE="${SMOKE:-0}" "$PY" - <<'EOF' | tee "$out/machine.txt"
import datetime, os, platform, shutil, sysconfig, torch
import cv2, tensorboard, torchvision, tqdm, yaml  # what the stages need besides torch (the GPU machine cannot install)
assert torch.cuda.is_available() or os.environ["SMOKE"] == "1", "scripts/gpu_checks.sh needs a CUDA GPU"
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (SMOKE=1)"
print(datetime.date.today(), gpu, f"torch {torch.__version__}, torchvision {torchvision.__version__}, CUDA "
      f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, Python {platform.python_version()}, "
      f"{os.cpu_count()} CPU cores")
# torch.compile's GPU kernels (the compile stage) are built with a C compiler and the Python headers.
headers = os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
print(f"for torch.compile: C compiler {shutil.which('gcc') or shutil.which('clang') or 'none'}, Python.h "
      f"{'found' if headers else 'missing'}")
EOF

# Runs a stage and appends its wall time and exit status to $out/timings.txt.
timed() {
    local start=$SECONDS status=0
    "$@" || status=$?
    echo "$* : $((SECONDS - start)) s, exit status $status" | tee -a "$out/timings.txt"
    return "$status"
}

run_speed() {
    "$PY" scripts/benchmark.py --modes fp32 bf16+channels_last bf16+channels_last+graph --top-kernels 10 \
        "${bench[@]}" 2>&1 | tee "$out/benchmark.md"
}

run_speed_core() {
    timeout -k 10 "$SPEED_LIMIT" "$PY" scripts/benchmark.py --modes fp32 bf16+channels_last+graph --top-kernels 10 \
        "${bench[@]}" 2>&1 | tee "$out/benchmark.md"
}

run_compile() {
    "$PY" scripts/benchmark.py --modes fp32 bf16+channels_last+compile bf16+channels_last+compile+graph \
        --iters 20 --profile-iters 2 "${bench[@]}" 2>&1 | tee "$out/benchmark_compile.md"
}

# Deterministic cuBLAS (the CUDA tests compare captured steps with eager ones bit for bit).
run_tests() {
    CUBLAS_WORKSPACE_CONFIG=:4096:8 "$PY" -m pytest -q -rs tests/test_speed.py 2>&1 | tee "$out/tests.txt"
}

run_tests_core() {
    CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout -k 10 "$TESTS_LIMIT" "$PY" -m pytest -q -rs tests/test_speed.py \
        -k "on_the_gpu and not compiled or fp16_scales" 2>&1 | tee "$out/tests_core.txt"
}

run_quality() {
    # The demo photos with their MATLAB-bicubic LR made once (rather than by every worker for every sample), and
    # the paper's network, batch, patch, learning rate and EMA (BasicSR's reference settings).
    "$PY" scripts/generate_lr.py --input datasets/demo/train --output "$work/demo_LR" --scale 4 \
        --hr-mod-output "$work/demo_HR" --workers 8 > "$work/generate_lr.log" 2>&1 ||
        { cat "$work/generate_lr.log"; return 1; }
    local reference=() limit=()
    # shellcheck disable=SC2206  # REFERENCE is a list of overrides
    [[ -z "$REFERENCE" ]] || reference=(--reference $REFERENCE)
    if [[ -n "${BUDGET:-}" ]]; then
        # What is left of BUDGET, less time for both runs to stop (30 s at most) and for the report.
        local left=$(( BUDGET - SECONDS - 45 ))
        if (( left < 150 )); then
            echo "quality check not started: $left s of BUDGET left, too few to reach a validation" |
                tee "$out/check_fast_path.md"
            return 3
        fi
        limit=(--time-limit "$left" --stop-timeout 30)
    fi
    # shellcheck disable=SC2086  # FAST is a list of overrides
    "$PY" scripts/check_fast_path.py -opt options/train_demo.yml --parallel --psnr-iters "$PSNR_ITERS" \
        --gan-iters "$GAN_ITERS" --print-freq 50 --workdir "$work" --log-dir "$out" --fast $FAST "${reference[@]}" "${limit[@]}" \
        --set datasets.train.dataroot_GT="$work/demo_HR" --set datasets.train.dataroot_LQ="$work/demo_LR" \
        --set network_G.nf=64 --set network_G.nb=23 --set network_G.gc=32 --set network_D.nf=64 \
        --set datasets.train.batch_size=16 --set datasets.train.n_workers=6 --set train.ema_decay=0.999 \
        --set datasets.train.dataset_enlarge_ratio=1000 \
        --set train.psnr.optim_G.lr=2e-4 --set train.psnr.scheduler.milestones=[] "${tiny[@]}" \
        2>&1 | tee "$out/check_fast_path.md"
}

# Several stages in a row, each run even when one before it failed; the status of the last that failed.
stages() {
    local failed=0 stage
    for stage in "$@"; do timed "$stage" || failed=$?; done
    return "$failed"
}

# When the CUDA tests fail, captured steps are not shown to equal eager ones: the quality check then compares
# with the plain eager fp32 path.
core() {
    local failed=0
    timed run_tests_core || {
        failed=$?
        REFERENCE=""
        echo "the CUDA tests failed: the quality check's fp32 reference runs eagerly" | tee -a "$out/timings.txt"
    }
    stages run_speed_core run_quality || failed=$?
    return "$failed"
}

case "${1:-all}" in
    core) core ;;
    speed) timed run_speed ;;
    quality) timed run_quality ;;
    tests) timed run_tests ;;
    compile) timed run_compile ;;
    all) stages run_speed run_quality run_tests run_compile ;;
esac
