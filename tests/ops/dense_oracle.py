"""An independent oracle: the whole score matrix with plain autograd, one sequence at a time (tiny sizes).

It shares no code with sigcell's block-by-block path, so the two checking each other means something.
"""

from __future__ import annotations

import math

import torch


def dense_sigmoid_attention(q, k, v, *, scale=None, bias=None, causal=False, key_bias=None, alibi=None):
    """One sequence: q [Lq, H, D], k / v [Lk, Hkv, D], key_bias [Lk] -> out [Lq, H, D] (autograd)."""
    lq, heads, dim = q.shape
    lk, kv_heads = k.shape[0], k.shape[1]
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = torch.einsum("ihd,jhd->hij", q, k) * scale
    if bias is None:
        s = s - math.log(max(lk, 1))
    elif isinstance(bias, torch.Tensor):
        s = s + bias.view(-1, 1, 1)
    else:
        s = s + bias
    if key_bias is not None:
        s = s + key_bias.view(1, 1, -1)
    i = torch.arange(lq).view(-1, 1)
    j = torch.arange(lk).view(1, -1)
    if alibi is not None:
        s = s - alibi.view(-1, 1, 1) * (i + lk - lq - j).abs()
    p = torch.sigmoid(s)
    if causal:
        p = p * (j <= i + lk - lq)
    return torch.einsum("hij,jhd->ihd", p, v)
