"""Cell-type metrics of an embedding: scib-metrics for separation, two explicit cohesion measures.

Separation (computed by scib-metrics, whose numbers are not comparable to the older ``scib`` package):

* ``asw``: ``silhouette_label`` -- mean over cells of the Euclidean silhouette by cell type,
  rescaled to ``(s + 1) / 2`` in [0, 1].
* ``clisi``: ``clisi_knn`` on the 90 exact nearest neighbours (the cell itself included, as
  scib-metrics' own neighbour search does), scaled to [0, 1]; 1 = neighbourhoods hold one type.
* ``nmi`` / ``ari``: ``nmi_ari_cluster_labels_kmeans`` -- k-means with k = number of cell types
  (scib-metrics' JAX k-means, seed 0) against the labels.
* ``isolated_asw``: ``isolated_labels`` with a single batch. With one batch every cell type counts
  as isolated, so this is the mean over cell types of their cells' mean rescaled silhouette: a
  class-balanced ASW in which a rare type weighs as much as a common one.

* ``linear_probe_f1`` (computed here with scikit-learn): macro-F1 of a logistic regression from the
  standardized embedding to the cell type, 5-fold stratified cross-validation (fewer folds when a type has
  fewer than 5 cells); how linearly readable the types are, each type weighing the same.

Cohesion (computed here, formulas in ``docs/eval.md``):

* ``knn_purity``: mean over cells of the fraction of its ``k = 15`` nearest neighbours (itself
  excluded) that share its label; chance level is ``sum_c p_c**2``.
* ``distance_ratio``: for each type ``c``, ``W_c / B_c`` with ``W_c`` the mean Euclidean distance
  between two different cells of ``c`` and ``B_c`` the mean distance from a cell of ``c`` to a cell of
  another type; averaged over types (each type once). Lower is better; 1 means no cohesion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "METRICS",
    "MetricInfo",
    "asw",
    "clisi",
    "distance_ratio",
    "evaluate_embedding",
    "isolated_asw",
    "knn_purity",
    "linear_probe_f1",
    "nmi_ari",
]


@dataclass(frozen=True)
class MetricInfo:
    """How to read one metric: its display name, direction and where the number comes from."""

    key: str
    name: str
    higher_is_better: bool
    source: str  # "scib-metrics" or "sigcell"
    kind: str  # "separation", "cohesion" or "loss"


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("asw", "ASW (silhouette_label)", True, "scib-metrics", "separation"),
    MetricInfo("clisi", "cLISI (clisi_knn)", True, "scib-metrics", "separation"),
    MetricInfo("nmi", "NMI (k-means)", True, "scib-metrics", "separation"),
    MetricInfo("ari", "ARI (k-means)", True, "scib-metrics", "separation"),
    MetricInfo("isolated_asw", "Isolated labels (1 batch: class-balanced ASW)", True, "scib-metrics",
               "separation"),
    MetricInfo("linear_probe_f1", "Linear probe macro-F1 (5-fold)", True, "sigcell", "separation"),
    MetricInfo("knn_purity", "kNN label purity (k=15)", True, "sigcell", "cohesion"),
    MetricInfo("distance_ratio", "Within / between type distance", False, "sigcell", "cohesion"),
    MetricInfo("val_loss", "Validation masked-expression loss", False, "sigcell", "loss"),
)

CLISI_NEIGHBORS = 90  # scib-metrics' Benchmarker default
PURITY_NEIGHBORS = 15
PROBE_FOLDS = 5
MAX_PAIRWISE_CELLS = 5000  # distance_ratio subsamples beyond this (memory is O(n^2))


def _check(x, labels, *, min_per_label: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 ``[n, d]`` embedding and int label codes ``[n]``."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        msg = f"embedding: expected a 2-D array [n_cells, n_dims] with n >= 1, got shape {x.shape}"
        raise ValueError(msg)
    if not np.issubdtype(x.dtype, np.number):
        msg = f"embedding: expected numbers, got dtype {x.dtype}"
        raise ValueError(msg)
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        msg = (f"embedding: {int(bad.sum())} of {x.shape[0]} cells have NaN or inf values (e.g. row "
               f"{int(np.flatnonzero(bad)[0])}); drop them (and their labels) before evaluating")
        raise ValueError(msg)
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
        msg = f"labels: expected shape ({x.shape[0]},) to match the embedding's cells, got {labels.shape}"
        raise ValueError(msg)
    uniq, codes, counts = np.unique(labels.astype(str), return_inverse=True, return_counts=True)
    if uniq.size < 2:
        msg = f"labels: need at least 2 distinct cell types to score separation, got {list(uniq)}"
        raise ValueError(msg)
    if counts.min() < min_per_label:
        small = [str(u) for u, c in zip(uniq, counts, strict=True) if c < min_per_label]
        msg = f"labels: each cell type needs >= {min_per_label} cells here; too few in {small[:5]}"
        raise ValueError(msg)
    return x, codes.astype(np.int64)


def _neighbors(x: np.ndarray, k: int, include_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest neighbours: ``(indices [n, k], distances [n, k])``."""
    from sklearn.neighbors import NearestNeighbors

    n = x.shape[0]
    k_query = min(k + (0 if include_self else 1), n)
    dist, idx = NearestNeighbors(n_neighbors=k_query).fit(x).kneighbors(x)
    if include_self:
        return idx, dist
    # Drop each cell itself (duplicates may put it anywhere in its row); else drop the farthest.
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k_query - 1)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k_query - 1), dist[keep].reshape(n, k_query - 1)


