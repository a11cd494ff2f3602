"""Synthetic cells with learnable structure, for tests, smoke runs and benchmarks without a corpus.

Each cell belongs to one of ``n_types`` latent types. A type has a gene program (a set of genes it
expresses often) and a mean level per gene; a cell samples its expressed genes mostly from its
program and its values around the type's levels. Masked values are therefore predictable from the
other genes of the cell, so the pretraining loss falls.

Batch ``i`` depends only on ``(seed, i)``: any rank can produce any batch, and resuming needs only the
index of the next batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sigcell.data.batch import CellBatch
from sigcell.model.config import CLS_ID, N_SPECIAL_TOKENS
from sigcell.ops.padding import cu_seqlens_from_lengths

__all__ = ["SyntheticCells", "SyntheticLoader", "mix_seed"]


def mix_seed(*keys: int) -> int:
    """One 63-bit seed from integer keys (seed, step, micro-batch, rank...), stable across runs."""
    seed = 0
    for k in keys:
        seed = (seed * 0x9E3779B97F4A7C15 + int(k) + 0x632BE59BD9B4E019) % (1 << 63)
    return seed


def _generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*keys))


@dataclass
class SyntheticCells:
    """Deterministic synthetic cells; :meth:`batch` builds batch number ``index``.

    Parameters
    ----------
    vocab_size
        Token ids incl. the 3 specials; genes are ids ``3 .. vocab_size - 1``.
    value_encoding
        ``"continuous"`` (float log-levels), ``"binned"`` (int bins ``1 .. n_bins - 1``) or ``"rank"``
        (genes sorted by descending level, float levels as values, as ``sigcell.data`` tokenizes).
    """

    vocab_size: int
    value_encoding: str = "binned"
    n_bins: int = 51
    min_genes: int = 32
    max_genes: int = 256
    n_types: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        n_genes = self.vocab_size - N_SPECIAL_TOKENS
        if self.max_genes > n_genes:
            msg = (f"SyntheticCells: max_genes ({self.max_genes}) exceeds the {n_genes} genes of the "
                   "vocabulary; "
                   "raise model.vocab_size or lower data.synthetic_max_genes")
            raise ValueError(msg)
        g = _generator(self.seed, 0xC0FFEE)
        # Program weights: each type strongly prefers ~1/4 of the genes.
        self._weights = torch.where(torch.rand(self.n_types, n_genes, generator=g) < 0.25, 8.0, 1.0)
        self._levels = torch.rand(self.n_types, n_genes, generator=g) * 4.0  # mean log-level per type/gene

    def batch(self, index: int, batch_size: int, packed: bool = True) -> CellBatch:
        """Batch ``index`` of ``batch_size`` cells, packed or padded (``<cls>`` first in every cell)."""
        g = _generator(self.seed, index)
        lengths = torch.randint(self.min_genes, self.max_genes + 1, (batch_size,), generator=g)
        types = torch.randint(0, self.n_types, (batch_size,), generator=g)
        ids_list, val_list = [], []
        for n, t in zip(lengths.tolist(), types.tolist(), strict=True):
            keys = torch.rand(self._weights.shape[1], generator=g).pow(1.0 / self._weights[t])
            genes = keys.topk(n).indices  # weighted sampling without replacement
            level = (self._levels[t, genes] + 0.3 * torch.randn(n, generator=g)).clamp(min=0.0)
            if self.value_encoding == "rank":
                order = level.argsort(descending=True)
                genes, level = genes[order], level[order]
            ids_list.append(torch.cat([torch.tensor([CLS_ID]), genes + N_SPECIAL_TOKENS]))
            val_list.append(self._encode(level))
        seq_lens = (lengths + 1).to(torch.int32)
        if packed:
            return CellBatch(gene_ids=torch.cat(ids_list), values=torch.cat(val_list),
                             cu_seqlens=cu_seqlens_from_lengths(seq_lens), max_seqlen=int(seq_lens.max()))
        width = int(seq_lens.max())
        ids = torch.zeros(batch_size, width, dtype=torch.int64)
        vals = torch.zeros(batch_size, width, dtype=val_list[0].dtype)
        for i, (a, v) in enumerate(zip(ids_list, val_list, strict=True)):
            ids[i, : a.numel()], vals[i, : v.numel()] = a, v
        return CellBatch(gene_ids=ids, values=vals, seq_lens=seq_lens)

    def _encode(self, level: torch.Tensor) -> torch.Tensor:
        """Values of one cell with ``<cls>`` (value 0) prepended."""
        if self.value_encoding == "binned":
            bins = 1 + (level / 4.0 * (self.n_bins - 1)).long().clamp(0, self.n_bins - 2)
            return torch.cat([torch.zeros(1, dtype=torch.int64), bins])
        return torch.cat([torch.zeros(1), level.float()])  # continuous, and the scores of rank


class SyntheticLoader:
    """An endless iterator of synthetic micro-batches for one rank, with ``state_dict`` for exact resume.

    Micro-batch ``k`` of this loader is global batch ``k * world_size + rank``, so ``world_size`` ranks
    together see the same cells as one rank with ``world_size`` times the accumulation.
    """

    def __init__(self, cells: SyntheticCells, batch_size: int, packed: bool, rank: int = 0,
                 world_size: int = 1, offset: int = 0) -> None:
        self.cells, self.batch_size, self.packed = cells, batch_size, packed
        self.rank, self.world_size, self.offset = rank, world_size, offset
        self.position = 0

    def global_index(self) -> int:
        """The global batch index of the next micro-batch (seeds its masking too)."""
        return self.offset + self.position * self.world_size + self.rank

    def __iter__(self):
        return self

    def __next__(self) -> CellBatch:
        batch = self.cells.batch(self.global_index(), self.batch_size, self.packed)
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
