"""Attention operators and the padding helpers they use."""

from sigcell.ops.padding import (
    cu_seqlens_from_lengths,
    lengths_from_cu_seqlens,
    pack_padded,
    unpack_to_padded,
)
from sigcell.ops.sigmoid_attn import sigmoid_attn_func, sigmoid_attn_varlen_func

__all__ = [
    "cu_seqlens_from_lengths",
    "lengths_from_cu_seqlens",
    "pack_padded",
    "sigmoid_attn_func",
    "sigmoid_attn_varlen_func",
    "unpack_to_padded",
]
