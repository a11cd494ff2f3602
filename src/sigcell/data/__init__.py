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

from sigcell.data.batch import CellBatch
from sigcell.data.collate import collate_packed, collate_padded
from sigcell.data.corpus import Corpus, prepare_corpus, summarize_manifest
from sigcell.data.genes import GeneKeys, gene_keys, harmonize_genes
from sigcell.data.io import ValuesInfo, check_adata, detect_values, read_h5ad, require_counts
from sigcell.data.loader import CellLoader, iter_batches, make_dataloader
from sigcell.data.sampler import LengthBucketSampler
from sigcell.data.split import HeldoutSplit, heldout_cells, heldout_split, stratified_split
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
