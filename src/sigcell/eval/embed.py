"""Cell embeddings from a trained run: ``embed(adata, run)`` writes ``adata.obsm["X_sigcell"]``.

``run`` is a run folder, a checkpoint folder, a ``LoadedRun`` or the name of a shipped pretrained model
(``sigcell.pretrained``, e.g. ``"sigcell-small"``); ``adata`` may also be a registered dataset name or an
``.h5ad`` path (``load_input``). Gene identifiers are mapped to the vocabulary's keys first (Ensembl ids
to GENCODE symbols, as ``sigcell prepare`` does), and how many genes the model knows is recorded.

``embed_cells`` is the tensor-level core (tokenized cells in, ``[n_cells, d_model]`` out); it needs
only torch and numpy, so the GPU train stage of ``sigcell compare`` uses it too.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["embed", "embed_cells", "load_input", "tokenizer_of"]

TOKENIZER_FILE = "tokenizer.json"  # written into compare run folders: how their cells were tokenized


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision not in ("auto", "bf16", "fp32"):
        msg = f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}"
        raise ValueError(msg)
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def embed_cells(
    model: torch.nn.Module,
    cells: Any,
    *,
    batch_size: int = 64,
    layout: str = "padded",
    pooling: str | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Embed tokenized cells with a trained model, in the order of ``cells``.

    Parameters
    ----------
    model
        A ``MaskedExpressionModel`` or ``CellEncoder`` (anything with ``.embed(batch, pooling)``);
        it is run in eval mode on the device of its parameters.
    cells
        A cell source of ``sigcell.data`` (``TokenizedCells``, ``Corpus``).
    batch_size
        Cells per forward pass.
    layout
        ``"padded"`` or ``"packed"`` batches (same numbers up to rounding).
    pooling
        ``"cls"`` or ``"mean"``; None uses the model's configured pooling.
    precision
        ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"`` or ``"fp32"``.

    Returns
    -------
    np.ndarray
        float32 ``[len(cells), d_model]``; row ``i`` is cell ``i`` of ``cells``.
    """
    from sigcell.data.loader import make_dataloader

    if not isinstance(batch_size, int) or batch_size < 1:
        msg = f"batch_size must be a positive integer, got {batch_size!r}"
        raise ValueError(msg)
    device = next(model.parameters()).device
    # length-sorted batches (rows still land where the cells are): full-length cells pad far less
    loader = make_dataloader(cells, batch_size=batch_size, layout=layout, shuffle=False, bucket=True)
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        with _autocast(device, precision):
            for idx in loader.sampler:  # position-indexed, so rows land where the cells are
                batch = loader.collate(idx).to(device)
                emb = model.embed(batch, pooling).float().cpu().numpy()
                if out is None:
                    out = np.empty((len(cells), emb.shape[1]), dtype=np.float32)
                out[np.asarray(idx)] = emb
    finally:
        model.train(was_training)
    assert out is not None  # make_dataloader refuses an empty source
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        msg = (f"embed: the model gave non-finite (NaN / inf) embeddings for {int(bad.sum())} of {len(out)} "
               "cells (e.g. cell {}); its weights or the input values are not finite: check the input "
               "matrix for NaN / inf, and re-export or reinstall the model if its file may be damaged"
               ).format(int(np.flatnonzero(bad)[0]))
        raise ValueError(msg)
    return out


def tokenizer_of(run: Any):
    """The ``TokenizerConfig`` a run's cells were tokenized with.

    Shipped models (``tokenizer.json`` in the model folder) and compare runs (``tokenizer.json`` in the
    run folder) store it; a run pretrained on a corpus uses the corpus's tokenizer when the corpus is
    still there; else it is rebuilt from the model config: encoding and bins of the model,
    ``data.max_genes`` (default None: every expressed gene), top truncation.
    """
    from sigcell.data.tokenize import TokenizerConfig
    from sigcell.eval._io import read_json

    here = Path(run.path)
    for stored in (here / TOKENIZER_FILE, here.parent.parent / TOKENIZER_FILE):  # <run>/checkpoints/step_*/
        if stored.is_file():
            return TokenizerConfig(**read_json(stored))
    corpus = getattr(run.config.data, "corpus", None)
    manifest = Path(corpus) / "manifest.json" if corpus else None
    if manifest is not None and manifest.is_file():
        tok = read_json(manifest).get("tokenizer")
        if tok and tok.get("encoding") == run.config.model.value_encoding:
            return TokenizerConfig(**tok)
    m = run.config.model
    if m.value_encoding not in ("binned", "rank"):
        msg = (f"the run's model reads value_encoding={m.value_encoding!r}, which sigcell.data cannot "
               "tokenize; pass tokenizer=TokenizerConfig(...) explicitly")
        raise ValueError(msg)
    max_genes = run.config.data.max_genes or TokenizerConfig().max_genes
    return TokenizerConfig(encoding=m.value_encoding, n_bins=m.n_bins, max_genes=max_genes)


