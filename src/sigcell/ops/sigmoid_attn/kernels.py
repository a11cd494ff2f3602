"""Triton kernels of sigmoid attention: forward, backward dK / dV, backward dQ, and an opt-in fused
backward (dK / dV plus dQ through float32 atomics).

One layout serves padded and packed inputs: a tensor ``[B', rows, H, D]`` plus, per sequence ``b``,
the first row ``start[b]`` and the length ``len[b]``. Padded batches have ``start = 0`` and the batch
stride; packed ones are one row-block (``B' = 1``, batch stride 0) cut by ``start = cu_seqlens[:-1]``.
``STORE_ALL_ROWS`` (padded layout) makes programs write zeros to rows past a sequence's length.

Logit of query row ``i`` and key row ``j`` (positions inside the sequence)::

    s = scale * q_i . k_j + bias[b, h] + key_bias[j] - slope[b, h] * |i + (Lk - Lq) - j|

masked to ``i < Lq``, ``j < Lk`` and, if causal, ``j <= i + Lk - Lq`` (bottom-right aligned).
Naming: ``i_`` program ids, ``o_`` offsets, ``m_`` masks, ``p_`` pointers, ``b_`` blocks.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

if os.environ.get("TRITON_INTERPRET") == "1":

    @triton.jit
    def _tanh(x):
        # The interpreter runs no PTX: the same function through exp, so that CPU tests cover the FAST
        # path's algebra (kernel units, 4 dS) with an exact tanh.
        x = tl.minimum(tl.maximum(x, -20.0), 20.0)  # tanh is +-1 in float32 long before; exp stays finite
        return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0

else:

    @triton.jit
    def _tanh(x):
        # One MUFU op (the special-function unit); max relative error about 2^-11.
        return tl.inline_asm_elementwise(
            "tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
        )


@triton.jit
def _logit_units(x, FAST: tl.constexpr):
    """Scale a term of the logit into the kernels' units: FAST kernels carry ``s / 2`` (the argument of
    tanh below), so the halving is folded into scale and biases instead of one multiply per score."""
    if FAST:
        return x * 0.5
    else:
        return x


@triton.jit
def _sigmoid(x, FAST: tl.constexpr):
    """sigmoid of the logit ``s``, from ``x`` in kernel units (:func:`_logit_units`)."""
    if FAST:
        # sigmoid(s) = 0.5 * tanh(s / 2) + 0.5 with x = s / 2: one MUFU op per score on the GPU.
        t = _tanh(x)
        return 0.5 * t + 0.5
    else:
        return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _sigmoid_and_slope4(x, FAST: tl.constexpr):
    """``p = sigmoid(s)`` and ``4 p (1 - p)`` from ``x`` in kernel units. The backward works with
    ``4 dS`` and folds the 1/4 into its final scale (exact in floating point): with tanh, 4 p (1 - p)
    is ``1 - t^2``, two operations per score fewer than p (1 - p) dP."""
    if FAST:
        t = _tanh(x)
        return 0.5 * t + 0.5, 1.0 - t * t
    else:
        p = 1.0 / (1.0 + tl.exp(-x))
        return p, 4.0 * p * (1.0 - p)


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr, EMULATE_BF16: tl.constexpr):
    # EMULATE_BF16 (Triton interpreter only): the interpreter stores bfloat16 as raw uint16 and cannot
    # multiply it, so bfloat16 operands are multiplied as the (exactly representable) float32 values.
    if EMULATE_BF16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _round(x, dtype: tl.constexpr, EMULATE_BF16: tl.constexpr):
    """Cast a float32 block to ``dtype``; round-to-nearest-even as on the GPU."""
    if EMULATE_BF16 and dtype == tl.bfloat16:
        # The interpreter's float32 -> bfloat16 conversion truncates (and mis-rounds mantissa carries):
        # round in the integer domain so that the cast below only drops zero bits.
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(dtype)
    else:
        return x.to(dtype)


@triton.jit
def _logits(
    b_q,
    b_k,
    o_m,
    o_n,
    shift,
    scale,
    bias,
    slope,
    KEY_BIAS,
    key_bias_offset,
    stride_kbt,
    MASK_KEYS: tl.constexpr,
    len_k,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
):
    """Logits ``[BM, BN]`` of one block (no masking) in kernel units (:func:`_logit_units`); ``scale``,
    ``bias`` and ``slope`` come in those units already."""
    b_s = _dot(b_q, tl.trans(b_k), DOT_PRECISION, EMULATE_BF16) * scale + bias
    if HAS_KEY_BIAS:
        p_kb = KEY_BIAS + key_bias_offset + o_n * stride_kbt
        if MASK_KEYS:  # noqa: SIM108 (constexpr branch: one load per specialization)
            b_kb = tl.load(p_kb, mask=o_n < len_k, other=0.0)
        else:
            b_kb = tl.load(p_kb)
        b_s += _logit_units(b_kb.to(tl.float32), FAST_SIGMOID)[None, :]
    if HAS_ALIBI:
        b_s -= slope * tl.abs(o_m[:, None] + shift - o_n[None, :]).to(tl.float32)
    return b_s


@triton.jit
def _load_rows(
    base,
    o_r,
    o_d,
    stride_t,
    stride_d,
    n_rows,
    MASK_ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Rows ``o_r`` of a [rows, D] slice; rows past ``n_rows`` (and columns past D) read as 0."""
    ptrs = base + o_r[:, None] * stride_t + o_d[None, :] * stride_d
    if MASK_ROWS:
        if BLOCK_D == HEAD_DIM:
            return tl.load(ptrs, mask=(o_r < n_rows)[:, None], other=0.0)
        else:
            return tl.load(ptrs, mask=(o_r < n_rows)[:, None] & (o_d < HEAD_DIM)[None, :], other=0.0)
    else:
        if BLOCK_D == HEAD_DIM:
            return tl.load(ptrs)
        else:
            return tl.load(ptrs, mask=(o_d < HEAD_DIM)[None, :], other=0.0)


