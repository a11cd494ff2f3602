#!/usr/bin/env bash
# One call on the GPU machine: install carried wheels, run the GPU tests, then the benchmarks.
# Usage (from the repo root on the GPU machine): bash benchmarks/gpu_session.sh [extra benchmark commands...]
set -uo pipefail
export PYTHONPATH=$PWD/src:$PWD PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
timeout ${GPU_TEST_TIMEOUT:-600} python3 -m pytest -q -p no:cacheprovider -n ${GPU_WORKERS:-8} ${GPU_TESTS:-tests/ops/test_gpu.py} 2>&1 | tee "$OUT/gpu_tests.log" | tail -40
for cmd in "$@"; do echo "+ $cmd"; eval "$cmd" 2>&1 | tee -a "$OUT/bench.log"; done
