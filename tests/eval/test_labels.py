"""Which held-out cells the compare report scores (sigcell.eval.labels)."""

from __future__ import annotations

import numpy as np

from sigcell.datasets import info
from sigcell.eval.labels import scored_mask, unscored_labels


def test_placeholders_and_other_species_are_not_scored():
    labels = np.array(["CD4 T", "Unknown", " unknown ", "nan", "Mouse", "B", "Doublet", ""])
    assert scored_mask(labels, "citeseq").tolist() == [True, False, False, False, False, True, False, False]
    # "Mouse" is a cell type name only where the registry says it is another species
    assert scored_mask(labels, "my-file")[4]
    assert unscored_labels("citeseq") == frozenset(info("citeseq").unscored_labels) == {"Mouse", "Unknown"}
    assert unscored_labels("not-registered") == frozenset()
