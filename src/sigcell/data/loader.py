"""Data loaders: tokenized cells (in memory or an on-disk ``Corpus``) -> ``CellBatch`` per step.

``make_dataloader(cells, batch_size=... | token_budget=..., layout="padded" | "packed", ...)``
returns a ``CellLoader``: iterating it yields one epoch of batches for this rank; its
``state_dict()`` / ``load_state_dict()`` resume exactly (same batches, same order).
``iter_batches(adata, vocab, config)`` tokenizes an AnnData in memory and batches it in cell order,
with ``CellBatch.cell_index`` giving each cell's row in the AnnData (for ``adata.obsm``).

A cell source is anything with ``__len__``, ``n_genes`` (int ``[N]``), ``gather(idx)`` ->
``(gene_ids, values, n_genes)``, ``source_index(idx)`` and ``config`` (``TokenizedCells`` and
``Corpus`` are). Reading is a memory-map slice plus numpy, cheap enough to run in the training
process; each rank reads only its own batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from sigcell.data.batch import CellBatch
from sigcell.data.collate import collate_packed, collate_padded
from sigcell.data.sampler import LengthBucketSampler
from sigcell.data.tokenize import TokenizedCells, TokenizerConfig, tokenize
from sigcell.data.vocab import GeneVocab

__all__ = ["CellLoader", "CellSource", "iter_batches", "make_dataloader"]


class CellSource(Protocol):
    """What a loader reads from (``TokenizedCells``, ``Corpus``)."""

    config: TokenizerConfig

    def __len__(self) -> int: ...

    @property
    def n_genes(self) -> np.ndarray: ...

    def gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def source_index(self, idx: np.ndarray) -> np.ndarray: ...


class CellLoader:
    """Iterable of ``CellBatch`` over a cell source, planned by a ``LengthBucketSampler``."""

    def __init__(
        self, cells: CellSource, sampler: LengthBucketSampler, *, layout: str, pad_to_multiple_of: int = 1,
        num_workers: int = 0,
    ) -> None:
        self.cells, self.sampler, self.layout = cells, sampler, layout
        self.pad_to_multiple_of = pad_to_multiple_of
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            msg = f"num_workers must be a non-negative int, got {num_workers!r}"
            raise ValueError(msg)
        self.num_workers = num_workers

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch."""
        return len(self.sampler)

    def collate(self, idx: np.ndarray) -> CellBatch:
        """The batch of cells ``idx`` in this loader's layout."""
        ids, vals, n_genes = self.cells.gather(idx)
        kw = {"encoding": self.cells.config.encoding, "cell_index": self.cells.source_index(idx)}
        if self.layout == "packed":
            return collate_packed(ids, vals, n_genes, **kw)
        return collate_padded(ids, vals, n_genes, pad_to_multiple_of=self.pad_to_multiple_of, **kw)

    def __iter__(self) -> Iterator[CellBatch]:
        if not self.num_workers:
            for idx in self.sampler:
                yield self.collate(idx)
            return
        yield from self._prefetched()

    def _prefetched(self) -> Iterator[CellBatch]:
        """The sampler's batches in its order, gathered and collated ahead by ``num_workers`` threads.

        Threads, not processes: a memory-mapped corpus is shared as is, numpy's gathers release the GIL,
        and nothing is pickled. The sampler's position counts only the batches handed out, so a
        ``state_dict`` taken between batches resumes exactly (batches still in flight are redone).
        """
        sampler = self.sampler
        batches = sampler.plan(sampler.epoch)
        ahead = 2 * self.num_workers
        pending: deque = deque()
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="sigcell-loader") as pool:
            try:
                queued = sampler.position
                while sampler.position < len(batches):
                    while queued < len(batches) and len(pending) < ahead:
                        pending.append(pool.submit(self.collate, batches[queued]))
                        queued += 1
                    batch = pending.popleft().result()
                    sampler.position += 1  # as the sampler's own iterator: a batch handed out is consumed
                    yield batch
            finally:  # the consumer stopped early (or failed): drop what was queued ahead
                for future in pending:
                    future.cancel()
        sampler.epoch, sampler.position = sampler.epoch + 1, 0

    def state_dict(self) -> dict:
        """Iteration state (epoch, batches consumed, settings) for checkpoints."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``; raises if the batching settings differ."""
        self.sampler.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.sampler.set_epoch(epoch)