def _load_run(model_or_run_dir: Any, device: str | torch.device):
    from sigcell.train.checkpoint import LoadedRun, load_checkpoint

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        msg = (f"device {str(device)!r} was requested but torch sees no CUDA GPU; use device 'cpu' "
               "(--device cpu)")
        raise ValueError(msg)

    if isinstance(model_or_run_dir, LoadedRun):
        return model_or_run_dir
    if isinstance(model_or_run_dir, (str, os.PathLike)):
        from sigcell import pretrained

        if isinstance(model_or_run_dir, str) and pretrained.is_model_name(model_or_run_dir):
            return pretrained.load(model_or_run_dir, device=str(device))
        return load_checkpoint(model_or_run_dir, device=device)
    msg = (f"model_or_run_dir must be a run folder path, a pretrained model name ({_model_names()}) or a "
           f"LoadedRun (sigcell.train.load_checkpoint), got {type(model_or_run_dir).__name__}; a bare model "
           "has no vocabulary: load the run instead")
    raise TypeError(msg)


def _model_names() -> list[str]:
    from sigcell import pretrained

    return pretrained.available()


def load_input(data: str | os.PathLike):
    """An AnnData from a registered dataset name (``sigcell.datasets.available()``) or an ``.h5ad`` path.

    Raises
    ------
    FileNotFoundError
        ``data`` is neither; the message lists the dataset names.
    ValueError
        The file is not a readable .h5ad.
    """
    from sigcell import datasets
    from sigcell.data.io import open_h5ad

    text = str(data)
    path = Path(text)
    if path.is_file():
        return open_h5ad(path)
    if text in datasets.available() and not path.exists():
        return datasets.load(text)
    msg = f"{text}: no such .h5ad file and not a registered dataset name {datasets.available()}"
    raise FileNotFoundError(msg)


