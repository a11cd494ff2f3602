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


def _shared_dir(tmp_path_factory) -> Path:
    """A folder shared by all pytest-xdist workers of this session (the parent of each worker's basetemp)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if root.name.startswith("popen-gw") else root


@pytest.fixture(scope="session")
def h5ad_file(tmp_path_factory) -> Path:
    from filelock import FileLock  # a torch dependency

    shared = _shared_dir(tmp_path_factory)
    path = shared / "eval-data" / "toy.h5ad"
    path.parent.mkdir(exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            make_h5ad(path)
    return path


@pytest.fixture(scope="session")
def tiny_compare(tmp_path_factory, h5ad_file) -> dict:
    """A finished compare: 1 dataset x 2 attentions x 2 seeds, 6 steps of the tiny preset.

    Built once per test session: the first xdist worker builds it under a lock, the others reuse it
    (tests that modify it work on copies).
    """
    from filelock import FileLock

    from sigcell.eval import compare

    out = _shared_dir(tmp_path_factory) / "eval-compare"
    done = out.parent / "eval-compare.done"  # written once the report exists: later workers only read
    with FileLock(str(out) + ".lock"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not done.is_file():
            compare([str(h5ad_file)], out=out, preset="tiny", steps=6, seeds=[0, 1], max_genes=32,
                    heldout_fraction=0.25, progress=False)
            done.write_text("ok")
    return {"out": out, "h5ad": h5ad_file}
