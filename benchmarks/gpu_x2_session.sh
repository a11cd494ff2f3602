#!/usr/bin/env bash
# One call on a 2-GPU machine (nvidia-h100-x2 / h200-x2) for the GPU parts of issues 5, 6 and 7:
#   GPU 0: the compare train stage (benchmarks/compare_gpu.sh, preset small, seeds 0-2)
#   GPU 1: the paper stress preset (benchmarks/stress_gpu.sh), at the same time
#   then: the 2-GPU vs 1-GPU loss-curve check (benchmarks/ddp_gpu_check.py) and the sink / Jacobian analyses
#   of one dataset's trained compare runs (softmax and sigmoid, seed 0).
# Usage, from the repository root on that machine: bash benchmarks/gpu_x2_session.sh PREPARED_DIR [DATASET]
# Everything comes back as a few tarballs under $OUT (the device tool returns at most 8 files).
set -uo pipefail
PREPARED=${1:?usage: gpu_x2_session.sh PREPARED_DIR [DATASET]}
DATASET=${2:-zeisel}
OUT=${OUT:?set OUT}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
W=/tmp/x2; mkdir -p $W/compare $W/stress $W/extra
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/extra/gpus.txt
(CUDA_VISIBLE_DEVICES=0 OUT=$W/compare WORK=$W/compare-work TIME_BUDGET=${COMPARE_BUDGET:-280} \
   timeout ${PART_TIMEOUT:-480} bash benchmarks/compare_gpu.sh "$PREPARED" > $W/compare.log 2>&1
 echo "compare rc $?" | tee -a $W/compare.log) &
(CUDA_VISIBLE_DEVICES=1 OUT=$W/stress TIME_BUDGET=${STRESS_BUDGET:-260} \
   timeout ${PART_TIMEOUT:-480} bash benchmarks/stress_gpu.sh > $W/stress.log 2>&1
 echo "stress rc $?" | tee -a $W/stress.log) &
wait
tail -3 $W/compare.log $W/stress.log
mv $W/compare/compare-results.tar.gz* $W/stress/stress-paper.tar.gz "$OUT"/ 2>/dev/null
cp $W/compare.log $W/stress.log "$OUT"/
RUNS=$W/compare-work/runs/$DATASET
(CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -m sigcell analyze sinks --run $RUNS/softmax-seed0 \
   --run $RUNS/sigmoid-seed0 --prepared "$PREPARED/$DATASET" --cells 256 --device cuda \
   --out $W/extra/sinks-$DATASET --no-plot > $W/extra/sinks.log 2>&1; echo "sinks rc $?"
 timeout 150 python3 -m sigcell analyze jacobian --run $RUNS/softmax-seed0 --run $RUNS/sigmoid-seed0 \
   --out $W/extra/jacobian-$DATASET --no-plot > $W/extra/jacobian.log 2>&1; echo "jacobian rc $?") &
timeout ${DDP_TIMEOUT:-150} python3 benchmarks/ddp_gpu_check.py --out $W/extra/ddp --steps ${DDP_STEPS:-40} 2>&1 \
  | tee $W/extra/ddp.log
wait
rm -rf $W/extra/ddp/*/checkpoints
tar -C $W -czf "$OUT/extra.tar.gz" extra
ls -l "$OUT"