def embed(
    adata,
    model_or_run_dir: Any,
    *,
    key_added: str = "X_sigcell",
    batch_size: int = 64,
    pooling: str | None = None,
    tokenizer: Any = None,
    layer: str | None = None,
    use_raw: bool = False,
    gene_col: str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    copy: bool = False,
    source: str | None = None,
):
    """Embed every cell of an AnnData with a pretrained sigcell model (scanpy conventions).

    Genes are matched to the model's vocabulary by identifier, Ensembl ids (with or without a version
    suffix) mapped to GENCODE symbols first (``sigcell.data.harmonize_genes``) unless the vocabulary
    is keyed by Ensembl id; genes it does not know are ignored and counted (a warning says how many).
    Cells left without any known gene get a row of NaN; a file without any known gene, or whose cells
    express none of them, is refused, and so are non-finite embeddings (damaged weights, NaN input).

    Parameters
    ----------
    adata
        AnnData with counts (or log-normalized values) in ``X`` / ``layers[layer]`` / ``raw``; or a
        registered dataset name / ``.h5ad`` path (loaded, embedded and returned, as with ``copy=True``).
    model_or_run_dir
        A run folder written by ``sigcell pretrain`` / ``sigcell compare`` (or one checkpoint folder),
        the name of a shipped pretrained model (``sigcell.pretrained.available()``, e.g.
        ``"sigcell-small"``), or a ``LoadedRun``.
    key_added
        ``adata.obsm`` key of the embedding; parameters go to ``adata.uns[key_added]["params"]``.
    batch_size
        Cells per forward pass.
    pooling
        ``"cls"`` / ``"mean"``; None uses the model's pooling.
    tokenizer
        A ``sigcell.data.TokenizerConfig``; None uses the run's (see :func:`tokenizer_of`).
    layer, use_raw, gene_col
        Where values and gene identifiers are (see ``sigcell.data.check_adata``).
    device, precision
        Where to run the model; ``precision`` as :func:`embed_cells`.
    copy
        Return a modified copy instead of writing into ``adata``.
    source
        How error messages name the input (default: its path, or "the AnnData").

    Returns
    -------
    AnnData | None
        The copy when ``copy=True`` (or when ``adata`` was a name / path), else None. Shapes:
        ``obsm[key_added]`` float32 ``[n_obs, d_model]``. ``uns[key_added]["params"]`` records the model,
        ``n_genes_in_input``, ``n_genes_used`` (known to the vocabulary), ``n_genes_unknown``,
        ``gene_keys`` (symbols / mapped from Ensembl / unmapped) and the tokenizer.

    Raises
    ------
    ValueError
        No gene of the input is in the model's vocabulary (or other invalid input), saying what to do.
    """
    from anndata import AnnData

    from sigcell.data.genes import harmonize_genes
    from sigcell.data.io import check_adata
    from sigcell.data.tokenize import tokenize
    from sigcell.data.vocab import GeneVocab

    if isinstance(adata, (str, os.PathLike)):
        source = source or str(adata)
        adata, copy = load_input(adata), False  # a fresh AnnData: filled in place and returned
        by_name = True
    else:
        by_name = False
    source = source or "the AnnData"
    if not isinstance(adata, AnnData):
        msg = (f"embed: adata must be an AnnData, got {type(adata).__name__}; read files with "
               "anndata.read_h5ad")
        raise TypeError(msg)
    if not isinstance(key_added, str) or not key_added:
        msg = f"embed: key_added must be a non-empty string, got {key_added!r}"
        raise ValueError(msg)
    run = _load_run(model_or_run_dir, device)
    if not isinstance(run.vocab, GeneVocab):
        msg = (f"the run at {run.path} has no sigcell gene vocabulary (pretrained on synthetic cells?); "
               "embed needs a run trained on tokenized cells (sigcell prepare / sigcell compare)")
        raise ValueError(msg)
    config = tokenizer if tokenizer is not None else tokenizer_of(run)
    checked = check_adata(adata, layer=layer, use_raw=use_raw, gene_col=gene_col, source=source)
    keys = harmonize_genes(checked, map_ensembl=run.vocab.gene_id_kind != "ensembl")
    match = run.vocab.match(checked.var_names)
    if match.n_known == 0:
        col = f"var[{gene_col!r}]" if gene_col else "var_names"
        msg = (f"embed: none of the {checked.n_vars} genes of {source} ({col}, e.g. "
               f"{list(checked.var['gene_id'][:3])}) is in the model's vocabulary ({run.vocab.n_genes} genes "
               f"keyed by {run.vocab.gene_id_kind}, e.g. {list(run.vocab.genes[:3])}); pass gene_col=... "
               "(--gene-col) naming a var column of gene symbols or Ensembl ids")
        raise ValueError(msg)
    if match.n_unknown:
        warnings.warn(
            f"embed: {match.n_unknown} of {checked.n_vars} genes are not in the model's vocabulary "
            f"({run.vocab.n_genes} genes) and were ignored (e.g. {list(match.unknown_examples)[:5]})",
            UserWarning, stacklevel=2)
    cells = tokenize(checked, run.vocab, config, empty="drop")
    if not len(cells):
        msg = (f"embed: none of the {checked.n_obs} cells of {source} expresses any of the "
               f"{match.n_known} known genes (all their counts are zero); there is nothing to embed: check "
               "that the matrix read holds counts or expression values: layer= / use_raw= "
               "(--layer / --use-raw)")
        raise ValueError(msg)
    emb = np.full((checked.n_obs, run.config.model.d_model), np.nan, dtype=np.float32)
    if len(cells):
        emb[cells.cell_index] = embed_cells(run.model, cells, batch_size=batch_size, pooling=pooling,
                                            precision=precision)
    n_empty = checked.n_obs - len(cells)
    if n_empty:
        warnings.warn(f"embed: {n_empty} cells have no expressed vocabulary gene; their rows are NaN",
                      UserWarning, stacklevel=2)
    from sigcell import __version__

    target = adata.copy() if copy else adata
    target.obsm[key_added] = emb
    target.uns[key_added] = {"params": {
        "model": str(model_or_run_dir) if isinstance(model_or_run_dir, str) else str(run.path),
        "model_path": str(run.path),
        "step": int(run.step),
        "attention": run.config.model.attention,
        "pooling": pooling or run.config.model.pooling,
        "tokenizer": config.to_dict(),
        "n_genes_in_input": int(checked.n_vars),
        "n_genes_used": int(match.n_known),
        "gene_keys": keys.counts(),
        "n_genes_unknown": int(match.n_unknown),
        "n_cells_without_known_genes": int(n_empty),
        "sigcell_version": __version__,
    }}
    return target if copy or by_name else None