def make_dataloader(
    cells: CellSource,
    *,
    batch_size: int | None = None,
    token_budget: int | None = None,
    layout: str = "padded",
    shuffle: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    bucket: bool = True,
    drop_last: bool = False,
    pad_to_multiple_of: int = 1,
    num_workers: int = 0,
) -> CellLoader:
    """A resumable loader of ``CellBatch`` over tokenized cells.

    Parameters
    ----------
    cells
        ``TokenizedCells`` or ``Corpus`` (any ``CellSource``).
    batch_size, token_budget
        Exactly one: cells per batch, or most tokens per batch (padded counts padding).
    layout
        ``"padded"`` (``seq_lens``) or ``"packed"`` (``cu_seqlens``, ``max_seqlen``).
    shuffle, seed
        Seeded shuffling of cells and batches, new each epoch.
    rank, world_size
        Distributed share: rank ``r`` gets every ``world_size``-th batch.
    bucket
        Group cells of similar length (less padding); order inside a batch is then by length.
    drop_last, pad_to_multiple_of
        Drop a short last batch; round the padded length up (e.g. to 64 for kernels).
    num_workers
        Threads that gather and collate the next batches while the current one trains (0: none; the
        batches and their order are the same either way).

    Returns
    -------
    CellLoader
        Yields ``CellBatch`` with ``cell_index`` (corpus cell / AnnData row of each cell).
    """
    if layout not in ("padded", "packed"):
        msg = f"layout must be 'padded' or 'packed', got {layout!r}"
        raise ValueError(msg)
    if len(cells) == 0:
        msg = "make_dataloader: the cell source is empty (0 cells); check the corpus split or the input"
        raise ValueError(msg)
    sampler = LengthBucketSampler(
        np.asarray(cells.n_genes) + 1,
        batch_size=batch_size,
        token_budget=token_budget,
        layout=layout,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        bucket=bucket,
        drop_last=drop_last,
    )
    return CellLoader(cells, sampler, layout=layout, pad_to_multiple_of=pad_to_multiple_of,
                      num_workers=num_workers)


def iter_batches(
    adata,
    vocab: GeneVocab,
    config: TokenizerConfig | None = None,
    *,
    batch_size: int | None = 64,
    token_budget: int | None = None,
    layout: str = "padded",
    empty: str = "drop",
    pad_to_multiple_of: int = 1,
) -> CellLoader:
    """Tokenize an AnnData in memory and batch it in cell order (no corpus on disk).

    Parameters
    ----------
    adata
        AnnData (validated with ``check_adata`` if it was not read by ``read_h5ad``).
    vocab, config
        The model's vocabulary and tokenizer settings.
    batch_size, token_budget, layout, pad_to_multiple_of
        As ``make_dataloader``; pass ``batch_size=None`` with a ``token_budget``.
    empty
        ``"drop"`` (default): cells without any vocabulary gene get no batch entry (their rows
        never appear in ``cell_index``); ``"error"``: raise.

    Returns
    -------
    CellLoader
        Cells in AnnData order; ``CellBatch.cell_index`` = row in ``adata``.
        ``loader.cells.stats`` reports unknown genes, truncated and dropped cells.
    """
    if token_budget is not None:
        batch_size = None
    cells: TokenizedCells = tokenize(adata, vocab, config, empty=empty)
    return make_dataloader(
        cells,
        batch_size=batch_size,
        token_budget=token_budget,
        layout=layout,
        shuffle=False,
        bucket=False,
        pad_to_multiple_of=pad_to_multiple_of,
    )
