"""Triton kernels of sigmoid attention: forward, backward dK / dV, backward dQ.

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

import triton
import triton.language as tl


@triton.jit
def _sigmoid(x, FAST: tl.constexpr):
    if FAST:
        # One MUFU op per score: sigmoid(x) = 0.5 * tanh(x / 2) + 0.5.
        t = tl.inline_asm_elementwise(
            "tanh.approx.f32 $0, $1;", "=f,f", [x * 0.5], dtype=tl.float32, is_pure=True, pack=1
        )
        return 0.5 * t + 0.5
    else:
        return 1.0 / (1.0 + tl.exp(-x))


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
    b_q, b_k, o_m, o_n, len_q, len_k, shift, scale, bias, slope, KEY_BIAS, key_bias_offset, stride_kbt,
    CAUSAL: tl.constexpr, HAS_KEY_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr, DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
):
    """Logits ``[BM, BN]`` of one block and its validity mask."""
    b_s = _dot(b_q, tl.trans(b_k), DOT_PRECISION, EMULATE_BF16) * scale + bias
    m_col = o_n < len_k
    if HAS_KEY_BIAS:
        b_kb = tl.load(KEY_BIAS + key_bias_offset + o_n * stride_kbt, mask=m_col, other=0.0)
        b_s += b_kb.to(tl.float32)[None, :]
    if HAS_ALIBI:
        b_dist = tl.abs(o_m[:, None] + shift - o_n[None, :]).to(tl.float32)
        b_s -= slope * b_dist
    m_valid = (o_m < len_q)[:, None] & m_col[None, :]
    if CAUSAL:
        m_valid = m_valid & (o_n[None, :] <= o_m[:, None] + shift)
    return b_s, m_valid


@triton.jit
def _key_range(i_m, len_q, len_k, shift, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """End of the keys that queries of block ``i_m`` may see (0 when the whole block is padding)."""
    hi = len_k
    if CAUSAL:
        hi = tl.minimum(hi, (i_m + 1) * BLOCK_M + shift)
    hi = tl.maximum(hi, 0)
    return tl.where(i_m * BLOCK_M < len_q, hi, 0)


@triton.jit
def sigmoid_attn_fwd_kernel(
    Q, K, V, O, BIAS, KEY_BIAS, SLOPES, START_Q, LEN_Q, START_K, LEN_K,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_vb, stride_vt, stride_vh, stride_vd,
    stride_ob, stride_ot, stride_oh, stride_od,
    stride_kbb, stride_kbt,
    scale, rows_q, H: tl.constexpr, GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_KEY_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
    STORE_ALL_ROWS: tl.constexpr, FAST_SIGMOID: tl.constexpr, DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
):
    i_bh, i_m = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // GROUP
    start_q, len_q = tl.load(START_Q + i_b), tl.load(LEN_Q + i_b)
    start_k, len_k = tl.load(START_K + i_b), tl.load(LEN_K + i_b)
    store_rows = rows_q if STORE_ALL_ROWS else len_q
    if i_m * BLOCK_M >= store_rows:
        return
    shift = len_k - len_q
    bias = tl.load(BIAS + i_bh)
    slope = tl.load(SLOPES + i_bh) if HAS_ALIBI else 0.0

    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM
    p_q = Q + i_b * stride_qb + i_h * stride_qh + (start_q + o_m)[:, None] * stride_qt + o_d[None, :] * stride_qd
    b_q = tl.load(p_q, mask=(o_m < len_q)[:, None] & m_d[None, :], other=0.0)  # [BM, BD]
    k_base = K + i_b * stride_kb + i_hk * stride_kh + start_k * stride_kt
    v_base = V + i_b * stride_vb + i_hk * stride_vh + start_k * stride_vt
    kb_offset = i_b * stride_kbb + start_k * stride_kbt

    b_acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    hi = _key_range(i_m, len_q, len_k, shift, BLOCK_M, CAUSAL)
    for j0 in range(0, hi, BLOCK_N):
        o_n = j0 + tl.arange(0, BLOCK_N)
        m_kd = (o_n < len_k)[:, None] & m_d[None, :]
        b_k = tl.load(k_base + o_n[:, None] * stride_kt + o_d[None, :] * stride_kd, mask=m_kd, other=0.0)
        b_v = tl.load(v_base + o_n[:, None] * stride_vt + o_d[None, :] * stride_vd, mask=m_kd, other=0.0)
        b_s, m_valid = _logits(
            b_q, b_k, o_m, o_n, len_q, len_k, shift, scale, bias, slope, KEY_BIAS, kb_offset, stride_kbt,
            CAUSAL, HAS_KEY_BIAS, HAS_ALIBI, DOT_PRECISION, EMULATE_BF16,
        )
        b_p = tl.where(m_valid, _sigmoid(b_s, FAST_SIGMOID), 0.0)  # [BM, BN]
        b_acc += _dot(_round(b_p, b_v.dtype, EMULATE_BF16), b_v, DOT_PRECISION, EMULATE_BF16)

    p_o = O + i_b * stride_ob + i_h * stride_oh + (start_q + o_m)[:, None] * stride_ot + o_d[None, :] * stride_od
    tl.store(p_o, _round(b_acc, O.dtype.element_ty, EMULATE_BF16), mask=(o_m < store_rows)[:, None] & m_d[None, :])


@triton.jit
def sigmoid_attn_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, DKB, BIAS, KEY_BIAS, SLOPES, START_Q, LEN_Q, START_K, LEN_K,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_vb, stride_vt, stride_vh, stride_vd,
    stride_dob, stride_dot, stride_doh, stride_dod,
    stride_dkb, stride_dkt, stride_dkh, stride_dkd,
    stride_dvb, stride_dvt, stride_dvh, stride_dvd,
    stride_kbb, stride_kbt,
    stride_dkbh, stride_dkbb, stride_dkbt,
    scale, rows_k, H: tl.constexpr, HKV: tl.constexpr, GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_KEY_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
    STORE_ALL_ROWS: tl.constexpr, FAST_SIGMOID: tl.constexpr, DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
):
    """One program per (sequence, KV head, key block): dK, dV and the per-key sum of dS for its group.

    Each program owns its output rows, so the result is deterministic (no atomics).
    """
    i_bhk, i_n = tl.program_id(0), tl.program_id(1)
    i_b, i_hk = i_bhk // HKV, i_bhk % HKV
    start_q, len_q = tl.load(START_Q + i_b), tl.load(LEN_Q + i_b)
    start_k, len_k = tl.load(START_K + i_b), tl.load(LEN_K + i_b)
    store_rows = rows_k if STORE_ALL_ROWS else len_k
    if i_n * BLOCK_N >= store_rows:
        return
    shift = len_k - len_q

    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM
    m_kd = (o_n < len_k)[:, None] & m_d[None, :]
    p_k = K + i_b * stride_kb + i_hk * stride_kh + (start_k + o_n)[:, None] * stride_kt + o_d[None, :] * stride_kd
    p_v = V + i_b * stride_vb + i_hk * stride_vh + (start_k + o_n)[:, None] * stride_vt + o_d[None, :] * stride_vd
    b_k = tl.load(p_k, mask=m_kd, other=0.0)  # [BN, BD]
    b_v = tl.load(p_v, mask=m_kd, other=0.0)
    kb_offset = i_b * stride_kbb + start_k * stride_kbt

    b_dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    b_dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    b_dkb = tl.zeros([BLOCK_N], dtype=tl.float32)
    # Causal: the first query that sees key i_n * BLOCK_N is that key's row minus the shift.
    lo = 0
    if CAUSAL:
        lo = tl.maximum(i_n * BLOCK_N - shift, 0) // BLOCK_M * BLOCK_M
    hi = tl.where(i_n * BLOCK_N < len_k, len_q, 0)
    for g in range(GROUP):
        i_h = i_hk * GROUP + g
        bias = tl.load(BIAS + i_b * H + i_h)
        slope = tl.load(SLOPES + i_b * H + i_h) if HAS_ALIBI else 0.0
        q_base = Q + i_b * stride_qb + i_h * stride_qh + start_q * stride_qt
        do_base = DO + i_b * stride_dob + i_h * stride_doh + start_q * stride_dot
        for m0 in range(lo, hi, BLOCK_M):
            o_m = m0 + tl.arange(0, BLOCK_M)
            m_qd = (o_m < len_q)[:, None] & m_d[None, :]
            b_q = tl.load(q_base + o_m[:, None] * stride_qt + o_d[None, :] * stride_qd, mask=m_qd, other=0.0)
            b_do = tl.load(do_base + o_m[:, None] * stride_dot + o_d[None, :] * stride_dod, mask=m_qd, other=0.0)
            b_s, m_valid = _logits(
                b_q, b_k, o_m, o_n, len_q, len_k, shift, scale, bias, slope, KEY_BIAS, kb_offset, stride_kbt,
                CAUSAL, HAS_KEY_BIAS, HAS_ALIBI, DOT_PRECISION, EMULATE_BF16,
            )
            b_p = tl.where(m_valid, _sigmoid(b_s, FAST_SIGMOID), 0.0)  # [BM, BN]
            b_dp = _dot(b_do, tl.trans(b_v), DOT_PRECISION, EMULATE_BF16)  # [BM, BN]
            b_ds = b_dp * b_p * (1.0 - b_p)
            b_dv += _dot(tl.trans(_round(b_p, b_do.dtype, EMULATE_BF16)), b_do, DOT_PRECISION, EMULATE_BF16)
            b_dk += _dot(tl.trans(_round(b_ds, b_q.dtype, EMULATE_BF16)), b_q, DOT_PRECISION, EMULATE_BF16)
            b_dkb += tl.sum(b_ds, axis=0)

    m_store = (o_n < store_rows)[:, None] & m_d[None, :]
    p_dk = DK + i_b * stride_dkb + i_hk * stride_dkh + (start_k + o_n)[:, None] * stride_dkt + o_d[None, :] * stride_dkd
    p_dv = DV + i_b * stride_dvb + i_hk * stride_dvh + (start_k + o_n)[:, None] * stride_dvt + o_d[None, :] * stride_dvd
    tl.store(p_dk, _round(b_dk * scale, DK.dtype.element_ty, EMULATE_BF16), mask=m_store)
    tl.store(p_dv, _round(b_dv, DV.dtype.element_ty, EMULATE_BF16), mask=m_store)
    if HAS_KEY_BIAS:
        p_dkb = DKB + i_hk * stride_dkbh + i_b * stride_dkbb + (start_k + o_n) * stride_dkbt
        tl.store(p_dkb, b_dkb, mask=o_n < store_rows)


@triton.jit
def sigmoid_attn_bwd_dq_kernel(
    Q, K, V, DO, DQ, DBIAS, BIAS, KEY_BIAS, SLOPES, START_Q, LEN_Q, START_K, LEN_K,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_vb, stride_vt, stride_vh, stride_vd,
    stride_dob, stride_dot, stride_doh, stride_dod,
    stride_dqb, stride_dqt, stride_dqh, stride_dqd,
    stride_kbb, stride_kbt,
    scale, rows_q, num_m_blocks, H: tl.constexpr, GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_KEY_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
    STORE_ALL_ROWS: tl.constexpr, FAST_SIGMOID: tl.constexpr, DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
):
    """One program per (sequence, head, query block): dQ and the block's sum of dS (for d bias)."""
    i_bh, i_m = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // GROUP
    start_q, len_q = tl.load(START_Q + i_b), tl.load(LEN_Q + i_b)
    start_k, len_k = tl.load(START_K + i_b), tl.load(LEN_K + i_b)
    store_rows = rows_q if STORE_ALL_ROWS else len_q
    if i_m * BLOCK_M >= store_rows:
        return
    shift = len_k - len_q
    bias = tl.load(BIAS + i_bh)
    slope = tl.load(SLOPES + i_bh) if HAS_ALIBI else 0.0

    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM
    m_qd = (o_m < len_q)[:, None] & m_d[None, :]
    p_q = Q + i_b * stride_qb + i_h * stride_qh + (start_q + o_m)[:, None] * stride_qt + o_d[None, :] * stride_qd
    p_do = DO + i_b * stride_dob + i_h * stride_doh + (start_q + o_m)[:, None] * stride_dot + o_d[None, :] * stride_dod
    b_q = tl.load(p_q, mask=m_qd, other=0.0)  # [BM, BD]
    b_do = tl.load(p_do, mask=m_qd, other=0.0)
    k_base = K + i_b * stride_kb + i_hk * stride_kh + start_k * stride_kt
    v_base = V + i_b * stride_vb + i_hk * stride_vh + start_k * stride_vt
    kb_offset = i_b * stride_kbb + start_k * stride_kbt

    b_dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    b_dbias = tl.zeros([BLOCK_M], dtype=tl.float32)
    hi = _key_range(i_m, len_q, len_k, shift, BLOCK_M, CAUSAL)
    for j0 in range(0, hi, BLOCK_N):
        o_n = j0 + tl.arange(0, BLOCK_N)
        m_kd = (o_n < len_k)[:, None] & m_d[None, :]
        b_k = tl.load(k_base + o_n[:, None] * stride_kt + o_d[None, :] * stride_kd, mask=m_kd, other=0.0)
        b_v = tl.load(v_base + o_n[:, None] * stride_vt + o_d[None, :] * stride_vd, mask=m_kd, other=0.0)
        b_s, m_valid = _logits(
            b_q, b_k, o_m, o_n, len_q, len_k, shift, scale, bias, slope, KEY_BIAS, kb_offset, stride_kbt,
            CAUSAL, HAS_KEY_BIAS, HAS_ALIBI, DOT_PRECISION, EMULATE_BF16,
        )
        b_p = tl.where(m_valid, _sigmoid(b_s, FAST_SIGMOID), 0.0)
        b_dp = _dot(b_do, tl.trans(b_v), DOT_PRECISION, EMULATE_BF16)
        b_ds = b_dp * b_p * (1.0 - b_p)  # [BM, BN]
        b_dq += _dot(_round(b_ds, b_k.dtype, EMULATE_BF16), b_k, DOT_PRECISION, EMULATE_BF16)
        b_dbias += tl.sum(b_ds, axis=1)

    p_dq = DQ + i_b * stride_dqb + i_h * stride_dqh + (start_q + o_m)[:, None] * stride_dqt + o_d[None, :] * stride_dqd
    tl.store(p_dq, _round(b_dq * scale, DQ.dtype.element_ty, EMULATE_BF16), mask=(o_m < store_rows)[:, None] & m_d[None, :])
    tl.store(DBIAS + i_bh * num_m_blocks + i_m, tl.sum(b_dbias, axis=0))
