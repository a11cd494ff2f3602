"""The baselines every model must beat: PCA of log-normalized highly variable genes (scanpy), fit on the
evaluation cells themselves or fit on the training cells and applied to the evaluation cells."""

from __future__ import annotations

import numpy as np

__all__ = ["pca_baseline", "pca_projected"]


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


def _log_normalized(adata):
    """``normalize_total(1e4)`` and ``log1p`` of ``adata`` brought to count scale first (a new AnnData)."""
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    from sigcell.data.io import detect_values, to_count_scale

    info = detect_values(adata.X, where="pca baseline input")
    work = ad.AnnData(X=to_count_scale(sp.csr_matrix(adata.X, dtype=np.float32), info))
    work.var_names = [str(v) for v in adata.var_names]
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    return work, info


def pca_projected(fit, apply, *, n_comps: int = 50, n_top_genes: int = 2000, seed: int = 0,
                  max_fit_cells: int = 20_000) -> tuple[np.ndarray, dict]:
    """The recipe of :func:`pca_baseline` fit on the cells of ``fit`` (highly variable genes, centring
    and components from them alone) and applied to the cells of ``apply``: the control that, like a
    pretrained model, never saw the evaluation cells.

    Parameters
    ----------
    fit, apply
        AnnData with the same genes (training cells, evaluation cells).
    n_comps, n_top_genes, seed
        As :func:`pca_baseline`.
    max_fit_cells
        Fit on a seeded sample of at most this many cells (a dense matrix of the chosen genes is made).

    Returns
    -------
    (np.ndarray, dict)
        float32 ``[apply.n_obs, n_comps]`` and what was done.
    """
    from importlib import metadata

    import scanpy as sc
    from sklearn.decomposition import PCA

    if fit.n_obs < 3:
        msg = f"pca_projected: need at least 3 cells to fit, got {fit.n_obs}"
        raise ValueError(msg)
    if list(map(str, fit.var_names)) != list(map(str, apply.var_names)):
        msg = "pca_projected: the fit and apply cells must have the same genes in the same order"
        raise ValueError(msg)
    if fit.n_obs > max_fit_cells:
        rows = np.sort(np.random.default_rng(seed).choice(fit.n_obs, max_fit_cells, replace=False))
        fit = fit[rows]
    work, info = _log_normalized(fit)
    target, _ = _log_normalized(apply)
    n_hvg = min(n_top_genes, work.n_vars)
    genes = np.ones(work.n_vars, dtype=bool)
    if n_hvg < work.n_vars:
        genes = sc.pp.highly_variable_genes(work, n_top_genes=n_hvg, flavor="seurat", inplace=False)[
            "highly_variable"].to_numpy()
    comps = int(min(n_comps, work.n_obs - 1, int(genes.sum()) - 1))
    pca = PCA(n_components=comps, random_state=seed).fit(work.X[:, genes].toarray())
    projected = pca.transform(target.X[:, genes].toarray())
    params = {"recipe": "normalize_total(1e4) > log1p > highly_variable_genes(seurat) > pca, fit on the "
                        "training cells, applied to the held-out cells",
              "input_values": info.kind, "n_fit_cells": int(fit.n_obs), "n_hvg": int(genes.sum()),
              "n_comps": comps, "variance_ratio_sum": float(np.sum(pca.explained_variance_ratio_)),
              "scanpy": metadata.version("scanpy")}
    return np.asarray(projected, dtype=np.float32), params
