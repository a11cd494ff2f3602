"""Hopper (sm_90) forward of sigmoid attention in Gluon, Triton's explicit-layout dialect.

Why a second forward: Triton 3.6's ``tl.dot`` waits for every wgmma right after issuing it
(``wgmma.wait_group 0``), so a warpgroup's tanh (one MUFU op per score) never overlaps its own matmuls.
Here the wgmmas are asynchronous: key block j's ``Q K^T`` is issued, then block j-1's ``P V``; the
kernel waits for ``Q K^T`` alone and computes block j's sigmoid while the tensor cores still run
``P V`` (benchmarks/NOTES.md, v13: D128 forward 549 -> 631 TFLOPS at L4k on an H200).

Scope: bfloat16 / float16, head dims 64 and 128, the fast (tanh.approx) sigmoid, optional per-key bias,
causal or not, padded or packed sequences, GQA. ALiBi, float32, other head dims and the accurate
sigmoid stay on the portable Triton kernel (kernels.py), which also serves every other GPU and the CPU
interpreter. The layout and the masking rules are those of kernels.py: rows ``[start, start + len)`` of
a ``[B', rows, H, D]`` tensor; keys past ``len_k`` and, if causal, above the bottom-right diagonal get
``p = 0``; rows past ``len_q`` are written as zeros when the layout is padded.

Loads go through 2-D TMA descriptors over the ``[B' * rows, H * D]`` view. A block that runs past its
sequence reads rows of the next one (or padding, possibly NaN): their scores are masked to 0, and the
V rows of such a block are zeroed in shared memory before ``P V`` reads them (0 * NaN is NaN).
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


@gluon.constexpr_function
def _mma_layout(num_warps, n):
    """Register layout of a wgmma result with ``n`` columns, the warps stacked along the rows (one
    warpgroup per 64 rows)."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, n, 16])


