"""Gene keys: symbols kept, Ensembl ids (with or without version) mapped to symbols, local genes kept."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_counts
from sigcell.data import check_adata, gene_keys, harmonize_genes
from sigcell.data.genes import strip_version


def _table(rng, n):
    """A fake GENCODE mapping: n random Ensembl ids -> SYMn."""
    ids = [f"ENSG{int(x):011d}" for x in rng.choice(10**9, n, replace=False)]
    return ids, {e: f"SYM{i}" for i, e in enumerate(ids)}


def test_ensembl_ids_map_to_symbols_with_and_without_version(rng):
    ids, table = _table(rng, 6)
    genes = [ids[0], f"{ids[1]}.{int(rng.integers(1, 30))}", "CD3E", "ENSG00000000001.4", ids[2]]
    gk = gene_keys(genes, table=table)
    assert gk.keys.tolist() == ["SYM0", "SYM1", "CD3E", "ENSG00000000001", "SYM2"]
    assert gk.kinds.tolist() == ["ensembl", "ensembl", "symbol", "unmapped", "ensembl"]
    assert gk.counts() == {"symbol": 1, "ensembl": 3, "local": 0, "unmapped": 1}
    assert gk.unmapped_examples == ("ENSG00000000001.4",)
    assert strip_version("ENSG00000141510.18") == "ENSG00000141510" and strip_version("TP53.1") == "TP53.1"


def test_symbol_collisions_and_versions_keep_keys_unique(rng):
    ids, table = _table(rng, 3)
    table[ids[1]] = "SYM0"  # two Ensembl ids with one symbol
    genes = ["SYM2", ids[2], ids[0], ids[1], f"{ids[0]}.7"]
    gk = gene_keys(genes, table=table)
    # SYM2 is already a column: the id keeps its own key; the second id of SYM0 too, and so does a
    # second version of the first id (its symbol is taken)
    assert gk.keys.tolist() == ["SYM2", ids[2], "SYM0", ids[1], ids[0]]
    assert gk.kinds.tolist() == ["symbol", "unmapped", "ensembl", "unmapped", "unmapped"]
    # two versions of an id the table lacks: the bare id once, then the full name
    two = gene_keys(["ENSG00000000007.1", "ENSG00000000007.2"], table=table)
    assert two.keys.tolist() == ["ENSG00000000007", "ENSG00000000007.2"]


def test_local_and_keep_ensembl(rng):
    ids, table = _table(rng, 2)
    gk = gene_keys(["zeisel_g0000", "zeisel_g0001"], dataset_local=True, table=table)
    assert gk.counts() == {"symbol": 0, "ensembl": 0, "local": 2, "unmapped": 0}
    kept = gene_keys([f"{ids[0]}.3", ids[1]], map_ensembl=False)  # no table needed
    assert kept.keys.tolist() == [ids[0], ids[1]] and set(kept.kinds) == {"unmapped"}


def test_no_table_read_without_ensembl_ids(monkeypatch):
    import sigcell.data.genes as genes_mod

    def boom():
        raise AssertionError("the GENCODE table must not be read")

    monkeypatch.setattr(genes_mod, "_SYMBOLS", None)
    monkeypatch.setattr("sigcell.datasets.gencode_table", boom)
    assert gene_keys(["CD3E", "MS4A1"]).counts()["symbol"] == 2


def test_harmonize_renames_in_place_and_records_counts(rng):
    ids, table = _table(rng, 10)
    a = random_counts(rng, 20, 12)
    a.var_names = [*ids[:10], "GAPDH", "ENSG00000000002"]
    checked = check_adata(a)
    harmonize_genes(checked, table=table)
    assert list(checked.var_names[:10]) == [f"SYM{i}" for i in range(10)]
    assert list(checked.var["gene_id"]) == list(a.var_names)
    assert checked.uns["sigcell_input"]["genes"]["ensembl"] == 10
    assert checked.uns["sigcell_input"]["genes"]["unmapped"] == 1
    assert checked.uns["sigcell_input"]["gene_id_kind"] == "symbol"
    assert (checked.X != check_adata(a).X).nnz == 0  # values untouched
    np.testing.assert_array_equal(checked.obs_names, a.obs_names)


@pytest.mark.network
def test_real_gencode_mapping(data_cache):
    from sigcell.data.genes import gencode_symbols
    from sigcell.datasets import gencode_table

    table = gencode_symbols(gencode_table(cache=data_cache))
    gk = gene_keys(["ENSG00000141510.18", "ENSG00000111640", "ENSG00000000003.15", "CD3E"], table=table)
    assert gk.keys.tolist() == ["TP53", "GAPDH", "TSPAN6", "CD3E"]
