"""Reading AnnData: pick the matrix holding the counts, the gene identifiers, and validate both.

``read_h5ad(path, layer=..., use_raw=..., gene_col=...)`` returns a plain AnnData whose ``X`` is
the chosen matrix (CSR, float32) and whose ``var_names`` are the chosen gene identifiers;
``check_adata`` does the same for an AnnData already in memory. Both reject NaN / inf / negative
values and duplicate gene ids with a message naming the file, the matrix and the count.

``detect_values(X)`` says what a matrix holds (raw counts, log1p of counts, log-normalized,
normalized, or scaled); ``to_count_scale`` turns the log kinds back into values proportional to
counts, which is what both encodings start from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scipy loads with the first matrix, not with the model's imports
    import scipy.sparse as sp

__all__ = [
    "ValuesInfo",
    "check_adata",
    "detect_values",
    "gene_id_kind",
    "read_h5ad",
    "require_counts",
    "to_count_scale",
]

# log1p of normalized data stays far below this; normalized (not logged) data exceeds it.
_LOG_MAX = 30.0
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


@dataclass(frozen=True)
class ValuesInfo:
    """What a matrix holds.

    ``kind`` is one of

    * ``"counts"``: nonnegative integers (raw UMI / read counts);
    * ``"log1p-counts"``: ``log1p`` of integers (``expm1`` recovers them exactly);
    * ``"log-normalized"``: non-integers with max < 30, taken as ``log1p(normalize_total(counts))``;
    * ``"normalized"``: nonnegative non-integers with larger values (CPM, TPM, normalize_total).
    """

    kind: str
    max: float
    n_nonzero: int

    @property
    def is_counts(self) -> bool:
        """True when raw integer counts are available (directly or via ``expm1``)."""
        return self.kind in ("counts", "log1p-counts")

    def describe(self) -> str:
        """One-line description for messages and manifests."""
        text = {
            "counts": "raw integer counts",
            "log1p-counts": "log1p of integer counts (expm1 recovers the counts)",
            "log-normalized": "non-integers, looks log-normalized",
            "normalized": "non-integers, looks normalized (not logged)",
        }[self.kind]
        return f"{text}, max {self.max:.4g}"


def _data_of(x) -> np.ndarray:
    """The stored values of a dense or sparse matrix (zeros of sparse storage excluded)."""
    import scipy.sparse as sp

    return x.data if sp.issparse(x) else np.asarray(x).ravel()


def _check_finite_nonnegative(x, where: str) -> None:
    data = _data_of(x)
    bad = ~np.isfinite(data)
    if bad.any():
        n_nan = int(np.isnan(data).sum())
        msg = (
            f"{where} holds {n_nan} NaN and {int(bad.sum()) - n_nan} infinite values; expected finite "
            "counts. Fix the file or pick another matrix (layer=... / use_raw=True; on the command line "
            "--layer NAME / --use-raw)"
        )
        raise ValueError(msg)
    neg = data < 0
    if neg.any():
        msg = (
            f"{where} holds {int(neg.sum())} negative values (min {float(data.min()):.4g}); expected "
            "counts >= 0. The matrix looks scaled / z-scored: pass layer='counts' or use_raw=True "
            "(--layer counts / --use-raw) to read the counts"
        )
        raise ValueError(msg)


def detect_values(x, *, where: str = "X") -> ValuesInfo:
    """Say whether a matrix holds raw counts, log1p counts, log-normalized or normalized values.

    Parameters
    ----------
    x
        Dense or scipy-sparse matrix ``[n_cells, n_genes]``.
    where
        Name of the matrix, for messages (e.g. ``"pbmc.h5ad: raw.X"``).

    Returns
    -------
    ValuesInfo
        ``kind``, ``max`` and number of stored nonzero values.

    Raises
    ------
    ValueError
        On NaN, inf or negative entries, with the count and what to do.
    """
    _check_finite_nonnegative(x, where)
    data = _data_of(x)
    data = data[data != 0]
    vmax = float(data.max()) if data.size else 0.0
    if np.array_equal(data, np.round(data)):
        kind = "counts"
    elif vmax >= _LOG_MAX:
        kind = "normalized"
    else:
        back = np.expm1(data.astype(np.float64))
        kind = "log1p-counts" if np.allclose(back, np.round(back), rtol=0, atol=1e-3) else "log-normalized"
    return ValuesInfo(kind, vmax, int(data.size))


def require_counts(info: ValuesInfo, *, where: str, encoding: str) -> None:
    """Raise unless ``info`` describes integer counts (directly or as log1p), naming what to do."""
    if not info.is_counts:
        msg = (
            f"{where} holds {info.describe()}; encoding {encoding!r} was asked to require raw integer "
            "counts: pass layer='counts' or use_raw=True (--layer counts / --use-raw) if the file has them, "
            "or use the binned "
            "encoding (--encoding binned), which accepts log-normalized input"
        )
        raise ValueError(msg)


def to_count_scale(x: sp.csr_matrix, info: ValuesInfo) -> sp.csr_matrix:
    """Values proportional to counts within each cell: ``expm1`` for the log kinds, else unchanged.

    ``log1p-counts`` come back as exact integers. ``log-normalized`` comes back as
    ``normalize_total(counts)``: both encodings re-normalize per cell, so the cell's scale cancels.
    """
    if info.kind not in ("log1p-counts", "log-normalized"):
        return x
    out = x.copy()
    out.data = np.expm1(out.data.astype(np.float64))
    if info.kind == "log1p-counts":
        out.data = np.round(out.data)
    out.data = out.data.astype(np.float32)
    return out


def gene_id_kind(genes) -> str:
    """``"ensembl"`` when most identifiers look like Ensembl gene ids, else ``"symbol"``."""
    genes = [str(g) for g in genes[:1000]]
    n_ens = sum(bool(_ENSEMBL.match(g)) for g in genes)
    return "ensembl" if genes and n_ens >= 0.9 * len(genes) else "symbol"


def _select(adata, *, layer: str | None, use_raw: bool, where: str):
    """The (matrix, var DataFrame, matrix name) chosen by ``layer`` / ``use_raw``."""
    if layer is not None and use_raw:
        msg = f"{where}: pass either layer={layer!r} or use_raw=True (--layer or --use-raw), not both"
        raise ValueError(msg)
    if use_raw:
        if adata.raw is None:
            msg = (f"{where}: use_raw=True (--use-raw) but the AnnData has no .raw; drop it or pass "
                   "layer=... (--layer NAME)")
            raise ValueError(msg)
        return adata.raw.X, adata.raw.var, "raw.X"
    if layer is not None:
        if layer not in adata.layers:
            msg = (
                f"{where}: no layer {layer!r}; available layers: {sorted(adata.layers.keys()) or 'none'}"
                + ("" if adata.raw is None else " (the file also has .raw: use_raw=True / --use-raw)")
            )
            raise ValueError(msg)
        return adata.layers[layer], adata.var, f"layers[{layer!r}]"
    if adata.X is None:
        msg = (f"{where}: the AnnData has no X; pass layer=... / --layer NAME (available: "
               f"{sorted(adata.layers.keys())})")
        raise ValueError(msg)
    return adata.X, adata.var, "X"


def _gene_names(var, *, gene_col: str | None, where: str) -> np.ndarray:
    if gene_col is None:
        names = np.asarray(var.index, dtype=object)
        col = "var_names"
    else:
        if gene_col not in var.columns:
            msg = f"{where}: no var column {gene_col!r}; available columns: {list(var.columns) or 'none'}"
            raise ValueError(msg)
        names = np.asarray(var[gene_col], dtype=object)
        col = f"var[{gene_col!r}]"
    missing = np.array([n is None or (isinstance(n, float) and np.isnan(n)) or str(n) == "" for n in names])
    if missing.any():
        msg = f"{where}: {int(missing.sum())} genes have an empty {col}; every gene needs an identifier"
        raise ValueError(msg)
    names = np.array([str(n) for n in names], dtype=object)
    uniq, counts = np.unique(names, return_counts=True)
    if (counts > 1).any():
        dups = uniq[counts > 1]
        msg = (
            f"{where}: {len(dups)} duplicate gene ids in {col} (e.g. {list(dups[:5])}); "
            "make them unique (in Python: adata.var_names_make_unique(), then save the file) or pick "
            "another var column (gene_col=... / --gene-col NAME)"
        )
        raise ValueError(msg)
    return names


def check_adata(
    adata,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    gene_col: str | None = None,
    source: str = "AnnData",
):
    """Validate an in-memory AnnData and return a plain one holding the chosen matrix.

    Parameters
    ----------
    adata
        Any AnnData.
    layer, use_raw
        Where the counts are: ``X`` (default), ``layers[layer]`` or ``raw.X``.
    gene_col
        ``var`` column holding gene identifiers (default: ``var_names``).
    source
        Name used in messages (the file path when called from ``read_h5ad``).

    Returns
    -------
    AnnData
        ``X``: CSR float32 ``[n_cells, n_genes]`` with explicit zeros removed; ``obs`` copied;
        ``var_names`` = gene ids; ``uns["sigcell_input"]`` = where the values came from and
        ``detect_values``'s verdict.
    """
    x, var, matrix_name = _select(adata, layer=layer, use_raw=use_raw, where=source)
    return _checked(x, var, adata.obs.copy(), matrix_name, gene_col, source, owned=False)


def _checked(x, var, obs, matrix_name: str, gene_col: str | None, source: str, *, owned: bool):
    """The plain AnnData of :func:`check_adata` from one matrix, its var and obs. ``owned``: ``x`` was
    read for this call alone, so converting it in place (no copy) cannot touch a caller's data."""
    import anndata as ad
    import scipy.sparse as sp

    where = f"{source}: {matrix_name}"
    genes = _gene_names(var, gene_col=gene_col, where=source)
    if x.shape != (len(obs), len(genes)):
        msg = f"{where}: shape {x.shape}, expected ({len(obs)}, {len(genes)}) cells x genes"
        raise ValueError(msg)
    if len(obs) == 0 or len(genes) == 0:
        msg = f"{where}: empty matrix ({len(obs)} cells x {len(genes)} genes); nothing to tokenize"
        raise ValueError(msg)
    if not (sp.issparse(x) or isinstance(x, np.ndarray)):
        x = np.asarray(x)  # h5py datasets, dask arrays: load this one matrix
    info = detect_values(x, where=where)
    csr = sp.csr_matrix(x, dtype=np.float32, copy=not owned)  # never modify the caller's matrix
    del x
    csr.eliminate_zeros()
    csr.sort_indices()
    out = ad.AnnData(X=csr, obs=obs)
    out.var_names = list(genes)
    out.obs_names = [str(n) for n in obs.index]
    out.uns["sigcell_input"] = {
        "source": source,
        "matrix": matrix_name,
        "gene_col": gene_col or "var_names",
        "gene_id_kind": gene_id_kind(genes),
        "values": info.kind,
        "values_max": info.max,
    }
    return out


