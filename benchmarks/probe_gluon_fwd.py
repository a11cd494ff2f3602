"""Probe: a dense sigmoid-attention forward in Gluon (Triton's explicit-layout dialect) for Hopper,
with the overlap Triton 3.6's ``tl.dot`` cannot express: the sigmoid of key block j runs on the CUDA
cores while the tensor cores compute block j-1's ``P V`` (asynchronous wgmma, waited with one group
still in flight).

``tl.dot`` waits for every wgmma right after issuing the next ``Q K^T`` (``wgmma.wait_group 0``, seen in
the PTX of probe_fwd.py's kernels), so the MUFU tanh and the matmuls of one warpgroup never overlap;
only other resident CTAs hide it. Not the product: dense, non-causal, constant bias, L a multiple of
the blocks. sigcell's forward, SDPA cuDNN and the best Triton probe config run in the same process on
the same inputs; every Gluon output is checked against sigcell's.

Usage: PYTHONPATH=src python3 benchmarks/probe_gluon_fwd.py [--d 64,128] [--l 4096,16384]
       [--configs 'BM,BN,WARPS,STAGES;...'] [--out DIR]
"""

from __future__ import annotations

import math

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor


@gluon.jit
def _sigmoid_bf16(s, scale_half, bias_half, dtype: gl.constexpr):
    # sigmoid(scale s + bias) = 0.5 tanh((scale s + bias) / 2) + 0.5: one MUFU op per score
    x = s * scale_half + bias_half
    t = gl.inline_asm_elementwise(
        "tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=gl.float32, is_pure=True, pack=1
    )
    return (0.5 * t + 0.5).to(dtype)


@gluon.jit
def _load_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, block, stage, row_k, col, n_blocks):
    BN: gl.constexpr = k_desc.block_type.shape[0]
    pred = block < n_blocks
    mbarrier.expect(k_bar.index(stage), k_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(
        k_desc, [row_k + block * BN, col], k_bar.index(stage), k_smem.index(stage), pred=pred
    )
    mbarrier.expect(v_bar.index(stage), v_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(
        v_desc, [row_k + block * BN, col], v_bar.index(stage), v_smem.index(stage), pred=pred
    )


@gluon.jit
def gluon_fwd_kernel(
    q_desc,
    k_desc,
    v_desc,
    o_desc,
    seq_len,
    scale_half,
    bias_half,
    H: gl.constexpr,
    STAGES: gl.constexpr,
    num_warps: gl.constexpr,
):
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    i_m = gl.program_id(0)
    i_bh = gl.program_id(1)
    i_b = i_bh // H
    i_h = i_bh % H
    row_q = i_b * seq_len + i_m * BM  # views: [B * L, H * D]
    row_k = i_b * seq_len
    col = i_h * D

    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BN, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, D, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

    q_smem = gl.allocate_shared_memory(dtype, [BM, D], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(k_bar.index(s), count=1)
        mbarrier.init(v_bar.index(s), count=1)
    fence_async_shared()

    n_blocks = seq_len // BN
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row_q, col], q_bar, q_smem)
    for s in gl.static_range(STAGES):
        _load_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, s, s, row_k, col, n_blocks)

    s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_bar.index(0), 0)
    s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s_cur = warpgroup_mma_wait(0, deps=(s_tok,))
    p = gl.convert_layout(_sigmoid_bf16(s_cur, scale_half, bias_half, dtype), p_layout)
    acc = gl.zeros([BM, D], gl.float32, o_layout)
    for j in range(1, n_blocks):
        stage = j % STAGES
        prev = (j - 1) % STAGES
        mbarrier.wait(k_bar.index(stage), (j // STAGES) & 1)
        k_t = k_smem.index(stage).permute((1, 0))
        s_tok = warpgroup_mma(q_smem, k_t, s_zero, use_acc=False, is_async=True)
        mbarrier.wait(v_bar.index(prev), ((j - 1) // STAGES) & 1)
        acc_tok = warpgroup_mma(p, v_smem.index(prev), acc, is_async=True)
        # Q K^T of block j is done (groups retire in order); P V of block j-1 may still run while
        # block j's sigmoid is computed.
        s_cur = warpgroup_mma_wait(1, deps=(s_tok,))
        p_next = gl.convert_layout(_sigmoid_bf16(s_cur, scale_half, bias_half, dtype), p_layout)
        acc, p = warpgroup_mma_wait(0, deps=(acc_tok, p))
        # Stage `prev` is free (its K and V were read by retired wgmmas): fetch block j-1+STAGES.
        _load_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, j - 1 + STAGES, prev, row_k, col, n_blocks)
        p = p_next
    last = (n_blocks - 1) % STAGES
    mbarrier.wait(v_bar.index(last), ((n_blocks - 1) // STAGES) & 1)
    acc_tok = warpgroup_mma(p, v_smem.index(last), acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=(acc_tok,))

    mbarrier.invalidate(q_bar)
    for s in gl.static_range(STAGES):
        mbarrier.invalidate(k_bar.index(s))
        mbarrier.invalidate(v_bar.index(s))
    o_smem = gl.allocate_shared_memory(dtype, [BM, D], o_desc.layout)
    o_smem.store(acc.to(dtype))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [row_q, col], o_smem)
    tma.store_wait(0)


def descriptors(q, k, v, out, BM, BN):
    """Gluon TMA descriptors over the [B * L, H * D] views, blocks [BM or BN, D]."""
    B, L, H, D = q.shape
    descs = []
    for t, rows in ((q, BM), (k, BN), (v, BN), (out, BM)):
        layout = gl.NVMMASharedLayout.get_default_for([rows, D], gl.bfloat16)
        descs.append(TensorDescriptor.from_tensor(t.view(B * L, H * D), [rows, D], layout))
    return descs


def gluon_forward(q, k, v, bias, cfg, poison=False):
    """[B, L, H, D] bf16 -> [B, L, H, D]: sigmoid(q k^T / sqrt(D) + bias) v."""
    B, L, H, D = q.shape
    BM, BN, W, S = cfg
    if L % BM or L % BN:
        raise ValueError(f"L={L} must be a multiple of the blocks {BM} x {BN}")
    out = torch.full_like(q, float("nan")) if poison else torch.empty_like(q)
    gluon_fwd_kernel[(L // BM, B * H)](
        *descriptors(q, k, v, out, BM, BN),
        L,
        0.5 / math.sqrt(D),
        0.5 * bias,
        H=H,
        STAGES=S,
        num_warps=W,
    )
    return out


def main() -> None:
    from probe_fwd import probe_main  # benchmarks/ is on sys.path when this file runs as a script

    def variants(configs):
        return [
            (
                f"gluon {'x'.join(map(str, cfg))}",
                lambda q, k, v, bias, poison, cfg=cfg: gluon_forward(q, k, v, bias, cfg, poison),
            )
            for cfg in configs
        ]

    configs = "64,64,4,2;64,64,4,3;128,64,8,2;128,64,8,3;128,128,8,2;64,128,4,2;128,64,4,2"
    probe_main("probe_gluon_fwd", __doc__.split("\n\n")[0], configs, variants)


if __name__ == "__main__":
    main()
