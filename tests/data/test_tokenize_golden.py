"""Tokens of a seeded synthetic dataset, fixed against the implementation before the speed-ups.

The hashes were computed with the per-chunk double-argsort ``_row_order`` and the per-gene median
loop (commit 49ec831); any change to the tokenizer's hot paths must keep them bit-identical.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from sigcell.data import TokenizerConfig
from sigcell.data.tokenize import _row_order, _row_order_exact, gene_medians, tokenize
from sigcell.data.vocab import GeneVocab
from sigcell.datasets import synthetic

# (encoding, truncation, max_genes) -> (n_tokens, n_truncated, sha256[:16] of gene_ids + values + offsets)
GOLDEN = {
    ("rank", "top", 150): (44745, 291, "eaff2800351495da"),
    ("rank", "top", 2048): (137213, 1, "d11e3e263574ce47"),
    ("rank", "sample", 150): (44745, 291, "d7af0b71f9e1390b"),
    ("rank", "sample", 2048): (137213, 1, "73cadc6ad86469d0"),
    ("binned", "top", 150): (44745, 291, "4af2daaf5c1af747"),
    ("binned", "top", 2048): (137213, 1, "d533a36c6e7dcfd2"),
    ("binned", "sample", 150): (44745, 291, "bc4bdd12925f94e3"),
    ("binned", "sample", 2048): (137213, 1, "62362b3cf160e4fc"),
}
MEDIANS_SHA = "ea7fddf42d815518"


def _sha(*arrays: np.ndarray) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()[:16]


@pytest.fixture(scope="module")
def golden_data():
    adata = synthetic(300, 3000, median_genes=400, seed=7)
    vocab = GeneVocab.from_genes(list(adata.var_names)).with_medians(gene_medians(adata))
    return adata, vocab


def test_medians_unchanged(golden_data):
    _, vocab = golden_data
    assert _sha(np.asarray(vocab.medians, np.float64)) == MEDIANS_SHA


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_tokens_unchanged(golden_data, key):
    adata, vocab = golden_data
    enc, trunc, max_genes = key
    config = TokenizerConfig(encoding=enc, truncation=trunc, max_genes=max_genes, seed=3)
    cells = tokenize(adata, vocab, config, chunk_cells=128)
    n_tokens, n_truncated, sha = GOLDEN[key]
    assert cells.stats["n_tokens"] == n_tokens
    assert cells.stats["n_truncated"] == n_truncated
    assert _sha(cells.gene_ids, cells.values, cells.offsets) == sha


def test_row_order_matches_exact_sort_with_near_ties():
    """Keys equal in their top bits but not in full (the fast path's tie fix-up), exact ties,
    negative keys, -0.0 and a single-entry row."""
    rng = np.random.default_rng(0)
    lens = np.array([1, 50, 300, 7, 1000])
    rows = np.repeat(np.arange(lens.size) * 3, lens)  # non-contiguous row numbers
    base = rng.choice([1.0, 2.0, -3.0, 0.0, -0.0, 1e-300], rows.size)
    key = base * (1 + rng.integers(0, 4, rows.size) * 2.0**-40)  # differ only in low mantissa bits
    key[::5] = rng.normal(size=key[::5].size)
    np.testing.assert_array_equal(_row_order(rows, key), _row_order_exact(rows, key))
    shuffled = rng.permutation(rows)  # unsorted rows take the exact path
    np.testing.assert_array_equal(_row_order(shuffled, key), _row_order_exact(shuffled, key))
