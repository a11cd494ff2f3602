"""Probe: can a one-kernel backward afford to add dQ in float32 global memory from every key block?

The split backward issues 7 block matmuls per 5 counted and tops out near 525 counted TFLOPS at D128
(benchmarks/NOTES.md, "Where the split backward stops"); a one-kernel backward needs 5, but each of its
key-block programs must add a ``[BM, D]`` float32 dQ block for every query block it visits. Gluon 3.6 has
no TMA reduce-add, so those adds are ``red.global.add.f32`` from registers. This probe times exactly that
traffic, with nothing else in the kernel: one program per (key block, head), looping over the query
blocks in the order a backward visits them (every program from query block 0: the same rows at the same
time; or staggered, each program starting at its own block), adding a float32 tile per step. A plain
store of the same tiles is the bandwidth reference. The result is the time the adds alone need against
the time a backward at the target speed has (``--target-tflops``, counted as 2.5x the forward's FLOPs).

Usage: PYTHONPATH=src python3 benchmarks/probe_dq_atomics.py [--d 64,128] [--l 4096,16384]
       [--block-n 128] [--target-tflops 544] [--out DIR]
       (``--check``: a small shape checked for exact sums, also on the CPU under TRITON_INTERPRET=1)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import triton
import triton.language as tl


@triton.jit
def dq_tiles_kernel(
    DQ,
    n_q_blocks,
    stride_row,
    H: tl.constexpr,
    D: tl.constexpr,
    BM: tl.constexpr,
    ADD: tl.constexpr,
    STAGGER: tl.constexpr,
):
    """Program (key block n, head h): for each query block, add (ADD) or store a ``[BM, D]`` float32
    tile of value ``n + 1`` into the rows of that query block of head h (``DQ`` is ``[L, H, D]``)."""
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    rows = tl.arange(0, BM)
    cols = tl.arange(0, D)
    tile = tl.full([BM, D], 1.0, tl.float32) * (i_n + 1).to(tl.float32)
    base = DQ + i_h * D
    for i in range(n_q_blocks):
        blk = (i + i_n) % n_q_blocks if STAGGER else i
        ptrs = base + (blk * BM + rows).to(tl.int64)[:, None] * stride_row + cols[None, :]
        if ADD:
            tl.atomic_add(ptrs, tile, sem="relaxed")
        else:
            tl.store(ptrs, tile)


def launch(dq: torch.Tensor, n_key_blocks: int, block_m: int, add: bool, stagger: bool) -> None:
    length, heads, dim = dq.shape
    grid = (n_key_blocks, heads)
    dq_tiles_kernel[grid](
        dq, length // block_m, dq.stride(0), H=heads, D=dim, BM=block_m, ADD=add, STAGGER=stagger, num_warps=4
    )


def check(device: str) -> None:
    """Exact sums on a small shape: every dQ element receives 1 + 2 + ... + n_key_blocks."""
    length, heads, dim, block_m, n_key_blocks = 128, 2, 32, 32, 3
    for stagger in (False, True):
        dq = torch.zeros(length, heads, dim, dtype=torch.float32, device=device)
        launch(dq, n_key_blocks, block_m, add=True, stagger=stagger)
        expected = n_key_blocks * (n_key_blocks + 1) / 2
        assert torch.all(dq == expected), (stagger, dq.unique())
    print("check: exact sums", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", default="64,128")
    ap.add_argument("--l", default="4096,16384")
    ap.add_argument("--block-m", type=int, default=64, help="query rows per added tile")
    ap.add_argument("--block-n", type=int, default=128, help="keys per program (tiles added per key block)")
    ap.add_argument("--target-tflops", type=float, default=544.0, help="backward speed to compare with")
    ap.add_argument("--check", action="store_true", help="only the exact-sum check (runs on the CPU too)")
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    args = ap.parse_args()
    if args.check or not torch.cuda.is_available():
        check("cuda" if torch.cuda.is_available() else "cpu")
        return
    check("cuda")
    rows = []
    for dim in (int(x) for x in args.d.split(",")):
        for length in (int(x) for x in args.l.split(",")):
            batch, heads = max(1, 16384 // length), 2048 // dim
            # one batch element's worth of sequences back to back: heads x batch programs per key block
            dq = torch.zeros(length, heads * batch, dim, dtype=torch.float32, device="cuda")
            n_key_blocks = length // args.block_n
            tiles = n_key_blocks * heads * batch * (length // args.block_m)
            gbytes = tiles * args.block_m * dim * 4 / 1e9
            flops = 2.5 * 4 * batch * heads * length * length * dim
            budget_ms = flops / (args.target_tflops * 1e12) * 1e3
            for add, stagger in ((False, False), (True, False), (True, True)):

                def run(dq=dq, n=n_key_blocks, add=add, stagger=stagger):
                    launch(dq, n, args.block_m, add, stagger)

                ms = triton.testing.do_bench(run, warmup=25, rep=200, return_mode="median")
                what = ("atomic add" if add else "store") + (", staggered" if stagger else "")
                row = dict(
                    D=dim,
                    L=length,
                    block_m=args.block_m,
                    block_n=args.block_n,
                    op=what,
                    ms=ms,
                    gbytes=gbytes,
                    tb_per_s=gbytes / ms,
                    backward_budget_ms=budget_ms,
                )
                rows.append(row)
                print(
                    f"D{dim} L{length} {what:22s} {ms:8.3f} ms  {gbytes / ms:6.2f} TB/s  "
                    f"({ms / budget_ms:.2f}x the {budget_ms:.2f} ms a {args.target_tflops:.0f}-TFLOPS "
                    "backward takes)",
                    flush=True,
                )
    os.makedirs(args.out, exist_ok=True)
    name = torch.cuda.get_device_name().replace(" ", "-")
    path = os.path.join(args.out, f"probe_dq_atomics-{name}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(
            {
                "device": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "triton": triton.__version__,
                "rows": rows,
            },
            f,
            indent=1,
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
