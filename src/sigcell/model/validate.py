"""Checks of a :class:`~sigcell.data.CellBatch` against a model configuration, where batches enter."""

from __future__ import annotations

import torch

from sigcell.data.batch import CellBatch
from sigcell.model.config import ModelConfig


def _fail(msg: str) -> None:
    raise ValueError(msg)


def check_batch(batch: CellBatch, config: ModelConfig) -> None:
    """Raise ``ValueError`` if ``batch`` does not fit ``config``.

    Shapes and dtypes are always checked; value ranges only for CPU tensors (on a GPU they would cost a
    device sync every step; the trainer checks batches on the CPU before moving them).
    """
    if torch.compiler.is_compiling():
        return
    ids, values = batch.gene_ids, batch.values
    layout = "packed [T]" if batch.packed else "padded [B, L]"
    if ids.dim() != (1 if batch.packed else 2):
        _fail(f"CellBatch.gene_ids must be {layout} for this layout, got shape {tuple(ids.shape)}")
    if ids.dtype != torch.int64:
        _fail(f"CellBatch.gene_ids must be int64, got {ids.dtype}; convert with .long()")
    if values.shape != ids.shape:
        _fail(f"CellBatch.values must have the shape of gene_ids {tuple(ids.shape)}, "
              f"got {tuple(values.shape)}")
    if config.value_encoding == "continuous" and not values.is_floating_point():
        _fail(f"value_encoding 'continuous' needs float values, got {values.dtype}; the batch looks "
              "binned or ranked: set ModelConfig.value_encoding to match the tokenizer")
    if config.value_encoding == "binned" and values.dtype != torch.int64:
        _fail(f"value_encoding 'binned' needs int64 bins, got {values.dtype}; the batch looks continuous or "
              "rank-encoded: set ModelConfig.value_encoding to match the tokenizer")
    if batch.mask is not None and (batch.mask.shape != ids.shape or batch.mask.dtype != torch.bool):
        _fail(f"CellBatch.mask must be bool with shape {tuple(ids.shape)}, got {batch.mask.dtype} "
              f"{tuple(batch.mask.shape)}")
    if batch.packed:
        cu = batch.cu_seqlens
        if cu.dtype != torch.int32 or cu.dim() != 1:
            _fail(f"CellBatch.cu_seqlens must be a 1-D int32 tensor [B + 1], "
                  f"got {cu.dtype} {tuple(cu.shape)}")
    else:
        lens = batch.seq_lens
        if lens.dtype != torch.int32 or tuple(lens.shape) != (ids.shape[0],):
            _fail(f"CellBatch.seq_lens must be int32 [B] = [{ids.shape[0]}], "
                  f"got {lens.dtype} {tuple(lens.shape)}")
    if ids.device.type != "cpu" or ids.numel() == 0:
        return
    lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]) if batch.packed else batch.seq_lens
    if lengths.numel() and int(lengths.min()) < 1:
        _fail(f"every cell needs at least its <cls> token, got a cell of length {int(lengths.min())}")
    if batch.packed and int(batch.cu_seqlens[-1]) != ids.numel():
        _fail(f"CellBatch.cu_seqlens ends at {int(batch.cu_seqlens[-1])} but there are {ids.numel()} tokens")
    if not batch.packed and lengths.numel() and int(lengths.max()) > ids.shape[1]:
        _fail(f"CellBatch.seq_lens has a length {int(lengths.max())} above the padded width {ids.shape[1]}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= config.vocab_size:
        _fail(f"gene ids must lie in [0, vocab_size={config.vocab_size}), got [{lo}, {hi}]; build the model "
              "with vocab_size = len(vocabulary)")
    if config.value_encoding == "binned":
        vlo, vhi = int(values.min()), int(values.max())
        if vlo < 0 or vhi >= config.n_bins:
            _fail(f"binned values must lie in [0, n_bins={config.n_bins}), got [{vlo}, {vhi}]; set "
                  "ModelConfig.n_bins to the tokenizer's number of bins")
