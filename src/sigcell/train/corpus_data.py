"""Training data from a prepared corpus (``sigcell prepare`` / ``sigcell.data.prepare_corpus``)."""

from __future__ import annotations

from typing import Any

from sigcell.data.batch import CellBatch
from sigcell.train.config import TrainConfig
from sigcell.train.data import TrainData
from sigcell.train.parallel import DistInfo

__all__ = ["EndlessLoader", "build_corpus_data", "check_corpus_matches"]


class EndlessLoader:
    """Epoch after epoch of a ``CellLoader``; its ``state_dict`` (epoch, position) resumes exactly."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> CellBatch:
        for _ in range(2):  # the second try starts the next epoch
            if self._it is None:
                self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        msg = "the corpus loader yields no batch for this rank; lower data.batch_size or use fewer processes"
        raise RuntimeError(msg)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
        self._it = None


def check_corpus_matches(config: TrainConfig, corpus) -> None:
    """Raise ``ValueError`` if the run cannot use the corpus (encoding, bins, vocabulary size, gene cap)."""
    tok, model = corpus.config, config.model
    cap = config.data.max_genes
    if cap is not None and cap != tok.max_genes:
        # A corpus is tokenized once, at prepare time; data.max_genes only records that cap (embedding
        # tokenizes new cells with it), so a different value would be silently ignored in training.
        prepared = "every expressed gene" if tok.max_genes is None else f"at most {tok.max_genes} genes"
        msg = (f"data.max_genes ({cap}) differs from the corpus, which was prepared with {prepared} per "
               "cell; a corpus is not re-truncated at training time. Drop data.max_genes, or re-run "
               f"`sigcell prepare --max-genes {cap}`")
        raise ValueError(msg)
    if tok.encoding != model.value_encoding:
        msg = (f"the corpus is tokenized with encoding {tok.encoding!r} but model.value_encoding is "
               f"{model.value_encoding!r}; pass --set model.value_encoding={tok.encoding}")
        raise ValueError(msg)
    if tok.encoding == "binned" and tok.n_bins != model.n_bins:
        msg = (f"the corpus has {tok.n_bins} bins but model.n_bins is {model.n_bins}; "
               f"pass --set model.n_bins={tok.n_bins}")
        raise ValueError(msg)
    if len(corpus.vocab) != model.vocab_size:
        msg = (f"the corpus vocabulary has {len(corpus.vocab)} token ids but model.vocab_size is "
               f"{model.vocab_size}; pass --set model.vocab_size={len(corpus.vocab)}")
        raise ValueError(msg)


def build_corpus_data(config: TrainConfig, dist: DistInfo) -> TrainData:
    """Shuffled, length-bucketed batches of the train split (this rank's share), and the val split."""
    from sigcell.data import Corpus, make_dataloader

    d = config.data
    train = Corpus(d.corpus, split="train")
    check_corpus_matches(config, train)
    sizes = {"batch_size": d.batch_size} if d.token_budget is None else {"token_budget": d.token_budget}
    try:
        loader = make_dataloader(train, **sizes, layout=d.layout, shuffle=True, seed=config.seed,
                                 rank=dist.rank, world_size=dist.world_size, drop_last=d.token_budget is None,
                                 num_workers=d.num_workers)
    except ValueError as err:  # e.g. a token budget below the longest cell: name the config key
        raise ValueError(f"data.token_budget / data.batch_size: {err}") from None
    val_cells = Corpus(d.corpus, split="val")
    if len(val_cells) == 0:
        val_cells = train  # a corpus prepared without a val split: held-out loss = training loss
    val_loader = make_dataloader(val_cells, **sizes, layout=d.layout, shuffle=False, bucket=False)
    vocab_path = d.vocab or str(train.path / train.manifest["vocab"]["file"])

    def val_source(n: int) -> list[tuple[int, CellBatch]]:
        out = []
        for i, batch in enumerate(val_loader.sampler.plan(0)[:n]):
            if i % dist.world_size == dist.rank:
                out.append((i, val_loader.collate(batch)))
        return out

    return TrainData(train=EndlessLoader(loader), val_source=val_source, vocab_path=vocab_path,
                     info={"source": "corpus", "cells": len(train), "val_cells": len(val_cells)})
