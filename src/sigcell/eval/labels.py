"""Which labelled cells cell-type metrics score: not placeholders ("Unknown", "nan", "doublet") nor the
labels a registered dataset marks as not being cell types of its species (``DatasetSpec.unscored_labels``,
e.g. citeseq's mouse spike-in cells). Those cells are still trained on and embedded; the report says how
many it left out."""

from __future__ import annotations

import numpy as np

__all__ = ["PLACEHOLDER_LABELS", "scored_mask", "unscored_labels"]

# Compared case-insensitively after stripping.
PLACEHOLDER_LABELS = frozenset({
    "", "nan", "none", "na", "n/a", "unknown", "unassigned", "unlabeled", "unlabelled", "undefined",
    "doublet", "doublets", "ambiguous",
})


def unscored_labels(dataset: str) -> frozenset[str]:
    """The registered dataset's own unscored labels (none for a user's file)."""
    from sigcell.datasets import available, info

    return frozenset(info(dataset).unscored_labels) if dataset in available() else frozenset()


def scored_mask(labels: np.ndarray, dataset: str) -> np.ndarray:
    """bool ``[n]``: True for the cells the cell-type metrics score."""
    labels = np.asarray(labels, dtype=str)
    own = unscored_labels(dataset)
    placeholder = np.char.lower(np.char.strip(labels))
    return ~(np.isin(placeholder, list(PLACEHOLDER_LABELS)) | np.isin(labels, list(own)))
