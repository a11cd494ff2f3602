#!/usr/bin/env bash
# Train stage of `sigcell compare` on a GPU machine that has torch + numpy but no anndata/scanpy.
#
# Here (CPU, with the eval extra):
#   sigcell compare --stage prepare --preset small --out runs/compare-small
#   # carry runs/compare-small/prepared into the repo tree (about 20 MB), e.g. as compare-prepared/
# On the GPU machine, from the repository root:
#   bash benchmarks/compare_gpu.sh compare-prepared [extra sigcell compare flags]
# Back here, with the returned file(s):
#   mkdir -p runs/compare-small && cat compare-results.tar.gz* | tar -xz -C runs/compare-small
#   sigcell compare --stage report --out runs/compare-small
#
# Defaults: preset small, seeds 0,1,2, every prepared dataset, steps sized by a measured step time so the
# runs take about TIME_BUDGET seconds (default 330; calibration and start-up come on top, about 1 min).
# Results (no checkpoints): $OUT/compare-results.tar.gz, split into 15 MiB parts
# (compare-results.tar.gz.part-00, -01, ...) only if it is larger, plus $OUT/compare-train.log.
set -euo pipefail

PREPARED=${1:?usage: compare_gpu.sh PREPARED_DIR [sigcell compare flags]}
shift
OUT=${OUT:-/tmp/sigcell-compare-out}
WORK=${WORK:-/tmp/sigcell-compare-gpu}
TIME_BUDGET=${TIME_BUDGET:-330}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

if [ ! -f "$PREPARED/manifest.json" ]; then
  echo "compare_gpu.sh: $PREPARED/manifest.json not found; pass the prepared directory" \
       "(sigcell compare --stage prepare ... writes OUT/prepared)" >&2
  exit 2
fi
$PY - <<'PY' || { echo "compare_gpu.sh: a required package is missing (see above)" >&2; exit 2; }
import importlib
for name in ("torch", "numpy", "scipy", "yaml", "safetensors"):
    mod = importlib.import_module(name)
    print(f"{name} {getattr(mod, '__version__', '?')}")
import torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

start=$(date +%s)
set +e
$PY -m sigcell compare --stage train --prepared "$PREPARED" --out "$WORK" --preset small \
    --seeds 0,1,2 --time-budget "$TIME_BUDGET" --embedding-dtype float16 --device cuda "$@" \
    2>&1 | tee "$OUT/compare-train.log"
rc=${PIPESTATUS[0]}
set -e
echo "train stage exit code $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/compare-train.log"

# Pack what the report needs (plan, results, embeddings, logs, configs); checkpoints stay behind.
tar -C "$WORK" --exclude='checkpoints' -czf "$OUT/compare-results.tar.gz" runs
size=$(stat -c %s "$OUT/compare-results.tar.gz")
if [ "$size" -gt $((15 * 1024 * 1024)) ]; then
  split -b 15M -d "$OUT/compare-results.tar.gz" "$OUT/compare-results.tar.gz.part-"
  rm "$OUT/compare-results.tar.gz"
fi
ls -l "$OUT"
exit "$rc"
