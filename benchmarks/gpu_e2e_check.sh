#!/usr/bin/env bash
# One GPU call (< 10 min) for issue 16: validates the opt-in launch cache and the packed-compile fix.
# Usage (repo root on the GPU machine): bash benchmarks/gpu_e2e_check.sh   (results under $OUT)
export PYTHONPATH=$PWD/src:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$(date +%s)
# 1. The op's GPU tests with every launch through the cache (poisoned outputs, float64 references).
SIGCELL_FAST_LAUNCH=1 timeout 150 python3 -m pytest -q -p no:cacheprovider -n 8 tests/ops/test_gpu.py 2>&1 \
  | tail -5 | tee "$OUT/gpu_tests.log"; echo "t=$(( $(date +%s)-T0 ))"
# 2. Packed torch.compile (the SliceView failure).
SIGCELL_FAST_LAUNCH=1 timeout 90 python3 benchmarks/packed_compile_check.py > "$OUT/packed_compile.log" 2>&1
grep -E "^(OK|FAIL)| compiled packed" "$OUT/packed_compile.log"; echo "t=$(( $(date +%s)-T0 ))"
# 3. Host time per eager call, cache on and off.
for fast in 1 0; do
  SIGCELL_FAST_LAUNCH=$fast timeout 40 python3 -c "
import benchmarks.compile_check as c
for r in c.host_us_per_call(): print('SIGCELL_FAST_LAUNCH=$fast', r)
" 2>&1 | tail -3
done | tee "$OUT/host_us.log"; echo "t=$(( $(date +%s)-T0 ))"
# 4. Whole steps: eager and CUDA graphs, full L2048 and the celltypist mix, against cuDNN and varlen softmax.
SIGCELL_FAST_LAUNCH=1 timeout 180 python3 -m sigcell bench train --preset quick \
  --providers sigcell,sdpa-cudnn,softmax-varlen --compile eager,cudagraphs --l 2048 --padding 0 \
  --mixes celltypist@4096 --no-memory-check --time-limit 150 --out "$OUT" --name train-e2e --no-plot 2>&1 \
  | grep -v Warning | tail -30
echo "t=$(( $(date +%s)-T0 ))"
