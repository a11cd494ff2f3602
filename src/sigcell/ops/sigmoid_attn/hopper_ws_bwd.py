"""Warp-specialized Hopper (sm_90) backward of sigmoid attention in Gluon (opt-in, not yet run on a GPU).

hopper_bwd.py's two kernels split like the forward of hopper_ws.py (``SIGCELL_HOPPER_WS_BWD_DIMS`` picks
the head dims; benchmarks/NOTES.md, v19):

- dQ: a producer warp loads both consumers' Q and dO tiles, then streams K / V blocks through a ring of
  shared-memory stages; two consumer warpgroups own BM query rows each and run hopper_bwd's pipelined dQ
  loop on the shared stages; each writes its own d-bias slot (one per BM rows, as before).
- dK / dV: two consumers own BN keys each (their K / V tiles stay resident); the producer streams the
  Q / dO blocks that the first consumer's keys see, every head of the KV group in turn; under a causal
  mask the second consumer releases the blocks before its diagonal unread.
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

from sigcell.ops.sigmoid_attn.hopper import _key_blocks, _mma_layout, _program, _store_rows, _zero_rows_past
from sigcell.ops.sigmoid_attn.hopper_bwd import (
    _add,
    _dkdv_block,
    _dq_block,
    _ds_block,
    _load_query_block,
    backward_args,
    dkdv_part_flags,
)
from sigcell.ops.sigmoid_attn.hopper_ws import (
    CONSUMER_REGS,
    CONSUMER_WARPS,
    PRODUCER_REGS,
    _invalidate_ring,
    _release,
    _ring,
    _stream_kv,
    _two_consumer_blocks,
    ws_maxnreg,
)

# ----------------------------------------------------------------------------------------------------
# dQ
# ----------------------------------------------------------------------------------------------------


@gluon.jit
def _dq_consumer_step(
    j,
    ds_prev,
    dq,
    dsum,
    q_tile,
    do_tile,
    k_smem,
    v_smem,
    ready,
    empty,
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
    """hopper_bwd._dq_step on the shared ring: the stage of block j - 1 is released instead of refilled."""
    STAGES: gl.constexpr = k_smem.shape[0]
    stage = j % STAGES
    prev = (j - 1) % STAGES
    mbarrier.wait(ready.index(stage), (j // STAGES) & 1)
    ds_next, dq, dsum = _dq_block(
        j, ds_prev, dq, dsum, q_tile, do_tile, k_smem, v_smem, stage, prev, s_zero, o_m, scale_half,
        bias_half, kb_base, stride_kbt, len_k, shift, HAS_KEY_BIAS, MASK, CAUSAL,
    )  # fmt: skip
    mbarrier.arrive(empty.index(prev), count=1)
    return ds_next, dq, dsum


@gluon.jit
def _dq_consumer(
    WG: gl.constexpr, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, q_bar, ready, empty,
    DQ, DBIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col, stride_dqt, kb_base, stride_kbt,
    scale, bias_half, dbias_row, num_m_blocks, row_q, row_k, col_k, CAUSAL: gl.constexpr,
    HAS_KEY_BIAS: gl.constexpr,
):  # fmt: skip
    """Consumer ``WG`` (0 or 1): dQ of query rows ``m0 + WG * BM + [0, BM)`` and their sum of dS (DBIAS
    slot ``dbias_row`` + the query block, none past ``num_m_blocks``), as hopper_bwd's dQ kernel, on the
    shared K / V ring. Every partition takes these arguments (one worker signature)."""
    BM: gl.constexpr = q_smem.shape[1]
    D: gl.constexpr = q_smem.shape[2]
    BN: gl.constexpr = k_smem.shape[1]
    STAGES: gl.constexpr = k_smem.shape[0]
    dtype: gl.constexpr = k_smem.dtype
    num_warps: gl.constexpr = 4
    s_layout: gl.constexpr = _mma_layout(num_warps, BN)
    acc_layout: gl.constexpr = _mma_layout(num_warps, D)
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    q_tile = q_smem.index(WG)
    do_tile = do_smem.index(WG)
    mine = m0 + WG * BM
    shift, n_blocks, n_full = _key_blocks(mine, len_q, len_k, BM, BN, CAUSAL)
    scale_half = 0.5 * scale
    o_m = mine + gl.arange(0, BM, layout=gl.SliceLayout(1, s_layout))
    dq = gl.zeros([BM, D], gl.float32, acc_layout)
    dsum = gl.zeros([BM, BN], gl.float32, s_layout)  # 4 dS summed over key blocks
    if n_blocks > 0:
        s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
        mbarrier.wait(q_bar, 0)
        mbarrier.wait(ready.index(0), 0)
        s_tok = warpgroup_mma(q_tile, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        dp_tok = warpgroup_mma(do_tile, v_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s_tok,))
        ds, dsum = _ds_block(
            s, dp_tok, dsum, 0, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift,
            HAS_KEY_BIAS, True, CAUSAL, dtype, op_layout, 0,
        )  # fmt: skip
        for j in range(1, n_full):
            ds, dq, dsum = _dq_consumer_step(
                j, ds, dq, dsum, q_tile, do_tile, k_smem, v_smem, ready, empty, s_zero, o_m, scale_half,
                bias_half, kb_base, stride_kbt, len_k, shift, HAS_KEY_BIAS, False, CAUSAL,
            )  # fmt: skip
        for j in range(gl.maximum(n_full, 1), n_blocks):
            ds, dq, dsum = _dq_consumer_step(
                j, ds, dq, dsum, q_tile, do_tile, k_smem, v_smem, ready, empty, s_zero, o_m, scale_half,
                bias_half, kb_base, stride_kbt, len_k, shift, HAS_KEY_BIAS, True, CAUSAL,
            )  # fmt: skip
        last = n_blocks - 1
        if n_blocks * BN > len_k:  # only the last block runs past the keys: their K rows must not reach dQ
            _zero_rows_past(k_smem.index(last % STAGES), last * BN, len_k, num_warps)
        dq_tok = warpgroup_mma(ds, k_smem.index(last % STAGES), dq, is_async=True)
        dq = warpgroup_mma_wait(0, deps=(dq_tok,))
        mbarrier.arrive(empty.index(last % STAGES), count=1)
    for j in range(n_blocks, n_total):  # the other consumer's extra blocks: release them unread
        _release(ready, empty, j, STAGES)
    seq = out_row0.to(gl.int64) * stride_dqt + out_col
    _store_rows(DQ + seq, mine, stride_dqt, (dq * (0.25 * scale)).to(dtype), store_rows, len_q, num_warps)
    dsum = gl.where((o_m < len_q)[:, None], dsum, 0.0)
    total = gl.reduce(gl.reduce(dsum, 1, _add), 0, _add) * 0.25
    block = mine // BM  # this consumer's query block: its DBIAS slot (none past num_m_blocks)
    gl.store(DBIAS + dbias_row + block, total, mask=block < num_m_blocks)


@gluon.jit
def _dq_loader(
    WG: gl.constexpr, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, q_bar, ready, empty,
    DQ, DBIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col, stride_dqt, kb_base, stride_kbt,
    scale, bias_half, dbias_row, num_m_blocks, row_q, row_k, col_k, CAUSAL: gl.constexpr,
    HAS_KEY_BIAS: gl.constexpr,
):  # fmt: skip
    """Both consumers' Q and dO tiles, then the K / V ring."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    if n_total > 0:
        mbarrier.expect(q_bar, 2 * (q_desc.block_type.nbytes + do_desc.block_type.nbytes))
        for w in gl.static_range(2):
            tma.async_copy_global_to_shared(q_desc, [row_q + w * BM, out_col], q_bar, q_smem.index(w))
            tma.async_copy_global_to_shared(do_desc, [row_q + w * BM, out_col], q_bar, do_smem.index(w))
        _stream_kv(k_desc, v_desc, k_smem, v_smem, ready, empty, row_k, col_k, n_total, 0)


