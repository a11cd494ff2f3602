"""Warp-specialized Hopper (sm_90) forward of sigmoid attention in Gluon.

The interface runs it for D256 and for D128 from 2048 rows per sequence (benchmarks/NOTES.md, v18:
1.06-1.10x hopper.py there on an H200); ``SIGCELL_HOPPER_WS_DIMS`` forces it on or off per head dim.

The forward of hopper.py runs one warpgroup per program; a program with two warpgroups (8 warps) keeps
them in step, because Gluon puts a CTA-wide barrier before every TMA refill of a shared K / V stage.
Here the roles are split with ``gl.warp_specialize``:

- a producer partition (1 warp, few registers) loads the program's two Q tiles once, then streams K / V
  blocks into a ring of ``STAGES`` shared-memory stages (``ready`` barriers: TMA transaction counts;
  ``empty`` barriers: one arrival per consumer when both of its matmuls on a stage have retired);
- two consumer partitions (one warpgroup each, most of the registers) own ``BM`` query rows each and run
  the software pipeline of hopper.py (``S_j = Q K_j^T`` and ``acc += P_{j-1} V_{j-1}`` in flight while
  the sigmoid of block j is computed) on the shared K / V stages.

The consumers run independently, so one's sigmoid can overlap the other's matmuls, and each K / V block
read from L2 serves ``2 BM`` query rows. Masking, layouts and outputs are those of hopper.py. Under a
causal mask the second consumer (later rows) sees up to ``BM / BN`` more key blocks; the first one waits
for and releases those stages without using them.

Opt-in ping-pong (``PINGPONG``, ``SIGCELL_HOPPER_WS_PINGPONG_DIMS``; not yet run on a GPU): the two
consumers take turns at issuing their matmuls (two ``turn`` mbarriers), so that one's sigmoid phase
lines up with the other's matmuls instead of drifting into step with them. tests/ops/test_ws_schedule.py
replays the barrier protocol under random interleavings (no deadlock, no lapped parity wait).

Opt-in split rings (a config's fourth entry, ``V_STAGES``; not yet run on a GPU): K and V blocks get
rings of their own, K streamed one block ahead, each K stage freed a step earlier than a shared stage;
the output is then staged in the consumer's Q tile, which leaves room for D256 64-key blocks 3 deep.

hopper_ws_bwd.py splits the backward's two kernels the same way (opt-in, not yet run on a GPU).
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
    _fwd_finish,
    _fwd_issue,
    _key_blocks,
    _mma_layout,
    _p_block,
    _program_ids,
    _sequence,
    _store_rows,
    _zero_rows_past,
)

CONSUMER_WARPS = gl.constexpr(4)
PRODUCER_REGS = gl.constexpr(24)
CONSUMER_REGS = gl.constexpr(240)


@gluon.jit
def _ring(STAGES: gl.constexpr):
    """The ``ready`` and ``empty`` mbarriers of a ring of STAGES shared-memory stages, initialized:
    ``ready`` completes on the producer's expected TMA bytes, ``empty`` on one arrival per consumer."""
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for st in gl.static_range(STAGES):
        mbarrier.init(ready.index(st), count=1)
        mbarrier.init(empty.index(st), count=2)
    return ready, empty


@gluon.jit
def _invalidate_ring(ready, empty):
    STAGES: gl.constexpr = ready.shape[0]
    for st in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(st))
        mbarrier.invalidate(empty.index(st))


@gluon.jit
def _two_consumer_blocks(m0, len_q, len_k, BM: gl.constexpr, BN: gl.constexpr, CAUSAL: gl.constexpr):
    """Key blocks a program of two BM-row consumers from ``m0`` streams: as many as the consumer that
    sees more (causal: the second; padding: the first)."""
    _, n_second, _ = _key_blocks(m0 + BM, len_q, len_k, BM, BN, CAUSAL)
    _, n_first, _ = _key_blocks(m0, len_q, len_k, BM, BN, CAUSAL)
    return gl.maximum(n_first, n_second)


