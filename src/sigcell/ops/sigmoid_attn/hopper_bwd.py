"""Hopper (sm_90) backward of sigmoid attention in Gluon: a dK / dV kernel and a dQ kernel.

The same reason as the forward (hopper.py): Triton 3.6 waits for every wgmma right after issuing it, so
the elementwise work of a block (one tanh, the derivative, the masks) never overlaps the tensor cores of
its own warpgroup. Here every matmul is asynchronous and the kernels wait for one result at a time:

- dK / dV, per key block and query block: issue ``S^T = K Q^T`` and ``dP^T = V dO^T``; wait for S^T
  alone and compute ``P^T`` (tanh) while dP^T runs; issue ``dV += P^T dO``; wait for dP^T and compute
  ``dS^T`` while dV runs; issue ``dK += dS^T Q``. Keys are the rows, so P^T and dS^T are register
  operands of the accumulating matmuls and the per-key sums of dS (d key_bias) are row sums.
- dQ, per query block and key block (software-pipelined like the forward): issue ``S_j = Q K_j^T``,
  ``dP_j = dO V_j^T`` and ``dQ += dS_{j-1} K_{j-1}``; compute block j's ``dS`` while the tensor cores
  finish; then retire the previous block and refill its TMA stage.
- Opt-in (``SIGCELL_HOPPER_BWD_KERNELS=fused``): the dK / dV kernel with FUSED also issues
  ``dQ = dS K`` (dS^T through shared memory, read back transposed) and adds it to a float32 buffer with
  atomics: 5 matmuls per block pair instead of 7, nondeterministic dQ, and measured slower than the
  split pair on an H200 (benchmarks/NOTES.md, v14c).

Both use the forward's conventions (kernels.py): logits in half units for ``tanh.approx``
(``sigmoid(s) = 0.5 tanh(s / 2) + 0.5``), ``4 dS = dP (1 - t^2)`` with the 1/4 folded into the final
scale, per-(sequence, head) bias and optional per-key bias, padded or packed sequences read through 2-D
TMA descriptors over ``[B' * rows, H * D]``, GQA, causal masks aligned bottom-right. Outputs are the
split Triton backward's: dK, dV (zero rows for padding keys), per-key dS sums per KV head, dQ (zero rows
for padding queries) and one dS sum per (sequence, head, query block) for d bias.

Rows that a block reads past its sequence (the next sequence or padding, possibly NaN) only reach the
results through the matmuls that sum over them: those operand rows are zeroed in shared memory (only
the last block of a loop can cross the sequence end), and their scores are masked.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from sigcell.ops.sigmoid_attn.hopper import (
    _key_blocks,
    _mma_layout,
    _program,
    _row_pointers,
    _store_rows,
    _tanh,
    _zero_rows_past,
)


@gluon.jit
def _add(a, b):
    return a + b


@gluon.jit
def _row_sums(x):
    """``x.sum(axis=1)``; through a Gluon combine function, because ``gl.sum``'s is a Triton function,
    which the CPU tests' Triton interpreter mode would replace (they compile this file for sm_90a)."""
    return gl.reduce(x, 1, _add)


