"""Where the cells are in a token tensor: padded (``seq_lens``) or packed (``cu_seqlens``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sigcell.ops.padding import (
    cu_seqlens_from_lengths,
    lengths_from_cu_seqlens,
    pack_padded,
    unpack_to_padded,
)


@dataclass(frozen=True)
class SeqLayout:
    """The cell boundaries of a batch of tokens.

    Padded: tokens ``[B, L, ...]`` with ``seq_lens`` int32 ``[B]`` (right padding).
    Packed: tokens ``[T, ...]`` with ``cu_seqlens`` int32 ``[B + 1]`` and ``max_seqlen``.
    """

    seq_lens: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int | None = None

    @property
    def packed(self) -> bool:
        """True for the packed layout."""
        return self.cu_seqlens is not None

    @property
    def num_cells(self) -> int:
        """Number of cells."""
        return int(self.cu_seqlens.numel() - 1) if self.packed else int(self.seq_lens.numel())

    def lengths(self) -> torch.Tensor:
        """int32 ``[B]`` number of tokens of each cell."""
        return lengths_from_cu_seqlens(self.cu_seqlens) if self.packed else self.seq_lens

    def cu(self) -> torch.Tensor:
        """int32 ``[B + 1]`` cumulative offsets (computed from the lengths when padded)."""
        return self.cu_seqlens if self.packed else cu_seqlens_from_lengths(self.seq_lens)

    def to_padded(self, x: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Tokens as a padded ``[B, L, ...]`` tensor (a no-op when already padded)."""
        if not self.packed:
            return x
        return unpack_to_padded(x, self.cu_seqlens, width if width is not None else int(self.max_seqlen))

    def from_padded(self, x: torch.Tensor, total: int | None = None) -> torch.Tensor:
        """Inverse of :meth:`to_padded`: back to this layout (drops padding when packed).

        ``total``: the number of packed tokens, if known (saves a device sync, see ``pack_padded``).
        """
        return pack_padded(x, self.cu_seqlens, total) if self.packed else x

    def padded_valid(self, width: int, device: torch.device) -> torch.Tensor:
        """bool ``[B, width]``: True on the real tokens of each cell in the padded view."""
        return torch.arange(width, device=device).view(1, -1) < self.lengths().to(device).view(-1, 1)
