"""Reading h5ad files: matrix / gene selection, value detection, and every bad input."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import random_counts
from sigcell.data import check_adata, detect_values, read_h5ad, require_counts


@pytest.mark.parametrize("dense", [False, True])
def test_read_h5ad_round_trip(tmp_path, rng, dense):
    adata = random_counts(rng, dense=dense)
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path)
    out = read_h5ad(path)
    assert sp.isspmatrix_csr(out.X) and out.X.dtype == np.float32
    np.testing.assert_array_equal(out.X.toarray(), np.asarray(sp.csr_matrix(adata.X).toarray()))
    assert list(out.var_names) == list(adata.var_names)
    assert list(out.obs_names) == list(adata.obs_names)
    assert out.uns["sigcell_input"]["values"] == "counts"
    assert out.uns["sigcell_input"]["source"] == str(path)


def test_layer_raw_and_gene_col(tmp_path, rng):
    counts = random_counts(rng)
    adata = counts.copy()
    adata.layers["counts"] = counts.X.copy()
    adata.X = rng.normal(size=adata.shape).astype(np.float32)  # scaled, like a processed file
    adata.var["symbol"] = [f"S{j}" for j in range(adata.n_vars)]
    adata.raw = counts
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path)
    by_layer = read_h5ad(path, layer="counts", gene_col="symbol")
    assert list(by_layer.var_names) == list(adata.var["symbol"])
    np.testing.assert_array_equal(by_layer.X.toarray(), counts.X.toarray())
    by_raw = read_h5ad(path, use_raw=True)
    np.testing.assert_array_equal(by_raw.X.toarray(), counts.X.toarray())
    assert by_raw.uns["sigcell_input"]["matrix"] == "raw.X"
    with pytest.raises(ValueError, match=r"holds \d+ negative values.*layer='counts' or use_raw=True"):
        read_h5ad(path)
    for kw in ({"layer": "counts", "gene_col": "symbol"}, {"use_raw": True}, {}):  # same as the full read
        try:
            want = check_adata(ad.read_h5ad(path), source=str(path), **kw)
        except ValueError as err:
            with pytest.raises(ValueError, match=re.escape(str(err))):
                read_h5ad(path, **kw)
            continue
        got = read_h5ad(path, **kw)
        assert (got.X != want.X).nnz == 0 and list(got.var_names) == list(want.var_names)
        assert got.obs.equals(want.obs) and got.uns["sigcell_input"] == want.uns["sigcell_input"]


def test_read_h5ad_reads_only_the_chosen_matrix(tmp_path, rng, monkeypatch):
    import anndata.io

    counts = random_counts(rng)
    adata = counts.copy()
    adata.layers["counts"] = counts.X.copy()
    adata.layers["dense_normalized"] = rng.random(adata.shape).astype(np.float32)
    adata.raw = counts
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path)
    read = []
    real = anndata.io.read_elem
    monkeypatch.setattr(anndata.io, "read_elem", lambda elem: read.append(elem.name) or real(elem))
    read_h5ad(path, layer="counts")
    assert sorted(read) == ["/layers/counts", "/obs", "/var"]
    # A matrix the file lacks: the full read explains.
    with pytest.raises(ValueError, match=r"no layer 'nope'; available layers: \['counts', 'dense_normalized"):
        read_h5ad(path, layer="nope")


def test_detect_values_kinds(rng):
    counts = random_counts(rng).X
    assert detect_values(counts).kind == "counts"
    log_counts = counts.copy()
    log_counts.data = np.log1p(log_counts.data)
    assert detect_values(log_counts).kind == "log1p-counts"
    norm = counts.multiply(1e4 / counts.sum(axis=1)).tocsr()
    assert detect_values(norm).kind == "normalized"
    lognorm = norm.copy()
    lognorm.data = np.log1p(lognorm.data)
    info = detect_values(lognorm)
    assert info.kind == "log-normalized" and not info.is_counts
    with pytest.raises(ValueError, match=r"pbmc.h5ad: X holds non-integers.*layer='counts'.*binned"):
        require_counts(info, where="pbmc.h5ad: X", encoding="rank")
    require_counts(detect_values(log_counts), where="x", encoding="rank")  # exact counts via expm1


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.h5ad: no such file"):
        read_h5ad(tmp_path / "nope.h5ad")


def test_truncated_file(tmp_path, rng):
    path = tmp_path / "x.h5ad"
    random_counts(rng).write_h5ad(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"x.h5ad: cannot be read as .h5ad.*truncated"):
        read_h5ad(path)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (np.nan, r"holds 3 NaN and 0 infinite"),
        (np.inf, r"holds 0 NaN and 3 infinite"),
        (-2.0, r"holds 3 negative"),
    ],
)
def test_bad_values(tmp_path, rng, bad, pattern):
    adata = random_counts(rng, dense=True)
    adata.X[[0, 1, 2], [0, 1, 2]] = bad
    path = tmp_path / "bad.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(ValueError, match=rf"bad.h5ad: X {pattern}"):
        read_h5ad(path)


def test_duplicate_genes(rng):
    adata = random_counts(rng)
    adata.var_names = ["A", "B", "A", "C", "B"] + [f"g{i}" for i in range(adata.n_vars - 5)]
    with pytest.raises(ValueError, match=r"2 duplicate gene ids in var_names \(e.g. \['A', 'B'\]\)"):
        check_adata(adata, source="dup.h5ad")


def test_wrong_gene_col_layer_raw(rng):
    adata = random_counts(rng)
    adata.var["symbol"] = "x"
    with pytest.raises(ValueError, match=r"no var column 'ensembl'; available columns: \['symbol'\]"):
        check_adata(adata, gene_col="ensembl")
    with pytest.raises(ValueError, match=r"no layer 'counts'; available layers: none"):
        check_adata(adata, layer="counts")
    with pytest.raises(ValueError, match=r"use_raw=True \(--use-raw\) but the AnnData has no .raw"):
        check_adata(adata, use_raw=True)
    with pytest.raises(ValueError, match=r"\d+ duplicate gene ids in var\['symbol'\]"):
        check_adata(adata, gene_col="symbol")


def test_empty_gene_ids(rng):
    adata = random_counts(rng)
    adata.var["sym"] = ["" if j % 3 == 0 else f"s{j}" for j in range(adata.n_vars)]
    with pytest.raises(ValueError, match=r"10 genes have an empty var\['sym'\]"):
        check_adata(adata, gene_col="sym")


def test_check_adata_drops_explicit_zeros(rng):
    adata = random_counts(rng)
    x = adata.X.tocsr()
    x.data[:5] = 0  # explicit zeros must not become tokens
    adata = ad.AnnData(X=x, obs=adata.obs, var=adata.var)
    stored = adata.X.nnz
    out = check_adata(adata)
    assert out.X.nnz == stored - 5
    assert adata.X.nnz == stored  # the caller's matrix is untouched