@gluon.jit
def _stream_kv(k_desc, v_desc, k_smem, v_smem, ready, empty, row_k, col_k, n_blocks, it0):
    """Load key blocks 0 .. n_blocks - 1 (K and V) into the ring as its iterations ``it0 + j``, each once
    both consumers freed its stage (``empty``) and announced by its ``ready`` barrier's transaction
    count (``it0``: iterations of earlier tiles of a persistent program, else 0)."""
    BN: gl.constexpr = k_desc.block_type.shape[0]
    STAGES: gl.constexpr = k_smem.shape[0]
    for j in range(n_blocks):
        stage = (it0 + j) % STAGES
        mbarrier.wait(empty.index(stage), (((it0 + j) // STAGES) & 1) ^ 1)  # the first pass finds it free
        bar = ready.index(stage)
        mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [row_k + j * BN, col_k], bar, k_smem.index(stage))
        tma.async_copy_global_to_shared(v_desc, [row_k + j * BN, col_k], bar, v_smem.index(stage))


@gluon.jit
def _load_stage(desc, smem, ready, empty, j, row, col):
    """Load block ``j`` (rows ``row ..``) of one operand into its own ring once both consumers freed the
    stage, announced by the stage's ``ready`` transaction count."""
    STAGES: gl.constexpr = smem.shape[0]
    stage = j % STAGES
    mbarrier.wait(empty.index(stage), ((j // STAGES) & 1) ^ 1)  # the first pass finds stages free
    mbarrier.expect(ready.index(stage), desc.block_type.nbytes)
    tma.async_copy_global_to_shared(desc, [row, col], ready.index(stage), smem.index(stage))


@gluon.jit
def _stream_k_ahead(
    k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, row_k, col_k, n_blocks, it0
):  # fmt: skip
    """Split rings: key blocks 0 .. n_blocks - 1 into the K ring and the V ring (iterations ``it0 +
    j``), K one block ahead of V (step j needs K_j for S_j but V only up to V_{j-1})."""
    BN: gl.constexpr = k_desc.block_type.shape[0]
    for j in range(n_blocks + 1):
        if j < n_blocks:
            _load_stage(k_desc, k_smem, k_ready, k_empty, it0 + j, row_k + j * BN, col_k)
        if j > 0:
            _load_stage(v_desc, v_smem, v_ready, v_empty, it0 + j - 1, row_k + (j - 1) * BN, col_k)


@gluon.jit
def _release_kv(
    k_ready, k_empty, v_ready, v_empty, j, KS: gl.constexpr, VS: gl.constexpr, SPLIT_KV: gl.constexpr
):
    """Wait for key block j's stage(s) and free them unread (split rings: K and V separately)."""
    _release(k_ready, k_empty, j, KS)
    if SPLIT_KV:
        _release(v_ready, v_empty, j, VS)


@gluon.jit
def _await_turn(turn, t, WG: gl.constexpr):
    """Ping-pong: consumer 0 issues its matmuls of turn ``t`` after consumer 1 issued those of turn
    ``t - 1`` (turn 0 is free), consumer 1 after consumer 0 issued those of turn ``t``. Strict
    alternation keeps each ``turn`` barrier within one phase of its waiter, so parity identifies it."""
    mbarrier.wait(turn.index(WG), (t & 1) ^ (1 - WG))


@gluon.jit
def _pass_turn(turn, WG: gl.constexpr):
    """Ping-pong: hand the tensor cores to the other consumer (after issuing this turn's matmuls)."""
    mbarrier.arrive(turn.index(1 - WG), count=1)


@gluon.jit
def _consumer_step(
    j,
    it,
    tt,
    p,
    acc,
    q_tile,
    k_smem,
    v_smem,
    k_ready,
    k_empty,
    v_ready,
    v_empty,
    turn,
    s_zero,
    o_m,
    scale_half,
    bias_half,
    kb_base,
    stride_kbt,
    len_k,
    shift,
    WG: gl.constexpr,
    HAS_KEY_BIAS: gl.constexpr,
    MASK: gl.constexpr,
    CAUSAL: gl.constexpr,
    PINGPONG: gl.constexpr,
    SPLIT_KV: gl.constexpr,
):
    """hopper._step on the shared ring for key block j, ring iteration ``it`` (turn ``tt``): the stage
    of block j - 1 is released instead of refilled; with PINGPONG the two matmuls are issued in this
    consumer's turn. SPLIT_KV (separate K and V rings): also waits for V_{j-1}'s stage, and frees K_j's
    stage at the end of step j (S_j has retired), a step before one shared ring could."""
    KS: gl.constexpr = k_smem.shape[0]
    VS: gl.constexpr = v_smem.shape[0]
    stage = it % KS
    prev = (it - 1) % VS
    mbarrier.wait(k_ready.index(stage), (it // KS) & 1)
    if SPLIT_KV:
        mbarrier.wait(v_ready.index(prev), ((it - 1) // VS) & 1)
    if PINGPONG:
        _await_turn(turn, tt, WG)
    s_tok, acc_tok = _fwd_issue(p, acc, q_tile, k_smem, v_smem, stage, prev, s_zero)
    if PINGPONG:
        _pass_turn(turn, WG)
    p_next, acc = _fwd_finish(
        j, s_tok, acc_tok, p, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift, HAS_KEY_BIAS,
        MASK, CAUSAL,
    )  # fmt: skip
    if SPLIT_KV:
        mbarrier.arrive(k_empty.index(stage), count=1)
    mbarrier.arrive(v_empty.index(prev), count=1)
    return p_next, acc


@gluon.jit
def _one_tile_part(
    WG: gl.constexpr, q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready,
    v_empty, turn, O, KEY_BIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col, stride_ot, kb_base,
    stride_kbt, scale_half, bias_half, row_q, row_k, col_k, CAUSAL: gl.constexpr, HAS_KEY_BIAS: gl.constexpr,
    PINGPONG: gl.constexpr, SPLIT_KV: gl.constexpr, PRODUCER: gl.constexpr,
):  # fmt: skip
    """One partition of a one-tile program (warp_specialize wants one signature for all of them): the
    producer (:func:`_loader_tile`) or consumer ``WG`` (:func:`_consumer_tile`), from ring iteration 0."""
    if PRODUCER:
        _loader_tile(
            q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, 0, q_bar, k_ready, k_empty, v_ready,
            v_empty, 0, n_total, row_q, out_col, row_k, col_k, SPLIT_KV, False,
        )  # fmt: skip
    else:
        _consumer_tile(
            WG, q_smem, k_smem, v_smem, q_bar, 0, q_bar, k_ready, k_empty, v_ready, v_empty, turn, 0, 0, O,
            m0, len_q, len_k, store_rows, n_total, out_row0, out_col, stride_ot, kb_base, stride_kbt,
            scale_half, bias_half, CAUSAL, HAS_KEY_BIAS, PINGPONG, SPLIT_KV, False,
        )  # fmt: skip


@gluon.jit
def _consumer_tile(
    WG: gl.constexpr, q_smem, k_smem, v_smem, q_bar, q_phase, q_empty, k_ready, k_empty, v_ready, v_empty,
    turn, it0, t0, O, m0, len_q, len_k, store_rows, n_total, out_row0, out_col, stride_ot, kb_base,
    stride_kbt, scale_half, bias_half, CAUSAL: gl.constexpr, HAS_KEY_BIAS: gl.constexpr,
    PINGPONG: gl.constexpr, SPLIT_KV: gl.constexpr, PERSISTENT: gl.constexpr,
):  # fmt: skip
    """Consumer ``WG`` (0 or 1) on one tile: query rows ``m0 + WG * BM + [0, BM)``, the forward of
    hopper.py on the shared K / V ring, whose iterations for this tile start at ``it0`` (``t0``: its first
    ping-pong turn; ``q_phase``: the phase of ``q_bar`` that brings its Q tile). Stages past its own key
    blocks (up to the tile's ``n_total``) are waited for and released.

    With PINGPONG the consumers take turns at issuing matmuls (``turn`` barriers): turn t issues
    ``S_t`` and ``P_{t-1} V_{t-1}`` (turn 0: ``S_0`` alone; turn ``n_blocks``: the last ``P V``), so
    one consumer's sigmoid runs while the other's matmuls do. Both take ``n_total + 1`` turns; one
    with fewer key blocks passes its remaining turns idle, releasing the other's extra stages.

    With SPLIT_KV, K and V blocks sit in separate rings (``k_*`` and ``v_*`` barriers; otherwise the
    ``v_*`` ones are the ``k_*`` ones): K_j's stage is freed once S_j retired, a step before V_j's.

    PERSISTENT (a program of many tiles): the consumer arrives on ``q_empty`` once its Q tile is free
    (after its last S, or after the output staged in it), so the producer can load the next tile's."""
    BM: gl.constexpr = q_smem.shape[1]
    D: gl.constexpr = q_smem.shape[2]
    BN: gl.constexpr = k_smem.shape[1]
    KS: gl.constexpr = k_smem.shape[0]
    VS: gl.constexpr = v_smem.shape[0]
    dtype: gl.constexpr = k_smem.dtype
    num_warps: gl.constexpr = 4
    s_layout: gl.constexpr = _mma_layout(num_warps, BN)
    o_layout: gl.constexpr = _mma_layout(num_warps, D)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    q_tile = q_smem.index(WG)
    mine = m0 + WG * BM
    shift, n_blocks, n_full = _key_blocks(mine, len_q, len_k, BM, BN, CAUSAL)
    o_m = mine + gl.arange(0, BM, layout=gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BM, D], gl.float32, o_layout)
    if n_blocks > 0:
        s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
        mbarrier.wait(q_bar, q_phase & 1)
        mbarrier.wait(k_ready.index(it0 % KS), (it0 // KS) & 1)
        if PINGPONG:
            _await_turn(turn, t0, WG)
        s_tok = warpgroup_mma(
            q_tile, k_smem.index(it0 % KS).permute((1, 0)), s_zero, use_acc=False, is_async=True
        )
        if PINGPONG:
            _pass_turn(turn, WG)
        s = warpgroup_mma_wait(0, deps=(s_tok,))
        p = _p_block(
            s, o_m, gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout)), scale_half, bias_half, kb_base,
            stride_kbt, len_k, shift, HAS_KEY_BIAS, True, CAUSAL, dtype, p_layout,
        )  # fmt: skip
        if SPLIT_KV:
            mbarrier.arrive(k_empty.index(it0 % KS), count=1)
        for j in range(1, n_full):
            p, acc = _consumer_step(
                j, it0 + j, t0 + j, p, acc, q_tile, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty,
                turn, s_zero, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift, WG,
                HAS_KEY_BIAS, False, CAUSAL, PINGPONG, SPLIT_KV,
            )  # fmt: skip
        for j in range(gl.maximum(n_full, 1), n_blocks):
            p, acc = _consumer_step(
                j, it0 + j, t0 + j, p, acc, q_tile, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty,
                turn, s_zero, o_m, scale_half, bias_half, kb_base, stride_kbt, len_k, shift, WG,
                HAS_KEY_BIAS, True, CAUSAL, PINGPONG, SPLIT_KV,
            )  # fmt: skip
        if PERSISTENT and not SPLIT_KV:  # every S of this tile has retired: the Q tile is free
            mbarrier.arrive(q_empty, count=1)
        last = n_blocks - 1
        if SPLIT_KV:
            mbarrier.wait(v_ready.index((it0 + last) % VS), ((it0 + last) // VS) & 1)
        if n_blocks * BN > len_k:  # only the last block can run past the sequence (hi <= len_k)
            _zero_rows_past(v_smem.index((it0 + last) % VS), last * BN, len_k, num_warps)
        if PINGPONG:
            _await_turn(turn, t0 + n_blocks, WG)
        acc_tok = warpgroup_mma(p, v_smem.index((it0 + last) % VS), acc, is_async=True)
        if PINGPONG:
            _pass_turn(turn, WG)
        acc = warpgroup_mma_wait(0, deps=(acc_tok,))
        mbarrier.arrive(v_empty.index((it0 + last) % VS), count=1)
    elif PERSISTENT and not SPLIT_KV:  # noqa: SIM102 (constexpr branch around a runtime one)
        if n_total > 0:  # no key blocks: the Q tile was loaded (the tile has some), unread
            mbarrier.wait(q_bar, q_phase & 1)
            mbarrier.arrive(q_empty, count=1)
    if PINGPONG:
        # Idle turns n_blocks + 1 .. n_total (all of them without key blocks); turn t releases the other
        # consumer's stage t - 1 once that consumer has issued from it.
        for t in range(n_blocks + (n_blocks > 0).to(gl.int32), n_total + 1):
            _await_turn(turn, t0 + t, WG)
            _pass_turn(turn, WG)
            if t > n_blocks:
                _release_kv(k_ready, k_empty, v_ready, v_empty, it0 + t - 1, KS, VS, SPLIT_KV)
    else:
        for j in range(n_blocks, n_total):  # the other consumer's extra blocks: release them unread
            _release_kv(k_ready, k_empty, v_ready, v_empty, it0 + j, KS, VS, SPLIT_KV)
    out = acc.to(dtype)
    if SPLIT_KV:
        # Stage the output in this consumer's Q tile (no longer read; wait for its load if this consumer
        # had no key blocks) instead of a layout-conversion scratch buffer: the split rings' stages need
        # that shared memory (D256 with 64-key blocks: 224 KB of Q, K and V). A tile without key blocks
        # has no Q load to wait for, and a persistent program's producer may already be loading the next
        # tile's Q into that buffer: its output (zeros) is made in the store layout instead.
        rows_layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 // (D // 8), D // 8], [num_warps, 1], [1, 0])
        if n_total > 0:
            mbarrier.wait(q_bar, q_phase & 1)
            q_tile.store(out)
            gl.thread_barrier()
            staged = q_tile.load(rows_layout)
            if PERSISTENT:  # the staged output is read back: the Q tile is free
                fence_async_shared()  # generic-proxy accesses before the next tile's TMA load of Q
                gl.thread_barrier()
                mbarrier.arrive(q_empty, count=1)
        else:
            staged = gl.zeros([BM, D], dtype, rows_layout)
        out = staged
    seq = out_row0.to(gl.int64) * stride_ot + out_col
    _store_rows(O + seq, mine, stride_ot, out, store_rows, len_q, num_warps)


@gluon.jit
def _loader_tile(
    q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_phase, q_empty, k_ready, k_empty, v_ready,
    v_empty, it0, n_total, row_q, col_q, row_k, col_k, SPLIT_KV: gl.constexpr, PERSISTENT: gl.constexpr,
):  # fmt: skip
    """The producer on one tile: both Q tiles (PERSISTENT: once both consumers freed them from the
    previous tile, ``q_empty``), then every key block of the tile into the ring(s) from iteration
    ``it0``."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    if n_total > 0:
        if PERSISTENT:  # the first tile finds the Q tiles free
            mbarrier.wait(q_empty, (q_phase & 1) ^ 1)
        mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [row_q, col_q], q_bar, q_smem.index(0))
        tma.async_copy_global_to_shared(q_desc, [row_q + BM, col_q], q_bar, q_smem.index(1))
        if SPLIT_KV:
            _stream_k_ahead(
                k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, row_k, col_k, n_total, it0
            )
        else:
            _stream_kv(k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, row_k, col_k, n_total, it0)


@gluon.jit
def sigmoid_attn_fwd_hopper_ws_kernel(
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
    PINGPONG: gl.constexpr = False,
    V_STAGES: gl.constexpr = 0,
):
    """One program per (2 BM query rows, sequence x head); arguments as hopper.sigmoid_attn_fwd_hopper_kernel
    (``num_warps`` = 4: the first consumer; the second consumer and the producer are extra warps);
    PINGPONG: the consumers alternate at issuing matmuls (opt-in, see :func:`_consumer_tile`). V_STAGES > 0:
    V blocks get their own ring of that many stages and K keeps ``STAGES`` (0: one ring of K / V pairs)."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]

    i_m, i_bh = _program_ids(CAUSAL)
    # No early return for programs past the rows to store (it would skip the warp-specialized region
    # that the worker warps wait for): their key loops are empty and their stores masked.
    (m0, len_q, len_k, store_rows, n_total, row_q, row_k, col_k, bias_half, kb_base, out_row0,
     out_col) = _tile_at(
        i_m, i_bh, START_Q, LEN_Q, START_K, LEN_K, BIAS, KEY_BIAS, rows_q, rows_k, stride_kbb, stride_kbt, H,
        GROUP, CAUSAL, STORE_ALL_ROWS, BM, BN, D,
    )  # fmt: skip
    SPLIT_KV: gl.constexpr = V_STAGES > 0
    q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready, v_empty, turn = _ws_buffers(
        q_desc, k_desc, v_desc, STAGES, V_STAGES, PINGPONG, False
    )

    # The argument tuples are spelled out in place: a tuple built in a variable first turns the
    # constexpr flags (CAUSAL, HAS_KEY_BIAS) into runtime booleans (Triton 3.6).
    gl.warp_specialize(
        [
            (
                _one_tile_part,
                (0, q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready,
                 v_empty, turn, O, KEY_BIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col,
                 stride_ot, kb_base, stride_kbt, scale_half, bias_half, row_q, row_k, col_k, CAUSAL,
                 HAS_KEY_BIAS, PINGPONG, SPLIT_KV, False),
            ),
            (
                _one_tile_part,
                (1, q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready,
                 v_empty, turn, O, KEY_BIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col,
                 stride_ot, kb_base, stride_kbt, scale_half, bias_half, row_q, row_k, col_k, CAUSAL,
                 HAS_KEY_BIAS, PINGPONG, SPLIT_KV, False),
            ),
            (
                _one_tile_part,
                (0, q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready,
                 v_empty, turn, O, KEY_BIAS, m0, len_q, len_k, store_rows, n_total, out_row0, out_col,
                 stride_ot, kb_base, stride_kbt, scale_half, bias_half, row_q, row_k, col_k, CAUSAL,
                 HAS_KEY_BIAS, PINGPONG, SPLIT_KV, True),
            ),
        ],
        [CONSUMER_WARPS, 1],
        [CONSUMER_REGS, PRODUCER_REGS],
    )  # fmt: skip
    _invalidate_ws_buffers(
        q_bar, q_empty, k_ready, k_empty, v_ready, v_empty, turn, SPLIT_KV, PINGPONG, False
    )


@gluon.jit
def _ws_buffers(
    q_desc, k_desc, v_desc, STAGES: gl.constexpr, V_STAGES: gl.constexpr, PINGPONG: gl.constexpr,
    PERSISTENT: gl.constexpr,
):  # fmt: skip
    """Shared memory and barriers of a warp-specialized forward program, initialized: both consumers' Q
    tiles and ``q_bar``; ``q_empty`` (PERSISTENT; else ``q_bar`` stands in); the K / V ring(s)
    (``v_*`` are the ``k_*`` ones without split rings, V_STAGES 0); the ping-pong ``turn`` barriers
    (PINGPONG; else ``k_empty`` stands in)."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2, BM, D], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], k_desc.layout)
    if V_STAGES > 0:
        v_smem = gl.allocate_shared_memory(dtype, [V_STAGES, BN, D], v_desc.layout)
    else:
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, BN, D], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    if PERSISTENT:
        q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(q_empty, count=2)  # one arrival per consumer
    else:
        q_empty = q_bar  # not used
    k_ready, k_empty = _ring(STAGES)
    if V_STAGES > 0:
        v_ready, v_empty = _ring(V_STAGES)
    else:  # one ring: a stage holds K_j and V_j
        v_ready = k_ready
        v_empty = k_empty
    if PINGPONG:
        turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        mbarrier.init(turn.index(0), count=1)
        mbarrier.init(turn.index(1), count=1)
    else:
        turn = k_empty  # not used
    fence_async_shared()
    return q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready, v_empty, turn


@gluon.jit
def _invalidate_ws_buffers(
    q_bar, q_empty, k_ready, k_empty, v_ready, v_empty, turn, SPLIT_KV: gl.constexpr, PINGPONG: gl.constexpr,
    PERSISTENT: gl.constexpr,
):  # fmt: skip
    """Invalidate the barriers :func:`_ws_buffers` initialized."""
    mbarrier.invalidate(q_bar)
    if PERSISTENT:
        mbarrier.invalidate(q_empty)
    _invalidate_ring(k_ready, k_empty)
    if SPLIT_KV:
        _invalidate_ring(v_ready, v_empty)
    if PINGPONG:
        mbarrier.invalidate(turn.index(0))
        mbarrier.invalidate(turn.index(1))


# ----------------------------------------------------------------------------------------------------
# Persistent variant (opt-in, SIGCELL_HOPPER_WS_PERSISTENT_DIMS): one program per SM walks many tiles
# ----------------------------------------------------------------------------------------------------


@gluon.jit
def _tile_at(
    i_blk, i_bh, START_Q, LEN_Q, START_K, LEN_K, BIAS, KEY_BIAS, rows_q, rows_k, stride_kbb, stride_kbt,
    H: gl.constexpr, GROUP: gl.constexpr, CAUSAL: gl.constexpr, STORE_ALL_ROWS: gl.constexpr,
    BM: gl.constexpr, BN: gl.constexpr, D: gl.constexpr,
):  # fmt: skip
    """What sigmoid_attn_fwd_hopper_ws_kernel derives from its program ids, for tile (``i_blk``,
    ``i_bh``): its first query row, the sequence's lengths, the rows to store, the key blocks the tile
    streams, TMA rows / columns, the halved head bias and the key-bias row."""
    i_b, i_h, start_q, len_q, start_k, len_k, store_rows = _sequence(
        i_bh, START_Q, LEN_Q, START_K, LEN_K, rows_q, H, False, STORE_ALL_ROWS
    )
    m0 = i_blk * 2 * BM
    n_total = _two_consumer_blocks(m0, len_q, len_k, BM, BN, CAUSAL)
    row_q = i_b * rows_q + start_q + m0
    row_k = i_b * rows_k + start_k
    col_k = (i_h // GROUP) * D
    bias_half = 0.5 * gl.load(BIAS + i_bh)
    kb_base = KEY_BIAS + i_b * stride_kbb + start_k * stride_kbt
    out_row0 = i_b * rows_q + start_q
    out_col = i_h * D
    return m0, len_q, len_k, store_rows, n_total, row_q, row_k, col_k, bias_half, kb_base, out_row0, out_col


@gluon.jit
def _pair_tile(u, half, tiles_m):
    """Tile ``half`` (0 or 1) of tile pair ``u``: pair ``i`` of a (sequence, head) holds row blocks ``i``
    and ``tiles_m - 1 - i``, so that under a causal mask every pair costs about the same (the middle
    block of an odd count pairs with itself: its second tile is not valid)."""
    per_bh = (tiles_m + 1) // 2
    i_bh = u // per_bh
    i = u % per_bh
    i_blk = gl.where(half == 0, i, tiles_m - 1 - i)
    valid = (half == 0) | (i_blk != i)
    return i_blk, i_bh, valid


@gluon.jit
def _persistent_part(
    WG: gl.constexpr, q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty,
    v_ready, v_empty, turn, O, BIAS, KEY_BIAS, START_Q, LEN_Q, START_K, LEN_K, rows_q, rows_k, stride_ot,
    stride_kbb, stride_kbt, scale_half, tiles_m, n_bh, H: gl.constexpr, GROUP: gl.constexpr,
    CAUSAL: gl.constexpr, HAS_KEY_BIAS: gl.constexpr, STORE_ALL_ROWS: gl.constexpr, PINGPONG: gl.constexpr,
    SPLIT_KV: gl.constexpr, PRODUCER: gl.constexpr,
):  # fmt: skip
    """One partition of a persistent program (the producer, or consumer ``WG``): the program's tile
    pairs ``program_id, program_id + num_programs, ...`` in order, each tile through
    :func:`_loader_tile` / :func:`_consumer_tile`. Every partition walks the same tiles and derives the
    same key-block counts, so ring iterations (``it0``), ping-pong turns (``t0``) and Q loads
    (``q_phase``: tiles with key blocks so far) stay in step without any exchange."""
    BM: gl.constexpr = q_smem.shape[1]
    D: gl.constexpr = q_smem.shape[2]
    BN: gl.constexpr = k_smem.shape[1]
    it0 = 0
    t0 = 0
    q_phase = 0
    n_pairs = n_bh * ((tiles_m + 1) // 2)
    for u in range(gl.program_id(0), n_pairs, gl.num_programs(0)):
        for half in range(2):
            i_blk, i_bh, valid = _pair_tile(u, half, tiles_m)
            if valid:
                (m0, len_q, len_k, store_rows, n_total, row_q, row_k, col_k, bias_half, kb_base, out_row0,
                 out_col) = _tile_at(
                    i_blk, i_bh, START_Q, LEN_Q, START_K, LEN_K, BIAS, KEY_BIAS, rows_q, rows_k, stride_kbb,
                    stride_kbt, H, GROUP, CAUSAL, STORE_ALL_ROWS, BM, BN, D,
                )  # fmt: skip
                if PRODUCER:
                    _loader_tile(
                        q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_phase, q_empty, k_ready,
                        k_empty, v_ready, v_empty, it0, n_total, row_q, out_col, row_k, col_k, SPLIT_KV, True,
                    )  # fmt: skip
                else:
                    _consumer_tile(
                        WG, q_smem, k_smem, v_smem, q_bar, q_phase, q_empty, k_ready, k_empty, v_ready,
                        v_empty, turn, it0, t0, O, m0, len_q, len_k, store_rows, n_total, out_row0, out_col,
                        stride_ot, kb_base, stride_kbt, scale_half, bias_half, CAUSAL, HAS_KEY_BIAS, PINGPONG,
                        SPLIT_KV, True,
                    )  # fmt: skip
                it0 += n_total
                t0 += n_total + 1
                q_phase += (n_total > 0).to(gl.int32)


@gluon.jit
def sigmoid_attn_fwd_hopper_ws_persistent_kernel(
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
    tiles_m,
    n_bh,
    H: gl.constexpr,
    GROUP: gl.constexpr,
    CAUSAL: gl.constexpr,
    HAS_KEY_BIAS: gl.constexpr,
    STORE_ALL_ROWS: gl.constexpr,
    STAGES: gl.constexpr,
    num_warps: gl.constexpr,
    PINGPONG: gl.constexpr = False,
    V_STAGES: gl.constexpr = 0,
):
    """sigmoid_attn_fwd_hopper_ws_kernel as a persistent program (launch about one per SM): it walks the
    tiles (2 BM query rows of one sequence x head; ``tiles_m`` per sequence x head, ``n_bh`` of those) in
    pairs balanced under a causal mask, so a tile's Q and first K / V loads overlap the previous tile's
    last matmuls and stores, and no program pays a launch, barrier setup and pipeline fill per tile."""
    SPLIT_KV: gl.constexpr = V_STAGES > 0
    q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready, v_empty, turn = _ws_buffers(
        q_desc, k_desc, v_desc, STAGES, V_STAGES, PINGPONG, True
    )

    # The argument tuples are spelled out in place (see sigmoid_attn_fwd_hopper_ws_kernel).
    gl.warp_specialize(
        [
            (
                _persistent_part,
                (0, q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready,
                 v_empty, turn, O, BIAS, KEY_BIAS, START_Q, LEN_Q, START_K, LEN_K, rows_q, rows_k, stride_ot,
                 stride_kbb, stride_kbt, scale_half, tiles_m, n_bh, H, GROUP, CAUSAL, HAS_KEY_BIAS,
                 STORE_ALL_ROWS, PINGPONG, SPLIT_KV, False),
            ),
            (
                _persistent_part,
                (1, q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready,
                 v_empty, turn, O, BIAS, KEY_BIAS, START_Q, LEN_Q, START_K, LEN_K, rows_q, rows_k, stride_ot,
                 stride_kbb, stride_kbt, scale_half, tiles_m, n_bh, H, GROUP, CAUSAL, HAS_KEY_BIAS,
                 STORE_ALL_ROWS, PINGPONG, SPLIT_KV, False),
            ),
            (
                _persistent_part,
                (0, q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready,
                 v_empty, turn, O, BIAS, KEY_BIAS, START_Q, LEN_Q, START_K, LEN_K, rows_q, rows_k, stride_ot,
                 stride_kbb, stride_kbt, scale_half, tiles_m, n_bh, H, GROUP, CAUSAL, HAS_KEY_BIAS,
                 STORE_ALL_ROWS, PINGPONG, SPLIT_KV, True),
            ),
        ],
        [CONSUMER_WARPS, 1],
        [CONSUMER_REGS, PRODUCER_REGS],
    )  # fmt: skip
    _invalidate_ws_buffers(q_bar, q_empty, k_ready, k_empty, v_ready, v_empty, turn, SPLIT_KV, PINGPONG, True)


@gluon.jit
def _release(ready, empty, it, STAGES: gl.constexpr):
    """Wait for stream iteration ``it``'s stage and free it without reading it."""
    mbarrier.wait(ready.index(it % STAGES), (it // STAGES) & 1)
    mbarrier.arrive(empty.index(it % STAGES), count=1)


def ws_maxnreg() -> int:
    """Per-thread register limit to launch with: 3 warpgroups (consumer, consumer, producer rounded up)
    share the 64 K registers; the default partition (the first consumer) gets what the workers leave."""
    return (2 * CONSUMER_REGS.value + PRODUCER_REGS.value) // 3


def compile_ws_sm90(
    dim: int,
    config: tuple[int, ...],
    *,
    dtype: str = "bf16",
    causal: bool = False,
    key_bias: bool = False,
    padded: bool = True,
    heads: int = 8,
    group: int = 1,
    pingpong: bool = False,
    persistent: bool = False,
):
    """The warp-specialized forward compiled for sm_90a without a GPU; ``config`` = (query rows per
    consumer, BN, STAGES[, V_STAGES]); ``pingpong``: the consumers alternate at issuing matmuls;
    ``persistent``: the persistent kernel (one program walks many tiles)."""
    from sigcell.ops.sigmoid_attn.hopper import compile_constants, compile_for_sm90, forward_args

    blocks = {"q_desc": config[0], "k_desc": config[1], "v_desc": config[1]}
    constants = compile_constants(config[2], CONSUMER_WARPS.value, causal, key_bias, padded, heads, group)
    constants["PINGPONG"] = pingpong
    constants["V_STAGES"] = config[3] if len(config) > 3 else 0
    kernel, args = sigmoid_attn_fwd_hopper_ws_kernel, forward_args()
    if persistent:
        kernel, args = sigmoid_attn_fwd_hopper_ws_persistent_kernel, {**args, "tiles_m": "i32", "n_bh": "i32"}
    return compile_for_sm90(kernel, blocks, args, constants, dim, dtype, maxnreg=ws_maxnreg())
