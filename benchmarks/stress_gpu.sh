#!/usr/bin/env bash
# `sigcell stress --preset paper` on one GPU: softmax vs sigmoid attention, ~172M parameters (d_model 1024,
# 12 layers, 16 heads, QK-norm off), 8192-token synthetic cells, 2 cells per step, bf16 autocast, AdamW
# lr 3e-3 (constant after 20 warmup steps), no gradient clipping, seeds 0 1 2.
#
# On the GPU machine, from the repository root (needs python3 with torch, triton, numpy, scipy, pyyaml,
# safetensors; no matplotlib / rich / tensorboard needed):
#   bash benchmarks/stress_gpu.sh [extra sigcell stress flags, e.g. --lr 1e-2 --seeds 0 1]
# Wall time: TIME_BUDGET seconds of training for all 6 runs together (default 300, split evenly: 50 s per
# run, counted after each run's first step), plus per run ~5-10 s to build the model and take step 1 (the
# first sigmoid run also compiles the Triton kernels, ~10-40 s) and ~20 s of start-up: about 7 minutes.
# A run that diverges stops early and returns its unused time (the total only shrinks).
#
# Results: $OUT/stress-paper/ (stress.json, runs/<attention>-seed<k>/{config.yaml,metrics.jsonl},
# stress.log) and the same packed as $OUT/stress-paper.tar.gz. Back on a machine with matplotlib:
#   mkdir -p docs/results/analysis-gpu && tar -xzf stress-paper.tar.gz -C docs/results/analysis-gpu
#   sigcell stress --plot-only docs/results/analysis-gpu/stress-paper/stress.json
set -euo pipefail

OUT=${OUT:-/tmp/sigcell-stress-out}
TIME_BUDGET=${TIME_BUDGET:-300}
PY=${PYTHON:-python3}
DIR="$OUT/stress-paper"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

$PY - <<'PY' || { echo "stress_gpu.sh: a required package is missing (see above)" >&2; exit 2; }
import importlib
for name in ("torch", "triton", "numpy", "scipy", "yaml", "safetensors"):
    mod = importlib.import_module(name)
    print(f"{name} {getattr(mod, '__version__', '?')}")
import torch
assert torch.cuda.is_available(), "no CUDA device visible"
print("cuda:", torch.cuda.get_device_name(0))
PY
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true

start=$(date +%s)
set +e
$PY -m sigcell stress --preset paper --out "$DIR" --device cuda --time-budget "$TIME_BUDGET" \
    --progress-every 10 --no-plot "$@" 2>&1 | tee "$OUT/stress.log"
rc=${PIPESTATUS[0]}
set -e
echo "sigcell stress exit code $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/stress.log"
cp "$OUT/stress.log" "$DIR/" 2>/dev/null || true
tar -C "$OUT" -czf "$OUT/stress-paper.tar.gz" stress-paper
ls -l "$OUT" "$DIR"
exit "$rc"
