"""sigcell: sigmoid attention for single-cell foundation models."""

from sigcell.ops import sigmoid_attn_func, sigmoid_attn_varlen_func

__version__ = "0.1.0"

__all__ = ["__version__", "sigmoid_attn_func", "sigmoid_attn_varlen_func"]
