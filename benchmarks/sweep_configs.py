"""Sweep launch configurations of the three kernels at the paper's shapes (bf16, non-causal, L = 4096,
B = 16384 / L, H = 2048 / D) and print the best per head dim. Results go to JSON.

Usage: PYTHONPATH=src python3 benchmarks/sweep_configs.py [--out DIR] [--dims 64,128,256] [--L 4096]
       [--kinds fwd,dkdv,dq,fused,hopper_fwd,hopper_ws,hopper_ws_dq,hopper_ws_dkdv,hopper_dkdv,hopper_dq,
       hopper_fused]
       (fused: the opt-in fused backward, timed with SIGCELL_FUSED_BWD=1; hopper_fwd: the Gluon forward,
       D64 and D256 included; hopper_ws / hopper_ws_dq / hopper_ws_dkdv: the warp-specialized Gluon
       forward / dQ / dK-dV kernel, configs (BM, BN, stages); hopper_dkdv / hopper_dq: a Gluon backward
       kernel on sm_90, timed with the other backward kernel in Triton; hopper_fused: the opt-in
       one-kernel Gluon backward;
       dkdv / dq time the Triton kernels with the Gluon backward off)
       [--causal] [--configs 'M,N,W,S;...'] [--rounds R]   (R interleaved passes; medians kept)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
import triton

from sigcell import sigmoid_attn_func
from sigcell.ops.sigmoid_attn import interface

# Register spills (ptxas for sm_90a, benchmarks/NOTES.md v8) rule out most 4-warp configs at D128.
CANDIDATES = {
    "fwd": [
        (128, 64, 4, 3),
        (128, 64, 8, 2),
        (128, 64, 8, 3),
        (128, 128, 8, 2),
        (128, 32, 4, 3),
        (64, 64, 4, 3),
        (64, 64, 4, 4),
        (64, 32, 4, 3),
        (64, 128, 4, 3),
    ],
    "dkdv": [
        (64, 64, 4, 2),
        (64, 64, 8, 2),
        (64, 64, 8, 3),
        (128, 64, 8, 2),
        (64, 128, 8, 2),
        (128, 128, 8, 2),
        (32, 64, 4, 2),
    ],
    "dq": [
        (64, 64, 4, 2),
        (128, 64, 8, 2),
        (128, 64, 8, 3),
        (128, 128, 8, 2),
        (64, 128, 8, 2),
        (128, 32, 4, 2),
    ],
    "fused": [
        (64, 64, 4, 2),
        (64, 64, 8, 2),
        (128, 64, 8, 2),
        (64, 128, 8, 2),
        (64, 32, 4, 2),
    ],
    # Gluon backward (hopper_bwd.py); ptxas (sm_90a, no GPU) at D128: dK/dV 128 x 128 spills 1.4 KB.
    "hopper_dkdv": [(64, 128, 8, 2), (64, 128, 8, 3), (64, 64, 4, 2), (64, 64, 4, 3), (32, 128, 8, 3)],
    # Gluon forward (hopper.py), swept with SIGCELL_HOPPER_FWD_DIMS=64,128 (D64 included).
    "hopper_fwd": [
        (128, 64, 4, 2),
        (128, 128, 4, 2),
        (64, 64, 4, 2),
        (64, 128, 4, 2),
        (64, 64, 4, 3),
        (128, 64, 8, 2),
    ],
    "hopper_fused": [(64, 64, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (64, 128, 8, 3)],
    # Warp-specialized forward (hopper_ws.py): (rows per consumer, BLOCK_N, stages[, V stages: split K / V
    # rings, v21]); ptxas: D128 with 128 rows per consumer spills 196 bytes; the split-ring configs are
    # spill-free (D128 64 x 128 / 3 + 2: 197 KB of shared memory).
    "hopper_ws": [
        (128, 64, 2),
        (128, 64, 3),
        (128, 64, 4),
        (64, 64, 2),
        (64, 64, 3),
        (128, 64, 3, 2),
        (64, 64, 4, 3),
        (64, 128, 3, 2),
    ],
    # Warp-specialized backward (timed whole, one kernel's config swept); ptxas: 128-row dQ consumers
    # spill 2.3 KB at D64; dK / dV (query rows per block, keys per consumer, stages) 64 x 64 spills 108
    # bytes at D128.
    "hopper_ws_dq": [(64, 64, 2), (64, 64, 3), (64, 32, 3), (64, 128, 2)],
    "hopper_ws_dkdv": [(64, 64, 2), (64, 64, 3), (32, 64, 2), (32, 64, 3)],
    "hopper_dq": [
        (128, 64, 8, 2),
        (128, 64, 8, 3),
        (64, 64, 4, 2),
        (64, 64, 4, 3),
        (128, 128, 8, 2),
        (128, 32, 8, 3),
    ],
}

# D = 256: the shared-memory budget leaves other shapes; ptxas (sm_90a, no GPU; NOTES.md after v10)
# reports spill stores per thread of dK/dV 32 x 32 / 4 warps (the default) 1.6 KB, 32 x 64 / 8 warps 4 B;
# dQ 64 x 64 / 4 warps (the default) 6.7 KB, 128 x 32 / 8 warps 1.3 KB.
CANDIDATES_D256 = {
    "fwd": [(128, 64, 8, 2), (64, 64, 4, 2), (128, 32, 8, 2), (64, 32, 4, 2)],
    "dkdv": [(32, 32, 4, 1), (32, 64, 8, 1), (64, 32, 8, 1), (64, 64, 8, 1), (32, 32, 8, 1)],
    "dq": [(64, 64, 4, 2), (128, 32, 8, 2), (64, 64, 8, 1), (128, 64, 8, 1), (64, 32, 4, 2)],
    "fused": [(32, 32, 8, 1), (32, 64, 8, 1), (64, 32, 8, 1)],
    # Gluon backward at D256 (dK and dV in two launches): ptxas keeps these free of spills (dK / dV
    # 64 x 64 / 4 / 2 spills 80 bytes, kept as a probe; dQ 64 x 64 spills 264, 128 x 64 needs 262 KB).
    "hopper_dkdv": [(32, 64, 4, 2), (32, 64, 4, 3), (64, 64, 4, 2), (32, 128, 8, 2)],
    "hopper_dq": [(64, 32, 4, 2), (64, 32, 4, 3), (64, 32, 4, 4), (128, 32, 8, 2)],
    # ptxas (sm_90a, no GPU): 197-247 registers, no spills; 64 x 128 / 4 spills 1.1 KB.
    # Split K / V rings (v21; the output staged in the Q tile): 64 x 64 / 3 + 2 uses 224 KB.
    "hopper_ws": [(64, 32, 3), (64, 64, 2), (64, 32, 4), (64, 64, 3, 2), (64, 32, 4, 3), (64, 32, 5, 3)],
    "hopper_ws_dq": [(64, 32, 2), (64, 64, 1)],
    "hopper_ws_dkdv": [(32, 64, 2), (32, 32, 3)],
    "hopper_fwd": [
        (64, 64, 4, 2),
        (64, 32, 4, 3),
        (64, 64, 4, 3),
        (64, 32, 4, 4),
        (128, 64, 8, 2),
        (128, 32, 8, 2),
    ],
}


def candidates_for(kind: str, d: int) -> list[tuple[int, int, int, int]]:
    return (CANDIDATES_D256 if d > 128 else CANDIDATES)[kind]


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def parse_configs(text: str) -> list[tuple[int, int, int, int]]:
    """``"128,32,4,3;64,64,4,3"`` -> [(128, 32, 4, 3), (64, 64, 4, 3)]."""
    return [tuple(int(x) for x in part.split(",")) for part in text.split(";") if part]


def time_config(kind, cfg, q, k, v, do, causal):
    """ms of one call (fwd) or of the whole backward (other kinds) with ``cfg`` forced for ``kind``."""
    interface.set_config_override(kind, cfg)
    try:
        if kind in ("fwd", "hopper_fwd", "hopper_ws"):
            return bench(lambda: sigmoid_attn_func(q, k, v, causal=causal))
        out = sigmoid_attn_func(q, k, v, causal=causal)
        return bench(lambda: out.backward(do, retain_graph=True))
    finally:
        interface.set_config_override(kind, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    ap.add_argument("--dims", default="64,128,256")
    ap.add_argument("--L", type=int, default=4096)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--kinds", default="fwd,dkdv,dq", help="kernels to sweep, of fwd, dkdv, dq, fused")
    ap.add_argument("--configs", help="candidates for every kind instead of the built-in ones: 'M,N,W,S;...'")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved passes over the candidates (median)")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    unknown = set(kinds) - set(CANDIDATES)
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}; choose from {sorted(CANDIDATES)}")
    L = args.L
    rows = []
    best = {}
    for d in (int(x) for x in args.dims.split(",")):
        B, H = max(1, 16384 // L), 2048 // d
        q, k, v = (
            torch.randn(B, L, H, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
        )
        do = torch.randn_like(q)
        flops = 4 * B * H * L * L * d * (0.5 if args.causal else 1.0)
        for kind in kinds:
            # The fused kernel replaces dK/dV + dQ only while this switch is set (interface._triton_backward).
            os.environ["SIGCELL_FUSED_BWD"] = "1" if kind == "fused" else "0"
            # Each Gluon kernel is timed next to the other kernel in Triton; Triton kinds without Gluon.
            os.environ["SIGCELL_HOPPER_BWD"] = "1" if kind.startswith("hopper_") else "0"
            # hopper_ws_dq / hopper_ws_dkdv: the warp-specialized backward, one kernel's config swept.
            ws_bwd = kind in ("hopper_ws_dq", "hopper_ws_dkdv")
            os.environ["SIGCELL_HOPPER_BWD_KERNELS"] = "dkdv,dq" if ws_bwd else kind.removeprefix("hopper_")
            os.environ["SIGCELL_HOPPER_WS_BWD_DIMS"] = "64,128,256" if ws_bwd else ""
            os.environ["SIGCELL_HOPPER_FWD_DIMS"] = "64,128,256" if kind == "hopper_fwd" else "128"
            os.environ["SIGCELL_HOPPER_BWD_DIMS"] = "64,128,256"
            os.environ["SIGCELL_HOPPER_WS_DIMS"] = "64,128,256" if kind == "hopper_ws" else ""
            candidates = parse_configs(args.configs) if args.configs else candidates_for(kind, d)
            times = {cfg: [] for cfg in candidates}
            for _ in range(args.rounds):
                for cfg in list(times):
                    try:
                        times[cfg].append(time_config(kind, cfg, q, k, v, do, args.causal))
                    except Exception as err:  # out of shared memory / registers for this config
                        print(f"D{d} {kind} {cfg}: failed ({type(err).__name__}: {str(err)[:80]})")
                        del times[cfg]
            results = []
            for cfg, runs in times.items():
                ms = statistics.median(runs)
                tf = (1.0 if kind in ("fwd", "hopper_fwd", "hopper_ws") else 2.5) * flops / ms * 1e-9
                results.append((ms, cfg))
                rows.append(
                    dict(
                        gpu=torch.cuda.get_device_name(),
                        D=d,
                        L=L,
                        B=B,
                        H=H,
                        causal=args.causal,
                        kind=kind,
                        config=cfg,
                        ms=ms,
                        runs_ms=runs,
                        tflops=tf,
                    )
                )
                runs_text = [round(x, 3) for x in runs]
                print(f"D{d} {kind} {cfg}: {ms:.3f} ms  {tf:.1f} TFLOPS  (runs {runs_text})")
            if results:
                ms, cfg = min(results)
                best[(d, kind)] = cfg
                interface.set_config_override(kind, cfg)  # later kinds are timed with the best so far
                print(f"== D{d} {kind} best {cfg} {ms:.3f} ms", flush=True)
        for name in (
            "SIGCELL_FUSED_BWD",
            "SIGCELL_HOPPER_BWD",
            "SIGCELL_HOPPER_BWD_KERNELS",
            "SIGCELL_HOPPER_FWD_DIMS",
        ):
            os.environ.pop(name, None)
        for kind in kinds:
            interface.set_config_override(kind, None)
        torch.cuda.empty_cache()
    print("BEST", {f"D{d}-{kind}": cfg for (d, kind), cfg in best.items()})
    os.makedirs(args.out, exist_ok=True)
    name = "sweep_configs-causal.json" if args.causal else "sweep_configs.json"
    with open(os.path.join(args.out, name), "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
