"""Stage 1 of ``sigcell compare`` (CPU, needs anndata + scanpy): datasets -> plain numpy inputs.

For each dataset, ``prepare`` writes ``<prepared>/<name>/``::

    tokens.npz     gene_ids int32 [T], values [T], offsets int64 [N + 1] (all tokenized cells, in file
                   order), train int64 [n_train], heldout int64 [n_heldout] (indices into the N cells)
    vocab.json     the GeneVocab the model is trained with (genes expressed in training cells)
    labels.json    cell-type label of each held-out cell (the report's ground truth)
    pca.npy        float32 [n_heldout, <= 50]: the PCA baseline of the held-out cells
    pca_train.npy  float32 [n_heldout, <= 50]: the same recipe fit on the training cells, applied to them
    meta.json      source, tokenizer, split, label counts, tokenization and baseline statistics

and ``<prepared>/manifest.json`` (written last) listing them. Only numpy, JSON and the gene vocabulary
are needed to train from it (the GPU stage); each dataset folder is written under a temporary name
and renamed, so an interrupted prepare redoes only the unfinished datasets.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sigcell.data.split import HELDOUT_FRACTION, MAX_HELDOUT, SPLIT_SEED, heldout_split, stratified_split
from sigcell.eval._io import made_folder, read_json, write_array, write_json

__all__ = ["DatasetInput", "PrepareConfig", "prepare", "resolve_datasets", "stratified_split"]

FORMAT = "sigcell-compare-prepared"
VERSION = 1


@dataclass(frozen=True)
class DatasetInput:
    """One dataset of a comparison: a registered name or an ``.h5ad`` path, and its label column."""

    name: str  # folder name in the prepared directory and in the report
    source: str  # registered dataset name or file path
    kind: str  # "dataset" or "file"
    label_col: str


@dataclass(frozen=True)
class PrepareConfig:
    """How cells are tokenized and split; stored in every prepared dataset's ``meta.json``."""

    encoding: str = "binned"  # value encoding (from the preset's model.value_encoding)
    n_bins: int = 51  # binned encoding bins (from the preset's model.n_bins)
    max_genes: int = 1024  # genes kept per cell, <cls> extra
    # "sample" (expression-weighted, seeded): keeping only the top genes leaves nothing but the highest
    # expression bins in long cells (zeisel at 128 genes: bin entropy 0.11 nats), a trivial target.
    truncation: str = "sample"
    # The hold-out (sigcell.data.split: the same split keeps these cells out of the pooled corpus).
    heldout_fraction: float = HELDOUT_FRACTION  # share of labelled cells held out, stratified by cell type
    max_heldout: int = MAX_HELDOUT  # cap on held-out cells per dataset (bounds metric time and result size)
    split_seed: int = SPLIT_SEED  # the split never depends on the training seeds
    pca_comps: int = 50  # PCA baseline components
    n_top_genes: int = 2000  # PCA baseline highly variable genes

    def validate(self) -> None:
        if not 0.0 < self.heldout_fraction < 1.0:
            msg = f"heldout_fraction must lie in (0, 1), got {self.heldout_fraction!r}"
            raise ValueError(msg)
        for name in ("max_genes", "max_heldout", "pca_comps", "n_top_genes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                msg = f"{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def resolve_datasets(items: list[str] | None, label_col: str | None = None) -> list[DatasetInput]:
    """Turn names / paths into :class:`DatasetInput` (default: every labelled registered dataset).

    A registered dataset uses its registry label column (``cell_type``) unless ``label_col`` is given;
    an ``.h5ad`` path needs ``label_col`` (default ``"cell_type"``), checked when it is read.
    """
    from sigcell import datasets

    if not items:
        items = [n for n in datasets.available() if datasets.info(n).labels]
    out: list[DatasetInput] = []
    for item in items:
        item = str(item)
        path = Path(item)
        if item.endswith(".h5ad") or path.exists():
            if not path.is_file():
                msg = (f"{item}: no such .h5ad file; pass an existing file or a dataset name "
                       f"{datasets.available()}")
                raise FileNotFoundError(msg)
            out.append(DatasetInput(path.stem, str(path), "file", label_col or "cell_type"))
        elif item in datasets.available():
            labels = datasets.info(item).labels
            if not labels:
                msg = (f"dataset {item!r} has no cell-type labels, so nothing can be scored; labelled: "
                       f"{[n for n in datasets.available() if datasets.info(n).labels]}")
                raise ValueError(msg)
            out.append(DatasetInput(item, item, "dataset", label_col or labels[0]))
        else:
            msg = (f"{item!r} is neither a registered dataset {datasets.available()} nor an existing .h5ad "
                   "file")
            raise ValueError(msg)
    names = [d.name for d in out]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        msg = f"two inputs share the name(s) {dups}; rename the files so each dataset has its own name"
        raise ValueError(msg)
    return out


def _load(ds: DatasetInput):
    from sigcell.data.io import check_adata, read_h5ad

    if ds.kind == "file":
        adata = read_h5ad(ds.source)
    else:
        from sigcell import datasets

        raw = datasets.load(ds.source)
        adata = check_adata(raw, source=f"dataset {ds.source}")
        adata.uns["sigcell_dataset"] = raw.uns.get("sigcell_dataset", {})  # check_adata keeps obs only
    if ds.label_col not in adata.obs.columns:
        msg = (f"{ds.source}: no label column {ds.label_col!r} in obs; columns are "
               f"{list(adata.obs.columns)}; pass --label-col")
        raise ValueError(msg)
    return adata


def _prepare_one(ds: DatasetInput, config: PrepareConfig, folder: Path) -> dict:
    from sigcell.data.tokenize import TokenizerConfig, gene_medians, tokenize
    from sigcell.data.vocab import GeneVocab
    from sigcell.eval.baselines import pca_baseline, pca_projected

    t0 = time.perf_counter()
    adata = _load(ds)
    split = heldout_split(adata, ds.label_col, fraction=config.heldout_fraction,
                          max_heldout=config.max_heldout, seed=config.split_seed, source=ds.source)
    train_rows, held_rows = split.train, split.heldout
    labelled = ~adata.obs[ds.label_col].isna().to_numpy()
    labels = adata.obs[ds.label_col].astype(str).to_numpy()
    # The vocabulary (and rank medians) come from the training cells only.
    train_adata = adata[train_rows]
    vocab = GeneVocab.from_adata(train_adata, gene_id_kind=adata.uns["sigcell_input"]["gene_id_kind"])
    tok = TokenizerConfig(encoding=config.encoding, n_bins=config.n_bins, max_genes=config.max_genes,
                          truncation=config.truncation, seed=config.split_seed)
    if tok.encoding == "rank":
        med = gene_medians(train_adata)
        keep = np.isin(np.asarray(train_adata.var_names), vocab.genes)
        order = np.argsort(np.asarray(train_adata.var_names)[keep])  # vocab genes are sorted
        vocab = vocab.with_medians(med[keep][order])
    cells = tokenize(adata, vocab, tok, empty="drop")
    # Rows without a vocabulary gene were dropped: map the split onto tokenized cells.
    position = np.full(adata.n_obs, -1, dtype=np.int64)
    position[cells.cell_index] = np.arange(len(cells))
    train = position[train_rows][position[train_rows] >= 0]
    heldout_rows = held_rows[position[held_rows] >= 0]
    heldout = position[heldout_rows]
    pca, pca_info = pca_baseline(adata[heldout_rows], n_comps=config.pca_comps,
                                 n_top_genes=config.n_top_genes, seed=config.split_seed)
    pca_train, pca_train_info = pca_projected(adata[train_rows], adata[heldout_rows],
                                              n_comps=config.pca_comps, n_top_genes=config.n_top_genes,
                                              seed=config.split_seed)
    np.savez_compressed(folder / "tokens.npz", gene_ids=cells.gene_ids, values=cells.values,
                        offsets=cells.offsets, train=train, heldout=heldout)
    vocab.save(folder / "vocab.json")
    held_labels = labels[heldout_rows]
    write_json(folder / "labels.json", held_labels.tolist())
    write_array(folder / "pca.npy", pca)
    write_array(folder / "pca_train.npy", pca_train)
    uniq, counts = np.unique(held_labels, return_counts=True)
    lengths = np.diff(cells.offsets)
    share = np.unique(cells.values, return_counts=True)[1] / max(cells.values.size, 1)
    meta = {
        "format": FORMAT, "version": VERSION, "name": ds.name, "source": ds.source, "kind": ds.kind,
        "label_col": ds.label_col, "prepare": config.to_dict(), "tokenizer": tok.to_dict(),
        "n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "vocab_size": len(vocab),
        "n_tokenized": len(cells), "n_train": int(train.size), "n_heldout": int(heldout.size),
        "n_unlabelled": int((~labelled).sum()),
        "heldout_label_counts": {str(u): int(c) for u, c in zip(uniq, counts, strict=True)},
        "tokenize": {k: v for k, v in cells.stats.items() if k != "unknown_gene_examples"},
        "length": {"mean": float(lengths.mean()), "median": float(np.median(lengths)),
                   "max": int(lengths.max())},
        # Entropy (nats) of the kept token values: near 0 means a trivial masked-value target.
        "value_entropy": float(-(share * np.log(share)).sum()) if tok.encoding == "binned" else None,
        "values": adata.uns["sigcell_input"]["values"],
        "provenance": adata.uns.get("sigcell_dataset", {"file": ds.source}),
        "pca": pca_info, "pca_train": pca_train_info, "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(folder / "meta.json", meta)
    return meta


def prepare(inputs: list[DatasetInput], out_dir: str | os.PathLike, config: PrepareConfig, *,
            preset: str, bar=None) -> dict:
    """Prepare every dataset into ``out_dir`` (reusing finished ones) and write the manifest.

    Parameters
    ----------
    inputs
        From :func:`resolve_datasets`.
    out_dir
        The prepared directory (``<compare out>/prepared``).
    config
        Tokenization and split settings.
    preset
        Name of the model preset the tokenization was chosen for (recorded; the train stage checks it).
    bar
        Optional :class:`~sigcell.eval.progress.Progress` advanced once per dataset.

    Returns
    -------
    dict
        The manifest.
    """
    config.validate()
    with made_folder(out_dir) as out:
        return _prepare_into(out, inputs, config, preset, bar)


def _prepare_into(out: Path, inputs, config: PrepareConfig, preset: str, bar) -> dict:
    metas = []
    for ds in inputs:
        folder = out / ds.name
        meta_path = folder / "meta.json"
        if meta_path.is_file():
            meta = read_json(meta_path)
            if meta.get("prepare") != config.to_dict() or meta.get("source") != ds.source:
                msg = (f"{folder} was prepared with other settings ({meta.get('prepare')}, source "
                       f"{meta.get('source')!r}) than requested ({config.to_dict()}, {ds.source!r}); use "
                       "another --out or delete that folder")
                raise ValueError(msg)
        else:
            tmp = out / f".{ds.name}.partial-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                meta = _prepare_one(ds, config, tmp)
                shutil.rmtree(folder, ignore_errors=True)  # an earlier folder without meta.json
                os.replace(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        metas.append(meta)
        if bar is not None:
            bar.advance(1, f"prepared {ds.name}")
    from sigcell import __version__

    manifest = {"format": FORMAT, "version": VERSION, "preset": preset, "prepare": config.to_dict(),
                "datasets": [m["name"] for m in metas], "sigcell": __version__,
                "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}
    write_json(out / "manifest.json", manifest)
    return manifest


def read_manifest(prepared: str | os.PathLike) -> dict:
    """The manifest of a prepared directory, with a clear error if it is missing or foreign."""
    path = Path(prepared) / "manifest.json"
    if not path.is_file():
        msg = (f"{prepared}: no prepared inputs (manifest.json missing); run `sigcell compare --stage "
               "prepare --out DIR` first (on a machine with anndata/scanpy), then carry DIR/prepared")
        raise FileNotFoundError(msg)
    manifest = read_json(path)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        msg = f"{path}: not a {FORMAT} v{VERSION} manifest; re-run the prepare stage"
        raise ValueError(msg)
    return manifest
