"""Sigmoid attention: Triton kernels on CUDA, a plain-PyTorch path on the CPU."""

from sigcell.ops.sigmoid_attn.interface import sigmoid_attn_func, sigmoid_attn_varlen_func

__all__ = ["sigmoid_attn_func", "sigmoid_attn_varlen_func"]
