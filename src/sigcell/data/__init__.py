"""Data: AnnData in, tokenized cells out.

Reading
    ``read_h5ad(path, *, layer=None, use_raw=False, gene_col=None) -> AnnData`` (validated, CSR X);
    ``check_adata(adata, ...)`` for an in-memory AnnData; ``detect_values(X) -> ValuesInfo``
    (counts / log1p-counts / log-normalized / normalized); ``require_counts(info, ...)``.
Vocabulary
    ``GeneVocab`` (``from_adata``, ``from_genes``, ``match``/``encode``, ``save``/``load`` JSON);
    special ids ``PAD_ID = 0``, ``CLS_ID = 1``, ``MASK_ID = 2``; genes from ``FIRST_GENE_ID = 3``.
Tokenization
    ``TokenizerConfig(encoding="rank" | "binned", n_bins=51, max_genes=2048, truncation="top" |
    "sample", seed=0)``; ``tokenize(adata, vocab, config) -> TokenizedCells``; ``gene_medians``.
Batching
    ``make_dataloader(cells, batch_size=... | token_budget=..., layout="padded" | "packed", shuffle,
    seed, rank, world_size, bucket) -> CellLoader`` (iterable of ``CellBatch``, ``state_dict`` /
    ``load_state_dict``); ``iter_batches(adata, vocab, config, ...)`` for in-memory embedding;
    ``collate_padded`` / ``collate_packed``; ``LengthBucketSampler``.
Corpus
    ``prepare_corpus(inputs, out_dir, ...) -> manifest`` (``sigcell prepare``);
    ``Corpus(path, split="train" | "val" | "all")`` memory-mapped.
"""

from sigcell.data.batch import CellBatch
from sigcell.data.collate import collate_packed, collate_padded
from sigcell.data.corpus import Corpus, prepare_corpus, summarize_manifest
from sigcell.data.io import ValuesInfo, check_adata, detect_values, read_h5ad, require_counts
from sigcell.data.loader import CellLoader, iter_batches, make_dataloader
from sigcell.data.sampler import LengthBucketSampler
from sigcell.data.tokenize import GeneMedianSketch, TokenizedCells, TokenizerConfig, gene_medians, tokenize
from sigcell.data.vocab import CLS_ID, FIRST_GENE_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS, GeneVocab, VocabMatch

__all__ = [
    "CLS_ID",
    "FIRST_GENE_ID",
    "MASK_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "CellBatch",
    "CellLoader",
    "Corpus",
    "GeneMedianSketch",
    "GeneVocab",
    "LengthBucketSampler",
    "TokenizedCells",
    "TokenizerConfig",
    "ValuesInfo",
    "VocabMatch",
    "check_adata",
    "collate_packed",
    "collate_padded",
    "detect_values",
    "gene_medians",
    "iter_batches",
    "make_dataloader",
    "prepare_corpus",
    "read_h5ad",
    "require_counts",
    "summarize_manifest",
    "tokenize",
]