@gluon.jit
def _key_blocks(m0, len_q, len_k, BM: gl.constexpr, BN: gl.constexpr, CAUSAL: gl.constexpr):
    """Key blocks of the query block at ``m0`` (as kernels._key_loop_bounds): ``n_blocks`` blocks of
    keys ``[0, hi)``, the first ``n_full`` of which need no mask (every row sees every key); both 0 for
    a block of padding rows. Also returns ``shift = len_k - len_q`` (the bottom-right causal diagonal)."""
    shift = len_k - len_q
    hi = len_k
    full = len_k
    if CAUSAL:
        hi = gl.minimum(hi, m0 + BM + shift)
        full = gl.minimum(full, m0 + shift + 1)
    hi = gl.where(m0 < len_q, gl.maximum(hi, 0), 0)
    n_blocks = gl.cdiv(hi, BN)
    n_full = gl.minimum(gl.maximum(full, 0) // BN, n_blocks)
    return shift, n_blocks, n_full


@gluon.jit
def _program(
    START_Q,
    LEN_Q,
    START_K,
    LEN_K,
    rows,
    HEADS: gl.constexpr,
    LAST_FIRST: gl.constexpr,
    KEYS: gl.constexpr,
    STORE_ALL_ROWS: gl.constexpr,
):
    """Where this program works: its block index (grid axis 0, counted from the end when LAST_FIRST: the
    longest causal programs start first), (sequence, head) index of axis 1 over ``HEADS`` heads, the
    sequence and head, the sequence's first rows and lengths, and the rows its outputs cover (the
    sequence's queries, or keys when KEYS; every one of ``rows`` slots of the padded layout)."""
    i_blk, i_bh = _program_ids(LAST_FIRST)
    i_b, i_h, start_q, len_q, start_k, len_k, store_rows = _sequence(
        i_bh, START_Q, LEN_Q, START_K, LEN_K, rows, HEADS, KEYS, STORE_ALL_ROWS
    )
    return i_blk, i_bh, i_b, i_h, start_q, len_q, start_k, len_k, store_rows


@gluon.jit
def _program_ids(LAST_FIRST: gl.constexpr):
    """(block index, (sequence, head) index) of this program: grid axes 0 and 1, the block counted from
    the end when LAST_FIRST (the longest causal programs start first)."""
    i_blk = gl.program_id(0)
    if LAST_FIRST:
        i_blk = gl.num_programs(0) - 1 - i_blk
    return i_blk, gl.program_id(1)


@gluon.jit
def _sequence(
    i_bh,
    START_Q,
    LEN_Q,
    START_K,
    LEN_K,
    rows,
    HEADS: gl.constexpr,
    KEYS: gl.constexpr,
    STORE_ALL_ROWS: gl.constexpr,
):
    """The sequence and head of (sequence, head) index ``i_bh``, the sequence's first rows and lengths,
    and the rows outputs cover (see :func:`_program`)."""
    i_b = i_bh // HEADS
    i_h = i_bh % HEADS
    start_q = gl.load(START_Q + i_b)
    len_q = gl.load(LEN_Q + i_b)
    start_k = gl.load(START_K + i_b)
    len_k = gl.load(LEN_K + i_b)
    store_rows = len_q
    if KEYS:
        store_rows = len_k
    if STORE_ALL_ROWS:
        store_rows = rows
    return i_b, i_h, start_q, len_q, start_k, len_k, store_rows


@gluon.jit
def _tanh(x):
    """``tanh.approx.f32``: one MUFU op (the special-function unit); max relative error about 2^-11."""
    return gl.inline_asm_elementwise(
        "tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=gl.float32, is_pure=True, pack=1
    )


@gluon.jit
def _p_block(
    s,
    o_m,
    o_n,
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
    p_layout: gl.constexpr,
):
    """``sigmoid(scale s + bias + key_bias)`` as the register A operand of ``P V``: one FMA and one MUFU
    op per score (``sigmoid(x) = 0.5 tanh(x / 2) + 0.5``; scale and biases arrive halved). Masked blocks
    zero the keys past the sequence and, if causal, those above the diagonal."""
    if HAS_KEY_BIAS:
        kb = gl.load(kb_base + o_n * stride_kbt, mask=o_n < len_k, other=0.0).to(gl.float32)
        x = s * scale_half + (bias_half + 0.5 * kb)[None, :]
    else:
        x = s * scale_half + bias_half
    t = _tanh(x)
    p = 0.5 * t + 0.5
    if MASK:
        keep = (o_n < len_k)[None, :]
        if CAUSAL:
            keep = keep & (o_n[None, :] <= o_m[:, None] + shift)
        p = gl.where(keep, p, 0.0)
    return gl.convert_layout(p.to(dtype), p_layout)


@gluon.jit
def _load_kv(k_desc, v_desc, k_smem, v_smem, bars, block, row_k, col, n_blocks, STAGES: gl.constexpr):
    """Start the TMA loads of key block ``block`` into its ring stage (no-op past the last block)."""
    BN: gl.constexpr = k_desc.block_type.shape[0]
    stage = block % STAGES
    pred = block < n_blocks
    bar = bars.index(stage)
    mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(k_desc, [row_k + block * BN, col], bar, k_smem.index(stage), pred=pred)
    tma.async_copy_global_to_shared(v_desc, [row_k + block * BN, col], bar, v_smem.index(stage), pred=pred)


@gluon.jit
def _zero_rows_past(tile, first_key, len_k, num_warps: gl.constexpr):
    """Zero the rows of a shared-memory ``[BN, D]`` V tile whose keys are past the sequence (they may hold
    the next sequence or NaN padding; P is 0 there, but 0 * NaN is NaN)."""
    BN: gl.constexpr = tile.shape[0]
    D: gl.constexpr = tile.shape[1]
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    rows = first_key + gl.arange(0, BN, layout=gl.SliceLayout(1, layout))
    values = tile.load(layout)
    tile.store(gl.where((rows < len_k)[:, None], values, gl.zeros([BN, D], values.dtype, layout)))
    fence_async_shared()  # generic-proxy writes before the async-proxy (wgmma) read
    gl.thread_barrier()


@gluon.jit
def _step(
    j,
    p,
    acc,
    q_smem,
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
    """One iteration of the software pipeline (:func:`_fwd_block`), then refill the stage of block
    j - 1."""
    stage = j % STAGES
    prev = (j - 1) % STAGES
    mbarrier.wait(bars.index(stage), (j // STAGES) & 1)
    p_next, acc = _fwd_block(
        j, p, acc, q_smem, k_smem, v_smem, stage, prev, s_zero, o_m, scale_half, bias_half, kb_base,
        stride_kbt, len_k, shift, HAS_KEY_BIAS, MASK, CAUSAL,
    )  # fmt: skip
    # Both wgmmas that read stage `prev` have retired: it takes block j - 1 + STAGES.
    _load_kv(k_desc, v_desc, k_smem, v_smem, bars, j - 1 + STAGES, row_k, col, n_blocks, STAGES)
    return p_next, acc


@gluon.jit
def _fwd_issue(p, acc, q_tile, k_smem, v_smem, stage, prev, s_zero):
    """Issue ``S_j = Q K_j^T`` (K in ring stage ``stage``) and ``acc += P_{j-1} V_{j-1}`` (V in stage
    ``prev``) without waiting; returns their tokens."""
    s_tok = warpgroup_mma(q_tile, k_smem.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    acc_tok = warpgroup_mma(p, v_smem.index(prev), acc, is_async=True)
    return s_tok, acc_tok


@gluon.jit
def _fwd_finish(
    j,
    s_tok,
    acc_tok,
    p,
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
    """Wait for ``S_j`` only, compute ``P_j`` while ``P V`` runs, then retire ``P V``. Returns ``P_j``
    and the accumulator."""
    BN: gl.constexpr = s_tok.type.tensor_type.shape[1]
    dtype: gl.constexpr = p.dtype
    s_layout: gl.constexpr = s_tok.type.tensor_type.layout
    p_layout: gl.constexpr = p.type.layout
    s = warpgroup_mma_wait(1, deps=(s_tok,))
    o_n = j * BN + gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
    p_next = _p_block(
        s, o_m, o_n, scale_half, bias_half, kb_base, stride_kbt, len_k, shift, HAS_KEY_BIAS, MASK, CAUSAL,
        dtype, p_layout,
    )  # fmt: skip
    acc, p = warpgroup_mma_wait(0, deps=(acc_tok, p))
    return p_next, acc


@gluon.jit
def _fwd_block(
    j,
    p,
    acc,
    q_tile,
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
    """One pipeline step of the forward: :func:`_fwd_issue`, then :func:`_fwd_finish`."""
    s_tok, acc_tok = _fwd_issue(p, acc, q_tile, k_smem, v_smem, stage, prev, s_zero)
    return _fwd_finish(
        j, s_tok, acc_tok, p, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift, HAS_KEY_BIAS,
        MASK, CAUSAL,
    )  # fmt: skip


@gluon.jit
def _row_pointers(base, r0, stride_t, value, VEC: gl.constexpr, num_warps: gl.constexpr):
    """``value`` (``[R, D]``) in a blocked layout with ``VEC`` contiguous columns per thread, pointers to
    rows ``r0 + [0, R)`` of a sequence starting at ``base`` (one row every ``stride_t`` elements) and the
    row indices. For stores and atomics: the MMA layout would need one 64-bit pointer per element pair."""
    R: gl.constexpr = value.shape[0]
    D: gl.constexpr = value.shape[1]
    layout: gl.constexpr = gl.BlockedLayout([1, VEC], [32 // (D // VEC), D // VEC], [num_warps, 1], [1, 0])
    o_r = r0 + gl.arange(0, R, layout=gl.SliceLayout(1, layout))
    o_d = gl.arange(0, D, layout=gl.SliceLayout(0, layout))
    ptrs = base + o_r.to(gl.int64)[:, None] * stride_t + o_d[None, :]
    return gl.convert_layout(value, layout), ptrs, o_r


@gluon.jit
def _store_rows(base, r0, stride_t, value, n_store, n_valid, num_warps: gl.constexpr):
    """Store a ``[R, D]`` block to rows ``r0 + [0, R)`` of a sequence starting at ``base``: rows below
    ``n_valid`` get ``value``, rows in ``[n_valid, n_store)`` zeros, rows past ``n_store`` nothing."""
    out, ptrs, o_r = _row_pointers(base, r0, stride_t, value, 8, num_warps)
    gl.store(
        ptrs, gl.where((o_r < n_valid)[:, None], out, 0.0).to(value.dtype), mask=(o_r < n_store)[:, None]
    )


@gluon.jit
def sigmoid_attn_fwd_hopper_kernel(
    q_desc,
    k_desc,
    v_desc,
    O,
    BIAS,
    KEY_BIAS,
    START_Q,
    LEN_Q,
    START_K,
    LEN_K,
    rows_q,
    rows_k,
    stride_ot,
    stride_kbb,
    stride_kbt,
    scale_half,
    H: gl.constexpr,
    GROUP: gl.constexpr,
    CAUSAL: gl.constexpr,
    HAS_KEY_BIAS: gl.constexpr,
    STORE_ALL_ROWS: gl.constexpr,
    STAGES: gl.constexpr,
    num_warps: gl.constexpr,
):
    """One program per (query block, sequence x head). ``rows_q`` / ``rows_k``: rows per sequence slot
    of the padded layout (0 for packed inputs, whose descriptors span all tokens)."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    s_layout: gl.constexpr = _mma_layout(num_warps, BN)
    o_layout: gl.constexpr = _mma_layout(num_warps, D)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

    i_m, i_bh, i_b, i_h, start_q, len_q, start_k, len_k, store_rows = _program(
        START_Q, LEN_Q, START_K, LEN_K, rows_q, H, CAUSAL, False, STORE_ALL_ROWS
    )
    m0 = i_m * BM
    if m0 >= store_rows:
        return
    shift, n_blocks, n_full = _key_blocks(m0, len_q, len_k, BM, BN, CAUSAL)

    row_q = i_b * rows_q + start_q + m0
    row_k = i_b * rows_k + start_k
    col = (i_h // GROUP) * D
    bias_half = 0.5 * gl.load(BIAS + i_bh)
    kb_base = KEY_BIAS + i_b * stride_kbb + start_k * stride_kbt
    o_m = m0 + gl.arange(0, BM, layout=gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BM, D], gl.float32, o_layout)

    if n_blocks > 0:
        q_smem = gl.allocate_shared_memory(dtype, [BM, D], q_desc.layout)
        k_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], k_desc.layout)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], v_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for st in gl.static_range(STAGES):
            mbarrier.init(bars.index(st), count=1)
        fence_async_shared()
        mbarrier.expect(q_bar, q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [row_q, i_h * D], q_bar, q_smem)
        for st in gl.static_range(STAGES):
            _load_kv(k_desc, v_desc, k_smem, v_smem, bars, st, row_k, col, n_blocks, STAGES)

        s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
        mbarrier.wait(q_bar, 0)
        mbarrier.wait(bars.index(0), 0)
        s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(0, deps=(s_tok,))
        # Block 0 always takes the masked path: for an unmasked block the mask keeps every score, and
        # one masked block per program costs nothing measurable.
        p = _p_block(
            s,
            o_m,
            gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout)),
            scale_half,
            bias_half,
            kb_base,
            stride_kbt,
            len_k,
            shift,
            HAS_KEY_BIAS,
            True,
            CAUSAL,
            dtype,
            p_layout,
        )
        for j in range(1, n_full):
            p, acc = _step(
                j,
                p,
                acc,
                q_smem,
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
                HAS_KEY_BIAS,
                False,
                CAUSAL,
                STAGES,
            )
        for j in range(gl.maximum(n_full, 1), n_blocks):
            p, acc = _step(
                j,
                p,
                acc,
                q_smem,
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
                HAS_KEY_BIAS,
                True,
                CAUSAL,
                STAGES,
            )
        last = n_blocks - 1
        if n_blocks * BN > len_k:  # only the last block can run past the sequence (hi <= len_k)
            _zero_rows_past(v_smem.index(last % STAGES), last * BN, len_k, num_warps)
        acc_tok = warpgroup_mma(p, v_smem.index(last % STAGES), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(acc_tok,))
        mbarrier.invalidate(q_bar)
        for st in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(st))

    # Rows past len_q (padding) are written as zeros; rows past store_rows are not written.
    seq = (i_b * rows_q + start_q).to(gl.int64) * stride_ot + i_h * D
    _store_rows(O + seq, m0, stride_ot, acc.to(dtype), store_rows, len_q, num_warps)


def compile_for_sm90(
    kernel,
    blocks: dict[str, int],
    args: dict[str, str],
    constants: dict,
    dim: int,
    dtype: str,
    maxnreg: int | None = None,
):
    """Compile a Gluon kernel of this package for sm_90a without a GPU (``triton.compile``; ptxas
    included). ``blocks``: descriptor argument -> block rows (``[rows, dim]`` tiles of ``dtype``);
    ``args``: other arguments -> Triton signature types (``"*dt"`` is a pointer of ``dtype``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    element = {"bf16": gl.bfloat16, "fp16": gl.float16}[dtype]

    def desc(rows):
        layout = gl.NVMMASharedLayout.get_default_for([rows, dim], element)
        return f"tensordesc<{dtype}[{rows},{dim}],{layout!r}>"

    signature = {name: desc(rows) for name, rows in blocks.items()}
    signature.update({name: kind.replace("dt", dtype) for name, kind in args.items()})
    signature.update(dict.fromkeys(constants, "constexpr"))
    source = GluonASTSource(kernel, signature, constants)
    target = GPUTarget("cuda", 90, 128)
    options = {"num_warps": constants["num_warps"]}
    if maxnreg is not None:
        options["maxnreg"] = maxnreg
    return triton.compile(source, target=target, options=options)


def compile_sm90(
    dim: int,
    *,
    dtype: str = "bf16",
    causal: bool = False,
    key_bias: bool = False,
    padded: bool = True,
    heads: int = 8,
    group: int = 1,
):
    """The forward compiled for sm_90a without a GPU (:func:`compile_for_sm90`) with the launch
    configuration the interface uses for ``dim``; returns the compiled kernel (``.asm["ptx"]``,
    ``.metadata``). For tests and for inspecting the PTX on a machine without a Hopper GPU."""
    from sigcell.ops.sigmoid_attn.interface import _HOPPER_CONFIGS

    block_m, block_n, warps, stages = _HOPPER_CONFIGS[dim]
    constants = compile_constants(stages, warps, causal, key_bias, padded, heads, group)
    blocks = {"q_desc": block_m, "k_desc": block_n, "v_desc": block_n}
    return compile_for_sm90(sigmoid_attn_fwd_hopper_kernel, blocks, forward_args(), constants, dim, dtype)


def compile_constants(
    stages: int, warps: int, causal: bool, key_bias: bool, padded: bool, heads: int, group: int
) -> dict:
    """Compile-time arguments that every Gluon kernel of this package takes (the interface's launchers
    and the compile-without-a-GPU helpers)."""
    return {
        "H": heads,
        "GROUP": group,
        "CAUSAL": causal,
        "HAS_KEY_BIAS": key_bias,
        "STORE_ALL_ROWS": padded,
        "STAGES": stages,
        "num_warps": warps,
    }


def forward_args() -> dict[str, str]:
    """Triton signature types of the Gluon forwards' arguments other than descriptors and constexprs."""
    return {
        "O": "*dt",
        **dict.fromkeys(("BIAS", "KEY_BIAS"), "*fp32"),
        **dict.fromkeys(("START_Q", "LEN_Q", "START_K", "LEN_K"), "*i32"),
        **dict.fromkeys(("rows_q", "rows_k", "stride_ot", "stride_kbb", "stride_kbt"), "i32"),
        "scale_half": "fp32",
    }
