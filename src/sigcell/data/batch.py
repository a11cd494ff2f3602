"""The batch the model consumes: one cell = ``<cls>`` followed by its expressed genes.

Two layouts carry the same cells:

* padded: ``gene_ids [B, L]``, ``values [B, L]``, ``seq_lens`` int32 ``[B]`` (right padding);
* packed: ``gene_ids [T]``, ``values [T]``, ``cu_seqlens`` int32 ``[B + 1]``, ``max_seqlen``.

``values`` is float32 for continuous encodings and int64 for binned / rank encodings (see
``value_kind``). Masked-expression pretraining adds ``mask`` (bool, same shape as ``gene_ids``: the
positions to predict) and ``targets`` (the true values / gene ids at those positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class CellBatch:
    """A batch of tokenized cells, padded (``seq_lens`` set) or packed (``cu_seqlens`` set)."""

    gene_ids: torch.Tensor
    values: torch.Tensor
    seq_lens: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int | None = None
    mask: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    cell_index: torch.Tensor | None = None  # int64 [B]: row of each cell in its source, for embeddings
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.seq_lens is None) == (self.cu_seqlens is None):
            msg = "CellBatch needs exactly one of seq_lens (padded layout) or cu_seqlens (packed layout)"
            raise ValueError(msg)

    @property
    def packed(self) -> bool:
        """True for the packed layout."""
        return self.cu_seqlens is not None

    @property
    def num_cells(self) -> int:
        """Number of cells in the batch."""
        return int(self.cu_seqlens.numel() - 1) if self.packed else int(self.gene_ids.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CellBatch:
        """A copy with every tensor moved to ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device, non_blocking=non_blocking)
        moved["extras"] = {k: v.to(device, non_blocking=non_blocking) for k, v in self.extras.items()}
        return replace(self, **moved)