@triton.jit
def _store_rows(base, o_r, o_d, stride_t, stride_d, n_rows, value, HEAD_DIM: tl.constexpr):
    ptrs = base + o_r[:, None] * stride_t + o_d[None, :] * stride_d
    tl.store(ptrs, value, mask=(o_r < n_rows)[:, None] & (o_d < HEAD_DIM)[None, :])


@triton.jit
def _atomic_add_rows(
    base,
    o_r,
    o_d,
    stride_t,
    stride_d,
    n_rows,
    value,
    MASK_ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Add ``value`` to rows ``o_r`` of a float32 [rows, D] slice, skipping rows past ``n_rows`` (padding
    or the next packed sequence) and columns past D. Relaxed order: only the sum after the kernel counts."""
    ptrs = base + o_r[:, None] * stride_t + o_d[None, :] * stride_d
    if MASK_ROWS:
        tl.atomic_add(ptrs, value, mask=(o_r < n_rows)[:, None] & (o_d < HEAD_DIM)[None, :], sem="relaxed")
    elif BLOCK_D == HEAD_DIM:
        tl.atomic_add(ptrs, value, sem="relaxed")
    else:
        tl.atomic_add(ptrs, value, mask=(o_d < HEAD_DIM)[None, :], sem="relaxed")


@triton.jit
def _fwd_step(
    b_acc,
    b_q,
    k_base,
    v_base,
    K_DESC,
    V_DESC,
    desc_b,
    desc_row,
    i_hk,
    kb_base,
    j0,
    o_m,
    o_d,
    len_k,
    shift,
    scale,
    bias,
    slope,
    stride_kt,
    stride_kd,
    stride_vt,
    stride_vd,
    stride_kbt,
    MASK_KEYS: tl.constexpr,
    MASK_CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Add one key block's ``sigmoid(s) v`` to the accumulator.

    Keys past ``len_k`` load as zero rows of K and V, so they add nothing without a mask on ``p``.
    With USE_TMA, K and V come through tensor descriptors (bulk copies; columns past D read as 0); rows
    past the sequence may belong to padding or the next packed sequence, so masked blocks zero them.
    """
    o_n = j0 + tl.arange(0, BLOCK_N)
    # With TMA, K and V are loaded, then masked: v10's GPU-tested instruction order.
    if USE_TMA:
        b_k = K_DESC.load([desc_b, desc_row + j0, i_hk, 0]).reshape(BLOCK_N, BLOCK_D)
        b_v = V_DESC.load([desc_b, desc_row + j0, i_hk, 0]).reshape(BLOCK_N, BLOCK_D)
        if MASK_KEYS:
            b_k = tl.where((o_n < len_k)[:, None], b_k, 0.0)
            b_v = tl.where((o_n < len_k)[:, None], b_v, 0.0)
    else:
        b_k = _load_rows(k_base, o_n, o_d, stride_kt, stride_kd, len_k, MASK_KEYS, HEAD_DIM, BLOCK_D)
        b_v = _load_rows(v_base, o_n, o_d, stride_vt, stride_vd, len_k, MASK_KEYS, HEAD_DIM, BLOCK_D)
    b_s = _logits(
        b_q,
        b_k,
        o_m,
        o_n,
        shift,
        scale,
        bias,
        slope,
        kb_base,
        0,
        stride_kbt,
        MASK_KEYS,
        len_k,
        HAS_KEY_BIAS,
        HAS_ALIBI,
        FAST_SIGMOID,
        DOT_PRECISION,
        EMULATE_BF16,
    )
    b_p = _sigmoid(b_s, FAST_SIGMOID)  # [BM, BN]
    if MASK_CAUSAL:
        b_p = tl.where(o_n[None, :] <= o_m[:, None] + shift, b_p, 0.0)
    return b_acc + _dot(_round(b_p, b_v.dtype, EMULATE_BF16), b_v, DOT_PRECISION, EMULATE_BF16)


@triton.jit
def _program_ids(BLOCK_FAST: tl.constexpr, HEAVY_LAST: tl.constexpr):
    """(sequence x head, block) of this program. BLOCK_FAST grids run the blocks of one (sequence, head)
    next to each other, so the K / V (or Q / dO) they all stream stay in L2. HEAVY_LAST (causal query
    blocks, whose work grows with the index) numbers blocks from the end, so that the longest programs
    start first and short ones fill the last wave."""
    if BLOCK_FAST:
        i_bh, i_blk, n_blk = tl.program_id(1), tl.program_id(0), tl.num_programs(0)
    else:
        i_bh, i_blk, n_blk = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
    if HEAVY_LAST:
        i_blk = n_blk - 1 - i_blk
    return i_bh, i_blk


@triton.jit
def _key_loop_bounds(
    i_m, len_q, len_k, shift, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr
):
    """For query block ``i_m``: keys ``[0, full)`` come in whole blocks that every row may see (no masks);
    keys ``[full, hi)`` need masks (the last partial block, the causal diagonal). Both are 0 for a block
    of padding rows."""
    m0 = i_m * BLOCK_M
    hi = len_k
    full = len_k
    if CAUSAL:
        hi = tl.minimum(hi, m0 + BLOCK_M + shift)
        full = tl.minimum(full, m0 + shift + 1)
    hi = tl.where(m0 < len_q, tl.maximum(hi, 0), 0)
    full = tl.minimum(tl.maximum(full, 0) // BLOCK_N * BLOCK_N, hi)
    return full, hi


@triton.jit
def sigmoid_attn_fwd_kernel(
    Q,
    K,
    V,
    K_DESC,
    V_DESC,
    O,
    BIAS,
    KEY_BIAS,
    SLOPES,
    START_Q,
    LEN_Q,
    START_K,
    LEN_K,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_vd,
    stride_ob,
    stride_ot,
    stride_oh,
    stride_od,
    stride_kbb,
    stride_kbt,
    scale,
    rows_q,
    H: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    STORE_ALL_ROWS: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    BLOCK_FAST: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """One program per (sequence, head, query block)."""
    i_bh, i_m = _program_ids(BLOCK_FAST, CAUSAL)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // GROUP
    start_q, len_q = tl.load(START_Q + i_b), tl.load(LEN_Q + i_b)
    start_k, len_k = tl.load(START_K + i_b), tl.load(LEN_K + i_b)
    store_rows = rows_q if STORE_ALL_ROWS else len_q
    if i_m * BLOCK_M >= store_rows:
        return
    shift = len_k - len_q
    bias = _logit_units(tl.load(BIAS + i_bh), FAST_SIGMOID)
    slope = _logit_units(tl.load(SLOPES + i_bh), FAST_SIGMOID) if HAS_ALIBI else 0.0
    scale = _logit_units(scale, FAST_SIGMOID)  # the forward uses scale for logits alone

    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, BLOCK_D)
    q_base = Q + i_b * stride_qb + i_h * stride_qh + start_q * stride_qt
    b_q = _load_rows(q_base, o_m, o_d, stride_qt, stride_qd, len_q, True, HEAD_DIM, BLOCK_D)  # [BM, BD]
    k_base = K + i_b * stride_kb + i_hk * stride_kh + start_k * stride_kt
    v_base = V + i_b * stride_vb + i_hk * stride_vh + start_k * stride_vt
    kb_base = KEY_BIAS + i_b * stride_kbb + start_k * stride_kbt
    desc_b = i_b if STORE_ALL_ROWS else 0  # descriptors: [B, rows, H, D] padded, [1, T, H, D] packed

    b_acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    full, hi = _key_loop_bounds(i_m, len_q, len_k, shift, BLOCK_M, BLOCK_N, CAUSAL)
    for j0 in range(0, full, BLOCK_N):
        b_acc = _fwd_step(
            b_acc,
            b_q,
            k_base,
            v_base,
            K_DESC,
            V_DESC,
            desc_b,
            start_k,
            i_hk,
            kb_base,
            j0,
            o_m,
            o_d,
            len_k,
            shift,
            scale,
            bias,
            slope,
            stride_kt,
            stride_kd,
            stride_vt,
            stride_vd,
            stride_kbt,
            False,
            False,
            HEAD_DIM,
            BLOCK_D,
            BLOCK_N,
            HAS_KEY_BIAS,
            HAS_ALIBI,
            FAST_SIGMOID,
            DOT_PRECISION,
            EMULATE_BF16,
            USE_TMA,
        )
    for j0 in range(full, hi, BLOCK_N):
        b_acc = _fwd_step(
            b_acc,
            b_q,
            k_base,
            v_base,
            K_DESC,
            V_DESC,
            desc_b,
            start_k,
            i_hk,
            kb_base,
            j0,
            o_m,
            o_d,
            len_k,
            shift,
            scale,
            bias,
            slope,
            stride_kt,
            stride_kd,
            stride_vt,
            stride_vd,
            stride_kbt,
            True,
            CAUSAL,
            HEAD_DIM,
            BLOCK_D,
            BLOCK_N,
            HAS_KEY_BIAS,
            HAS_ALIBI,
            FAST_SIGMOID,
            DOT_PRECISION,
            EMULATE_BF16,
            USE_TMA,
        )
    # Padded query rows saw unmasked keys above; their output is defined as exactly 0.
    b_acc = tl.where((o_m < len_q)[:, None], b_acc, 0.0)
    o_base = O + i_b * stride_ob + i_h * stride_oh + start_q * stride_ot
    _store_rows(
        o_base,
        o_m,
        o_d,
        stride_ot,
        stride_od,
        store_rows,
        _round(b_acc, O.dtype.element_ty, EMULATE_BF16),
        HEAD_DIM,
    )


@triton.jit
def _dkdv_step(
    b_dk,
    b_dv,
    b_dkb,
    b_k,
    b_v,
    q_base,
    do_base,
    m0,
    o_n,
    o_d,
    len_q,
    len_k,
    shift,
    scale,
    bias,
    slope,
    kb_base,
    dq_base,
    DQ_DESC,
    desc_b,
    desc_row,
    i_h,
    stride_qt,
    stride_qd,
    stride_dot,
    stride_dod,
    stride_dqt,
    stride_dqd,
    stride_kbt,
    MASK_ROWS: tl.constexpr,
    MASK_CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    TMA_DQ: tl.constexpr,
):
    """Add one query block's contribution to dK, dV and the per-key sums of dS; with ATOMIC_DQ, also add
    ``4 dS k`` to the float32 dQ rows at ``dq_base`` (the fused backward; the caller scales the sum by
    ``scale / 4``). The sums of dS it returns are 4x too (the 1/4 is applied where they are stored).

    Query rows past ``len_q`` load as zero rows of Q and dO, so their dS and p^T dO vanish unmasked.
    """
    o_m = m0 + tl.arange(0, BLOCK_M)
    b_q = _load_rows(q_base, o_m, o_d, stride_qt, stride_qd, len_q, MASK_ROWS, HEAD_DIM, BLOCK_D)
    b_do = _load_rows(do_base, o_m, o_d, stride_dot, stride_dod, len_q, MASK_ROWS, HEAD_DIM, BLOCK_D)
    b_s = _logits(
        b_q,
        b_k,
        o_m,
        o_n,
        shift,
        scale,
        bias,
        slope,
        kb_base,
        0,
        stride_kbt,
        True,
        len_k,
        HAS_KEY_BIAS,
        HAS_ALIBI,
        FAST_SIGMOID,
        DOT_PRECISION,
        EMULATE_BF16,
    )
    b_p, b_g = _sigmoid_and_slope4(b_s, FAST_SIGMOID)  # [BM, BN]
    b_dp = _dot(b_do, tl.trans(b_v), DOT_PRECISION, EMULATE_BF16)  # [BM, BN]
    b_ds = b_dp * b_g  # 4 dS (the kernel's final scale holds the 1/4)
    if MASK_CAUSAL:
        m_visible = o_n[None, :] <= o_m[:, None] + shift
        b_p = tl.where(m_visible, b_p, 0.0)
        b_ds = tl.where(m_visible, b_ds, 0.0)
    b_dv += _dot(tl.trans(_round(b_p, b_do.dtype, EMULATE_BF16)), b_do, DOT_PRECISION, EMULATE_BF16)
    b_ds_in = _round(b_ds, b_q.dtype, EMULATE_BF16)  # the matmul operand, as in the dQ kernel
    b_dk += _dot(tl.trans(b_ds_in), b_q, DOT_PRECISION, EMULATE_BF16)
    b_dkb += tl.sum(b_ds, axis=0)
    if ATOMIC_DQ:
        # dQ rows get dS k from every key block's program: one matmul here instead of the dQ kernel's
        # recomputed S and dP (5 block matmuls per pair instead of 7).
        b_dq = _dot(b_ds_in, b_k, DOT_PRECISION, EMULATE_BF16)  # scale / 4 applied by the caller
        if TMA_DQ:
            # One bulk reduce-add of the whole tile (TMA) instead of one atomic per element. Rows past the
            # sequence add zeros (their Q and dO rows load as 0, so their dS k is 0): a neighbouring packed
            # sequence is left unchanged.
            DQ_DESC.atomic_add([desc_b, desc_row + m0, i_h, 0], b_dq.reshape(1, BLOCK_M, 1, BLOCK_D))
        else:
            _atomic_add_rows(
                dq_base, o_m, o_d, stride_dqt, stride_dqd, len_q, b_dq, MASK_ROWS, HEAD_DIM, BLOCK_D
            )
    return b_dk, b_dv, b_dkb


@triton.jit
def _query_loop_bounds(
    n0, len_q, len_k, shift, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr
):
    """For the key block at ``n0`` (the dK / dV side of :func:`_key_loop_bounds`): query blocks
    ``[lo, diag_end)`` lie on the causal diagonal (masked), ``[max(diag_end, lo), rows_end)`` are whole
    visible blocks (no masks), ``[tail_start, q_end)`` is the last partial block (masked rows). All empty
    for a block of padding keys."""
    q_end = tl.where(n0 < len_k, len_q, 0)
    rows_end = q_end // BLOCK_M * BLOCK_M
    lo = 0
    diag_end = 0
    if CAUSAL:
        lo = tl.maximum(n0 - shift, 0) // BLOCK_M * BLOCK_M
        diag_end = tl.maximum(n0 + BLOCK_N - 1 - shift + BLOCK_M - 1, 0) // BLOCK_M * BLOCK_M
    diag_end = tl.minimum(diag_end, rows_end)
    tail_start = tl.maximum(rows_end, lo)
    return lo, diag_end, rows_end, tail_start, q_end


@triton.jit
def _dkdv_query_blocks(
    b_dk,
    b_dv,
    b_dkb,
    b_k,
    b_v,
    q_base,
    do_base,
    dq_base,
    DQ_DESC,
    desc_b,
    desc_row,
    i_h,
    lo,
    diag_end,
    rows_end,
    tail_start,
    q_end,
    o_n,
    o_d,
    len_q,
    len_k,
    shift,
    scale,
    bias,
    slope,
    kb_base,
    stride_qt,
    stride_qd,
    stride_dot,
    stride_dod,
    stride_dqt,
    stride_dqd,
    stride_kbt,
    CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    TMA_DQ: tl.constexpr,
):
    """:func:`_dkdv_step` over the query blocks of one head that see the key block (bounds of
    :func:`_query_loop_bounds`)."""
    for m0 in range(lo, diag_end, BLOCK_M):
        b_dk, b_dv, b_dkb = _dkdv_step(
            b_dk,
            b_dv,
            b_dkb,
            b_k,
            b_v,
            q_base,
            do_base,
            m0,
            o_n,
            o_d,
            len_q,
            len_k,
            shift,
            scale,
            bias,
            slope,
            kb_base,
            dq_base,
            DQ_DESC,
            desc_b,
            desc_row,
            i_h,
            stride_qt,
            stride_qd,
            stride_dot,
            stride_dod,
            stride_dqt,
            stride_dqd,
            stride_kbt,
            False,
            True,
            HEAD_DIM,
            BLOCK_D,
            BLOCK_M,
            HAS_KEY_BIAS,
            HAS_ALIBI,
            FAST_SIGMOID,
            DOT_PRECISION,
            EMULATE_BF16,
            ATOMIC_DQ,
            TMA_DQ,
        )
    for m0 in range(tl.maximum(diag_end, lo), rows_end, BLOCK_M):
        b_dk, b_dv, b_dkb = _dkdv_step(
            b_dk,
            b_dv,
            b_dkb,
            b_k,
            b_v,
            q_base,
            do_base,
            m0,
            o_n,
            o_d,
            len_q,
            len_k,
            shift,
            scale,
            bias,
            slope,
            kb_base,
            dq_base,
            DQ_DESC,
            desc_b,
            desc_row,
            i_h,
            stride_qt,
            stride_qd,
            stride_dot,
            stride_dod,
            stride_dqt,
            stride_dqd,
            stride_kbt,
            False,
            False,
            HEAD_DIM,
            BLOCK_D,
            BLOCK_M,
            HAS_KEY_BIAS,
            HAS_ALIBI,
            FAST_SIGMOID,
            DOT_PRECISION,
            EMULATE_BF16,
            ATOMIC_DQ,
            TMA_DQ,
        )
    for m0 in range(tail_start, q_end, BLOCK_M):
        b_dk, b_dv, b_dkb = _dkdv_step(
            b_dk,
            b_dv,
            b_dkb,
            b_k,
            b_v,
            q_base,
            do_base,
            m0,
            o_n,
            o_d,
            len_q,
            len_k,
            shift,
            scale,
            bias,
            slope,
            kb_base,
            dq_base,
            DQ_DESC,
            desc_b,
            desc_row,
            i_h,
            stride_qt,
            stride_qd,
            stride_dot,
            stride_dod,
            stride_dqt,
            stride_dqd,
            stride_kbt,
            True,
            CAUSAL,
            HEAD_DIM,
            BLOCK_D,
            BLOCK_M,
            HAS_KEY_BIAS,
            HAS_ALIBI,
            FAST_SIGMOID,
            DOT_PRECISION,
            EMULATE_BF16,
            ATOMIC_DQ,
            TMA_DQ,
        )
    return b_dk, b_dv, b_dkb


@triton.jit
def sigmoid_attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DQ,
    DQ_DESC,
    DK,
    DV,
    DKB,
    DBIAS,
    BIAS,
    KEY_BIAS,
    SLOPES,
    START_Q,
    LEN_Q,
    START_K,
    LEN_K,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_vd,
    stride_dob,
    stride_dot,
    stride_doh,
    stride_dod,
    stride_dqb,
    stride_dqt,
    stride_dqh,
    stride_dqd,
    stride_dkb,
    stride_dkt,
    stride_dkh,
    stride_dkd,
    stride_dvb,
    stride_dvt,
    stride_dvh,
    stride_dvd,
    stride_kbb,
    stride_kbt,
    stride_dkbh,
    stride_dkbb,
    stride_dkbt,
    scale,
    rows_k,
    num_n_blocks,
    H: tl.constexpr,
    HKV: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    STORE_ALL_ROWS: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    BLOCK_FAST: tl.constexpr,
    FUSED: tl.constexpr,
    TMA_DQ: tl.constexpr,
):
    """One program per (sequence, KV head, key block): dK, dV and the per-key sum of dS for its group.

    Each program owns its output rows, so the result is deterministic (no atomics). FUSED (the opt-in
    fused backward) also adds the block's ``4 dS k`` to a zeroed float32 DQ (``tl.atomic_add``, so dQ
    is not deterministic) and writes the sum of dS per (sequence, head, key block) to DBIAS (for d bias);
    the split path leaves DQ / DBIAS alone and the dQ kernel computes both.
    """
    i_bhk, i_n = _program_ids(BLOCK_FAST, False)  # causal: key block 0 is the longest
    i_b, i_hk = i_bhk // HKV, i_bhk % HKV
    start_q, len_q = tl.load(START_Q + i_b), tl.load(LEN_Q + i_b)
    start_k, len_k = tl.load(START_K + i_b), tl.load(LEN_K + i_b)
    store_rows = rows_k if STORE_ALL_ROWS else len_k
    n0 = i_n * BLOCK_N
    if n0 >= store_rows:
        return
    shift = len_k - len_q
    logit_scale = _logit_units(scale, FAST_SIGMOID)

    o_n = n0 + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, BLOCK_D)
    b_k = _load_rows(
        K + i_b * stride_kb + i_hk * stride_kh + start_k * stride_kt,
        o_n,
        o_d,
        stride_kt,
        stride_kd,
        len_k,
        True,
        HEAD_DIM,
        BLOCK_D,
    )  # [BN, BD]
    b_v = _load_rows(
        V + i_b * stride_vb + i_hk * stride_vh + start_k * stride_vt,
        o_n,
        o_d,
        stride_vt,
        stride_vd,
        len_k,
        True,
        HEAD_DIM,
        BLOCK_D,
    )
    kb_base = KEY_BIAS + i_b * stride_kbb + start_k * stride_kbt

    b_dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    b_dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    b_dkb = tl.zeros([BLOCK_N], dtype=tl.float32)
    lo, diag_end, rows_end, tail_start, q_end = _query_loop_bounds(
        n0, len_q, len_k, shift, BLOCK_M, BLOCK_N, CAUSAL
    )
    for g in range(GROUP):
        i_h = i_hk * GROUP + g
        bias = _logit_units(tl.load(BIAS + i_b * H + i_h), FAST_SIGMOID)
        slope = _logit_units(tl.load(SLOPES + i_b * H + i_h), FAST_SIGMOID) if HAS_ALIBI else 0.0
        q_base = Q + i_b * stride_qb + i_h * stride_qh + start_q * stride_qt
        do_base = DO + i_b * stride_dob + i_h * stride_doh + start_q * stride_dot
        dq_base = DQ + i_b * stride_dqb + i_h * stride_dqh + start_q * stride_dqt
        if FUSED:  # noqa: SIM108 (constexpr branch) per-key dS sums of this head alone: its d bias partial
            b_dsum = tl.zeros([BLOCK_N], dtype=tl.float32)
        else:
            b_dsum = b_dkb
        b_dk, b_dv, b_dsum = _dkdv_query_blocks(
            b_dk,
            b_dv,
            b_dsum,
            b_k,
            b_v,
            q_base,
            do_base,
            dq_base,
            DQ_DESC,
            i_b if STORE_ALL_ROWS else 0,  # descriptor: [B, rows, H, D] padded, [1, T, H, D] packed
            start_q,
            i_h,
            lo,
            diag_end,
            rows_end,
            tail_start,
            q_end,
            o_n,
            o_d,
            len_q,
            len_k,
            shift,
            logit_scale,
            bias,
            slope,
            kb_base,
            stride_qt,
            stride_qd,
            stride_dot,
            stride_dod,
            stride_dqt,
            stride_dqd,
            stride_kbt,
            CAUSAL,
            HEAD_DIM,
            BLOCK_D,
            BLOCK_M,
            BLOCK_N,
            HAS_KEY_BIAS,
            HAS_ALIBI,
            FAST_SIGMOID,
            DOT_PRECISION,
            EMULATE_BF16,
            FUSED,
            TMA_DQ,
        )
        if FUSED:
            b_dkb += b_dsum
            # Each (sequence, head, key block) slot has one writer: no atomics, reduced on the host side.
            tl.store(DBIAS + (i_b * H + i_h) * num_n_blocks + i_n, tl.sum(b_dsum, axis=0) * 0.25)
        else:
            b_dkb = b_dsum

    # Padded keys (zero rows of K and V) still got p^T dO above; their gradients are defined as 0.
    m_key = (o_n < len_k)[:, None]
    b_dv = tl.where(m_key, b_dv, 0.0)
    dk_base = DK + i_b * stride_dkb + i_hk * stride_dkh + start_k * stride_dkt
    dv_base = DV + i_b * stride_dvb + i_hk * stride_dvh + start_k * stride_dvt
    _store_rows(
        dk_base,
        o_n,
        o_d,
        stride_dkt,
        stride_dkd,
        store_rows,
        _round(b_dk * (scale * 0.25), DK.dtype.element_ty, EMULATE_BF16),
        HEAD_DIM,
    )
    _store_rows(
        dv_base,
        o_n,
        o_d,
        stride_dvt,
        stride_dvd,
        store_rows,
        _round(b_dv, DV.dtype.element_ty, EMULATE_BF16),
        HEAD_DIM,
    )
    if HAS_KEY_BIAS:
        p_dkb = DKB + i_hk * stride_dkbh + i_b * stride_dkbb + (start_k + o_n) * stride_dkbt
        tl.store(p_dkb, b_dkb * 0.25, mask=o_n < store_rows)


