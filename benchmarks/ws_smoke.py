"""One call of each opt-in warp-specialized kernel per head dim against the default kernels, to run
first on a GPU with a timeout (a barrier protocol bug hangs instead of failing): the ping-pong forward
with split K / V rings (v20, v21) and the warp-specialized backward (v19), benchmarks/NOTES.md.

Usage (GPU): PYTHONPATH=src timeout 150 python3 benchmarks/ws_smoke.py
"""

from __future__ import annotations

import os
import time

import torch

from sigcell import sigmoid_attn_func
from sigcell.ops.sigmoid_attn import interface

SWITCHES = ("SIGCELL_HOPPER_WS_PINGPONG_DIMS", "SIGCELL_HOPPER_WS_BWD_DIMS")


def main() -> None:
    torch.manual_seed(0)
    os.environ["SIGCELL_HOPPER_WS_DIMS"] = "64,128,256"
    lens = torch.tensor([1000, 517], dtype=torch.int32, device="cuda")
    for d in (64, 128, 256):
        for causal in (False, True):
            q, k, v = (
                torch.randn(2, 1000, 4, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for _ in range(3)
            )
            dout = torch.randn_like(q)
            results = []
            start = time.time()
            for new in (False, True):
                for name in SWITCHES:
                    os.environ[name] = "64,128,256" if new else ""
                split = interface._HOPPER_WS_SPLIT_CONFIGS[d] if new else None
                interface.set_config_override("hopper_ws", split)
                out = sigmoid_attn_func(q, k, v, causal=causal, seq_lens_q=lens, seq_lens_k=lens)
                results.append((out, *torch.autograd.grad(out, (q, k, v), dout)))
                torch.cuda.synchronize()
            errors = [(a.float() - b.float()).abs().max().item() for a, b in zip(*results, strict=True)]
            scale = max(t.float().abs().max().item() for t in results[0])
            print(
                f"D{d} causal={causal}: max|new - default| out {errors[0]:.3g} dq {errors[1]:.3g} "
                f"dk {errors[2]:.3g} dv {errors[3]:.3g} (max {scale:.3g}; {time.time() - start:.1f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
