"""Masked-expression masking: choose genes to predict, hide their inputs, keep their true values."""

from __future__ import annotations

from dataclasses import replace

import torch

from sigcell.data.batch import CellBatch
from sigcell.model.config import MASK_ID, N_SPECIAL_TOKENS, VALUE_ENCODINGS
from sigcell.ops.padding import pack_padded, unpack_to_padded

__all__ = ["mask_batch"]


def mask_batch(
    batch: CellBatch,
    fraction: float,
    value_encoding: str,
    generator: torch.Generator | None = None,
) -> CellBatch:
    """Mask ``round(fraction * n_genes)`` genes of each cell (at least one when the cell has a gene).

    Only gene tokens (ids >= 3) are candidates: never ``<cls>``, padding or other specials.

    * ``"continuous"`` / ``"binned"``: the masked values are set to 0 in the inputs (the model also
      swaps in a learned mask embedding); ``targets`` holds the true values.
    * ``"rank"``: the masked gene ids are replaced by ``<mask>`` (id 2) and their scores by 0, positions
      (= ranks) kept; ``targets`` holds the true gene ids (masked gene-identity prediction, as Geneformer).

    Parameters
    ----------
    batch
        A padded or packed batch without a mask.
    fraction
        Fraction of each cell's genes to mask, in (0, 1).
    value_encoding
        ``"continuous"``, ``"binned"`` or ``"rank"``.
    generator
        CPU random generator (seed it for reproducible masks); None uses the global one.

    Returns
    -------
    A new CellBatch with ``mask`` (bool, shape of ``gene_ids``) and ``targets`` (shape of ``gene_ids``;
    only the masked entries matter) set.
    """
    if not 0.0 < fraction < 1.0:
        msg = f"mask_batch: fraction must lie in (0, 1), got {fraction!r}"
        raise ValueError(msg)
    if value_encoding not in VALUE_ENCODINGS:
        msg = f"mask_batch: value_encoding must be one of {list(VALUE_ENCODINGS)}, got {value_encoding!r}"
        raise ValueError(msg)
    ids = batch.gene_ids
    if batch.packed:
        width = int(batch.max_seqlen) if batch.max_seqlen is not None else int(
            (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).max(initial=0)) if batch.num_cells else 0
        padded_ids = unpack_to_padded(ids, batch.cu_seqlens, width)
        lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).to(torch.int64)
    else:
        padded_ids, lengths = ids, batch.seq_lens.to(torch.int64)
    n_cells, width = padded_ids.shape
    in_cell = torch.arange(width, device=ids.device).view(1, -1) < lengths.view(-1, 1).to(ids.device)
    candidate = in_cell & (padded_ids >= N_SPECIAL_TOKENS)
    n_genes = candidate.sum(1)
    n_mask = torch.where(n_genes > 0, torch.round(n_genes * fraction).clamp(min=1), 0).to(torch.int64)
    # Each candidate gets a uniform score; a cell masks its n_mask lowest-scoring candidates.
    scores = torch.rand(n_cells, width, generator=generator, device="cpu").to(ids.device)
    scores = torch.where(candidate, scores, 2.0)
    order = scores.argsort(dim=1)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(width, device=ids.device).expand(n_cells, -1))
    padded_mask = candidate & (rank < n_mask.view(-1, 1))
    mask = pack_padded(padded_mask, batch.cu_seqlens) if batch.packed else padded_mask
    if value_encoding == "rank":
        targets = ids.clone()
        new_ids = torch.where(mask, MASK_ID, ids)
        new_values = torch.where(mask, torch.zeros_like(batch.values), batch.values)
    else:
        targets = batch.values.clone()
        new_ids, new_values = ids, torch.where(mask, torch.zeros_like(batch.values), batch.values)
    return replace(batch, gene_ids=new_ids, values=new_values, mask=mask, targets=targets)
