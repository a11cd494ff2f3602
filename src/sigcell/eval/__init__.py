"""Evaluation: cell embeddings, cell-type metrics, the PCA baseline, and ``sigcell compare``.

Embedding
    ``embed(adata, run_dir, *, key_added="X_sigcell", ...)`` (scanpy style) and the tensor-level
    ``embed_cells(model, cells)``.
Metrics
    ``evaluate_embedding(x, labels)``: ASW, cLISI, NMI / ARI (k-means), isolated labels (all via
    scib-metrics), kNN label purity and within / between type distance ratio (sigcell);
    ``METRICS`` describes each.
Baseline
    ``pca_baseline(adata)``: scanpy PCA of log-normalized highly variable genes.
Comparison
    ``compare(datasets, preset=..., seeds=..., stage="all" | "prepare" | "train" | "report")`` and
    ``build_report(out)``.

Importing this package loads only torch and numpy; scanpy, scib-metrics, anndata and matplotlib are
imported inside the functions that need them, so the train stage runs on a bare GPU machine.
"""

from sigcell.eval.baselines import pca_baseline
from sigcell.eval.compare import compare
from sigcell.eval.embed import embed, embed_cells
from sigcell.eval.metrics import (
    METRICS,
    asw,
    clisi,
    distance_ratio,
    evaluate_embedding,
    isolated_asw,
    knn_purity,
    nmi_ari,
)
from sigcell.eval.report import build_report

__all__ = [
    "METRICS",
    "asw",
    "build_report",
    "clisi",
    "compare",
    "distance_ratio",
    "embed",
    "embed_cells",
    "evaluate_embedding",
    "isolated_asw",
    "knn_purity",
    "nmi_ari",
    "pca_baseline",
]
