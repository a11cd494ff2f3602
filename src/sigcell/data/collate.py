"""Collate tokenized cells into a ``CellBatch``: padded (``seq_lens``) or packed (``cu_seqlens``).

Both layouts prepend ``<cls>`` (value 0) to every cell and carry exactly the same tokens: unpacking
a packed batch with ``sigcell.ops.padding.unpack_to_padded`` gives the padded batch. Padding uses
``PAD_ID`` and value 0. Values are float32 for the rank encoding and int64 bins for binned.
"""

from __future__ import annotations

import numpy as np
import torch

from sigcell.data.batch import CellBatch
from sigcell.data.vocab import CLS_ID, PAD_ID
from sigcell.ops.padding import cu_seqlens_from_lengths

__all__ = ["collate_packed", "collate_padded", "torch_value_dtype"]

LAYOUTS = ("padded", "packed")


def torch_value_dtype(encoding: str) -> torch.dtype:
    """dtype of ``CellBatch.values``: float32 (rank scores) or int64 (bins)."""
    return torch.float32 if encoding == "rank" else torch.int64


def _with_cls(gene_ids: np.ndarray, values: np.ndarray, n_genes: np.ndarray, value_dtype: torch.dtype):
    """Flat tokens with ``<cls>`` inserted before each cell; returns (ids, values, seq_lens)."""
    seq_lens = n_genes.astype(np.int64) + 1
    total = int(seq_lens.sum())
    cell_starts = np.concatenate([[0], np.cumsum(seq_lens)[:-1]])
    is_cls = np.zeros(total, dtype=bool)
    is_cls[cell_starts] = True
    ids = np.full(total, CLS_ID, dtype=np.int64)
    ids[~is_cls] = gene_ids
    vals = torch.zeros(total, dtype=value_dtype)
    vals[torch.from_numpy(~is_cls)] = torch.from_numpy(np.asarray(values)).to(value_dtype)
    return torch.from_numpy(ids), vals, seq_lens


def collate_packed(
    gene_ids: np.ndarray,
    values: np.ndarray,
    n_genes: np.ndarray,
    *,
    encoding: str,
    cell_index: np.ndarray | None = None,
) -> CellBatch:
    """Pack cells back to back.

    Shapes
    ------
    gene_ids, values: ``[t]`` genes of all cells, concatenated; n_genes: ``[B]`` (``t = sum``).

    Returns
    -------
    CellBatch
        ``gene_ids`` int64 ``[T]``, ``values`` ``[T]`` (T = t + B), ``cu_seqlens`` int32 ``[B + 1]``,
        ``max_seqlen`` = longest cell including ``<cls>``, ``cell_index`` int64 ``[B]`` if given.
    """
    ids, vals, seq_lens = _with_cls(gene_ids, values, n_genes, torch_value_dtype(encoding))
    lens = torch.from_numpy(seq_lens)
    return CellBatch(
        gene_ids=ids,
        values=vals,
        cu_seqlens=cu_seqlens_from_lengths(lens),
        max_seqlen=int(seq_lens.max()) if seq_lens.size else 0,
        cell_index=None if cell_index is None else torch.as_tensor(cell_index, dtype=torch.int64),
    )


def collate_padded(
    gene_ids: np.ndarray,
    values: np.ndarray,
    n_genes: np.ndarray,
    *,
    encoding: str,
    cell_index: np.ndarray | None = None,
    pad_to_multiple_of: int = 1,
) -> CellBatch:
    """Right-pad cells to the longest one (optionally rounded up to a multiple, for kernels).

    Shapes
    ------
    gene_ids, values: ``[t]``; n_genes: ``[B]``.

    Returns
    -------
    CellBatch
        ``gene_ids`` int64 ``[B, L]`` (``PAD_ID`` past each cell), ``values`` ``[B, L]`` (0 past each
        cell), ``seq_lens`` int32 ``[B]`` including ``<cls>``, ``cell_index`` int64 ``[B]`` if given.
    """
    ids, vals, seq_lens = _with_cls(gene_ids, values, n_genes, torch_value_dtype(encoding))
    batch = seq_lens.size
    max_len = int(seq_lens.max()) if batch else 0
    max_len = -(-max_len // pad_to_multiple_of) * pad_to_multiple_of
    row = np.repeat(np.arange(batch), seq_lens)
    col = np.arange(seq_lens.sum()) - np.repeat(np.concatenate([[0], np.cumsum(seq_lens)[:-1]]), seq_lens)
    row_t, col_t = torch.from_numpy(row), torch.from_numpy(col)
    out_ids = torch.full((batch, max_len), PAD_ID, dtype=torch.int64)
    out_vals = torch.zeros((batch, max_len), dtype=vals.dtype)
    out_ids[row_t, col_t] = ids
    out_vals[row_t, col_t] = vals
    return CellBatch(
        gene_ids=out_ids,
        values=out_vals,
        seq_lens=torch.from_numpy(seq_lens.astype(np.int32)),
        cell_index=None if cell_index is None else torch.as_tensor(cell_index, dtype=torch.int64),
    )
