"""Which cells go into which batch: a seeded, length-bucketed, rank-sharded batch plan with exact resume.

Each epoch's plan is a pure function of ``(seed, epoch, lengths, settings)``: shuffle the cells,
sort them by length inside buckets of many batches (so a batch holds cells of similar length and
padding stays small), cut batches (a fixed ``batch_size`` or a ``token_budget``), shuffle the batch
order, and give rank ``r`` batches ``r, r + world_size, ...`` (the plan is cut to a multiple of
``world_size`` so every rank takes the same number of steps). The state is ``(epoch, position)``;
restoring it replays the same plan and skips the batches already handed out.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["LengthBucketSampler"]

# A bucket holds this many batches' worth of cells: wide enough to shuffle well, narrow enough that
# sorting by length inside it leaves little padding.
_BUCKET_BATCHES = 64


class LengthBucketSampler:
    """Yields arrays of cell indices, one per batch, for this rank.

    Parameters
    ----------
    seq_lens
        int ``[N]``: tokens of each cell including ``<cls>``.
    batch_size, token_budget
        Exactly one: cells per batch, or the most tokens per batch (padded layout counts
        ``cells x longest``, packed counts the sum of lengths).
    layout
        ``"padded"`` or ``"packed"``; only matters for ``token_budget``.
    shuffle, seed
        Shuffle cells and batch order, seeded by ``(seed, epoch)``.
    rank, world_size
        This process's share of the batches.
    bucket
        Sort cells by length inside buckets (``bucket_size`` cells, default 64 batches' worth).
    drop_last
        Drop a last batch smaller than ``batch_size`` (``batch_size`` only).
    """

    def __init__(
        self,
        seq_lens: np.ndarray,
        *,
        batch_size: int | None = None,
        token_budget: int | None = None,
        layout: str = "padded",
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        bucket: bool = True,
        bucket_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.seq_lens = np.asarray(seq_lens, dtype=np.int64)
        if (batch_size is None) == (token_budget is None):
            msg = f"pass exactly one of batch_size or token_budget, got {batch_size=} and {token_budget=}"
            raise ValueError(msg)
        if batch_size is not None and batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise ValueError(msg)
        if layout not in ("padded", "packed"):
            msg = f"layout must be 'padded' or 'packed', got {layout!r}"
            raise ValueError(msg)
        longest = int(self.seq_lens.max()) if self.seq_lens.size else 0
        if token_budget is not None and token_budget < longest:
            msg = (
                f"token_budget {token_budget} is smaller than the longest cell ({longest} tokens with "
                "<cls>); raise token_budget or tokenize with a smaller max_genes"
            )
            raise ValueError(msg)
        if not (world_size >= 1 and 0 <= rank < world_size):
            msg = f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            raise ValueError(msg)
        self.batch_size, self.token_budget, self.layout = batch_size, token_budget, layout
        self.shuffle, self.seed, self.bucket, self.drop_last = shuffle, seed, bucket, drop_last
        self.rank, self.world_size = rank, world_size
        if bucket_size is None:
            per_batch = batch_size or max(
                1, token_budget // max(1, int(self.seq_lens.mean() if longest else 1))
            )
            bucket_size = per_batch * _BUCKET_BATCHES
        self.bucket_size = int(bucket_size)
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out on this rank
        self._plan_cache: tuple[int, list[np.ndarray]] | None = None

    # -- the plan ---------------------------------------------------------------------------------------

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        if self.batch_size is not None:
            batches = [order[i : i + self.batch_size] for i in range(0, order.size, self.batch_size)]
            if self.drop_last and batches and batches[-1].size < self.batch_size:
                batches.pop()
            return batches
        lens = self.seq_lens[order].tolist()
        batches, start, longest, total = [], 0, 0, 0
        for i, n in enumerate(lens):
            new_longest, new_total = max(longest, n), total + n
            cost = new_longest * (i - start + 1) if self.layout == "padded" else new_total
            if cost > self.token_budget and i > start:
                batches.append(order[start:i])
                start, new_longest, new_total = i, n, n
            longest, total = new_longest, new_total
        if start < len(lens):
            batches.append(order[start:])
        return batches

    def plan(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of cell indices) for ``epoch``."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        n = self.seq_lens.size
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            # longest first inside each bucket; stable so equal lengths keep the shuffled order
            chunks = [order[i : i + self.bucket_size] for i in range(0, n, self.bucket_size)]
            order = np.concatenate(
                [c[np.argsort(-self.seq_lens[c], kind="stable")] for c in chunks] or [order]
            )
        batches = self._cut(order)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) // self.world_size * self.world_size
        mine = batches[self.rank : usable : self.world_size]
        self._plan_cache = (epoch, mine)
        return mine

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch."""
        return len(self.plan(self.epoch))

    def __iter__(self) -> Iterator[np.ndarray]:
        """The remaining batches of the current epoch; afterwards the sampler moves to the next epoch."""
        batches = self.plan(self.epoch)
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1  # a batch handed out counts as consumed: resume starts after it
            yield batch
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of ``epoch``."""
        self.epoch, self.position = int(epoch), 0

    # -- resume -----------------------------------------------------------------------------------------

    def _settings(self) -> dict:
        return {
            "n_cells": int(self.seq_lens.size),
            "batch_size": self.batch_size,
            "token_budget": self.token_budget,
            "layout": self.layout,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "bucket": self.bucket,
            "bucket_size": self.bucket_size,
            "drop_last": self.drop_last,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def state_dict(self) -> dict:
        """``{"epoch", "position", "settings"}``: enough to continue exactly where this left off."""
        return {"epoch": self.epoch, "position": self.position, "settings": self._settings()}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; the settings (cells, batching, rank) must be the same."""
        mine, theirs = self._settings(), dict(state.get("settings", {}))
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
            msg = f"cannot resume the data loader: its settings changed ({detail}); resume with the same ones"
            raise ValueError(msg)
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