@triton.jit
def _dq_step(
    b_dq,
    b_dbias,
    b_q,
    b_do,
    k_base,
    v_base,
    kb_base,
    j0,
    o_m,
    o_d,
    len_k,
    shift,
    scale,
    bias,
    slope,
    stride_kt,
    stride_kd,
    stride_vt,
    stride_vd,
    stride_kbt,
    MASK_KEYS: tl.constexpr,
    MASK_CAUSAL: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
):
    """Add one key block's ``dS k`` to dQ and its row sums of dS (zero rows of V give dS = 0 for
    padded keys)."""
    o_n = j0 + tl.arange(0, BLOCK_N)
    b_k = _load_rows(k_base, o_n, o_d, stride_kt, stride_kd, len_k, MASK_KEYS, HEAD_DIM, BLOCK_D)
    b_v = _load_rows(v_base, o_n, o_d, stride_vt, stride_vd, len_k, MASK_KEYS, HEAD_DIM, BLOCK_D)
    b_s = _logits(
        b_q,
        b_k,
        o_m,
        o_n,
        shift,
        scale,
        bias,
        slope,
        kb_base,
        0,
        stride_kbt,
        MASK_KEYS,
        len_k,
        HAS_KEY_BIAS,
        HAS_ALIBI,
        FAST_SIGMOID,
        DOT_PRECISION,
        EMULATE_BF16,
    )
    _, b_g = _sigmoid_and_slope4(b_s, FAST_SIGMOID)
    b_dp = _dot(b_do, tl.trans(b_v), DOT_PRECISION, EMULATE_BF16)
    b_ds = b_dp * b_g  # [BM, BN], 4 dS (the kernel's final scale holds the 1/4)
    if MASK_CAUSAL:
        b_ds = tl.where(o_n[None, :] <= o_m[:, None] + shift, b_ds, 0.0)
    b_dq += _dot(_round(b_ds, b_k.dtype, EMULATE_BF16), b_k, DOT_PRECISION, EMULATE_BF16)
    b_dbias += tl.sum(b_ds, axis=1)
    return b_dq, b_dbias