@gluon.jit
def sigmoid_attn_bwd_dq_hopper_ws_kernel(
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
    """hopper_bwd.sigmoid_attn_bwd_dq_hopper_kernel with a producer warp and two consumer warpgroups: one
    program per (2 BM query rows, sequence x head); DBIAS keeps one slot per BM rows (``num_m_blocks``
    of them per sequence x head)."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype

    i_m, i_bh, i_b, i_h, start_q, len_q, start_k, len_k, store_rows = _program(
        START_Q, LEN_Q, START_K, LEN_K, rows_q, H, CAUSAL, False, STORE_ALL_ROWS
    )
    m0 = i_m * 2 * BM  # no early return: see sigmoid_attn_fwd_hopper_ws_kernel
    n_total = _two_consumer_blocks(m0, len_q, len_k, BM, BN, CAUSAL)

    q_smem = gl.allocate_shared_memory(dtype, [2, BM, D], q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [2, BM, D], do_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    ready, empty = _ring(STAGES)
    fence_async_shared()

    row_q = i_b * rows_q + start_q + m0
    row_k = i_b * rows_k + start_k
    col_k = (i_h // GROUP) * D
    bias_half = 0.5 * gl.load(BIAS + i_bh)
    kb_base = KEY_BIAS + i_b * stride_kbb + start_k * stride_kbt
    out_row0 = i_b * rows_q + start_q
    out_col = i_h * D
    dbias_row = i_bh * num_m_blocks
    # Argument tuples spelled out in place (see sigmoid_attn_fwd_hopper_ws_kernel).
    gl.warp_specialize(
        [
            (
                _dq_consumer,
                (0, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, q_bar, ready, empty, DQ,
                 DBIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col, stride_dqt, kb_base,
                 stride_kbt, scale, bias_half, dbias_row, num_m_blocks, row_q, row_k, col_k, CAUSAL,
                 HAS_KEY_BIAS),
            ),
            (
                _dq_consumer,
                (1, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, q_bar, ready, empty, DQ,
                 DBIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col, stride_dqt, kb_base,
                 stride_kbt, scale, bias_half, dbias_row, num_m_blocks, row_q, row_k, col_k, CAUSAL,
                 HAS_KEY_BIAS),
            ),
            (
                _dq_loader,
                (0, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, q_bar, ready, empty, DQ,
                 DBIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col, stride_dqt, kb_base,
                 stride_kbt, scale, bias_half, dbias_row, num_m_blocks, row_q, row_k, col_k, CAUSAL,
                 HAS_KEY_BIAS),
            ),
        ],
        [CONSUMER_WARPS, 1],
        [CONSUMER_REGS, PRODUCER_REGS],
    )  # fmt: skip
    mbarrier.invalidate(q_bar)
    _invalidate_ring(ready, empty)


# ----------------------------------------------------------------------------------------------------
# dK / dV
# ----------------------------------------------------------------------------------------------------


@gluon.jit
def _dkdv_consumer(
    WG: gl.constexpr, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready,
    empty, DK, DV, DKB, BIAS, KEY_BIAS, i_b, i_hk, n0, len_q, len_k, store_rows, shift, first, n_stream,
    row_q, row_k0, start_k, stride_dkt, stride_kbb, stride_kbt, stride_dkbh, stride_dkbb, stride_dkbt, scale,
    H: gl.constexpr, GROUP: gl.constexpr, CAUSAL: gl.constexpr, HAS_KEY_BIAS: gl.constexpr,
    WITH_DK: gl.constexpr, WITH_DV: gl.constexpr,
):  # fmt: skip
    """Consumer ``WG`` (0 or 1; every partition takes these arguments): dK, dV (and the key-bias sums)
    of keys ``n0 + WG * BN + [0, BN)`` over the program's stream of
    query blocks: ``n_stream`` blocks from ``first`` per head of the KV group. Blocks of the stream this
    consumer does not see (causal: before its diagonal; all, for keys past the sequence) are waited for
    and released unread."""
    BN: gl.constexpr = k_smem.shape[1]
    D: gl.constexpr = k_smem.shape[2]
    STAGES: gl.constexpr = q_smem.shape[0]
    BM: gl.constexpr = q_smem.shape[1]
    dtype: gl.constexpr = k_smem.dtype
    num_warps: gl.constexpr = 4
    st_layout: gl.constexpr = _mma_layout(num_warps, BM)
    acc_layout: gl.constexpr = _mma_layout(num_warps, D)
    k_tile = k_smem.index(WG)
    v_tile = v_smem.index(WG)
    mine = n0 + WG * BN
    # This consumer's query blocks, as in hopper_bwd's dK / dV kernel: [mine_first, diag_end) masked on
    # the causal diagonal, whole blocks to rows_end, then the masked partial block; they end where the
    # stream ends whenever there are any (the same len_q).
    q_end = gl.where(mine < len_k, len_q, 0)
    rows_end = q_end // BM * BM
    lo = 0
    diag_end = 0
    if CAUSAL:
        lo = gl.maximum(mine - shift, 0) // BM * BM
        diag_end = gl.maximum(mine + BN - 1 - shift + BM - 1, 0) // BM * BM
    diag_end = gl.minimum(diag_end, rows_end)
    mine_first = lo // BM
    n_mine = gl.maximum(gl.cdiv(q_end, BM) - mine_first, 0)
    skip_to = gl.where(n_mine > 0, mine_first, first + n_stream)  # stream blocks before: release

    o_n = mine + gl.arange(0, BN, layout=gl.SliceLayout(1, st_layout))
    dk = gl.zeros([BN, D], gl.float32, acc_layout)
    dv = gl.zeros([BN, D], gl.float32, acc_layout)
    dkb = gl.zeros([BN], gl.float32, gl.SliceLayout(1, st_layout))
    key_bias_half = gl.zeros([BN], gl.float32, gl.SliceLayout(1, st_layout))
    if HAS_KEY_BIAS:
        kb = gl.load(KEY_BIAS + i_b * stride_kbb + (start_k + o_n) * stride_kbt, mask=o_n < len_k, other=0.0)
        key_bias_half = 0.5 * kb.to(gl.float32)
    scale_half = 0.5 * scale
    st_zero = gl.zeros([BN, BM], gl.float32, st_layout)
    if n_stream > 0:
        mbarrier.wait(kv_bar, 0)
    for g in range(GROUP):
        row_bias_half = key_bias_half + 0.5 * gl.load(BIAS + i_b * H + i_hk * GROUP + g)
        it0 = g * n_stream - first
        for blk in range(first, skip_to):
            _release(ready, empty, it0 + blk, STAGES)
        for blk in range(mine_first, gl.where(n_mine > 0, diag_end // BM, mine_first)):
            dk, dv, dkb = _dkdv_ring_step(
                it0 + blk, blk * BM, dk, dv, dkb, k_tile, v_tile, q_smem, do_smem, ready, empty, st_zero,
                o_n, row_bias_half, scale_half, len_q, shift, True, CAUSAL, WITH_DK, WITH_DV,
            )  # fmt: skip
        for blk in range(gl.maximum(diag_end // BM, mine_first), gl.where(n_mine > 0, rows_end // BM, 0)):
            dk, dv, dkb = _dkdv_ring_step(
                it0 + blk, blk * BM, dk, dv, dkb, k_tile, v_tile, q_smem, do_smem, ready, empty, st_zero,
                o_n, row_bias_half, scale_half, len_q, shift, False, CAUSAL, WITH_DK, WITH_DV,
            )  # fmt: skip
        for blk in range(gl.maximum(rows_end // BM, mine_first), mine_first + n_mine):
            dk, dv, dkb = _dkdv_ring_step(
                it0 + blk, blk * BM, dk, dv, dkb, k_tile, v_tile, q_smem, do_smem, ready, empty, st_zero,
                o_n, row_bias_half, scale_half, len_q, shift, True, CAUSAL, WITH_DK, WITH_DV,
            )  # fmt: skip

    # Keys past the sequence (padding of the padded layout) get zero gradients.
    seq = row_k0.to(gl.int64) * stride_dkt + i_hk * D
    if WITH_DK:
        _store_rows(DK + seq, mine, stride_dkt, (dk * (0.25 * scale)).to(dtype), store_rows, len_k, num_warps)
    if WITH_DV:
        _store_rows(DV + seq, mine, stride_dkt, dv.to(dtype), store_rows, len_k, num_warps)
    if HAS_KEY_BIAS and WITH_DK:
        p_dkb = DKB + i_hk * stride_dkbh + i_b * stride_dkbb + (start_k + o_n) * stride_dkbt
        gl.store(p_dkb, gl.where(o_n < len_k, dkb * 0.25, 0.0), mask=o_n < store_rows)


@gluon.jit
def _dkdv_ring_step(
    it,
    m0,
    dk,
    dv,
    dkb,
    k_tile,
    v_tile,
    q_smem,
    do_smem,
    ready,
    empty,
    st_zero,
    o_n,
    row_bias_half,
    scale_half,
    len_q,
    shift,
    MASK: gl.constexpr,
    CAUSAL: gl.constexpr,
    WITH_DK: gl.constexpr,
    WITH_DV: gl.constexpr,
):
    """hopper_bwd._dkdv_step on the shared ring: the stage is released instead of refilled."""
    STAGES: gl.constexpr = q_smem.shape[0]
    stage = it % STAGES
    q_tile = q_smem.index(stage)
    do_tile = do_smem.index(stage)
    mbarrier.wait(ready.index(stage), (it // STAGES) & 1)
    dk, dv, dkb = _dkdv_block(
        m0, dk, dv, dkb, k_tile, v_tile, q_tile, do_tile, st_zero, o_n, row_bias_half, scale_half, len_q,
        shift, k_tile, k_tile, 0, MASK, CAUSAL, False, WITH_DK, WITH_DV, 4,
    )  # fmt: skip
    mbarrier.arrive(empty.index(stage), count=1)
    return dk, dv, dkb


@gluon.jit
def _dkdv_loader(
    WG: gl.constexpr, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready,
    empty, DK, DV, DKB, BIAS, KEY_BIAS, i_b, i_hk, n0, len_q, len_k, store_rows, shift, first, n_stream,
    row_q, row_k0, start_k, stride_dkt, stride_kbb, stride_kbt, stride_dkbh, stride_dkbb, stride_dkbt, scale,
    H: gl.constexpr, GROUP: gl.constexpr, CAUSAL: gl.constexpr, HAS_KEY_BIAS: gl.constexpr,
    WITH_DK: gl.constexpr, WITH_DV: gl.constexpr,
):  # fmt: skip
    """Both consumers' K and V tiles, then the program's stream of Q / dO blocks (each head of the KV
    group in turn) through the ring."""
    BN: gl.constexpr = k_desc.block_type.shape[0]
    D: gl.constexpr = k_desc.block_type.shape[1]
    STAGES: gl.constexpr = q_smem.shape[0]
    if n_stream > 0:
        mbarrier.expect(kv_bar, 2 * (k_desc.block_type.nbytes + v_desc.block_type.nbytes))
        for w in gl.static_range(2):
            tma.async_copy_global_to_shared(k_desc, [row_k0 + n0 + w * BN, i_hk * D], kv_bar, k_smem.index(w))
            tma.async_copy_global_to_shared(v_desc, [row_k0 + n0 + w * BN, i_hk * D], kv_bar, v_smem.index(w))
        n_iter = n_stream * GROUP
        for it in range(n_iter):
            mbarrier.wait(empty.index(it % STAGES), ((it // STAGES) & 1) ^ 1)
            _load_query_block(
                q_desc, do_desc, q_smem, do_smem, ready, it, n_iter, first, n_stream, row_q, i_hk * GROUP,
                STAGES,
            )  # fmt: skip


@gluon.jit
def sigmoid_attn_bwd_dkdv_hopper_ws_kernel(
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
    """hopper_bwd.sigmoid_attn_bwd_dkdv_hopper_kernel (arguments alike; FUSED must be false, DQ / DBIAS
    unused) with a producer warp and two consumer warpgroups: one program per (2 BN keys, sequence x KV
    head), streaming the query blocks that either consumer needs."""
    gl.static_assert(not FUSED, "the warp-specialized dK / dV kernel has no fused dQ")
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    HKV: gl.constexpr = H // GROUP

    i_n, _, i_b, i_hk, start_q, len_q, start_k, len_k, store_rows = _program(
        START_Q, LEN_Q, START_K, LEN_K, rows_k, HKV, False, True, STORE_ALL_ROWS
    )
    n0 = i_n * 2 * BN  # no early return: see sigmoid_attn_fwd_hopper_ws_kernel
    shift = len_k - len_q
    # The stream: the query blocks the first consumer's keys see (the second's are a suffix of them).
    q_end = gl.where(n0 < len_k, len_q, 0)
    lo = 0
    if CAUSAL:
        lo = gl.maximum(n0 - shift, 0) // BM * BM
    first = lo // BM
    n_stream = gl.maximum(gl.cdiv(q_end, BM) - first, 0)

    q_smem = gl.allocate_shared_memory(dtype, [STAGES, BM, D], q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [STAGES, BM, D], do_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [2, BN, D], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [2, BN, D], v_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    ready, empty = _ring(STAGES)
    fence_async_shared()

    row_q = i_b * rows_q + start_q
    row_k0 = i_b * rows_k + start_k
    # Argument tuples spelled out in place (see sigmoid_attn_fwd_hopper_ws_kernel).
    gl.warp_specialize(
        [
            (
                _dkdv_consumer,
                (0, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready, empty,
                 DK, DV, DKB, BIAS, KEY_BIAS, i_b, i_hk, n0, len_q, len_k, store_rows, shift, first,
                 n_stream, row_q, row_k0, start_k, stride_dkt, stride_kbb, stride_kbt, stride_dkbh,
                 stride_dkbb, stride_dkbt, scale, H, GROUP, CAUSAL, HAS_KEY_BIAS, WITH_DK, WITH_DV),
            ),
            (
                _dkdv_consumer,
                (1, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready, empty,
                 DK, DV, DKB, BIAS, KEY_BIAS, i_b, i_hk, n0, len_q, len_k, store_rows, shift, first,
                 n_stream, row_q, row_k0, start_k, stride_dkt, stride_kbb, stride_kbt, stride_dkbh,
                 stride_dkbb, stride_dkbt, scale, H, GROUP, CAUSAL, HAS_KEY_BIAS, WITH_DK, WITH_DV),
            ),
            (
                _dkdv_loader,
                (0, q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready, empty,
                 DK, DV, DKB, BIAS, KEY_BIAS, i_b, i_hk, n0, len_q, len_k, store_rows, shift, first,
                 n_stream, row_q, row_k0, start_k, stride_dkt, stride_kbb, stride_kbt, stride_dkbh,
                 stride_dkbb, stride_dkbt, scale, H, GROUP, CAUSAL, HAS_KEY_BIAS, WITH_DK, WITH_DV),
            ),
        ],
        [CONSUMER_WARPS, 1],
        [CONSUMER_REGS, PRODUCER_REGS],
    )  # fmt: skip
    mbarrier.invalidate(kv_bar)
    _invalidate_ring(ready, empty)


def compile_ws_bwd_sm90(
    kind: str,
    dim: int,
    config: tuple[int, int, int],
    *,
    dtype: str = "bf16",
    causal: bool = False,
    key_bias: bool = False,
    padded: bool = True,
    heads: int = 8,
    group: int = 1,
):
    """The warp-specialized dQ (``kind="dq"``) or dK / dV kernel (``"dkdv"``; ``"dk"`` / ``"dv"``: one
    part) compiled for sm_90a without a GPU. ``config`` = (BM, BN, STAGES): BM query rows per consumer
    (dQ) or per streamed block (dK / dV), BN keys per block (dQ) or per consumer (dK / dV)."""
    from sigcell.ops.sigmoid_attn.hopper import compile_constants, compile_for_sm90

    block_m, block_n, stages = config
    constants = compile_constants(stages, CONSUMER_WARPS.value, causal, key_bias, padded, heads, group)
    if kind == "dq":
        kernel = sigmoid_attn_bwd_dq_hopper_ws_kernel
    elif kind in ("dkdv", "dk", "dv"):
        kernel = sigmoid_attn_bwd_dkdv_hopper_ws_kernel
        constants.update(dkdv_part_flags(kind))
    else:
        raise ValueError(f"kind must be 'dq', 'dkdv', 'dk' or 'dv', got {kind!r}")
    blocks = {"q_desc": block_m, "do_desc": block_m, "k_desc": block_n, "v_desc": block_n}
    args = backward_args(kind)
    return compile_for_sm90(kernel, blocks, args, constants, dim, dtype, maxnreg=ws_maxnreg())
