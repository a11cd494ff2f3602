"""One call of each opt-in warp-specialized kernel per head dim against the default kernels, to run
first on a GPU with a timeout (a barrier protocol bug hangs instead of failing): ping-pong with split
K / V rings (v20, v21) with the warp-specialized backward (v19), then the persistent forward (v22),
benchmarks/NOTES.md. The last line printed before a hang names the variant.

Usage (GPU): PYTHONPATH=src timeout 150 python3 benchmarks/ws_smoke.py
"""

from __future__ import annotations

import os
import time

import torch

from sigcell import sigmoid_attn_func
from sigcell.ops.sigmoid_attn import interface

ALL = "64,128,256"
# variant -> switches it sets (the default: all of them empty) and whether its configs are split rings
VARIANTS = {
    "default": ({}, False),
    "pingpong+split+ws-bwd": (
        {"SIGCELL_HOPPER_WS_PINGPONG_DIMS": ALL, "SIGCELL_HOPPER_WS_BWD_DIMS": ALL},
        True,
    ),
    "persistent": ({"SIGCELL_HOPPER_WS_PERSISTENT_DIMS": ALL}, False),
    "persistent+pingpong+split": (
        {"SIGCELL_HOPPER_WS_PERSISTENT_DIMS": ALL, "SIGCELL_HOPPER_WS_PINGPONG_DIMS": ALL},
        True,
    ),
}
SWITCHES = sorted({name for switches, _ in VARIANTS.values() for name in switches})


def run(variant: str, d: int, q, k, v, dout, lens, causal: bool):
    switches, split = VARIANTS[variant]
    for name in SWITCHES:
        os.environ[name] = switches.get(name, "")
    interface.set_config_override("hopper_ws", interface._HOPPER_WS_SPLIT_CONFIGS[d] if split else None)
    out = sigmoid_attn_func(q, k, v, causal=causal, seq_lens_q=lens, seq_lens_k=lens)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    torch.cuda.synchronize()
    return (out, *grads)


def main() -> None:
    torch.manual_seed(0)
    os.environ["SIGCELL_HOPPER_WS_DIMS"] = ALL
    lens = torch.tensor([1000, 517, 3, 0], dtype=torch.int32, device="cuda")
    for d in (64, 128, 256):
        for causal in (False, True):
            q, k, v = (
                torch.randn(4, 1000, 4, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for _ in range(3)
            )
            dout = torch.randn_like(q)
            reference = run("default", d, q, k, v, dout, lens, causal)
            for variant in list(VARIANTS)[1:]:
                start = time.time()
                print(f"D{d} causal={causal} {variant}: ...", end=" ", flush=True)
                got = run(variant, d, q, k, v, dout, lens, causal)
                errors = [
                    (a.float() - b.float()).abs().max().item() for a, b in zip(got, reference, strict=True)
                ]
                print(
                    f"max|new - default| out {errors[0]:.3g} dq {errors[1]:.3g} dk {errors[2]:.3g} "
                    f"dv {errors[3]:.3g} ({time.time() - start:.1f} s)",
                    flush=True,
                )
    print("smoke done", flush=True)


if __name__ == "__main__":
    main()
