"""The baseline every model must beat: PCA of log-normalized highly variable genes (scanpy)."""

from __future__ import annotations

import numpy as np

__all__ = ["pca_baseline"]


def pca_baseline(adata, *, n_comps: int = 50, n_top_genes: int = 2000,
                 seed: int = 0) -> tuple[np.ndarray, dict]:
    """PCA embedding of the cells of ``adata`` by the standard scanpy recipe.

    ``normalize_total(1e4)`` -> ``log1p`` -> ``highly_variable_genes(n_top_genes, flavor="seurat")``
    -> ``pca(n_comps)`` (zero-centred, not scaled). Input that is already log-normalized (as
    ``sigcell.data.detect_values`` judges it) is brought back to count scale first, so every dataset
    goes through the same recipe. PCA is fit on these very cells.

    Parameters
    ----------
    adata
        AnnData with counts, log1p counts or log-normalized values in ``X``.
    n_comps
        Components; lowered to ``min(n_cells, n_hvg) - 1`` for small inputs (recorded in the info).
    n_top_genes
        Highly variable genes kept; all genes when the data has fewer.
    seed
        ``random_state`` of the PCA solver.

    Returns
    -------
    (np.ndarray, dict)
        float32 ``[n_cells, n_comps]`` and what was done (genes, components, variance explained).
    """
    from importlib import metadata

    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    from sigcell.data.io import detect_values, to_count_scale

    if adata.n_obs < 3:
        msg = f"pca_baseline: need at least 3 cells, got {adata.n_obs}"
        raise ValueError(msg)
    info = detect_values(adata.X, where="pca_baseline input")
    x = to_count_scale(sp.csr_matrix(adata.X, dtype=np.float32), info)
    work = ad.AnnData(X=x)
    work.var_names = [str(v) for v in adata.var_names]
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    n_hvg = min(n_top_genes, work.n_vars)
    if n_hvg < work.n_vars:
        sc.pp.highly_variable_genes(work, n_top_genes=n_hvg, flavor="seurat", subset=True)
    comps = int(min(n_comps, work.n_obs - 1, work.n_vars - 1))
    sc.pp.pca(work, n_comps=comps, random_state=seed)
    params = {"recipe": "normalize_total(1e4) > log1p > highly_variable_genes(seurat) > pca",
              "input_values": info.kind, "n_hvg": int(work.n_vars), "n_comps": comps,
              "variance_ratio_sum": float(np.sum(work.uns["pca"]["variance_ratio"])),
              "scanpy": metadata.version("scanpy")}
    return np.asarray(work.obsm["X_pca"], dtype=np.float32), params
