"""A pooled corpus: one symbol-keyed vocabulary over several inputs, the evaluation hold-out kept out
(the same cells ``sigcell compare`` scores), full-length cells by default."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from conftest import random_counts
from sigcell.cli import main
from sigcell.data import Corpus, TokenizerConfig, heldout_cells, prepare_corpus, read_h5ad


@pytest.fixture
def two_files(tmp_path, rng, monkeypatch):
    """in0: symbols G0..G39; in1: Ensembl ids (with versions) of G20..G59 under a fake GENCODE table."""
    import sigcell.data.genes as genes_mod

    ens = {f"ENSG{int(x):011d}": f"G{j}" for j, x in enumerate(rng.choice(10**9, 60, replace=False))}
    by_symbol = {v: k for k, v in ens.items()}
    monkeypatch.setattr(genes_mod, "_SYMBOLS", ens)  # what gencode_table() would give
    a = random_counts(rng, int(rng.integers(60, 90)), 40, density=0.3)
    b = random_counts(rng, int(rng.integers(60, 90)), 42, density=0.3)
    b.var_names = [f"{by_symbol[f'G{j}']}.{int(rng.integers(1, 20))}" for j in range(20, 60)] + [
        "ENSG00000000001.1", "MYGENE"]  # one id GENCODE lacks, one plain symbol
    paths = [tmp_path / "in0.h5ad", tmp_path / "in1.h5ad"]
    a.write_h5ad(paths[0])
    b.write_h5ad(paths[1])
    return paths


def test_shared_vocabulary_counts_genes_per_input(tmp_path, two_files):
    m = prepare_corpus(two_files, tmp_path / "c", config=TokenizerConfig(encoding="binned"))
    corpus = Corpus(tmp_path / "c", split="all")
    genes = set(corpus.vocab.genes)
    assert {f"G{j}" for j in range(60)} <= genes and "ENSG00000000001" in genes
    assert not any(g.startswith("ENSG") and g != "ENSG00000000001" for g in genes)  # all others mapped
    g0, g1 = (p["genes"] for p in m["inputs"])
    assert (g0["symbol"], g0["ensembl"], g0["local"], g0["unmapped"], g0["n_shared"]) == (40, 0, 0, 0, 20)
    assert (g1["symbol"], g1["ensembl"], g1["local"], g1["unmapped"], g1["n_shared"]) == (1, 40, 0, 1, 20)
    assert m["vocab"]["gene_id_kind"] == "symbol" and m["n_heldout"] == 0  # files: no hold-out by default
    # the same gene from both inputs is one token: G25 of in1 (an Ensembl id) reads as G25 of in0
    src, _rows = corpus.origin(np.arange(len(corpus)))
    ids, _vals, lens = corpus.gather(np.arange(len(corpus)))
    cell_of = np.repeat(np.arange(len(corpus)), lens)
    tok = corpus.vocab.encode(["G25"])[0]
    assert {int(s) for s in src[cell_of[ids == tok]]} == {0, 1}


def test_heldout_cells_never_enter_the_corpus_and_match_compare(tmp_path, two_files):
    from sigcell.eval.prepare import DatasetInput, PrepareConfig, prepare

    m = prepare_corpus(two_files, tmp_path / "c", config=TokenizerConfig(encoding="binned"),
                       label_col="cell_type")
    corpus = Corpus(tmp_path / "c", split="all")
    held = corpus.heldout_cells()
    assert set(held) == {str(p) for p in two_files}
    for i, path in enumerate(two_files):
        adata = read_h5ad(path)
        ids = heldout_cells(str(path), "cell_type")
        assert held[str(path)] == ids and abs(len(ids) - 0.2 * adata.n_obs) <= 3  # rounded per type
        mine = [c for c, s in zip(corpus.cell_ids(np.arange(len(corpus))), corpus.origin(
            np.arange(len(corpus)))[0], strict=True) if s == i]
        assert not set(mine) & set(ids)
        assert sorted([*mine, *ids]) == sorted(adata.obs_names)  # every other cell is in the corpus
        # rows stay rows of the input file
        rows = corpus.origin(np.arange(len(corpus)))[1][corpus.origin(np.arange(len(corpus)))[0] == i]
        assert list(adata.obs_names[rows]) == mine
    entry = m["inputs"][0]["heldout"]
    assert (entry["label_col"], entry["fraction"], entry["max_heldout"], entry["seed"]) == ("cell_type", 0.2,
                                                                                           1000, 0)
    # sigcell compare scores exactly these cells (its prepare stage, same defaults)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare([DatasetInput("in0", str(two_files[0]), "file", "cell_type")], tmp_path / "prep",
                PrepareConfig(max_genes=16, pca_comps=5, n_top_genes=30), preset="tiny")
    tokens = np.load(tmp_path / "prep" / "in0" / "tokens.npz")
    adata = read_h5ad(two_files[0])
    assert list(adata.obs_names[tokens["heldout"]]) == held[str(two_files[0])]  # no empty cells here


def test_full_length_by_default_and_cap_on_request(tmp_path, rng):
    a = random_counts(rng, 30, 200, density=0.5)
    a.write_h5ad(tmp_path / "long.h5ad")
    m = prepare_corpus([tmp_path / "long.h5ad"], tmp_path / "full", config=TokenizerConfig(encoding="binned"))
    corpus = Corpus(tmp_path / "full", split="all")
    nnz = np.diff(read_h5ad(tmp_path / "long.h5ad").X.indptr)
    np.testing.assert_array_equal(corpus.n_genes, nnz)  # every expressed gene
    assert m["n_truncated"] == 0 and m["tokenizer"]["max_genes"] is None
    cap = int(rng.integers(10, 50))
    rc = main(["prepare", str(tmp_path / "long.h5ad"), "--out", str(tmp_path / "cut"), "--encoding", "binned",
               "--max-genes", str(cap), "--quiet"])
    assert rc == 0
    cut = Corpus(tmp_path / "cut", split="all")
    assert cut.n_genes.max() == cap and cut.manifest["n_truncated"] == int((nnz > cap).sum())


def test_cli_holdout_options_and_summary(tmp_path, two_files, capsys):
    rc = main(["prepare", *map(str, two_files), "--out", str(tmp_path / "c"), "--label-col", "cell_type",
               "--heldout-fraction", "0.3", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "genes: symbol/ensembl/local/unmapped, shared" in text and "1/40/0/1, 20 shared" in text
    assert "held out for evaluation (not in the corpus)" in text
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    n0 = read_h5ad(two_files[0]).n_obs
    ids = heldout_cells(str(two_files[0]), "cell_type", fraction=0.3)
    assert manifest["inputs"][0]["heldout"]["cell_ids"] == ids and abs(len(ids) - 0.3 * n0) <= 3
    assert manifest["inputs"][0]["n_cells"] == n0 - len(ids)
    rc = main(["prepare", *map(str, two_files), "--out", str(tmp_path / "d"), "--label-col", "nope",
               "--quiet"])
    assert rc == 2 and "no label column 'nope'" in capsys.readouterr().err


@pytest.mark.network
def test_pooled_registered_datasets(tmp_path, data_cache, monkeypatch):
    from sigcell import datasets

    monkeypatch.setenv("SIGCELL_DATA_DIR", str(data_cache))
    m = prepare_corpus(["pbmc68k", "citeseq", "scmark"], tmp_path / "c",
                       config=TokenizerConfig(encoding="binned"))
    by = {p["name"]: p for p in m["inputs"]}
    assert by["citeseq"]["genes"]["local"] == 500 and by["citeseq"]["genes"]["n_shared"] == 0
    assert by["pbmc68k"]["genes"]["symbol"] == 765 and by["pbmc68k"]["genes"]["n_shared"] > 500
    for name in by:
        ids = heldout_cells(name)
        assert by[name]["heldout"]["cell_ids"] == ids
        assert by[name]["n_cells"] + len(ids) == datasets.info(name).shape[0]  # no empty cells dropped
    corpus = Corpus(tmp_path / "c", split="all")
    assert not set(corpus.cell_ids(np.arange(len(corpus)))) & {c for v in corpus.heldout_cells().values()
                                                               for c in v}
    assert m["n_truncated"] == 0
