"""Data: AnnData in, tokenized cells out.

Reading
    ``read_h5ad(path, *, layer=None, use_raw=False, gene_col=None) -> AnnData`` (validated, CSR X);
    ``check_adata(adata, ...)`` for an in-memory AnnData; ``detect_values(X) -> ValuesInfo``
    (counts / log1p-counts / log-normalized / normalized); ``require_counts(info, ...)``.
Vocabulary
    ``GeneVocab`` (``from_adata``, ``from_genes``, ``match``/``encode``, ``save``/``load`` JSON);
    special ids ``PAD_ID = 0``, ``CLS_ID = 1``, ``MASK_ID = 2``; genes from ``FIRST_GENE_ID = 3``.
Gene keys
    ``gene_keys(genes, dataset_local=False, map_ensembl=True) -> GeneKeys`` (symbols kept, Ensembl ids
    -> GENCODE symbols, dataset-local names kept, counts per kind); ``harmonize_genes(adata)`` renames
    ``var_names`` to those keys (what ``prepare_corpus`` and ``sigcell.eval.embed`` do).
Evaluation hold-out
    ``heldout_cells(adata_or_name, label_col=None, fraction=0.2, max_heldout=1000, seed=0) -> list[str]``:
    the cells ``sigcell compare`` scores and ``prepare_corpus`` keeps out; ``heldout_split`` (rows);
    ``stratified_split`` (the rule).
Tokenization
    ``TokenizerConfig(encoding="rank" | "binned", n_bins=51, max_genes=None (all genes), truncation="top" |
    "sample", seed=0)``; ``tokenize(adata, vocab, config) -> TokenizedCells``; ``gene_medians``.
Batching
    ``make_dataloader(cells, batch_size=... | token_budget=..., layout="padded" | "packed", shuffle,
    seed, rank, world_size, bucket) -> CellLoader`` (iterable of ``CellBatch``, ``state_dict`` /
    ``load_state_dict``); ``iter_batches(adata, vocab, config, ...)`` for in-memory embedding;
    ``collate_padded`` / ``collate_packed``; ``LengthBucketSampler``.
Corpus
    ``prepare_corpus(inputs, out_dir, ...) -> manifest`` (``sigcell prepare``);
    ``Corpus(path, split="train" | "val" | "all")`` memory-mapped; ``Corpus.heldout_cells()``.
"""

from __future__ import annotations

import importlib

# numpy only; and `tokenize` must be the function, not the submodule of that name.
from sigcell.data.tokenize import GeneMedianSketch, TokenizedCells, TokenizerConfig, gene_medians, tokenize
from sigcell.data.vocab import CLS_ID, FIRST_GENE_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS, GeneVocab, VocabMatch

# Where each other name lives: imported on first use (PEP 562), so that `import sigcell.data.split` (the CLI's
# defaults) does not load torch, anndata and scanpy.
_EXPORTS = {
    "CellBatch": "batch",
    "collate_packed": "collate",
    "collate_padded": "collate",
    "Corpus": "corpus",
    "prepare_corpus": "corpus",
    "summarize_manifest": "corpus",
    "GeneKeys": "genes",
    "gene_keys": "genes",
    "harmonize_genes": "genes",
    "ValuesInfo": "io",
    "check_adata": "io",
    "detect_values": "io",
    "read_h5ad": "io",
    "require_counts": "io",
    "CellLoader": "loader",
    "iter_batches": "loader",
    "make_dataloader": "loader",
    "LengthBucketSampler": "sampler",
    "HeldoutSplit": "split",
    "heldout_cells": "split",
    "heldout_split": "split",
    "stratified_split": "split",
    "CLS_ID": "vocab",
    "FIRST_GENE_ID": "vocab",
    "MASK_ID": "vocab",
    "PAD_ID": "vocab",
    "SPECIAL_TOKENS": "vocab",
    "GeneVocab": "vocab",
    "VocabMatch": "vocab",
}

__all__ = [
    "CLS_ID",
    "FIRST_GENE_ID",
    "MASK_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "CellBatch",
    "CellLoader",
    "Corpus",
    "GeneKeys",
    "GeneMedianSketch",
    "GeneVocab",
    "HeldoutSplit",
    "LengthBucketSampler",
    "TokenizedCells",
    "TokenizerConfig",
    "ValuesInfo",
    "VocabMatch",
    "check_adata",
    "collate_packed",
    "collate_padded",
    "detect_values",
    "gene_keys",
    "gene_medians",
    "harmonize_genes",
    "heldout_cells",
    "heldout_split",
    "iter_batches",
    "make_dataloader",
    "prepare_corpus",
    "read_h5ad",
    "require_counts",
    "stratified_split",
    "summarize_manifest",
    "tokenize",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module 'sigcell.data' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"sigcell.data.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
