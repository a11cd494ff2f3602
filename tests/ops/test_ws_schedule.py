"""A model of the warp-specialized forward's barrier protocol (hopper_ws.py), run on the CPU.

The kernel's three partitions (a producer and two consumers) are replayed as Python generators over
mbarriers with phase counting, under random interleavings, for random program shapes: the ring
(``ready`` / ``empty``), the Q barrier and, with ping-pong, the ``turn`` barriers. The model checks what
a GPU run can only show by hanging or by a wrong number: every interleaving finishes (no deadlock), no
wait is ever two phases behind its barrier (the parity a wait uses would then name the wrong phase), a
consumer only reads a stage that holds the block it expects, and with ping-pong the consumers' matmul
issues alternate turn by turn. Loop bounds mirror ``_consumer`` / ``_loader`` / ``_key_blocks``.
"""

from __future__ import annotations

import random

import pytest


class Barrier:
    """An mbarrier: ``count`` arrivals complete a phase; ``phases`` counts completed phases."""

    def __init__(self, count: int) -> None:
        self.count, self.pending, self.phases = count, 0, 0

    def arrive(self) -> None:
        self.pending += 1
        if self.pending == self.count:
            self.pending, self.phases = 0, self.phases + 1

    def done(self, phase: int) -> bool:
        """Whether ``phase`` (0-based; -1: the phase before the first) has completed. A parity wait
        is only sound while the barrier is at most one phase past the one awaited."""
        assert self.phases <= phase + 1, f"barrier lapped: {self.phases} phases done, awaiting {phase}"
        return self.phases >= phase + 1


