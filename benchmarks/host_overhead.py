"""Is a short attention call bound by the GPU or by the Python host code that launches it?

For each provider and shape: the median of ``triton.testing.do_bench`` (what ``sigcell bench kernels``
reports), the GPU time alone (``do_bench_cudagraph``: the call replayed as a CUDA graph, no host
code), and the host time per call (wall time of N calls queued without synchronizing). When the host
time approaches the GPU time, do_bench measures the host and short cases swing from run to run.

Usage: PYTHONPATH=src python3 benchmarks/host_overhead.py [--d 64,128] [--l 1024,4096] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import triton


def host_us_per_call(fn, calls: int = 200) -> float:
    """Wall time per call of ``calls`` calls queued back to back (the GPU may still be busy after)."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def providers(d: int, L: int):
    """(name, forward function, inputs needing grads) per provider at one paper shape."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func

    B, H = max(1, 16384 // L), 2048 // d
    q, k, v = (
        torch.randn(B, L, H, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
    )
    cu = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device="cuda")
    # 25 % padding as in `sigcell bench kernels`: lengths uniform in [0.75 L, L], seeded.
    gen = torch.Generator().manual_seed(0)
    lens = torch.randint(int(0.75 * L), L + 1, (B,), generator=gen, dtype=torch.int32).cuda()
    qp, kp, vp = (t.detach().reshape(B * L, H, d).requires_grad_() for t in (q, k, v))
    qs, ks, vs = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(qs, ks, vs)

    return (
        B,
        H,
        [
            ("sigcell-dense", lambda: sigmoid_attn_func(q, k, v)),
            ("sigcell-padded", lambda: sigmoid_attn_func(q, k, v, seq_lens_q=lens, seq_lens_k=lens)),
            ("sigcell-varlen", lambda: sigmoid_attn_varlen_func(qp, kp, vp, cu, cu, L, L)),
            ("sdpa-cudnn", cudnn),
        ],
    )


def measure(fn, graph: bool) -> dict:
    """do_bench, CUDA-graph (GPU alone; forward only: autograd runs the backward on another thread,
    which a stream capture does not follow) and host times of ``fn``."""
    row = {"do_bench_ms": triton.testing.do_bench(fn, warmup=25, rep=100), "gpu_ms": None}
    if graph:
        try:
            row["gpu_ms"] = triton.testing.do_bench_cudagraph(fn, rep=100)
        except Exception as err:  # capture can fail (a host sync inside the call)
            row["graph_error"] = f"{type(err).__name__}: {str(err)[:120]}"
    row["host_us"] = host_us_per_call(fn)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", default="64,128")
    ap.add_argument("--l", default="1024,4096")
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    args = ap.parse_args()
    rows = []
    for d in map(int, args.d.split(",")):
        for L in map(int, args.l.split(",")):
            B, H, provs = providers(d, L)
            for name, fwd in provs:
                out = fwd()
                grad = torch.randn_like(out)

                def bwd(out=out, grad=grad):
                    out.backward(grad, retain_graph=True)

                for mode, fn in (("fwd", fwd), ("bwd", bwd)):
                    row = dict(D=d, L=L, B=B, H=H, provider=name, mode=mode, **measure(fn, mode == "fwd"))
                    rows.append(row)
                    gpu = f"{row['gpu_ms']:.4f}" if row["gpu_ms"] is not None else row.get("graph_error", "-")
                    print(
                        f"D{d} L{L} {name:15s} {mode}: do_bench {row['do_bench_ms']:.4f} ms, GPU {gpu} ms, "
                        f"host {row['host_us']:.0f} us/call",
                        flush=True,
                    )
            torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"host_overhead-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as fh:
        json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), fh, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
