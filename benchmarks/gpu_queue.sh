#!/usr/bin/env bash
# The GPU calls queued for v19-v21 (benchmarks/NOTES.md): bash benchmarks/gpu_queue.sh a|b|c
# (carry .whl: pytest, xdist, triton-sigmoid). Each call's timeouts sum to under 10 minutes.
#   a: smoke with a hang guard, GPU tests of the warp-specialized kernels (-k ws), forward sweeps
#      (one ring vs split K / V rings) at D256 / D128 L4k, split-ring A/B at L1k-16k
#   b: D64 forward sweeps, ping-pong A/B (default configs), warp-specialized backward sweeps
#   c: warp-specialized backward A/B, causal ping-pong A/B, L1k padded probe, dQ-atomics probe
set -uo pipefail
case "${1:-}" in a|b|c) ;; *) echo "usage: bash benchmarks/gpu_queue.sh a|b|c" >&2; exit 2 ;; esac
export PYTHONPATH=$PWD/src:$PWD PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/sweep" "$OUT/ab"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
quiet() { grep -v "Warning\|warner"; }
sweep() {  # sweep D KINDS NAME [ENV=VALUE]
  env ${4:-_=} timeout 60 python3 benchmarks/sweep_configs.py --dims "$1" --L 4096 --kinds "$2" --rounds 2 \
    --out "$OUT/sweep/$3" 2>&1 | quiet | grep -i "TFLOPS\|best\|error\|fail"
}
AB="python3 benchmarks/ab_kernels.py --rounds 5 --out $OUT/ab"
WS=(--env-a SIGCELL_HOPPER_WS_DIMS=64,128,256 --env-a SIGCELL_HOPPER_WS_PINGPONG_DIMS=
    --env-b SIGCELL_HOPPER_WS_DIMS=64,128,256 --env-b SIGCELL_HOPPER_WS_PINGPONG_DIMS=64,128,256)
PP=SIGCELL_HOPPER_WS_PINGPONG_DIMS=64,128,256
case "${1:-}" in
  a)
    timeout 150 python3 benchmarks/ws_smoke.py 2>&1 | quiet | tail -12 | tee "$OUT/smoke.log"
    grep -q "D256 causal=True" "$OUT/smoke.log" || { echo "SMOKE FAILED"; exit 3; }
    # -v into the full log: after a hang (killed by the timeout) the missing PASSED lines name the cases
    timeout 200 python3 -m pytest -v -p no:cacheprovider -n 14 tests/ops/test_gpu.py -k ws 2>&1 | quiet \
      | tee "$OUT/gpu_tests_full.log" | grep -v "PASSED" | tail -25
    for d in 256 128; do sweep $d hopper_ws ws$d; done
    echo "== v21 split K / V rings (B) vs the default warp-specialized configs (A)"
    timeout 110 $AB --modes fwd --rounds 3 --d 128,256 --env-a SIGCELL_HOPPER_WS_DIMS=64,128,256 \
      --env-b SIGCELL_HOPPER_WS_DIMS=64,128,256 --config-b hopper_ws@128=64,128,3,2 --config-b hopper_ws@256=64,64,3,2
    ;;
  b)
    sweep 64 hopper_ws ws64
    sweep 64 hopper_ws pp64 $PP
    echo "== v20 ping-pong (B) vs v18 warp-specialized forward (A), default configs"
    timeout 150 $AB --modes fwd --d 64,128,256 "${WS[@]}"
    for d in 128 256 64; do
      timeout 80 python3 benchmarks/sweep_configs.py --dims $d --L 4096 --kinds hopper_ws_dq,hopper_ws_dkdv \
        --rounds 2 --out "$OUT/sweep/bwd$d" 2>&1 | quiet | grep -i "TFLOPS\|best\|error\|fail"
    done
    ;;
  c)
    echo "== v19 warp-specialized backward (B) vs split Gluon backward (A)"
    timeout 240 $AB --d 64,128,256 --env-a SIGCELL_HOPPER_WS_BWD_DIMS= --env-b SIGCELL_HOPPER_WS_BWD_DIMS=64,128,256
    echo "== v20 causal"
    timeout 90 $AB --modes fwd --causal --l 4096,16384 --d 64,128,256 "${WS[@]}"
    echo "== L1k padded at 0 % padding vs dense (paper-v18: D128 0.69x, D256 0.79x, same kernel and grid)"
    timeout 50 python3 -m sigcell bench kernels --d 128,256 --l 1024 --padding 0,0.25 --providers sigcell \
      --modes fwd --no-matmul --no-check --no-plot --out "$OUT/l1k-padded.json" 2>&1 | quiet | tail -14
    timeout 60 python3 benchmarks/host_overhead.py --d 128,256 --l 1024 --out "$OUT" 2>&1 | quiet | tail -20
    echo "== dQ atomics probe"
    timeout 60 python3 benchmarks/probe_dq_atomics.py --d 64,128 --l 4096,16384 --out "$OUT" 2>&1 | quiet | tail -16
    ;;
esac