def read_h5ad(
    path: str | os.PathLike,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    gene_col: str | None = None,
):
    """Read and validate a ``.h5ad`` file (dense or sparse), selecting where the counts are.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    layer, use_raw, gene_col
        See ``check_adata``.

    Returns
    -------
    AnnData
        As ``check_adata``: CSR float32 ``X`` ``[n_cells, n_genes]``, ``var_names`` = gene ids.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not a readable (complete) h5ad, or its values / gene ids fail validation.
    """

    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such file; pass the path of an .h5ad file or a dataset name (sigcell datasets)"
        raise FileNotFoundError(msg)
    try:
        selected = None if layer is not None and use_raw else _read_selected(path, layer, use_raw)
    except Exception as err:  # h5py / anndata raise many types for damaged files
        raise ValueError(_unreadable(path, err)) from err
    if selected is not None:
        return _checked(*selected, gene_col, str(path), owned=True)
    # A matrix the file lacks (or both sources named): the full read, whose check explains.
    return check_adata(open_h5ad(path), layer=layer, use_raw=use_raw, gene_col=gene_col, source=str(path))


def _unreadable(path, err: Exception) -> str:
    return (f"{path}: cannot be read as .h5ad ({type(err).__name__}: {err}); the file may be truncated or "
            "not an AnnData file: re-download or re-write it")


def open_h5ad(path: str | os.PathLike):
    """``anndata.read_h5ad(path)``, with one clear ``ValueError`` for a file that is not a readable
    (complete) .h5ad: h5py and anndata raise many kinds of errors for damaged files."""
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except Exception as err:
        raise ValueError(_unreadable(path, err)) from err


def _read_selected(path: Path, layer: str | None, use_raw: bool):
    """``(matrix, var, obs, matrix name)`` read from the file without its other matrices (layers, raw,
    X: a file holding counts, normalized values and a dense raw is not read whole), or None where the
    chosen matrix is not in the file."""
    import h5py

    try:
        from anndata.io import read_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem

    key, var_key, name = ("X", "var", "X")
    if use_raw:
        key, var_key, name = "raw/X", "raw/var", "raw.X"
    elif layer is not None:
        key, name = f"layers/{layer}", f"layers[{layer!r}]"
    with h5py.File(path, "r") as f:
        if key not in f or var_key not in f or "obs" not in f:
            return None
        return read_elem(f[key]), read_elem(f[var_key]), read_elem(f["obs"]), name
