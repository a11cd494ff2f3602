"""Shared fixtures: a small labelled .h5ad and one finished tiny ``sigcell compare`` on it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


def make_h5ad(path: Path, *, n_cells: int = 240, n_genes: int = 150, n_types: int = 3, seed: int = 0) -> Path:
    """Synthetic negative-binomial counts with ``obs["cell_type"]``, written to ``path``."""
    from sigcell.datasets import synthetic

    adata = synthetic(n_cells, n_genes, n_types=n_types, median_genes=30, min_genes=8, seed=seed)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="session")
def h5ad_file(tmp_path_factory) -> Path:
    return make_h5ad(tmp_path_factory.mktemp("data") / "toy.h5ad")


@pytest.fixture(scope="session")
def tiny_compare(tmp_path_factory, h5ad_file) -> dict:
    """A finished compare: 1 dataset x 2 attentions x 2 seeds, 6 steps of the tiny preset."""
    from sigcell.eval import compare

    out = tmp_path_factory.mktemp("compare") / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compare([str(h5ad_file)], out=out, preset="tiny", steps=6, seeds=[0, 1], max_genes=32,
                         heldout_fraction=0.25, progress=False)
    return {"out": out, "result": result, "h5ad": h5ad_file}
