"""Probe: how fast can a minimal dense sigmoid-attention forward go on this card, and does a
software-pipelined key loop (the next block's Q K^T issued before this block's sigmoid) help?

Not the product: dense, non-causal, no bias terms beyond the constant, L a multiple of the blocks, D in
{64, 128}. It bounds what the product kernel (``sigcell.ops.sigmoid_attn``) could reach with the same
Triton and tells which of its features cost time: sigcell's forward and SDPA cuDNN run in the same
process on the same inputs. Every probe output is checked against sigcell's forward.

Usage: PYTHONPATH=src python3 benchmarks/probe_fwd.py [--d 64,128] [--l 4096,16384]
       [--configs 'M,N,W,S;...'] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


@triton.jit
def _tanh(x):
    return tl.inline_asm_elementwise(
        "tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
    )


@triton.jit
def _p(s, scale_half, bias_half):
    # sigmoid(scale * s + bias) = 0.5 tanh((scale * s + bias) / 2) + 0.5
    return 0.5 * _tanh(s * scale_half + bias_half) + 0.5


@triton.jit
def probe_fwd_kernel(
    Q,
    K,
    V,
    O,  # noqa: E741 (Q, K, V, O as in the attention formula)
    seq_len,
    scale_half,
    bias_half,
    H: tl.constexpr,
    D: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    PIPELINED: tl.constexpr,
):
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    b_q = Q.load([i_b, i_m * BM, i_h, 0]).reshape(BM, D)
    acc = tl.zeros([BM, D], dtype=tl.float32)
    if PIPELINED:
        # S of block j + 1 is issued (async wgmma) before the sigmoid of block j, so that the tensor
        # cores work while the MUFU / FMA units do.
        b_s = tl.dot(b_q, tl.trans(K.load([i_b, 0, i_h, 0]).reshape(BN, D)))
        for j0 in range(BN, seq_len, BN):
            b_s_next = tl.dot(b_q, tl.trans(K.load([i_b, j0, i_h, 0]).reshape(BN, D)))
            b_v = V.load([i_b, j0 - BN, i_h, 0]).reshape(BN, D)
            acc = tl.dot(_p(b_s, scale_half, bias_half).to(tl.bfloat16), b_v, acc)
            b_s = b_s_next
        b_v = V.load([i_b, seq_len - BN, i_h, 0]).reshape(BN, D)
        acc = tl.dot(_p(b_s, scale_half, bias_half).to(tl.bfloat16), b_v, acc)
    else:
        for j0 in range(0, seq_len, BN):
            b_k = K.load([i_b, j0, i_h, 0]).reshape(BN, D)
            b_v = V.load([i_b, j0, i_h, 0]).reshape(BN, D)
            b_s = tl.dot(b_q, tl.trans(b_k))
            acc = tl.dot(_p(b_s, scale_half, bias_half).to(tl.bfloat16), b_v, acc)
    O.store([i_b, i_m * BM, i_h, 0], acc.to(tl.bfloat16).reshape(1, BM, 1, D))


def probe_forward(q, k, v, bias, cfg, pipelined, poison=False):
    """[B, L, H, D] bf16 -> [B, L, H, D]: sigmoid(q k^T / sqrt(D) + bias) v (NaN-filled first if poison)."""
    B, L, H, D = q.shape
    BM, BN, W, S = cfg
    if L % BM or L % BN:
        raise ValueError(f"L={L} must be a multiple of the blocks {BM} x {BN}")
    out = torch.full_like(q, float("nan")) if poison else torch.empty_like(q)
    blocks = ((q, BM), (k, BN), (v, BN), (out, BM))
    descs = [TensorDescriptor.from_tensor(t, [1, rows, 1, D]) for t, rows in blocks]
    probe_fwd_kernel[(L // BM, B * H)](
        *descs,
        L,
        0.5 / math.sqrt(D),
        0.5 * bias,
        H=H,
        D=D,
        BM=BM,
        BN=BN,
        PIPELINED=pipelined,
        num_warps=W,
        num_stages=S,
    )
    return out


def time_shape(D: int, L: int, variants: list[tuple[str, object]]) -> list[dict]:
    """TFLOPS of sigcell, cuDNN and every probe variant at one paper shape (B = 16384 / L, H = 2048 / D).
    ``variants``: (name, forward) with ``forward(q, k, v, bias, poison) -> out``; each output (NaN-filled
    first) is checked against sigcell's before it is timed."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sigcell import sigmoid_attn_func

    B, H = max(1, 16384 // L), 2048 // D
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, L, H, D, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    bias = -math.log(L)
    flops = 4 * B * H * L * L * D
    ref = sigmoid_attn_func(q, k, v, bias=bias).float()
    rows = []

    def record(name, fn, **extra):
        ms = triton.testing.do_bench(fn, warmup=25, rep=200)
        row = dict(D=D, L=L, B=B, H=H, provider=name, ms=ms, tflops=flops / ms * 1e-9, **extra)
        rows.append(row)
        print(f"D{D} L{L} {name:34s} {row['tflops']:6.1f} TFLOPS {extra or ''}", flush=True)

    record("sigcell-dense", lambda: sigmoid_attn_func(q, k, v, bias=bias))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        record("sdpa-cudnn (softmax)", lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt))
    for name, forward in variants:
        try:
            out = forward(q, k, v, bias, True)
            torch.cuda.synchronize()
        except Exception as exc:  # a config that does not compile is a result too
            print(f"D{D} L{L} {name}: failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            rows.append(dict(D=D, L=L, provider=name, error=str(exc)[:1000]))
            continue
        err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
        record(name, lambda forward=forward: forward(q, k, v, bias, False), max_rel_err=err)
    return rows


def probe_main(prefix: str, description: str, default_configs: str, make_variants) -> None:
    """Command line of a probe: ``make_variants(configs)`` -> ``time_shape`` variants; writes
    ``<prefix>-<time>.json`` under --out."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--d", default="64,128")
    ap.add_argument("--l", default="4096,16384")
    ap.add_argument("--configs", default=default_configs, help="BLOCK_M,BLOCK_N,warps,stages;...")
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    args = ap.parse_args()
    variants = make_variants([tuple(map(int, c.split(","))) for c in args.configs.split(";") if c])
    rows = []
    for D in map(int, args.d.split(",")):
        for L in map(int, args.l.split(",")):
            rows += time_shape(D, L, variants)
            torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{prefix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__)
    with open(path, "w") as fh:
        json.dump(dict(meta, dtype="bf16", rows=rows), fh, indent=1)
    print("wrote", path)


def main() -> None:
    def variants(configs):
        return [
            (
                f"probe {'pipelined' if pipelined else 'plain'} {'x'.join(map(str, cfg))}",
                lambda q, k, v, bias, poison, cfg=cfg, pipelined=pipelined: probe_forward(
                    q, k, v, bias, cfg, pipelined, poison
                ),
            )
            for cfg in configs
            for pipelined in (False, True)
        ]

    configs = "128,64,4,2;128,64,4,3;64,64,4,3;128,128,8,2;128,64,8,3"
    probe_main("probe_fwd", __doc__.split("\n\n")[0], configs, variants)


if __name__ == "__main__":
    main()
