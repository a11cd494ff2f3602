"""Could the forward compute its sigmoid in packed 16-bit arithmetic? A CPU study of the output error.

The Gluon forward computes ``P = 0.5 tanh(x / 2) + 0.5`` in float32 (one ``tanh.approx.f32`` per score)
and rounds P to the matmul dtype. Packed 16-bit instructions (``tanh.approx.bf16x2`` / ``.f16x2``,
``fma.rn.bf16x2``) would halve the MUFU and FMA instructions of the sigmoid phase. This script emulates
those variants on exact products of bf16 inputs (the matmul's float32 accumulator modelled exactly, each
16-bit step as a round-to-nearest of the exact function: a lower bound on the hardware's error) and
prints the output's relative error against float64, next to the float32 sigmoid and to sigcell's
plain-PyTorch bf16 path (the GPU tests' oracle: a kernel may err by at most 2x the oracle and 1e-2).

Usage: python benchmarks/sigmoid_precision.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from sigcell import sigmoid_attn_func
from sigcell.ops.sigmoid_attn import interface

BF16 = torch.bfloat16


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).norm() / ref.norm()).item()


def variants(s: torch.Tensor, scale: float, bias: float) -> dict[str, torch.Tensor]:
    """P (as the matmul operand, bf16) per way of computing the sigmoid of ``x = scale s + bias``."""
    half_x = s.float() * (0.5 * scale) + 0.5 * bias  # float32, as the kernel computes it
    t16 = torch.tanh(half_x.to(BF16).float()).to(BF16)
    th = torch.tanh(half_x.half().float()).half()
    e16 = torch.exp(-(2 * half_x).to(BF16).float()).to(BF16)
    return {
        "float32 tanh (today)": (0.5 * torch.tanh(half_x) + 0.5).to(BF16),
        "bf16x2 tanh": (0.5 * t16.float() + 0.5).to(BF16),
        "f16x2 tanh": (0.5 * th.float() + 0.5).half().to(BF16),
        "bf16x2 exp, float32 reciprocal": (1 / (1 + e16.float())).to(BF16),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for dim, length in [(64, 300), (64, 1024), (128, 1024), (64, 4096)]:
        batch, heads = 2, 4
        shape = (batch, length, heads, dim)
        q, k, v = (torch.randn(shape, dtype=torch.float64).to(BF16).double() for _ in range(3))
        scale, bias = 1 / math.sqrt(dim), -math.log(length)
        s = torch.einsum("blhd,bmhd->bhlm", q, k)
        ref = torch.einsum("bhlm,bmhd->blhd", torch.sigmoid(s * scale + bias), v)
        with interface.plain_pytorch():
            oracle = sigmoid_attn_func(q.to(BF16), k.to(BF16), v.to(BF16))
        errors = {"plain-PyTorch bf16 (oracle)": rel_err(oracle, ref)}
        for name, p in variants(s, scale, bias).items():
            errors[name] = rel_err(torch.einsum("bhlm,bmhd->blhd", p.double(), v), ref)
        rows.append({"D": dim, "L": length, "relative_error": errors})
        listed = ", ".join(f"{name} {err:.2e}" for name, err in errors.items())
        print(f"D{dim} L{length}: {listed}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"sigmoid_precision-{time.strftime('%Y%m%d')}.json")
    with open(path, "w") as f:
        inputs = "N(0, 1) rounded to bf16; bias -log L; scale 1/sqrt(D)"
        json.dump({"inputs": inputs, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