def key_blocks(m0, len_q, len_k, bm, bn, causal):
    """hopper._key_blocks: (key blocks, unmasked key blocks) of the query block at ``m0``."""
    shift = len_k - len_q
    hi, full = len_k, len_k
    if causal:
        hi, full = min(hi, m0 + bm + shift), min(full, m0 + shift + 1)
    hi = max(hi, 0) if m0 < len_q else 0
    n_blocks = -(-hi // bn)
    return n_blocks, min(max(full, 0) // bn, n_blocks)


class Partitions:
    """A producer (``loader``) and two consumers (``consumer(0)``, ``consumer(1)``) of one program."""

    def run(self, rng: random.Random) -> None:
        """Interleave the three partitions at random until all finish; fail on a deadlock."""
        waiting = {
            name: [gen, None]
            for name, gen in (("loader", self.loader()), ("c0", self.consumer(0)), ("c1", self.consumer(1)))
        }
        while waiting:
            runnable = [name for name, (_, wait) in waiting.items() if wait is None or wait[0].done(wait[1])]
            blocked = {n: w[1] for n, w in waiting.items()}
            assert runnable, f"deadlock: partitions wait for phases {blocked}"
            name = rng.choice(runnable)
            try:
                waiting[name][1] = next(waiting[name][0])
            except StopIteration:
                del waiting[name]


class Ring:
    """Shared-memory stages of one operand stream with their ``ready`` / ``empty`` barriers."""

    def __init__(self, stages: int) -> None:
        self.stages = stages
        self.ready = [Barrier(1) for _ in range(stages)]
        self.empty = [Barrier(2) for _ in range(stages)]  # one arrival per consumer
        self.holds: list[int | None] = [None] * stages

    def fill(self, j):
        """The producer: wait until both consumers freed block j's stage, load block j."""
        yield self.empty[j % self.stages], j // self.stages - 1
        self.holds[j % self.stages] = j
        self.ready[j % self.stages].arrive()

    def wait(self, j):
        return self.ready[j % self.stages], j // self.stages

    def free(self, j) -> None:
        self.empty[j % self.stages].arrive()


class Program(Partitions):
    """A program of the warp-specialized forward over ``tiles`` (``(m0, len_q, len_k)`` each: query rows
    ``m0 + [0, 2 bm)``; more than one: the persistent kernel, whose partitions carry ring iterations,
    turns and Q phases from tile to tile); one ring of K / V pairs, or (``v_stages`` > 0) a K ring of
    ``stages`` and a V ring of ``v_stages``. A one-tile program is the one-tile kernel (no ``q_empty``)."""

    def __init__(self, tiles, bm, bn, stages, causal, pingpong, v_stages=0):
        self.pingpong, self.split, self.persistent = pingpong, v_stages > 0, len(tiles) > 1
        self.tiles = [
            [key_blocks(m0 + wg * bm, len_q, len_k, bm, bn, causal)[0] for wg in (0, 1)]
            for m0, len_q, len_k in tiles
        ]
        self.q_bar, self.q_empty = Barrier(1), Barrier(2)
        self.q_holds: int | None = None  # the tile whose Q rows are in shared memory
        self.k = Ring(stages)
        self.v = Ring(v_stages) if self.split else self.k
        self.turn = [Barrier(1), Barrier(1)]
        self.issues: list[tuple[int, int]] = []
        self.reads = {0: [], 1: []}

    @property
    def blocks(self):
        return self.tiles[0]

    @property
    def n_total(self):
        return max(self.tiles[0])

    # The partitions yield (barrier, phase) to wait for that phase of that barrier.
    def loader(self):
        it0 = q_phase = 0
        for tile, blocks in enumerate(self.tiles):
            n_total = max(blocks)
            if n_total > 0:
                if self.persistent:
                    yield self.q_empty, q_phase - 1
                self.q_holds = tile
                self.q_bar.arrive()
                if not self.split:  # stage j holds K_j and V_j
                    for j in range(n_total):
                        yield from self.k.fill(it0 + j)
                else:
                    for j in range(n_total + 1):  # K one block ahead of V
                        if j < n_total:
                            yield from self.k.fill(it0 + j)
                        if j > 0:
                            yield from self.v.fill(it0 + j - 1)
            it0 += n_total
            q_phase += n_total > 0

    def _read(self, wg, ring, name, it):
        assert ring.holds[it % ring.stages] == it, (
            f"consumer {wg} read a stage without {name} of iteration {it}"
        )
        self.reads[wg].append((name, it))

    def _read_q(self, wg, tile):
        assert self.q_holds == tile, f"consumer {wg} read the Q rows of tile {self.q_holds} in tile {tile}"

    def _await_turn(self, wg, t):
        # consumer 0's turn t follows consumer 1's turn t - 1; consumer 1's follows consumer 0's turn t
        yield self.turn[wg], t - 1 + wg
        self.issues.append((wg, t))

    def _release(self, it):
        yield self.k.wait(it)
        self.k.free(it)
        if self.split:
            yield self.v.wait(it)
            self.v.free(it)

    def consumer(self, wg):
        it0 = t0 = q_phase = 0
        for tile, blocks in enumerate(self.tiles):
            yield from self._consumer_tile(wg, tile, blocks[wg], max(blocks), it0, t0, q_phase)
            it0 += max(blocks)
            t0 += max(blocks) + 1
            q_phase += max(blocks) > 0

    def _consumer_tile(self, wg, tile, n_blocks, n_total, it0, t0, q_phase):
        pp, split, k, v = self.pingpong, self.split, self.k, self.v
        frees_q_after_s = self.persistent and not split
        if n_blocks > 0:
            yield self.q_bar, q_phase
            yield k.wait(it0)
            if pp:
                yield from self._await_turn(wg, t0)
            self._read_q(wg, tile)
            self._read(wg, k, "K", it0)  # S_0
            if pp:
                self.turn[1 - wg].arrive()
            if split:
                k.free(it0)  # once S_0 retired
            for j in range(1, n_blocks):
                yield k.wait(it0 + j)
                if split:
                    yield v.wait(it0 + j - 1)
                if pp:
                    yield from self._await_turn(wg, t0 + j)
                self._read_q(wg, tile)
                self._read(wg, k, "K", it0 + j)  # S_j
                self._read(wg, v, "V", it0 + j - 1)  # P_{j-1} V_{j-1}
                if pp:
                    self.turn[1 - wg].arrive()
                if split:
                    k.free(it0 + j)
                v.free(it0 + j - 1)  # after both matmuls retired (one ring: frees K_{j-1} and V_{j-1})
            if frees_q_after_s:
                self.q_empty.arrive()
            last = it0 + n_blocks - 1
            if split:
                yield v.wait(last)
            if pp:
                yield from self._await_turn(wg, t0 + n_blocks)
            self._read(wg, v, "V", last)
            if pp:
                self.turn[1 - wg].arrive()
            v.free(last)
        elif frees_q_after_s and n_total > 0:
            yield self.q_bar, q_phase
            self.q_empty.arrive()
        if pp:
            for t in range(n_blocks + (n_blocks > 0), n_total + 1):
                yield from self._await_turn(wg, t0 + t)
                self.turn[1 - wg].arrive()
                if t > n_blocks:
                    yield from self._release(it0 + t - 1)
        else:
            for j in range(n_blocks, n_total):
                yield from self._release(it0 + j)
        if split and n_total > 0:  # the output is staged in this consumer's Q tile
            yield self.q_bar, q_phase
            self._read_q(wg, tile)
            if self.persistent:
                self.q_empty.arrive()


def _random_tile(rng: random.Random, bm: int):
    len_q = rng.choice([0, 1, *[rng.randrange(1, 1200)] * 8])
    len_k = len_q if rng.random() < 0.7 else rng.randrange(0, 1200)
    m0 = 2 * bm * rng.randrange(0, max(1, -(-len_q // (2 * bm))) + 1)
    return m0, len_q, len_k


def _random_programs(rng: random.Random, n: int, max_tiles: int = 1):
    for _ in range(n):
        bm, bn, stages = rng.choice([64, 128]), rng.choice([32, 64, 128]), rng.choice([2, 3, 4])
        tiles = [_random_tile(rng, bm) for _ in range(rng.randint(1, max_tiles))]
        yield tiles, bm, bn, stages, rng.random() < 0.5


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("v_stages", [0, 1, 2, 3])
@pytest.mark.parametrize("pingpong", [False, True])
def test_ws_forward_protocol_finishes_and_reads_the_right_stages(pingpong, v_stages, persistent):
    """One K / V ring (v_stages 0) or split rings, with and without ping-pong, one tile per program or
    several (persistent: 2-6 tiles, the Q tile reloaded between them)."""
    rng = random.Random(1234 + pingpong + 10 * v_stages + 100 * persistent)
    for tiles, bm, bn, stages, causal in _random_programs(rng, 250, max_tiles=6 if persistent else 1):
        if persistent and len(tiles) == 1:
            tiles = tiles * 2
        prog = Program(tiles, bm, bn, stages, causal, pingpong, v_stages)
        prog.run(rng)
        it0, t0, expected_reads, expected_turns = 0, 0, {0: [], 1: []}, []
        for blocks in prog.tiles:  # S_j (K_j) of every own block, then P_j V_j; turns in strict alternation
            for wg in (0, 1):
                own = range(it0, it0 + blocks[wg])
                expected_reads[wg] += [*(("K", it) for it in own), *(("V", it) for it in own)]
            expected_turns += [(wg, t0 + t) for t in range(max(blocks) + 1) for wg in (0, 1)]
            it0, t0 = it0 + max(blocks), t0 + max(blocks) + 1
        for wg in (0, 1):
            assert sorted(prog.reads[wg]) == sorted(expected_reads[wg])
        if pingpong:
            assert prog.issues == expected_turns


def test_the_model_catches_a_deadlocking_release_order():
    """Control: an idle consumer that releases the other's stages before passing its turns deadlocks
    whenever it idles for more stages than the ring holds."""

    class ReleaseFirst(Program):
        def consumer(self, wg):
            if self.blocks[wg] > 0:
                yield from super().consumer(wg)
                return
            for j in range(self.n_total):
                yield from self._release(j)
            for t in range(self.n_total + 1):
                yield from self._await_turn(wg, t)
                self.turn[1 - wg].arrive()

    prog = ReleaseFirst([(0, 64, 640)], 64, 64, 2, False, True)  # the second consumer's rows are padding
    with pytest.raises(AssertionError, match="deadlock"):
        prog.run(random.Random(0))


# The warp-specialized dQ kernel (hopper_ws_bwd.py) runs the forward's ring protocol without ping-pong
# (a consumer reads stage j for S_j and dP_j, stage j - 1 for dQ += dS_{j-1} K_{j-1}): the model above
# covers it. Its dK / dV kernel streams query blocks past resident keys instead:


class DkdvProgram(Partitions):
    """One program of the warp-specialized dK / dV kernel: keys ``n0 + [0, 2 bn)``, the stream of query
    blocks the first consumer's keys see, for each of ``group`` heads in turn."""

    def __init__(self, n0, len_q, len_k, bm, bn, stages, group, causal):
        self.bm, self.bn, self.stages, self.group, self.causal = bm, bn, stages, group, causal
        self.n0, self.len_q, self.len_k, self.shift = n0, len_q, len_k, len_k - len_q
        q_end = len_q if n0 < len_k else 0
        lo = max(n0 - self.shift, 0) // bm * bm if causal else 0
        self.first, self.n_stream = lo // bm, max(-(-q_end // bm) - lo // bm, 0)
        self.kv_bar = Barrier(1)
        self.ready = [Barrier(1) for _ in range(stages)]
        self.empty = [Barrier(2) for _ in range(stages)]
        self.stage_holds = [None] * stages
        self.visits = {0: [], 1: []}
        self.computed = {0: [], 1: []}

    def loader(self):
        if self.n_stream > 0:
            self.kv_bar.arrive()
            for it in range(self.n_stream * self.group):
                yield self.empty[it % self.stages], it // self.stages - 1
                self.stage_holds[it % self.stages] = it
                self.ready[it % self.stages].arrive()

    def split_kernel_blocks(self, wg):
        """Query blocks hopper_bwd's dK / dV kernel visits for this consumer's keys."""
        mine = self.n0 + wg * self.bn
        q_end = self.len_q if mine < self.len_k else 0
        lo = max(mine - self.shift, 0) // self.bm if self.causal else 0
        return list(range(lo, -(-q_end // self.bm)))

    def consumer(self, wg):
        bm, stages = self.bm, self.stages
        mine = self.n0 + wg * self.bn
        q_end = self.len_q if mine < self.len_k else 0
        rows_end = q_end // bm * bm
        lo = diag_end = 0
        if self.causal:
            lo = max(mine - self.shift, 0) // bm * bm
            diag_end = max(mine + self.bn - 1 - self.shift + bm - 1, 0) // bm * bm
        diag_end = min(diag_end, rows_end)
        mine_first = lo // bm
        n_mine = max(-(-q_end // bm) - mine_first, 0)
        skip_to = mine_first if n_mine > 0 else self.first + self.n_stream
        if self.n_stream > 0:
            yield self.kv_bar, 0
        for g in range(self.group):
            it0 = g * self.n_stream - self.first
            own = [
                *range(mine_first, diag_end // bm if n_mine > 0 else mine_first),
                *range(max(diag_end // bm, mine_first), rows_end // bm if n_mine > 0 else 0),
                *range(max(rows_end // bm, mine_first), mine_first + n_mine),
            ]
            for blk in [*range(self.first, skip_to), *own]:
                it = it0 + blk
                yield self.ready[it % stages], it // stages
                assert self.stage_holds[it % stages] == it, f"consumer {wg} read a stage without {it}"
                self.visits[wg].append(it)
                if blk >= skip_to:
                    self.computed[wg].append((g, blk))
                self.empty[it % stages].arrive()  # after the block's matmuls retired


def _random_dkdv_programs(rng: random.Random, n: int):
    for _ in range(n):
        bm, bn, stages = rng.choice([32, 64, 128]), rng.choice([32, 64]), rng.choice([2, 3, 4])
        len_k = rng.choice([0, 1, *[rng.randrange(1, 1200)] * 8])
        len_q = len_k if rng.random() < 0.7 else rng.randrange(0, 1200)
        n0 = 2 * bn * rng.randrange(0, max(1, -(-len_k // (2 * bn))) + 1)
        yield n0, len_q, len_k, bm, bn, stages, rng.choice([1, 2, 3]), rng.random() < 0.5


def test_ws_dkdv_protocol_visits_the_stream_in_order_and_computes_the_split_kernels_blocks():
    rng = random.Random(4321)
    for args in _random_dkdv_programs(rng, 600):
        prog = DkdvProgram(*args)
        prog.run(rng)
        for wg in (0, 1):
            assert prog.visits[wg] == list(range(prog.n_stream * prog.group)), args
            expected = [(g, blk) for g in range(prog.group) for blk in prog.split_kernel_blocks(wg)]
            assert prog.computed[wg] == expected, args
