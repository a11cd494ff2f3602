#!/usr/bin/env bash
# The GPU calls queued for v19-v22 (benchmarks/NOTES.md): bash benchmarks/gpu_queue.sh a|b|c
# (carry .whl: pytest, xdist, triton-sigmoid). Each call's timeouts sum to under 10 minutes; in order of
# what the decisions need:
#   a: smoke with a hang guard (benchmarks/ws_smoke.py), the GPU tests of the warp-specialized kernels
#      (-k ws), forward config sweeps at D256 / D128 L4k (one ring vs split K / V rings)
#   b: A/Bs of the forward: split rings, persistent (dense and causal), ping-pong; the dQ-atomics probe
#   c: warp-specialized backward A/B, L1k padded probe, D64 forward sweeps, backward config sweeps
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
AB="python3 benchmarks/ab_kernels.py --rounds 3 --out $OUT/ab"
ALL=64,128,256
WS_ON=(--env-a SIGCELL_HOPPER_WS_DIMS=$ALL --env-b SIGCELL_HOPPER_WS_DIMS=$ALL)
case "$1" in
  a)
    timeout 150 python3 benchmarks/ws_smoke.py 2>&1 | quiet | tee "$OUT/smoke.log" | tail -40
    grep -q "smoke done" "$OUT/smoke.log" || { echo "SMOKE FAILED"; exit 3; }
    # -v into the full log: after a hang (killed by the timeout) the missing PASSED lines name the cases
    timeout 240 python3 -m pytest -v -p no:cacheprovider -n 14 tests/ops/test_gpu.py -k ws 2>&1 | quiet \
      | tee "$OUT/gpu_tests_full.log" | grep -v "PASSED" | tail -25
    for d in 256 128; do sweep $d hopper_ws ws$d; done
    ;;
  b)
    echo "== v21 split K / V rings (B) vs the default warp-specialized configs (A)"
    timeout 110 $AB --modes fwd --d 128,256 "${WS_ON[@]}" \
      --config-b hopper_ws@128=64,128,3,2 --config-b hopper_ws@256=64,64,3,2
    echo "== v22 persistent (B) vs one program per tile (A)"
    timeout 110 $AB --modes fwd --d 128,256 "${WS_ON[@]}" --env-b SIGCELL_HOPPER_WS_PERSISTENT_DIMS=$ALL
    timeout 80 $AB --modes fwd --causal --l 4096,16384 --d 128,256 "${WS_ON[@]}" \
      --env-b SIGCELL_HOPPER_WS_PERSISTENT_DIMS=$ALL
    echo "== v20 ping-pong (B) vs v18 (A), default configs"
    timeout 140 $AB --modes fwd --d 64,128,256 "${WS_ON[@]}" --env-b SIGCELL_HOPPER_WS_PINGPONG_DIMS=$ALL
    echo "== dQ atomics probe"
    timeout 60 python3 benchmarks/probe_dq_atomics.py --d 64,128 --l 4096,16384 --out "$OUT" 2>&1 | quiet | tail -16
    ;;
  c)
    echo "== v19 warp-specialized backward (B) vs split Gluon backward (A)"
    timeout 240 $AB --d 64,128,256 --env-b SIGCELL_HOPPER_WS_BWD_DIMS=$ALL
    echo "== L1k padded at 0 % padding vs dense (paper-v18: D128 0.69x, D256 0.79x, same kernel and grid)"
    timeout 50 python3 -m sigcell bench kernels --d 128,256 --l 1024 --padding 0,0.25 --providers sigcell \
      --modes fwd --no-matmul --no-check --no-plot --out "$OUT/l1k-padded.json" 2>&1 | quiet | tail -14
    timeout 60 python3 benchmarks/host_overhead.py --d 128,256 --l 1024 --out "$OUT" 2>&1 | quiet | tail -20
    sweep 64 hopper_ws ws64
    sweep 64 hopper_ws pp64 SIGCELL_HOPPER_WS_PINGPONG_DIMS=$ALL
    timeout 80 python3 benchmarks/sweep_configs.py --dims 128 --L 4096 --kinds hopper_ws_dq,hopper_ws_dkdv \
      --rounds 2 --out "$OUT/sweep/bwd128" 2>&1 | quiet | grep -i "TFLOPS\|best\|error\|fail"
    ;;
esac
