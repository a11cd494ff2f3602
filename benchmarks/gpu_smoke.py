"""First look at the kernels on a GPU: sigcell fwd / bwd TFLOPS next to SDPA (same call) at the paper's
shapes (B = 16384 / L, H = 2048 / D), bf16; plus the bf16 matmul rate. Prints a table and writes JSON.

Usage: PYTHONPATH=src python3 benchmarks/gpu_smoke.py [--out DIR] [--shapes 64x4096,128x4096]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from sigcell import sigmoid_attn_func


def bench(fn, ms=200):
    return triton.testing.do_bench(fn, warmup=50, rep=ms, return_mode="median")


def matmul_tflops():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    return 2 * 8192**3 / bench(lambda: a @ b) * 1e-9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    ap.add_argument("--shapes", default="64x1024,64x4096,128x4096,128x16384")
    args = ap.parse_args()
    rows = []
    name = torch.cuda.get_device_name()
    mm = matmul_tflops()
    print(f"{name}: bf16 matmul {mm:.0f} TFLOPS")
    for spec in args.shapes.split(","):
        d, L = (int(x) for x in spec.split("x"))
        B, H = max(1, 16384 // L), 2048 // d
        q, k, v = (
            torch.randn(B, L, H, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
        )
        do = torch.randn_like(q)
        flops = 4 * B * H * L * L * d
        providers = {"sigcell": lambda q=q, k=k, v=v: sigmoid_attn_func(q, k, v)}
        qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
        dot = do.transpose(1, 2).contiguous()
        for label, backend in (
            ("sdpa-flash", SDPBackend.FLASH_ATTENTION),
            ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION),
        ):

            def f(backend=backend, qt=qt, kt=kt, vt=vt):
                with sdpa_kernel(backend):
                    return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)

            providers[label] = f
        for label, fn in providers.items():
            try:
                t0 = time.perf_counter()
                out = fn()
                torch.cuda.synchronize()
                cold = time.perf_counter() - t0
                fwd = bench(fn)
                grad = dot if label.startswith("sdpa") else do
                bwd = bench(lambda out=out, grad=grad: out.backward(grad, retain_graph=True))
            except Exception as err:  # a backend that does not run on this card / shape
                print(f"skip {label} D{d} L{L}: {type(err).__name__}: {str(err)[:120]}")
                continue
            row = dict(
                gpu=name,
                provider=label,
                D=d,
                L=L,
                B=B,
                H=H,
                dtype="bf16",
                fwd_ms=fwd,
                bwd_ms=bwd,
                fwd_tflops=flops / fwd * 1e-9,
                bwd_tflops=2.5 * flops / bwd * 1e-9,
                cold_s=cold,
                matmul_tflops=mm,
            )
            rows.append(row)
            print(
                f"D{d:>3} L{L:>5} {label:<11} fwd {row['fwd_tflops']:6.1f}  "
                f"bwd {row['bwd_tflops']:6.1f} TFLOPS  (cold {cold:.1f}s)"
            )
        providers.clear()
        torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_smoke.json"), "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
