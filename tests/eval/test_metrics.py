"""Each metric on constructed embeddings whose separation is known."""

from __future__ import annotations

import numpy as np
import pytest

from sigcell.eval import metrics as M

N_PER, N_TYPES, DIM = 60, 4, 8  # one shape for every case, so JAX compiles each metric once


def clusters(separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters (unit noise) whose centres lie ``separation`` apart on orthogonal axes."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_TYPES), N_PER)
    centres = np.eye(N_TYPES, DIM) * separation
    x = centres[labels] + rng.normal(size=(labels.size, DIM))
    return x.astype(np.float32), np.array([f"type{c}" for c in labels])


@pytest.fixture(scope="module")
def scored() -> dict[str, dict[str, float]]:
    seed = 1234
    x_far, y = clusters(12.0, seed)
    x_mid, _ = clusters(2.5, seed)
    shuffled = np.random.default_rng(seed).permutation(y)
    return {"far": M.evaluate_embedding(x_far, y), "mid": M.evaluate_embedding(x_mid, y),
            "shuffled": M.evaluate_embedding(x_far, shuffled)}


@pytest.mark.parametrize("info", [m for m in M.METRICS if m.kind != "loss"], ids=lambda m: m.key)
def test_metric_orders_separation(scored, info):
    far, mid, shuf = (scored[k][info.key] for k in ("far", "mid", "shuffled"))
    sign = 1 if info.higher_is_better else -1
    assert sign * far > sign * mid > sign * shuf, (info.key, far, mid, shuf)


def test_well_separated_clusters_score_near_perfect(scored):
    far = scored["far"]
    assert far["knn_purity"] == 1.0
    assert far["nmi"] > 0.99 and far["ari"] > 0.99 and far["clisi"] > 0.99
    assert far["asw"] > 0.8 and far["distance_ratio"] < 0.3
    assert far["linear_probe_f1"] == 1.0


def test_shuffled_labels_score_near_chance(scored):
    shuf = scored["shuffled"]
    assert abs(shuf["ari"]) < 0.05 and shuf["nmi"] < 0.05
    assert abs(shuf["knn_purity"] - 1 / N_TYPES) < 0.06  # chance = sum p_c^2 = 1/4
    assert abs(shuf["distance_ratio"] - 1.0) < 0.05
    assert abs(shuf["asw"] - 0.5) < 0.05  # rescaled silhouette of no structure
    assert shuf["linear_probe_f1"] < 0.4  # chance macro-F1 of 4 balanced types: about 0.25


def test_linear_probe_is_reproducible_and_needs_two_cells_per_type():
    x, y = clusters(2.5, 5)
    assert M.linear_probe_f1(x, y) == M.linear_probe_f1(x, y)
    y_single = y.copy()
    y_single[0] = "alone"  # a type of one cell: no fold can hold it out and train on it
    with pytest.raises(ValueError, match="each cell type needs >= 2 cells"):
        M.linear_probe_f1(x, y_single)
    assert np.isnan(M.evaluate_embedding(x, y_single)["linear_probe_f1"])


def test_distance_ratio_matches_brute_force():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(30, 3))
    y = rng.integers(0, 3, size=30)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    ratios = []
    for c in np.unique(y):
        inside, outside = np.flatnonzero(y == c), np.flatnonzero(y != c)
        w = d[np.ix_(inside, inside)][~np.eye(inside.size, dtype=bool)].mean()
        ratios.append(w / d[np.ix_(inside, outside)].mean())
    assert M.distance_ratio(x, y) == pytest.approx(np.mean(ratios), rel=1e-6)


def test_knn_purity_matches_brute_force_and_excludes_self():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 2))
    y = rng.integers(0, 2, size=40)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :5]
    assert M.knn_purity(x, y, n_neighbors=5) == pytest.approx((y[nn] == y[:, None]).mean())
    # Duplicated points: each cell's own row must still be dropped, whatever order ties come in.
    x2 = np.repeat(x[:10], 2, axis=0)
    y2 = np.repeat(np.arange(10) % 2, 2)
    assert M.knn_purity(x2, y2, n_neighbors=1) == 1.0


def test_isolated_asw_is_class_balanced_asw():
    x, y = clusters(2.5, 99)
    # Make type0 rare: the class-balanced score then differs from the cell-weighted ASW.
    keep = np.ones(y.size, dtype=bool)
    keep[np.flatnonzero(y == "type0")[10:]] = False
    x, y = x[keep], y[keep]
    from sklearn.metrics import silhouette_samples

    s = (silhouette_samples(x, y) + 1) / 2
    balanced = np.mean([s[y == t].mean() for t in np.unique(y)])
    assert M.isolated_asw(x, y) == pytest.approx(balanced, abs=1e-4)
    assert M.asw(x, y) == pytest.approx(s.mean(), abs=1e-4)


@pytest.mark.parametrize(("x", "labels", "match"), [
    (np.zeros(10), np.zeros(10), "2-D array"),
    (np.zeros((10, 2)), np.zeros(9), r"expected shape \(10,\)"),
    (np.ones((10, 2)), np.zeros(10), "at least 2 distinct cell types"),
    (np.array([[np.nan, 0.0]] + [[1.0, 1.0]] * 9), np.arange(10) % 2, "NaN or inf"),
    (np.array([["a", "b"]] * 4), np.arange(4) % 2, "expected numbers"),
])
def test_bad_inputs_say_what_is_wrong(x, labels, match):
    with pytest.raises(ValueError, match=match):
        M.evaluate_embedding(x, labels)