@triton.jit
def sigmoid_attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    DQ,
    DBIAS,
    BIAS,
    KEY_BIAS,
    SLOPES,
    START_Q,
    LEN_Q,
    START_K,
    LEN_K,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_vd,
    stride_dob,
    stride_dot,
    stride_doh,
    stride_dod,
    stride_dqb,
    stride_dqt,
    stride_dqh,
    stride_dqd,
    stride_kbb,
    stride_kbt,
    scale,
    rows_q,
    num_m_blocks,
    H: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    STORE_ALL_ROWS: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    BLOCK_FAST: tl.constexpr,
):
    """One program per (sequence, head, query block): dQ and the block's sum of dS (for d bias)."""
    i_bh, i_m = _program_ids(BLOCK_FAST, CAUSAL)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // GROUP
    start_q, len_q = tl.load(START_Q + i_b), tl.load(LEN_Q + i_b)
    start_k, len_k = tl.load(START_K + i_b), tl.load(LEN_K + i_b)
    store_rows = rows_q if STORE_ALL_ROWS else len_q
    if i_m * BLOCK_M >= store_rows:
        return
    shift = len_k - len_q
    bias = _logit_units(tl.load(BIAS + i_bh), FAST_SIGMOID)
    slope = _logit_units(tl.load(SLOPES + i_bh), FAST_SIGMOID) if HAS_ALIBI else 0.0
    logit_scale = _logit_units(scale, FAST_SIGMOID)

    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, BLOCK_D)
    b_q = _load_rows(
        Q + i_b * stride_qb + i_h * stride_qh + start_q * stride_qt,
        o_m,
        o_d,
        stride_qt,
        stride_qd,
        len_q,
        True,
        HEAD_DIM,
        BLOCK_D,
    )  # [BM, BD]
    b_do = _load_rows(
        DO + i_b * stride_dob + i_h * stride_doh + start_q * stride_dot,
        o_m,
        o_d,
        stride_dot,
        stride_dod,
        len_q,
        True,
        HEAD_DIM,
        BLOCK_D,
    )
    k_base = K + i_b * stride_kb + i_hk * stride_kh + start_k * stride_kt
    v_base = V + i_b * stride_vb + i_hk * stride_vh + start_k * stride_vt
    kb_base = KEY_BIAS + i_b * stride_kbb + start_k * stride_kbt

    b_dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    b_dbias = tl.zeros([BLOCK_M], dtype=tl.float32)
    full, hi = _key_loop_bounds(i_m, len_q, len_k, shift, BLOCK_M, BLOCK_N, CAUSAL)
    for j0 in range(0, full, BLOCK_N):
        b_dq, b_dbias = _dq_step(
            b_dq,
            b_dbias,
            b_q,
            b_do,
            k_base,
            v_base,
            kb_base,
            j0,
            o_m,
            o_d,
            len_k,
            shift,
            logit_scale,
            bias,
            slope,
            stride_kt,
            stride_kd,
            stride_vt,
            stride_vd,
            stride_kbt,
            False,
            False,
            HEAD_DIM,
            BLOCK_D,
            BLOCK_N,
            HAS_KEY_BIAS,
            HAS_ALIBI,
            FAST_SIGMOID,
            DOT_PRECISION,
            EMULATE_BF16,
        )
    for j0 in range(full, hi, BLOCK_N):
        b_dq, b_dbias = _dq_step(
            b_dq,
            b_dbias,
            b_q,
            b_do,
            k_base,
            v_base,
            kb_base,
            j0,
            o_m,
            o_d,
            len_k,
            shift,
            logit_scale,
            bias,
            slope,
            stride_kt,
            stride_kd,
            stride_vt,
            stride_vd,
            stride_kbt,
            True,
            CAUSAL,
            HEAD_DIM,
            BLOCK_D,
            BLOCK_N,
            HAS_KEY_BIAS,
            HAS_ALIBI,
            FAST_SIGMOID,
            DOT_PRECISION,
            EMULATE_BF16,
        )

    dq_base = DQ + i_b * stride_dqb + i_h * stride_dqh + start_q * stride_dqt
    _store_rows(
        dq_base,
        o_m,
        o_d,
        stride_dqt,
        stride_dqd,
        store_rows,
        _round(b_dq * (scale * 0.25), DQ.dtype.element_ty, EMULATE_BF16),
        HEAD_DIM,
    )
    tl.store(DBIAS + i_bh * num_m_blocks + i_m, tl.sum(b_dbias, axis=0) * 0.25)
