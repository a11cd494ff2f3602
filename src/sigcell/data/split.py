"""The evaluation hold-out: which labelled cells are kept out of pretraining and scored afterwards.

One function decides it for everything: ``sigcell compare`` holds these cells out of its training
cells, ``prepare_corpus`` keeps them out of the pooled corpus (and lists their ids in the manifest),
and :func:`heldout_cells` returns them for a dataset name or an AnnData. The split depends only on the
labels (in obs order), the fraction, the cap and the seed, never on a training seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "HELDOUT_FRACTION",
    "MAX_HELDOUT",
    "SPLIT_SEED",
    "HeldoutSplit",
    "heldout_cells",
    "heldout_split",
    "stratified_split",
]

HELDOUT_FRACTION = 0.2  # share of labelled cells held out, stratified by cell type
MAX_HELDOUT = 1000  # cap on held-out cells per dataset (bounds metric time and result size)
SPLIT_SEED = 0  # the split never depends on the training seeds


def stratified_split(labels: np.ndarray, labelled: np.ndarray, fraction: float, cap: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out and training cell indices; held-out cells are labelled and stratified by label.

    ``h = min(round(fraction * n_labelled), cap)`` cells are held out, ``round(n_c * h / n)`` of type
    ``c`` (at least one for types with >= 2 cells, never all cells of a type). Unlabelled cells always
    train.

    Shapes
    ------
    labels, labelled: ``[n_cells]`` -> ``(train, heldout)``: sorted int64 row indices, disjoint, covering
    all rows.
    """
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(labelled)
    n = idx.size
    h = min(round(fraction * n), cap)
    held = [np.zeros(0, np.int64)]
    for value in np.unique(labels[idx]):
        members = idx[labels[idx] == value]
        take = round(members.size * h / n)
        if members.size >= 2:
            take = max(take, 1)
        held.append(rng.permutation(members)[: min(take, members.size - 1)])
    heldout = np.sort(np.concatenate(held)).astype(np.int64)
    train = np.setdiff1d(np.arange(labels.size), heldout).astype(np.int64)
    return train, heldout


@dataclass(frozen=True)
class HeldoutSplit:
    """The held-out rows of one dataset and how they were chosen.

    Attributes
    ----------
    train, heldout : np.ndarray
        Sorted int64 row indices into the dataset (obs order).
    cell_ids : list[str]
        ``obs_names`` of the held-out rows.
    label_col : str
        The obs column the split is stratified by.
    fraction, max_heldout, seed
        The split's parameters.
    """

    train: np.ndarray
    heldout: np.ndarray
    cell_ids: list[str]
    label_col: str
    fraction: float
    max_heldout: int
    seed: int

    def describe(self) -> dict[str, Any]:
        """JSON-ready record: parameters, count and the held-out cell ids."""
        d = asdict(self)
        d.pop("train")
        d.pop("heldout")
        return {**d, "n_heldout": int(self.heldout.size)}


def heldout_split(adata, label_col: str, *, fraction: float = HELDOUT_FRACTION,
                  max_heldout: int = MAX_HELDOUT,
                  seed: int = SPLIT_SEED, source: str = "AnnData") -> HeldoutSplit:
    """Split the rows of ``adata`` into training and held-out cells, stratified by ``obs[label_col]``.

    Missing labels (NaN) never go to the held-out side. This is the split ``sigcell compare`` scores.

    Parameters
    ----------
    adata
        Any AnnData (only ``obs`` is read).
    label_col
        The obs column with cell types.
    fraction, max_heldout, seed
        Held-out share of labelled cells, cap per dataset, RNG seed.
    source
        Name of the data, for messages.

    Returns
    -------
    HeldoutSplit
    """
    if not 0.0 < fraction < 1.0:
        msg = f"heldout fraction must lie in (0, 1), got {fraction!r}"
        raise ValueError(msg)
    if not isinstance(max_heldout, int) or max_heldout < 1:
        msg = f"max_heldout must be a positive integer, got {max_heldout!r}"
        raise ValueError(msg)
    if label_col not in adata.obs.columns:
        msg = (f"{source}: no label column {label_col!r} in obs; columns are {list(adata.obs.columns)}; "
               "pass --label-col")
        raise ValueError(msg)
    raw = adata.obs[label_col]
    labelled = ~raw.isna().to_numpy()
    labels = raw.astype(str).to_numpy()
    if np.unique(labels[labelled]).size < 2:
        msg = f"{source}: label column {label_col!r} has fewer than 2 distinct labels; nothing to score"
        raise ValueError(msg)
    train, held = stratified_split(labels, labelled, fraction, max_heldout, seed)
    ids = [str(c) for c in np.asarray(adata.obs_names)[held]]
    return HeldoutSplit(train, held, ids, label_col, float(fraction), int(max_heldout), int(seed))


def heldout_cells(adata_or_name, label_col: str | None = None, *, fraction: float = HELDOUT_FRACTION,
                  max_heldout: int = MAX_HELDOUT, seed: int = SPLIT_SEED) -> list[str]:
    """Ids (``obs_names``) of the cells held out for evaluation, as ``sigcell compare`` and the corpus use.

    Parameters
    ----------
    adata_or_name
        A registered dataset name (``sigcell.datasets.available()``), an ``.h5ad`` path, or an AnnData.
    label_col
        The obs column with cell types; None: the dataset's registry label column, else ``"cell_type"``.
    fraction, max_heldout, seed
        As ``sigcell compare`` (defaults 0.2, 1000, 0).

    Returns
    -------
    list[str]
        The held-out cell ids, in obs order.

    Examples
    --------
    >>> ids = heldout_cells("zeisel")                 # doctest: +SKIP
    >>> held = adata[adata.obs_names.isin(ids)]       # doctest: +SKIP
    """
    from pathlib import Path

    source = "AnnData"
    if isinstance(adata_or_name, (str, Path)):
        from sigcell import datasets

        source = str(adata_or_name)
        if source in datasets.available():
            labels = datasets.info(source).labels
            if not labels and label_col is None:
                msg = f"dataset {source!r} has no cell-type labels, so no cells are held out; pass label_col"
                raise ValueError(msg)
            label_col = label_col or labels[0]
            adata = datasets.load(source)
        else:
            import anndata as ad

            if not Path(source).is_file():
                msg = f"{source!r} is neither a registered dataset {datasets.available()} nor an .h5ad file"
                raise FileNotFoundError(msg)
            adata = ad.read_h5ad(source, backed="r")
    else:
        adata = adata_or_name
    return heldout_split(adata, label_col or "cell_type", fraction=fraction, max_heldout=max_heldout,
                         seed=seed, source=source).cell_ids
