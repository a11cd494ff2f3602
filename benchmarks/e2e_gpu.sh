#!/usr/bin/env bash
# One GPU call for the end-to-end speed issue: the compile / CUDA-graph / host-cost check, then
# `sigcell bench train` with every provider eager and compiled. Usage: bash benchmarks/e2e_gpu.sh [quick]
set -uo pipefail
export PYTHONPATH=$PWD/src:$PWD PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=16
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
quiet() { grep -v "Warning\|warn("; }
timeout ${CHECK_TIMEOUT:-170} python3 benchmarks/compile_check.py --out "$OUT" 2>&1 | quiet | tee "$OUT/compile_check.log" | tail -20
timeout ${BENCH_TIMEOUT:-380} python3 -m sigcell bench train --preset ${1:-quick} \
  --providers sigcell,sdpa-cudnn,softmax-varlen --no-memory-check --compile eager,compiled \
  --time-limit ${BENCH_LIMIT:-300} --out "$OUT" 2>&1 | quiet | tee "$OUT/bench_train.log" | tail -60
