"""Conversions between padded batches (``[B, L, ...]`` + lengths) and packed ones (``[T, ...]`` + offsets)."""

from __future__ import annotations

import torch

__all__ = [
    "cu_seqlens_from_lengths",
    "lengths_from_cu_seqlens",
    "pack_padded",
    "packed_positions",
    "unpack_to_padded",
]


def cu_seqlens_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Cumulative sequence offsets ``[0, l0, l0 + l1, ...]`` as int32, shape ``[B + 1]``."""
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    if lengths.numel():
        cu[1:] = torch.cumsum(lengths.reshape(-1).to(torch.int64), 0).to(torch.int32)
    return cu


def lengths_from_cu_seqlens(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Per-sequence lengths (int32, shape ``[B]``) from cumulative offsets (shape ``[B + 1]``)."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int32)


def packed_positions(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of the ``total`` packed tokens, its sequence index and its position inside the sequence.

    Returns
    -------
    (seq_idx, pos): two int64 tensors of shape ``[total]``.
    """
    # A sorted search instead of repeat_interleave: the output size is ``total``, known without reading
    # the offsets, so there is no device sync and torch.compile sees a static shape. ``right=True``
    # skips empty sequences (their end equals the next start).
    offsets = cu_seqlens.to(torch.int64)
    token = torch.arange(total, device=cu_seqlens.device)
    seq_idx = torch.searchsorted(offsets[1:], token, right=True)
    pos = token - offsets[seq_idx]
    return seq_idx, pos


def unpack_to_padded(x: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> torch.Tensor:
    """Scatter packed tokens ``[T, ...]`` into a zero-padded batch ``[B, max_len, ...]``."""
    batch = cu_seqlens.numel() - 1
    out = x.new_zeros((batch, max_len, *x.shape[1:]))
    seq_idx, pos = packed_positions(cu_seqlens, x.shape[0])
    out[seq_idx, pos] = x
    return out


def pack_padded(x: torch.Tensor, cu_seqlens: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Gather the valid tokens of a padded batch ``[B, L, ...]`` into a packed tensor ``[T, ...]``.

    ``cu_seqlens`` (``[B + 1]``) gives the valid lengths; rows past each length are dropped. ``total``
    (``T``, if the caller knows it) saves reading ``cu_seqlens[-1]`` on the host, a device sync.
    """
    if total is None:
        total = int(cu_seqlens[-1].item()) if cu_seqlens.numel() else 0
    seq_idx, pos = packed_positions(cu_seqlens, total)
    return x[seq_idx, pos]