@gluon.jit
def _load_rows_pair(a_desc, b_desc, a_smem, b_smem, bars, index, row, col, pred, STAGES: gl.constexpr):
    """TMA loads of one block of two row-aligned tensors (Q and dO, or K and V) into ring stage
    ``index % STAGES``; nothing happens when ``pred`` is false."""
    stage = index % STAGES
    bar = bars.index(stage)
    mbarrier.expect(bar, a_desc.block_type.nbytes + b_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(a_desc, [row, col], bar, a_smem.index(stage), pred=pred)
    tma.async_copy_global_to_shared(b_desc, [row, col], bar, b_smem.index(stage), pred=pred)


@gluon.jit
def _load_query_block(
    q_desc, do_desc, q_smem, do_smem, bars, it, n_iter, first, n_blocks, row_q, head0, STAGES: gl.constexpr
):
    """Iteration ``it`` of a dK / dV program visits query block ``first + it % n_blocks`` of head
    ``head0 + it // n_blocks`` (the heads of a GQA group one after the other)."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    per_head = gl.maximum(n_blocks, 1)
    row = row_q + (first + it % per_head) * BM
    col = (head0 + it // per_head) * D
    _load_rows_pair(q_desc, do_desc, q_smem, do_smem, bars, it, row, col, it < n_iter, STAGES)


@gluon.jit
def _dkdv_step(
    it,
    m0,
    dk,
    dv,
    dkb,
    k_smem,
    v_smem,
    q_smem,
    do_smem,
    bars,
    q_desc,
    do_desc,
    n_iter,
    first,
    n_blocks,
    row_q,
    head0,
    st_zero,
    o_n,
    row_bias_half,
    scale_half,
    len_q,
    shift,
    ds_smem,
    dq_base,
    stride_dqt,
    MASK: gl.constexpr,
    CAUSAL: gl.constexpr,
    STAGES: gl.constexpr,
    FUSED: gl.constexpr,
    WITH_DK: gl.constexpr,
    WITH_DV: gl.constexpr,
    num_warps: gl.constexpr,
):
    """Iteration ``it``: wait for its query block's stage, add the block (:func:`_dkdv_block`), refill
    the stage with iteration ``it + STAGES``."""
    stage = it % STAGES
    q_tile = q_smem.index(stage)
    do_tile = do_smem.index(stage)
    mbarrier.wait(bars.index(stage), (it // STAGES) & 1)
    dk, dv, dkb = _dkdv_block(
        m0, dk, dv, dkb, k_smem, v_smem, q_tile, do_tile, st_zero, o_n,
        row_bias_half, scale_half, len_q, shift, ds_smem, dq_base, stride_dqt, MASK, CAUSAL, FUSED,
        WITH_DK, WITH_DV, num_warps,
    )  # fmt: skip
    _load_query_block(
        q_desc, do_desc, q_smem, do_smem, bars, it + STAGES, n_iter, first, n_blocks, row_q, head0, STAGES
    )
    return dk, dv, dkb


@gluon.jit
def _dkdv_block(
    m0,
    dk,
    dv,
    dkb,
    k_smem,
    v_smem,
    q_tile,
    do_tile,
    st_zero,
    o_n,
    row_bias_half,
    scale_half,
    len_q,
    shift,
    ds_smem,
    dq_base,
    stride_dqt,
    MASK: gl.constexpr,
    CAUSAL: gl.constexpr,
    FUSED: gl.constexpr,
    WITH_DK: gl.constexpr,
    WITH_DV: gl.constexpr,
    num_warps: gl.constexpr,
):
    """One query block's contribution to dK, dV and the per-key sums of 4 dS (rows = keys), from its
    loaded Q and dO tiles; all its matmuls have retired on return. WITH_DK / WITH_DV false skip a part
    (and its matmuls). FUSED (both parts) also adds the block's ``4 dS K`` to the float32 dQ rows at
    ``dq_base`` (atomics; dS^T goes through shared memory to be the transposed A operand)."""
    BM: gl.constexpr = q_tile.shape[0]
    dtype: gl.constexpr = q_tile.dtype
    st_layout: gl.constexpr = st_zero.type.layout
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=dk.type.layout, k_width=2)
    if MASK:  # noqa: SIM102 (constexpr branch around a runtime one)
        if m0 + BM > len_q:  # the last block: rows past the sequence must not reach dV / dK
            _zero_rows_past(q_tile, m0, len_q, num_warps)
            _zero_rows_past(do_tile, m0, len_q, num_warps)
    s_tok = warpgroup_mma(k_smem, q_tile.permute((1, 0)), st_zero, use_acc=False, is_async=True)
    if WITH_DK:
        dp_tok = warpgroup_mma(v_smem, do_tile.permute((1, 0)), st_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s_tok,))
    else:
        s = warpgroup_mma_wait(0, deps=(s_tok,))
    t = _tanh(s * scale_half + row_bias_half[:, None])
    if WITH_DV:
        p = 0.5 * t + 0.5
    if MASK:
        o_m = m0 + gl.arange(0, BM, layout=gl.SliceLayout(0, st_layout))
        keep = (o_m < len_q)[None, :]
        if CAUSAL:
            keep = keep & (o_n[:, None] <= o_m[None, :] + shift)
        if WITH_DV:
            p = gl.where(keep, p, 0.0)
    if WITH_DV:
        p_op = gl.convert_layout(p.to(dtype), a_layout)
        dv_tok = warpgroup_mma(p_op, do_tile, dv, is_async=True)
    if WITH_DK:
        if WITH_DV:  # noqa: SIM108 (constexpr branch: the wait count must be a constant)
            dp = warpgroup_mma_wait(1, deps=(dp_tok,))
        else:
            dp = warpgroup_mma_wait(0, deps=(dp_tok,))
        ds = dp * (1.0 - t * t)  # 4 dS^T
        if MASK:
            ds = gl.where(keep, ds, 0.0)
        dkb += _row_sums(ds)
        ds_op = gl.convert_layout(ds.to(dtype), a_layout)
        dk_tok = warpgroup_mma(ds_op, q_tile, dk, is_async=True)
    if FUSED:
        D: gl.constexpr = q_tile.shape[1]
        dq_warps_m: gl.constexpr = min(num_warps, BM // 16)
        dq_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0],
            warps_per_cta=[dq_warps_m, num_warps // dq_warps_m],
            instr_shape=[16, D // (num_warps // dq_warps_m), 16],
        )
        ds_smem.store(ds.to(dtype))
        fence_async_shared()
        gl.thread_barrier()
        dq_zero = gl.zeros([BM, D], gl.float32, dq_layout)
        dq_tok = warpgroup_mma(ds_smem.permute((1, 0)), k_smem, dq_zero, use_acc=False, is_async=True)
        dk, dv, p_op, ds_op, dq = warpgroup_mma_wait(0, deps=(dk_tok, dv_tok, p_op, ds_op, dq_tok))
        _add_rows(dq_base, m0, stride_dqt, dq, len_q, num_warps)
    elif WITH_DK and WITH_DV:
        dk, dv, p_op, ds_op = warpgroup_mma_wait(0, deps=(dk_tok, dv_tok, p_op, ds_op))
    elif WITH_DK:
        dk, ds_op = warpgroup_mma_wait(0, deps=(dk_tok, ds_op))
    else:
        dv, p_op = warpgroup_mma_wait(0, deps=(dv_tok, p_op))
    return dk, dv, dkb


@gluon.jit
def _add_rows(base, r0, stride_t, value, n_rows, num_warps: gl.constexpr):
    """Atomically add a float32 ``[R, D]`` block to rows ``r0 + [0, R)`` below ``n_rows`` of a sequence
    starting at ``base``. 16-byte ``red.global.add.v4.f32`` reductions through inline PTX measured the
    same as these scalar atomics (NOTES.md, v14c)."""
    val, ptrs, o_r = _row_pointers(base, r0, stride_t, value, 4, num_warps)
    gl.atomic_add(ptrs, val, mask=(o_r < n_rows)[:, None], sem="relaxed")


@gluon.jit
def sigmoid_attn_bwd_dkdv_hopper_kernel(
    q_desc,
    do_desc,
    k_desc,
    v_desc,
    DK,
    DV,
    DKB,
    BIAS,
    KEY_BIAS,
    START_Q,
    LEN_Q,
    START_K,
    LEN_K,
    rows_q,
    rows_k,
    stride_dkt,
    stride_kbb,
    stride_kbt,
    stride_dkbh,
    stride_dkbb,
    stride_dkbt,
    DQ,
    DBIAS,
    stride_dqt,
    num_n_blocks,
    scale,
    H: gl.constexpr,
    GROUP: gl.constexpr,
    CAUSAL: gl.constexpr,
    HAS_KEY_BIAS: gl.constexpr,
    STORE_ALL_ROWS: gl.constexpr,
    STAGES: gl.constexpr,
    FUSED: gl.constexpr,
    WITH_DK: gl.constexpr,
    WITH_DV: gl.constexpr,
    num_warps: gl.constexpr,
):
    """One program per (key block, sequence x KV head): dK, dV (``[B', rows, H_kv, D]``, row stride
    ``stride_dkt`` for both) and, with a key bias, the per-key sums of dS of its heads (DKB).
    WITH_DK / WITH_DV false leave that part (dK and DKB, or dV) out: at D256 the two float32
    accumulators do not fit one warpgroup's registers, so the interface launches one kernel per part.

    FUSED (the one-kernel backward): also adds ``4 dS K`` to the zeroed float32 ``DQ`` (``[B', rows, H,
    D]``, row stride ``stride_dqt``; the caller scales by ``scale / 4``) and writes each head's sum of
    dS over the block to ``DBIAS[(b * H + h) * num_n_blocks + i_n]`` (for d bias). DQ, DBIAS are unused
    otherwise."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    HKV: gl.constexpr = H // GROUP
    st_layout: gl.constexpr = _mma_layout(num_warps, BM)
    acc_layout: gl.constexpr = _mma_layout(num_warps, D)

    i_n, _, i_b, i_hk, start_q, len_q, start_k, len_k, store_rows = _program(
        START_Q, LEN_Q, START_K, LEN_K, rows_k, HKV, False, True, STORE_ALL_ROWS
    )
    n0 = i_n * BN
    if n0 >= store_rows:
        return
    shift = len_k - len_q
    # Query blocks that see this key block (kernels._query_loop_bounds): [lo, diag_end) on the causal
    # diagonal (masked), then whole blocks (no mask), then the partial last block (masked).
    q_end = gl.where(n0 < len_k, len_q, 0)
    rows_end = q_end // BM * BM
    lo = 0
    diag_end = 0
    if CAUSAL:
        lo = gl.maximum(n0 - shift, 0) // BM * BM
        diag_end = gl.maximum(n0 + BN - 1 - shift + BM - 1, 0) // BM * BM
    diag_end = gl.minimum(diag_end, rows_end)
    first = lo // BM
    n_blocks = gl.maximum(gl.cdiv(q_end, BM) - first, 0)
    n_iter = n_blocks * GROUP

    o_n = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, st_layout))
    dk = gl.zeros([BN, D], gl.float32, acc_layout)
    dv = gl.zeros([BN, D], gl.float32, acc_layout)
    dkb = gl.zeros([BN], gl.float32, gl.SliceLayout(1, st_layout))
    if n_iter > 0:
        row_q = i_b * rows_q + start_q
        k_smem = gl.allocate_shared_memory(dtype, [BN, D], k_desc.layout)
        v_smem = gl.allocate_shared_memory(dtype, [BN, D], v_desc.layout)
        q_smem = gl.allocate_shared_memory(dtype, [STAGES, BM, D], q_desc.layout)
        do_smem = gl.allocate_shared_memory(dtype, [STAGES, BM, D], do_desc.layout)
        ds_smem = k_smem  # placeholder operand unless FUSED
        if FUSED:
            ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BN, BM], dtype)
            ds_smem = gl.allocate_shared_memory(dtype, [BN, BM], ds_layout)
        kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        mbarrier.init(kv_bar, count=1)
        for st in gl.static_range(STAGES):
            mbarrier.init(bars.index(st), count=1)
        fence_async_shared()
        mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        row_k = i_b * rows_k + start_k + n0
        tma.async_copy_global_to_shared(k_desc, [row_k, i_hk * D], kv_bar, k_smem)
        tma.async_copy_global_to_shared(v_desc, [row_k, i_hk * D], kv_bar, v_smem)
        for st in gl.static_range(STAGES):
            _load_query_block(
                q_desc,
                do_desc,
                q_smem,
                do_smem,
                bars,
                st,
                n_iter,
                first,
                n_blocks,
                row_q,
                i_hk * GROUP,
                STAGES,
            )

        # Per-key constant of the logit in half units: 0.5 (head bias + key bias); keys past the sequence
        # only reach their own rows, which are stored as zeros.
        key_bias_half = gl.zeros([BN], gl.float32, gl.SliceLayout(1, st_layout))
        if HAS_KEY_BIAS:
            kb = gl.load(
                KEY_BIAS + i_b * stride_kbb + (start_k + o_n) * stride_kbt, mask=o_n < len_k, other=0.0
            )
            key_bias_half = 0.5 * kb.to(gl.float32)
        scale_half = 0.5 * scale
        st_zero = gl.zeros([BN, BM], gl.float32, st_layout)
        mbarrier.wait(kv_bar, 0)
        if FUSED:  # noqa: SIM102 (constexpr branch around a runtime one)
            if n0 + BN > len_k:  # keys past the sequence must not reach dQ (which sums over keys)
                _zero_rows_past(k_smem, n0, len_k, num_warps)
                _zero_rows_past(v_smem, n0, len_k, num_warps)
        for g in range(GROUP):
            row_bias_half = key_bias_half + 0.5 * gl.load(BIAS + i_b * H + i_hk * GROUP + g)
            it0 = g * n_blocks - first
            dq_base = DQ + (i_b * rows_q + start_q).to(gl.int64) * stride_dqt + (i_hk * GROUP + g) * D
            dsum = gl.zeros([BN], gl.float32, gl.SliceLayout(1, st_layout))  # this head's dS per key
            for blk in range(first, diag_end // BM):
                dk, dv, dsum = _dkdv_step(
                    it0 + blk, blk * BM, dk, dv, dsum, k_smem, v_smem, q_smem, do_smem, bars, q_desc, do_desc,
                    n_iter, first, n_blocks, row_q, i_hk * GROUP, st_zero, o_n, row_bias_half, scale_half,
                    len_q, shift, ds_smem, dq_base, stride_dqt, True, CAUSAL, STAGES, FUSED, WITH_DK, WITH_DV,
                    num_warps,
                )  # fmt: skip
            for blk in range(gl.maximum(diag_end // BM, first), rows_end // BM):
                dk, dv, dsum = _dkdv_step(
                    it0 + blk, blk * BM, dk, dv, dsum, k_smem, v_smem, q_smem, do_smem, bars, q_desc, do_desc,
                    n_iter, first, n_blocks, row_q, i_hk * GROUP, st_zero, o_n, row_bias_half, scale_half,
                    len_q, shift, ds_smem, dq_base, stride_dqt, False, CAUSAL, STAGES, FUSED, WITH_DK,
                    WITH_DV, num_warps,
                )  # fmt: skip
            for blk in range(gl.maximum(rows_end // BM, first), first + n_blocks):
                dk, dv, dsum = _dkdv_step(
                    it0 + blk, blk * BM, dk, dv, dsum, k_smem, v_smem, q_smem, do_smem, bars, q_desc, do_desc,
                    n_iter, first, n_blocks, row_q, i_hk * GROUP, st_zero, o_n, row_bias_half, scale_half,
                    len_q, shift, ds_smem, dq_base, stride_dqt, True, CAUSAL, STAGES, FUSED, WITH_DK, WITH_DV,
                    num_warps,
                )  # fmt: skip
            dkb += dsum
            if FUSED:
                dsum = gl.where(o_n < len_k, dsum, 0.0)
                head_total = gl.reduce(dsum, 0, _add) * 0.25
                gl.store(DBIAS + (i_b * H + i_hk * GROUP + g) * num_n_blocks + i_n, head_total)
        mbarrier.invalidate(kv_bar)
        for st in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(st))

    # Keys past the sequence (padding of the padded layout) get zero gradients.
    seq = (i_b * rows_k + start_k).to(gl.int64) * stride_dkt + i_hk * D
    if WITH_DK:
        _store_rows(DK + seq, n0, stride_dkt, (dk * (0.25 * scale)).to(dtype), store_rows, len_k, num_warps)
    if WITH_DV:
        _store_rows(DV + seq, n0, stride_dkt, dv.to(dtype), store_rows, len_k, num_warps)
    if HAS_KEY_BIAS and WITH_DK:
        p_dkb = DKB + i_hk * stride_dkbh + i_b * stride_dkbb + (start_k + o_n) * stride_dkbt
        gl.store(p_dkb, gl.where(o_n < len_k, dkb * 0.25, 0.0), mask=o_n < store_rows)


@gluon.jit
def _dq_step(
    j,
    ds_prev,
    dq,
    dsum,
    q_smem,
    do_smem,
    k_smem,
    v_smem,
    bars,
    k_desc,
    v_desc,
    row_k,
    col,
    n_blocks,
    s_zero,
    o_m,
    scale_half,
    bias_half,
    kb_base,
    stride_kbt,
    len_k,
    shift,
    HAS_KEY_BIAS: gl.constexpr,
    MASK: gl.constexpr,
    CAUSAL: gl.constexpr,
    STAGES: gl.constexpr,
):
    """One pipelined dQ iteration (:func:`_dq_block`), then refill the stage of block j - 1. Returns
    block j's dS operand for the next step."""
    BN: gl.constexpr = k_desc.block_type.shape[0]
    stage = j % STAGES
    prev = (j - 1) % STAGES
    mbarrier.wait(bars.index(stage), (j // STAGES) & 1)
    ds_next, dq, dsum = _dq_block(
        j, ds_prev, dq, dsum, q_smem, do_smem, k_smem, v_smem, stage, prev, s_zero, o_m, scale_half,
        bias_half, kb_base, stride_kbt, len_k, shift, HAS_KEY_BIAS, MASK, CAUSAL,
    )  # fmt: skip
    _load_rows_pair(
        k_desc,
        v_desc,
        k_smem,
        v_smem,
        bars,
        j - 1 + STAGES,
        row_k + (j - 1 + STAGES) * BN,
        col,
        j - 1 + STAGES < n_blocks,
        STAGES,
    )
    return ds_next, dq, dsum


@gluon.jit
def _dq_block(
    j,
    ds_prev,
    dq,
    dsum,
    q_tile,
    do_tile,
    k_smem,
    v_smem,
    stage,
    prev,
    s_zero,
    o_m,
    scale_half,
    bias_half,
    kb_base,
    stride_kbt,
    len_k,
    shift,
    HAS_KEY_BIAS: gl.constexpr,
    MASK: gl.constexpr,
    CAUSAL: gl.constexpr,
):
    """Issue ``S_j``, ``dP_j`` (K, V in ring stage ``stage``) and ``dQ += dS_{j-1} K_{j-1}`` (stage
    ``prev``); compute ``4 dS_j`` while they run; retire ``dQ``. Returns block j's dS operand, dQ and the
    dS sums."""
    BN: gl.constexpr = k_smem.shape[1]
    dtype: gl.constexpr = k_smem.dtype
    op_layout: gl.constexpr = ds_prev.type.layout
    s_tok = warpgroup_mma(q_tile, k_smem.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    dp_tok = warpgroup_mma(do_tile, v_smem.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    dq_tok = warpgroup_mma(ds_prev, k_smem.index(prev), dq, is_async=True)
    s = warpgroup_mma_wait(2, deps=(s_tok,))
    ds_next, dsum = _ds_block(
        s, dp_tok, dsum, j * BN, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift,
        HAS_KEY_BIAS, MASK, CAUSAL, dtype, op_layout, 1,
    )  # fmt: skip
    dq, ds_prev = warpgroup_mma_wait(0, deps=(dq_tok, ds_prev))
    return ds_next, dq, dsum


@gluon.jit
def _ds_block(
    s,
    dp_tok,
    dsum,
    n0,
    o_m,
    scale_half,
    bias_half,
    kb_base,
    stride_kbt,
    len_k,
    shift,
    HAS_KEY_BIAS: gl.constexpr,
    MASK: gl.constexpr,
    CAUSAL: gl.constexpr,
    dtype: gl.constexpr,
    op_layout: gl.constexpr,
    OUTSTANDING: gl.constexpr,
):
    """``4 dS = dP (1 - t^2)`` of one ``[BM, BN]`` block from its logits (waiting for dP with
    ``OUTSTANDING`` later wgmma groups still in flight), added to ``dsum`` (elementwise: one add per
    score instead of a cross-thread row sum per block; reduced once at the end), and dS as the register
    A operand of ``dQ += dS K``."""
    BN: gl.constexpr = s.shape[1]
    s_layout: gl.constexpr = s.type.layout
    o_n = n0 + gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
    if HAS_KEY_BIAS:
        kb = gl.load(kb_base + o_n * stride_kbt, mask=o_n < len_k, other=0.0).to(gl.float32)
        t = _tanh(s * scale_half + (bias_half + 0.5 * kb)[None, :])
    else:
        t = _tanh(s * scale_half + bias_half)
    g = 1.0 - t * t
    dp = warpgroup_mma_wait(OUTSTANDING, deps=(dp_tok,))
    ds = dp * g
    if MASK:
        keep = (o_n < len_k)[None, :]
        if CAUSAL:
            keep = keep & (o_n[None, :] <= o_m[:, None] + shift)
        ds = gl.where(keep, ds, 0.0)
    dsum += ds
    return gl.convert_layout(ds.to(dtype), op_layout), dsum


@gluon.jit
def sigmoid_attn_bwd_dq_hopper_kernel(
    q_desc,
    do_desc,
    k_desc,
    v_desc,
    DQ,
    DBIAS,
    BIAS,
    KEY_BIAS,
    START_Q,
    LEN_Q,
    START_K,
    LEN_K,
    rows_q,
    rows_k,
    stride_dqt,
    stride_kbb,
    stride_kbt,
    num_m_blocks,
    scale,
    H: gl.constexpr,
    GROUP: gl.constexpr,
    CAUSAL: gl.constexpr,
    HAS_KEY_BIAS: gl.constexpr,
    STORE_ALL_ROWS: gl.constexpr,
    STAGES: gl.constexpr,
    num_warps: gl.constexpr,
):
    """One program per (query block, sequence x head): dQ and the block's sum of dS (DBIAS, one slot per
    (sequence x head, query block))."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    s_layout: gl.constexpr = _mma_layout(num_warps, BN)
    acc_layout: gl.constexpr = _mma_layout(num_warps, D)
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)

    i_m, i_bh, i_b, i_h, start_q, len_q, start_k, len_k, store_rows = _program(
        START_Q, LEN_Q, START_K, LEN_K, rows_q, H, CAUSAL, False, STORE_ALL_ROWS
    )
    m0 = i_m * BM
    if m0 >= store_rows:
        return
    shift, n_blocks, n_full = _key_blocks(m0, len_q, len_k, BM, BN, CAUSAL)  # as in the forward

    o_m = m0 + gl.arange(0, BM, layout=gl.SliceLayout(1, s_layout))
    dq = gl.zeros([BM, D], gl.float32, acc_layout)
    dsum = gl.zeros([BM, BN], gl.float32, s_layout)  # 4 dS summed over key blocks
    if n_blocks > 0:
        row_q = i_b * rows_q + start_q + m0
        row_k = i_b * rows_k + start_k
        col = (i_h // GROUP) * D
        bias_half = 0.5 * gl.load(BIAS + i_bh)
        scale_half = 0.5 * scale
        kb_base = KEY_BIAS + i_b * stride_kbb + start_k * stride_kbt
        q_smem = gl.allocate_shared_memory(dtype, [BM, D], q_desc.layout)
        do_smem = gl.allocate_shared_memory(dtype, [BM, D], do_desc.layout)
        k_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], k_desc.layout)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], v_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for st in gl.static_range(STAGES):
            mbarrier.init(bars.index(st), count=1)
        fence_async_shared()
        mbarrier.expect(q_bar, q_desc.block_type.nbytes + do_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [row_q, i_h * D], q_bar, q_smem)
        tma.async_copy_global_to_shared(do_desc, [row_q, i_h * D], q_bar, do_smem)
        for st in gl.static_range(STAGES):
            _load_rows_pair(
                k_desc, v_desc, k_smem, v_smem, bars, st, row_k + st * BN, col, st < n_blocks, STAGES
            )

        # Rows past len_q (the next sequence or padding) only reach their own dQ rows (stored as zeros)
        # and their dS sums (masked below).
        s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
        mbarrier.wait(q_bar, 0)
        mbarrier.wait(bars.index(0), 0)
        s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        dp_tok = warpgroup_mma(do_smem, v_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s_tok,))
        # Block 0 always takes the masked path (a full block keeps every score).
        ds, dsum = _ds_block(
            s, dp_tok, dsum, 0, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift,
            HAS_KEY_BIAS, True, CAUSAL, dtype, op_layout, 0,
        )  # fmt: skip
        for j in range(1, n_full):
            ds, dq, dsum = _dq_step(
                j, ds, dq, dsum, q_smem, do_smem, k_smem, v_smem, bars, k_desc, v_desc, row_k, col, n_blocks,
                s_zero, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift,
                HAS_KEY_BIAS, False, CAUSAL, STAGES,
            )  # fmt: skip
        for j in range(gl.maximum(n_full, 1), n_blocks):
            ds, dq, dsum = _dq_step(
                j, ds, dq, dsum, q_smem, do_smem, k_smem, v_smem, bars, k_desc, v_desc, row_k, col, n_blocks,
                s_zero, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift,
                HAS_KEY_BIAS, True, CAUSAL, STAGES,
            )  # fmt: skip
        last = n_blocks - 1
        if n_blocks * BN > len_k:  # only the last block runs past the keys: their K rows must not reach dQ
            _zero_rows_past(k_smem.index(last % STAGES), last * BN, len_k, num_warps)
        dq_tok = warpgroup_mma(ds, k_smem.index(last % STAGES), dq, is_async=True)
        dq = warpgroup_mma_wait(0, deps=(dq_tok,))
        mbarrier.invalidate(q_bar)
        for st in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(st))

    seq = (i_b * rows_q + start_q).to(gl.int64) * stride_dqt + i_h * D
    _store_rows(DQ + seq, m0, stride_dqt, (dq * (0.25 * scale)).to(dtype), store_rows, len_q, num_warps)
    dsum = gl.where((o_m < len_q)[:, None], dsum, 0.0)
    gl.store(DBIAS + i_bh * num_m_blocks + i_m, gl.reduce(gl.reduce(dsum, 1, _add), 0, _add) * 0.25)


def compile_bwd_sm90(
    kind: str,
    dim: int,
    *,
    dtype: str = "bf16",
    causal: bool = False,
    key_bias: bool = False,
    padded: bool = True,
    heads: int = 8,
    group: int = 1,
    config: tuple[int, int, int, int] | None = None,
):
    """The ``"dkdv"`` (``"dk"`` / ``"dv"``: one part of it), ``"dq"`` or ``"fused"`` (dK/dV kernel
    with FUSED) kernel compiled for sm_90a without a GPU (hopper.compile_for_sm90), with the
    interface's launch configuration for ``dim`` unless ``config`` gives ``(BLOCK_M, BLOCK_N, warps,
    stages)``."""
    from sigcell.ops.sigmoid_attn.hopper import compile_constants, compile_for_sm90
    from sigcell.ops.sigmoid_attn.interface import _HOPPER_BWD_CONFIGS

    block_m, block_n, warps, stages = (
        config or _HOPPER_BWD_CONFIGS[kind if kind in ("dq", "fused") else "dkdv"][dim]
    )
    blocks = {"q_desc": block_m, "do_desc": block_m, "k_desc": block_n, "v_desc": block_n}
    constants = compile_constants(stages, warps, causal, key_bias, padded, heads, group)
    if kind == "dq":
        kernel = sigmoid_attn_bwd_dq_hopper_kernel
    else:
        kernel = sigmoid_attn_bwd_dkdv_hopper_kernel
        constants.update(dkdv_part_flags(kind))
    return compile_for_sm90(kernel, blocks, backward_args(kind), constants, dim, dtype)


def backward_args(kind: str) -> dict[str, str]:
    """Triton signature types of a backward kernel's arguments other than descriptors and constexprs:
    the dQ kernel (``kind="dq"``) or the dK / dV kernel (any other kind); the warp-specialized kernels
    of hopper_ws_bwd.py take the same."""
    lengths = dict.fromkeys(("START_Q", "LEN_Q", "START_K", "LEN_K"), "*i32")
    bias = dict.fromkeys(("BIAS", "KEY_BIAS"), "*fp32")
    if kind == "dq":
        args = {"DQ": "*dt", "DBIAS": "*fp32", **bias, **lengths}
        ints = ("rows_q", "rows_k", "stride_dqt", "stride_kbb", "stride_kbt", "num_m_blocks")
        args.update(dict.fromkeys(ints, "i32"))
    else:
        args = {"DK": "*dt", "DV": "*dt", "DKB": "*fp32", **bias, **lengths}
        ints = ("rows_q", "rows_k", "stride_dkt", "stride_kbb", "stride_kbt", "stride_dkbh", "stride_dkbb")
        args.update(dict.fromkeys((*ints, "stride_dkbt"), "i32"))
        args.update({"DQ": "*fp32", "DBIAS": "*fp32", "stride_dqt": "i32", "num_n_blocks": "i32"})
    args["scale"] = "fp32"
    return args


def dkdv_part_flags(kind: str) -> dict[str, bool]:
    """FUSED / WITH_DK / WITH_DV of the dK / dV kernel for ``kind``: "dkdv", "dk", "dv" or "fused"."""
    if kind not in ("dkdv", "dk", "dv", "fused"):
        raise ValueError(f"kind must be 'dkdv', 'dk', 'dv' or 'fused', got {kind!r}")
    return {"FUSED": kind == "fused", "WITH_DK": kind != "dv", "WITH_DV": kind != "dk"}
