"""Tokenization: exact tokens on hand-built cells, references, truncation, vocabularies, medians."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import random_counts
from sigcell.data import (
    CLS_ID,
    FIRST_GENE_ID,
    MASK_ID,
    PAD_ID,
    GeneMedianSketch,
    GeneVocab,
    TokenizerConfig,
    check_adata,
    gene_medians,
    tokenize,
)


def _adata(rows: list[list[float]], genes: list[str], ids: list[str] | None = None) -> ad.AnnData:
    a = ad.AnnData(X=sp.csr_matrix(np.array(rows, dtype=np.float32)))
    a.var_names = genes
    a.obs_names = ids or [f"c{i}" for i in range(len(rows))]
    return a


def _cells(tc):
    return [(tc[i][0].tolist(), tc[i][1].tolist()) for i in range(len(tc))]


def test_special_ids_and_vocab(tmp_path):
    assert (PAD_ID, CLS_ID, MASK_ID, FIRST_GENE_ID) == (0, 1, 2, 3)
    vocab = GeneVocab.from_genes(["TP53", "ACTB", "CD4", "ACTB"], medians=None)
    assert vocab.genes == ("ACTB", "CD4", "TP53") and len(vocab) == 6
    match = vocab.match(["CD4", "XIST", "TP53", "FOO"])
    assert match.ids.tolist() == [4, -1, 5, -1] and match.n_unknown == 2
    assert match.unknown_examples == ("XIST", "FOO")
    assert vocab.decode([1, 3, 0]) == ["<cls>", "ACTB", "<pad>"]
    v2 = vocab.with_medians([1.5, 2.0, 1e-3])
    assert GeneVocab.load(v2.save(tmp_path / "vocab.json")) == v2
    (tmp_path / "bad.json").write_text('{"format": "something"}')
    with pytest.raises(ValueError, match=r"bad\.json: not a sigcell gene vocabulary"):
        GeneVocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="1 duplicate gene ids"):
        GeneVocab(["A", "B", "A"])
    with pytest.raises(ValueError, match="medians must be finite and > 0; 1 are not"):
        GeneVocab(["A", "B"], [1.0, 0.0])


def test_rank_exact_tokens():
    a = _adata([[2, 4, 0, 4], [0, 0, 1, 3]], ["A", "B", "C", "D"])
    vocab = GeneVocab(["A", "B", "C", "D"], [1000.0, 2000.0, 500.0, 4000.0])
    tc = tokenize(a, vocab, TokenizerConfig(encoding="rank"))
    # cell 0: scores A 2000/1000 = 2, B 4000/2000 = 2 (tie: lower id first), D 4000/4000 = 1
    # cell 1: C 2500/500 = 5, D 7500/4000 = 1.875
    assert tc[0][0].tolist() == [3, 4, 6] and tc[1][0].tolist() == [5, 6]
    np.testing.assert_allclose(tc[0][1], [2.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(tc[1][1], [5.0, 1.875], rtol=1e-6)
    assert tc.values.dtype == np.float32 and tc.gene_ids.dtype == np.int32
    top2 = tokenize(a, vocab, TokenizerConfig(encoding="rank", max_genes=2))
    assert top2[0][0].tolist() == [3, 4] and top2.stats["n_truncated"] == 1


def test_binned_exact_tokens():
    a = _adata([[1, 5, 5, 9], [0, 0, 7, 0]], ["A", "B", "C", "D"])
    vocab = GeneVocab.from_genes(["A", "B", "C", "D"])
    cfg = TokenizerConfig(encoding="binned", n_bins=5)
    tc = tokenize(a, vocab, cfg)
    # 4 values, ranks 0, (1, 2 tied -> 2), 3: bins 1, 3, 3, 4; a lone gene gets the top bin
    assert _cells(tc) == [([3, 4, 5, 6], [1, 3, 3, 4]), ([5], [4])]
    top2 = tokenize(a, vocab, TokenizerConfig(encoding="binned", n_bins=5, max_genes=2))
    assert _cells(top2)[0] == ([4, 6], [3, 4])  # D (9), then B over C (tie, lower id); bins kept


def test_binned_matches_digitize_reference(rng):
    a = random_counts(rng, 60, 200, density=0.3, max_count=rng.integers(3, 200))
    vocab = GeneVocab.from_adata(a)
    tc = tokenize(a, vocab, TokenizerConfig(encoding="binned", max_genes=10_000))
    x = a.X.toarray()
    for i in range(a.n_obs):
        nz = np.flatnonzero(x[i])
        v = np.log1p(x[i, nz] / x[i].sum() * 1e4)
        ref = np.digitize(v, np.quantile(v, np.linspace(0, 1, 50)))
        ids = vocab.encode(a.var_names[nz])
        order = np.argsort(ids)
        assert tc[i][0].tolist() == ids[order].tolist()
        assert tc[i][1].tolist() == ref[order].tolist()


def test_log_inputs_give_same_tokens(rng):
    a = random_counts(rng, 50, 80)
    vocab = GeneVocab.from_adata(a)
    vocab = vocab.with_medians(gene_medians(a)[np.argsort(np.argsort(a.var_names))])
    log1p = a.copy()
    log1p.X.data = np.log1p(log1p.X.data)
    lognorm = a.copy()
    lognorm.X = sp.csr_matrix(lognorm.X.multiply(1e4 / lognorm.X.sum(axis=1)), dtype=np.float32)
    lognorm.X.data = np.log1p(lognorm.X.data)
    for enc in ("rank", "binned"):
        cfg = TokenizerConfig(encoding=enc)
        ref = tokenize(a, vocab, cfg)
        same = tokenize(log1p, vocab, cfg)
        np.testing.assert_array_equal(ref.gene_ids, same.gene_ids)
        np.testing.assert_array_equal(ref.values, same.values)
        approx = tokenize(lognorm, vocab, cfg)
        np.testing.assert_allclose(approx.values, ref.values, rtol=1e-5)
        assert approx.stats["values"] == "log-normalized"
    with pytest.raises(ValueError, match=r"X holds non-integers, looks log-normalized.*layer='counts'"):
        tokenize(lognorm, vocab, TokenizerConfig(require_counts=True))


def test_sample_truncation_is_seeded_weighted_and_order_free(rng):
    n_cells, n_genes, k = 300, 40, 5
    x = np.ones((n_cells, n_genes), dtype=np.float32)
    heavy = rng.integers(0, n_genes)
    x[:, heavy] = 2000.0
    a = _adata(x.tolist(), [f"g{j:02d}" for j in range(n_genes)], [f"cell{i}" for i in range(n_cells)])
    vocab = GeneVocab.from_adata(a)
    heavy_id = int(vocab.encode([a.var_names[heavy]])[0])
    cfg = TokenizerConfig(
        encoding="binned", max_genes=k, truncation="sample", seed=int(rng.integers(1 << 30))
    )
    tc = tokenize(a, vocab, cfg)
    assert tc.stats["n_truncated"] == n_cells and (tc.n_genes == k).all()
    kept_heavy = sum(heavy_id in tc[i][0] for i in range(n_cells))
    assert kept_heavy >= n_cells - 3  # weight 2000 vs 39: kept ~99.9 % of the time
    counts = np.bincount(tc.gene_ids, minlength=len(vocab))[FIRST_GENE_ID:]
    light = np.delete(counts, heavy_id - FIRST_GENE_ID)
    assert light.min() > 0 and light.max() < 5 * light.mean()  # the light genes share the rest
    again = tokenize(a, vocab, cfg)
    np.testing.assert_array_equal(tc.gene_ids, again.gene_ids)
    perm = rng.permutation(n_cells)  # the draw depends on the cell id, not on the row or chunk
    shuffled = tokenize(a[perm].copy(), vocab, cfg, chunk_cells=7)
    for new, old in enumerate(perm):
        assert shuffled[new][0].tolist() == tc[old][0].tolist()
    other = tokenize(a, vocab, TokenizerConfig(**{**cfg.to_dict(), "seed": cfg.seed + 1}))
    assert not np.array_equal(other.gene_ids, tc.gene_ids)


def test_unknown_genes_counted_and_no_overlap(rng):
    a = random_counts(rng, 20, 30)
    vocab = GeneVocab.from_genes([f"G{j}" for j in range(20)] + ["EXTRA"])
    tc = tokenize(a, vocab, TokenizerConfig(encoding="binned"), empty="drop")
    assert tc.stats["n_unknown_genes"] == 10
    assert set(tc.gene_ids.tolist()) <= set(vocab.encode([f"G{j}" for j in range(20)]).tolist())
    other = GeneVocab.from_genes(["ENSG00000141510", "ENSG00000075624"], gene_id_kind="ensembl")
    with pytest.raises(ValueError, match=r"none of its 30 genes is in the vocabulary \(2 genes, ensembl\)"):
        tokenize(check_adata(a, source="mine.h5ad"), other, TokenizerConfig(encoding="binned"))


def test_empty_cells(rng):
    a = random_counts(rng, 12, 10, dense=True)
    a.X[[3, 7]] = 0
    vocab = GeneVocab.from_genes(a.var_names)
    with pytest.raises(
        ValueError, match=r"e.h5ad: 2 of 12 cells have no nonzero vocabulary gene.*--drop-empty"
    ):
        tokenize(check_adata(a, source="e.h5ad"), vocab, TokenizerConfig(encoding="binned"))
    tc = tokenize(a, vocab, TokenizerConfig(encoding="binned"), empty="drop")
    assert tc.cell_index.tolist() == [i for i in range(12) if i not in (3, 7)]
    assert tc.stats["n_empty_dropped"] == 2


def test_rank_needs_medians(rng):
    a = random_counts(rng)
    with pytest.raises(ValueError, match="rank encoding needs per-gene medians"):
        tokenize(a, GeneVocab.from_adata(a), TokenizerConfig(encoding="rank"))


def test_median_sketch_close_to_exact(rng):
    parts = [random_counts(rng, int(rng.integers(50, 120)), 40, density=0.5, max_count=300) for _ in range(3)]
    sketch = GeneMedianSketch()
    for p in parts:
        sketch.add(p.X, list(p.var_names))
    got = sketch.medians([f"G{j}" for j in range(40)] + ["never"])
    norm = sp.vstack([p.X.multiply(1e4 / p.X.sum(axis=1)).tocsc() for p in parts]).tocsc()
    exact = [np.median(norm[:, j].data) for j in range(40)]
    np.testing.assert_allclose(got[:40], exact, rtol=3e-3)
    assert np.isnan(got[40])


def test_config_validation():
    with pytest.raises(ValueError, match=r"encoding: expected one of \('rank', 'binned'\), got 'bins'"):
        TokenizerConfig(encoding="bins")
    with pytest.raises(ValueError, match=r"max_genes: expected >= 1 or None \(all genes\), got 0"):
        TokenizerConfig(max_genes=0)
