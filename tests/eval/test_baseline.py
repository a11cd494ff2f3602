"""The PCA baseline (scanpy recipe) and the held-out split."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sigcell.eval.baselines import pca_baseline, pca_projected
from sigcell.eval.prepare import stratified_split


@pytest.fixture(scope="module")
def toy():
    from sigcell.datasets import synthetic

    return synthetic(200, 300, n_types=3, median_genes=60, min_genes=10, seed=3)


def test_pca_shape_and_recipe(toy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, info = pca_baseline(toy, n_comps=20, n_top_genes=100)
    assert x.shape == (200, 20) and x.dtype == np.float32
    assert info["n_hvg"] == 100 and info["n_comps"] == 20 and info["input_values"] == "counts"
    assert 0 < info["variance_ratio_sum"] <= 1


def test_pca_separates_types_better_than_noise(toy):
    from sklearn.metrics import silhouette_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, _ = pca_baseline(toy, n_comps=10)
    y = toy.obs["cell_type"].astype(str).to_numpy()
    noise = np.random.default_rng(0).normal(size=x.shape)
    assert silhouette_score(x, y) > silhouette_score(noise, y) + 0.1


def test_pca_log_normalized_input_matches_counts(toy):
    """Log-normalized input is brought back to count scale, so the embedding is (nearly) the same."""
    import scanpy as sc

    lognorm = toy.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, _ = pca_baseline(toy, n_comps=5)
        b, info = pca_baseline(lognorm, n_comps=5)
    assert info["input_values"] == "log-normalized"
    # Components are defined up to sign.
    assert np.allclose(np.abs(a), np.abs(b), atol=1e-2 * np.abs(a).max())


def test_train_fit_pca_projects_cells_it_never_saw(toy):
    from sklearn.metrics import silhouette_score

    fit, apply = toy[:150], toy[150:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, info = pca_projected(fit, apply, n_comps=10, n_top_genes=100)
        whole, _ = pca_projected(toy, toy, n_comps=10, n_top_genes=100)
        direct, _ = pca_baseline(toy, n_comps=10, n_top_genes=100)
    assert x.shape == (50, 10) and x.dtype == np.float32 and info["n_fit_cells"] == 150
    y = apply.obs["cell_type"].astype(str).to_numpy()
    noise = np.random.default_rng(0).normal(size=x.shape)
    assert silhouette_score(x, y) > silhouette_score(noise, y) + 0.1
    # Fit and applied on the same cells, it is the direct baseline (components up to sign).
    assert np.allclose(np.abs(whole), np.abs(direct), atol=2e-2 * np.abs(direct).max())
    with pytest.raises(ValueError, match="same genes in the same order"):
        pca_projected(fit, apply[:, ::-1])


def test_pca_caps_components_for_small_inputs(toy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, info = pca_baseline(toy[:12], n_comps=50)
    assert x.shape == (12, 11) and info["n_comps"] == 11
    with pytest.raises(ValueError, match="at least 3 cells"):
        pca_baseline(toy[:2])


def test_stratified_split_is_disjoint_capped_and_covers_types():
    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "b", "c", "rare"], p=[0.5, 0.3, 0.19, 0.01], size=1000).astype(object)
    labels[:3] = "rare"
    labelled = np.ones(1000, dtype=bool)
    labelled[10:60] = False  # unlabelled cells train only
    train, held = stratified_split(labels.astype(str), labelled, 0.2, 150, seed=0)
    assert np.intersect1d(train, held).size == 0 and train.size + held.size == 1000
    assert held.size <= 150 + 4 and labelled[held].all()
    assert set(labels[held]) == {"a", "b", "c", "rare"}
    _again, held2 = stratified_split(labels.astype(str), labelled, 0.2, 150, seed=0)
    assert np.array_equal(held, held2)  # the split depends on the split seed only
