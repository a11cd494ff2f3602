"""sigcell: sigmoid attention for single-cell foundation models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "sigmoid_attn_func", "sigmoid_attn_varlen_func"]


def __getattr__(name: str):
    # The ops import torch (about a second): loaded on first use, so `sigcell --help` and the CLI's
    # argument errors do not wait for it.
    if name in ("sigmoid_attn_func", "sigmoid_attn_varlen_func"):
        from sigcell import ops

        return getattr(ops, name)
    msg = f"module 'sigcell' has no attribute {name!r}"
    raise AttributeError(msg)