def asw(x, labels) -> float:
    """Cell-type ASW (scib-metrics ``silhouette_label``, rescaled to [0, 1]; higher is better).

    Shapes: ``x`` ``[n, d]``, ``labels`` ``[n]``.
    """
    from scib_metrics import silhouette_label

    x, codes = _check(x, labels)
    return float(silhouette_label(x, codes, rescale=True))


def clisi(x, labels, n_neighbors: int = CLISI_NEIGHBORS) -> float:
    """Scaled cLISI (scib-metrics ``clisi_knn`` on exact kNN; [0, 1], higher is better)."""
    from scib_metrics import clisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults

    x, codes = _check(x, labels)
    idx, dist = _neighbors(x, min(n_neighbors, x.shape[0]), include_self=True)
    return float(clisi_knn(NeighborsResults(indices=idx, distances=dist), codes))


def nmi_ari(x, labels) -> dict[str, float]:
    """NMI and ARI of k-means clusters (k = number of types) vs labels (scib-metrics)."""
    from scib_metrics import nmi_ari_cluster_labels_kmeans

    x, codes = _check(x, labels)
    out = nmi_ari_cluster_labels_kmeans(x, codes)
    return {"nmi": float(out["nmi"]), "ari": float(out["ari"])}


def isolated_asw(x, labels) -> float:
    """scib-metrics ``isolated_labels`` with one batch: the class-balanced rescaled ASW."""
    from scib_metrics import isolated_labels

    x, codes = _check(x, labels)
    return float(isolated_labels(x, codes, np.zeros_like(codes), rescale=True))


def linear_probe_f1(x, labels, folds: int = PROBE_FOLDS, seed: int = 0) -> float:
    """Macro-F1 of a cross-validated logistic-regression probe from the embedding to the cell type.

    Standardized features, ``LogisticRegression(max_iter=1000)``, ``StratifiedKFold(folds)`` shuffled with
    ``seed`` (``folds`` lowered to the smallest type's size, at least 2); every cell is predicted by the
    model of the fold that held it out. In [0, 1], higher is better.
    """
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, codes = _check(x, labels, min_per_label=2)
    n_splits = max(2, min(folds, int(np.bincount(codes).min())))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes on near-separable folds
        predicted = cross_val_predict(probe, x, codes, cv=StratifiedKFold(n_splits, shuffle=True,
                                                                          random_state=seed))
    return float(f1_score(codes, predicted, average="macro"))


def knn_purity(x, labels, n_neighbors: int = PURITY_NEIGHBORS) -> float:
    """Mean fraction of each cell's ``n_neighbors`` nearest neighbours (itself excluded) of its type.

    ``purity = 1/n sum_i 1/k sum_{j in kNN(i)} [y_j = y_i]``; in [0, 1], higher is better.
    """
    x, codes = _check(x, labels)
    if x.shape[0] < 2:
        msg = "knn_purity: need at least 2 cells"
        raise ValueError(msg)
    idx, _ = _neighbors(x, min(n_neighbors, x.shape[0] - 1), include_self=False)
    return float((codes[idx] == codes[:, None]).mean())


def distance_ratio(x, labels, *, max_cells: int = MAX_PAIRWISE_CELLS, seed: int = 0) -> float:
    """Mean over cell types of (mean within-type distance) / (mean distance to other types).

    ``W_c = sum_{i != j in c} d_ij / (n_c (n_c - 1))``, ``B_c = sum_{i in c, j not in c} d_ij /
    (n_c (n - n_c))``, result ``mean_c W_c / B_c`` over types with >= 2 cells (Euclidean ``d``).
    Lower is better. Above ``max_cells`` cells a seeded random subset is used.
    """
    from sklearn.metrics import pairwise_distances

    x, codes = _check(x, labels)
    if x.shape[0] > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_cells, replace=False))
        x, codes = x[keep], codes[keep]
    d = pairwise_distances(x.astype(np.float64))
    onehot = np.eye(codes.max() + 1)[codes]  # [n, C]
    to_type = d @ onehot  # [n, C]: each cell's summed distance to every type
    n_c = onehot.sum(0)
    within = (to_type * onehot).sum(0)  # self-distances are 0, so only pairs i != j count
    between = (d.sum(1, keepdims=True) * onehot).sum(0) - within
    ok = (n_c >= 2) & (n_c < codes.size)
    if not ok.any():
        msg = "distance_ratio: needs a cell type with >= 2 cells and cells of another type"
        raise ValueError(msg)
    w = within[ok] / (n_c[ok] * (n_c[ok] - 1))
    b = between[ok] / (n_c[ok] * (codes.size - n_c[ok]))
    return float(np.mean(w / np.maximum(b, np.finfo(np.float64).tiny)))


def evaluate_embedding(x, labels) -> dict[str, float]:
    """Every embedding metric of this module (see :data:`METRICS`) for one embedding.

    Parameters
    ----------
    x
        float ``[n_cells, n_dims]``, finite.
    labels
        ``[n_cells]`` cell-type labels (any values; compared as strings).

    Returns
    -------
    dict
        ``asw``, ``clisi``, ``nmi``, ``ari``, ``isolated_asw``, ``linear_probe_f1`` (NaN when a type has a
        single cell), ``knn_purity``, ``distance_ratio``.
    """
    x, codes = _check(x, labels)
    probe = linear_probe_f1(x, codes) if np.bincount(codes).min() >= 2 else float("nan")
    return {"asw": asw(x, codes), "clisi": clisi(x, codes), **nmi_ari(x, codes),
            "isolated_asw": isolated_asw(x, codes), "linear_probe_f1": probe,
            "knn_purity": knn_purity(x, codes), "distance_ratio": distance_ratio(x, codes)}
