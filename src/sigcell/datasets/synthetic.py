"""Labelled synthetic counts for scale and long-cell tests, without any download."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["synthetic"]


def synthetic(
    n_cells: int = 1000,
    n_genes: int = 2000,
    *,
    n_types: int = 5,
    median_genes: int = 500,
    genes_sigma: float = 0.5,
    min_genes: int = 20,
    max_genes: int | None = None,
    median_umis_per_gene: float = 3.0,
    dispersion: float = 2.0,
    marker_fraction: float = 0.05,
    gene_prefix: str = "GENE",
    seed: int = 0,
    chunk_cells: int = 2048,
):
    """Negative-binomial counts from cell-type gene programs, with a set expressed-genes distribution.

    Each cell type scales a random ``marker_fraction`` of genes by a log-normal fold change on top
    of heavy-tailed (log-normal) baseline gene means. Each cell draws how many genes it expresses
    (log-normal around ``median_genes``, clipped to ``[min_genes, max_genes or n_genes]``), picks
    them weighted by its type's program (Gumbel top-k), and gives each a count ``1 + NB`` whose mean
    follows the program and a log-normal library size. So the number of nonzero genes per cell is
    exactly the drawn one, up to 16k+ for long-cell tests.

    Parameters
    ----------
    n_cells, n_genes, n_types
        Matrix size and number of cell types.
    median_genes, genes_sigma, min_genes, max_genes
        Expressed genes per cell: ``clip(median_genes x exp(N(0, genes_sigma)), min, max)``.
    median_umis_per_gene, dispersion
        Mean UMIs per expressed gene (median over cells) and NB dispersion (gamma shape).
    marker_fraction
        Fraction of genes that each type up-regulates.
    gene_prefix, seed, chunk_cells
        Gene names ``{prefix}{j:05d}``; RNG seed; cells generated at once.

    Returns
    -------
    AnnData
        ``X`` CSR float32 integer counts ``[n_cells, n_genes]``, ``obs["cell_type"]``,
        ``obs["n_genes"]``, ``uns["sigcell_dataset"]`` with the parameters.
    """
    import anndata as ad

    if n_cells < 1 or n_genes < 1 or n_types < 1:
        msg = f"synthetic: need n_cells, n_genes, n_types >= 1, got {n_cells}, {n_genes}, {n_types}"
        raise ValueError(msg)
    hi = min(max_genes or n_genes, n_genes)
    if not 1 <= min_genes <= hi:
        msg = f"synthetic: need 1 <= min_genes <= max_genes (<= n_genes), got {min_genes}, {hi}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    base = rng.lognormal(0.0, 1.5, n_genes)
    programs = np.tile(base, (n_types, 1))
    n_markers = max(1, int(marker_fraction * n_genes))
    for t in range(n_types):
        markers = rng.choice(n_genes, n_markers, replace=False)
        programs[t, markers] *= rng.lognormal(1.5, 0.5, n_markers)
    log_prog = np.log(programs)
    types = rng.integers(0, n_types, n_cells)
    n_expr = np.clip(np.round(median_genes * rng.lognormal(0.0, genes_sigma, n_cells)), min_genes, hi).astype(
        int
    )
    depth = rng.lognormal(0.0, 0.4, n_cells)  # library-size factor per cell

    blocks = []
    for a in range(0, n_cells, chunk_cells):
        b = min(a + chunk_cells, n_cells)
        keys = log_prog[types[a:b]] + rng.gumbel(size=(b - a, n_genes))
        order = np.argsort(-keys, axis=1)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n_genes)[None, :], axis=1)
        chosen = rank < n_expr[a:b, None]
        weights = np.where(chosen, programs[types[a:b]], 0.0)
        mean = weights / weights.sum(axis=1, keepdims=True) * n_expr[a:b, None] * median_umis_per_gene
        mean *= depth[a:b, None]
        lam = rng.gamma(dispersion, np.where(chosen, mean, 0.0) / dispersion + 1e-12)
        counts = np.where(chosen, 1 + rng.poisson(lam), 0)
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
    x = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type_{t}" for t in types]), "n_genes": n_expr},
        index=[f"cell_{i:07d}" for i in range(n_cells)],
    )
    out = ad.AnnData(X=x, obs=obs)
    out.var_names = [f"{gene_prefix}{j:05d}" for j in range(n_genes)]
    out.uns["sigcell_dataset"] = {
        "name": "synthetic",
        "params": {
            "n_cells": n_cells,
            "n_genes": n_genes,
            "n_types": n_types,
            "median_genes": median_genes,
            "genes_sigma": genes_sigma,
            "min_genes": min_genes,
            "max_genes": hi,
            "median_umis_per_gene": median_umis_per_gene,
            "dispersion": dispersion,
            "marker_fraction": marker_fraction,
            "seed": seed,
        },
        "values": "counts",
    }
    return out
