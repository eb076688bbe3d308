#!/usr/bin/env bash
# The GPU checks behind docs/PERFORMANCE.md, in stages that each fit in a few minutes on one H100/H200:
#
#   bash scripts/gpu_checks.sh tests     # the CUDA tests (CUDA graphs, eager and compiled; fp16 scalers)
#   bash scripts/gpu_checks.sh speed     # scripts/benchmark.py at the paper's settings, with the top kernels
#   bash scripts/gpu_checks.sh quality   # scripts/check_fast_path.py: PSNR_ITERS (2,000) PSNR-phase iterations of
#                                        # the paper's network on the demo data, fp32 and FAST side by side
#   bash scripts/gpu_checks.sh all       # the three, in this order
#
# Everything printed also goes to $OUT (the device tool's output folder) or experiments/gpu_checks/, one log per
# stage. FAST (the speed overrides of the quality check) and PSNR_ITERS can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-experiments/gpu_checks}"
mkdir -p "$out"
FAST="${FAST:-speed.precision=bf16 speed.channels_last=true speed.cuda_graph=true}"
PSNR_ITERS="${PSNR_ITERS:-2000}"

python - <<'EOF' | tee "$out/machine.txt"
import datetime, os, platform, torch
assert torch.cuda.is_available(), "scripts/gpu_checks.sh needs a CUDA GPU"
print(datetime.date.today(), torch.cuda.get_device_name(), f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores")
EOF

run_tests() {
    python -m pytest -q -rs tests/test_speed.py 2>&1 | tee "$out/tests.txt"
}

run_speed() {
    python scripts/benchmark.py --top-kernels 10 2>&1 | tee "$out/benchmark.md"
}

run_quality() {
    # The demo photos with the paper's network, batch and patch (BasicSR's reference settings); 8 loader workers.
    # shellcheck disable=SC2086  # FAST is a list of overrides
    python scripts/check_fast_path.py -opt options/train_demo.yml --parallel --psnr-iters "$PSNR_ITERS" \
        --gan-iters 200 --print-freq 50 --workdir experiments/gpu_checks_runs --fast $FAST \
        --set network_G.nf=64 --set network_G.nb=23 --set network_G.gc=32 --set network_D.nf=64 \
        --set datasets.train.batch_size=16 --set datasets.train.n_workers=8 --set train.ema_decay=0.999 \
        --set train.psnr.optim_G.lr=2e-4 --set train.psnr.scheduler.milestones=[] \
        2>&1 | tee "$out/check_fast_path.md"
}

case "${1:-all}" in
    tests) run_tests ;;
    speed) run_speed ;;
    quality) run_quality ;;
    all) run_tests; run_speed; run_quality ;;
    *) echo "usage: bash scripts/gpu_checks.sh [tests|speed|quality|all]" >&2; exit 2 ;;
esac
