"""What the trainer reads: an endless stream of micro-batches for this rank, plus held-out batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sigcell.data.batch import CellBatch
from sigcell.train.config import TrainConfig
from sigcell.train.parallel import DistInfo
from sigcell.train.synthetic import SyntheticCells, SyntheticLoader, mix_seed

__all__ = ["TrainData", "build_data", "mix_seed"]


class StatefulIterator(Protocol):
    def __next__(self) -> CellBatch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainData:
    """The data of one rank.

    Attributes
    ----------
    train
        Endless iterator of this rank's micro-batches, with ``state_dict`` / ``load_state_dict``.
    val_source
        ``fn(n) -> list[(index, CellBatch)]``: this rank's share (``index % world == rank``) of the same
        ``n`` held-out micro-batches at every call; ``index`` seeds the masking.
    vocab_path
        Gene vocabulary file copied into checkpoints, or None.
    """

    train: StatefulIterator
    val_source: Any
    vocab_path: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def val_batches(self, n: int) -> list[tuple[int, CellBatch]]:
        return self.val_source(n)

    def state_dict(self) -> dict[str, Any]:
        return self.train.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train.load_state_dict(state)


def build_data(config: TrainConfig, dist: DistInfo) -> TrainData:
    """Synthetic cells when ``config.data.corpus`` is None, else the corpus (see ``sigcell.data``)."""
    if config.data.corpus is not None:
        from sigcell.train.corpus_data import build_corpus_data

        return build_corpus_data(config, dist)
    return synthetic_data(config, dist)


def synthetic_data(config: TrainConfig, dist: DistInfo) -> TrainData:
    """Synthetic cells (:class:`SyntheticCells`) shaped by ``config.data`` and ``config.model``."""
    d, m = config.data, config.model
    max_genes = d.synthetic_max_genes if d.max_genes is None else min(d.synthetic_max_genes, d.max_genes)
    min_genes = min(d.synthetic_min_genes, max_genes)
    make = lambda seed: SyntheticCells(m.vocab_size, m.value_encoding, m.n_bins, min_genes, max_genes,
                                       d.synthetic_cell_types, seed)
    packed = d.layout == "packed"
    train_cells = make(config.seed)
    loader = SyntheticLoader(train_cells, d.batch_size, packed, dist.rank, dist.world_size)
    # Held-out cells: the same gene programs, batches drawn far beyond any training index.
    val_offset = 1 << 40
    val = lambda n: [(i, train_cells.batch(val_offset + i, d.batch_size, packed))
                     for i in range(dist.rank, n, dist.world_size)]
    return TrainData(train=loader, val_source=val, vocab_path=d.vocab, info={"source": "synthetic"})
