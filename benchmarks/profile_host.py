"""Where the host (Python) time of one sigmoid-attention call goes: cProfile over repeated calls.

Usage: PYTHONPATH=src python3 benchmarks/profile_host.py [--d 64] [--l 1024] [--calls 300] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--l", type=int, default=1024)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="tottime", help="pstats order: tottime or cumulative")
    args = ap.parse_args()

    from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func

    d, L = args.d, args.l
    B, H = max(1, 16384 // L), 2048 // d
    q, k, v = (
        torch.randn(B, L, H, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
    )
    cu = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device="cuda")
    qp, kp, vp = (t.detach().reshape(B * L, H, d).requires_grad_() for t in (q, k, v))
    out = sigmoid_attn_func(q, k, v)
    grad = torch.randn_like(out)
    lens = torch.randint(int(0.75 * L), L + 1, (B,), dtype=torch.int32).cuda()  # 25 % padding
    padded = sigmoid_attn_func(q, k, v, seq_lens_q=lens, seq_lens_k=lens)

    cases = {
        "dense fwd": lambda: sigmoid_attn_func(q, k, v),
        "dense fwd, no grad": lambda: sigmoid_attn_func(q.detach(), k.detach(), v.detach()),
        "varlen fwd": lambda: sigmoid_attn_varlen_func(qp, kp, vp, cu, cu, L, L),
        "dense bwd": lambda: out.backward(grad, retain_graph=True),
        "padded fwd": lambda: sigmoid_attn_func(q, k, v, seq_lens_q=lens, seq_lens_k=lens),
        "padded bwd": lambda: padded.backward(grad, retain_graph=True),
    }
    for name, fn in cases.items():
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            fn()
        prof.disable()
        torch.cuda.synchronize()
        stream = io.StringIO()
        stats = pstats.Stats(prof, stream=stream)
        total_us = stats.total_tt / args.calls * 1e6
        stats.sort_stats(args.sort).print_stats(args.top)
        print(f"===== D{d} L{L} {name}: {total_us:.0f} us of Python per call (profiled)")
        print("\n".join(line for line in stream.getvalue().splitlines() if line.strip())[-6000:])


if __name__ == "__main__":
    main()
