"""Multi-head self-attention over cells, with sigmoid (sigcell op) or softmax (torch SDPA) scores.

Both kinds share the projections, the options and the initialization; :meth:`Attention._attend` is the
only place where they differ.

Softmax backends
----------------
* padded batches: ``torch.nn.functional.scaled_dot_product_attention`` with a boolean key-padding mask
  (or an additive float mask when the per-gene key bias is on); SDPA picks the best backend that accepts
  a mask (cuDNN or memory-efficient on CUDA; flash refuses masks).
* packed batches on CUDA in bf16 / fp16 without key bias: ``torch.nn.attention.varlen.varlen_attn``
  (FlashAttention varlen; no padding is ever computed). This is the fastest correct varlen softmax
  torch 2.13 ships.
* packed batches otherwise (CPU, float32, key bias): unpack to padded, padded SDPA, pack again.
"""

from __future__ import annotations

import functools
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from sigcell.model.config import ModelConfig
from sigcell.model.layout import SeqLayout
from sigcell.model.norm import RMSNorm
from sigcell.ops import sigmoid_attn_func, sigmoid_attn_varlen_func


@functools.cache
def _torch_varlen() -> tuple[object | None, bool]:
    """torch's varlen softmax (torch >= 2.10) and whether it takes ``enable_gqa`` (2.11's does not, 2.13's
    does). Imported on first use: the module pulls in torch._dynamo, about a second of ``import``."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # pragma: no cover - older torch
        return None, False
    return varlen_attn, "enable_gqa" in inspect.signature(varlen_attn).parameters

__all__ = ["STAT_NAMES", "Attention"]

# Switch for tests and benchmarks: allow torch's varlen flash path for packed softmax on CUDA.
USE_TORCH_VARLEN = True

# Attention statistics recorded when ``Attention.record_stats`` is set (see ``_logit_stats``).
STAT_NAMES = ("logit_max", "logit_min", "logit_mean", "logit_std", "prob_max", "row_mass")
_STAT_QUERIES = 64  # queries of the first cell used for the statistics (keeps them O(L))


class Attention(nn.Module):
    """Self-attention of one transformer block.

    Parameters
    ----------
    config
        The model configuration (``attention``, ``qk_norm``, ``gated_attention``, ``sigmoid_bias``...).

    Notes
    -----
    * QK-norm: RMSNorm of q and k over the head dimension (shared gain across heads), which bounds
      the logits and prevents the attention-logit growth seen at high learning rates.
    * Sigmoid bias: ``neg_log_n`` passes ``bias=None`` to the op, i.e. ``b = -log(n_keys)`` of each
      cell, so a cell's attention mass does not grow with its length; ``learned`` adds one parameter per
      head, initialized to ``sigmoid_bias_init``. Softmax is invariant to a constant shift of the logits,
      so the bias does not exist in softmax models.
    * Gated attention: ``out = attn(x) * sigmoid(x W_g)`` per channel before the output projection
      (the G1 gate of Qiu et al. 2025), which lets a head output nothing.
    * Per-gene key bias: an additive logit ``key_bias[j]`` for each key, supplied by the encoder.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.kind = config.attention
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        self.scale = 1.0 / math.sqrt(self.head_dim)
        inner, kv_inner = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.qkv = nn.Linear(config.d_model, inner + 2 * kv_inner)
        self.out = nn.Linear(inner, config.d_model)
        self.gate = nn.Linear(config.d_model, inner) if config.gated_attention else None
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        learned = config.attention == "sigmoid" and config.sigmoid_bias == "learned"
        self.bias = nn.Parameter(torch.full((self.n_heads,), config.sigmoid_bias_init)) if learned else None
        self.record_stats = False  # set by the trainer on logging steps
        self.last_stats: torch.Tensor | None = None  # [len(STAT_NAMES)] float32 after a recorded forward

    def forward(
        self,
        x: torch.Tensor,
        layout: SeqLayout,
        key_bias: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend within each cell.

        Parameters
        ----------
        x
            Tokens ``[B, L, d_model]`` (padded) or ``[T, d_model]`` (packed).
        layout
            The cell boundaries of ``x``.
        key_bias
            Optional additive logit per token, ``[B, L]`` or ``[T]`` (float).
        return_weights
            Use the plain-PyTorch path and also return the attention probabilities.

        Returns
        -------
        (out, weights): ``out`` has the shape of ``x``; ``weights`` is ``[B, H, L, L]`` (padded view, zero
        outside each cell) when ``return_weights`` else None.
        """
        lead = x.shape[:-1]
        inner = self.n_heads * self.head_dim
        # Heads first, then the split: a view of the projection's contiguous output, sliced on the head
        # dim. Splitting the channels first and reshaping each slice made Inductor's CUDA lowering fail on
        # packed batches ("NotImplementedError: SliceView", a reshape of a slice it cannot view).
        heads = self.qkv(x).unflatten(-1, (self.n_heads + 2 * self.n_kv_heads, self.head_dim))
        q, k, v = heads.split([self.n_heads, self.n_kv_heads, self.n_kv_heads], dim=-2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        k, v = k.to(q.dtype), v.to(q.dtype)
        weights = None
        if return_weights:
            out, weights = self._eager(q, k, v, layout, key_bias)
        else:
            out = self._attend(q, k, v, layout, key_bias)
        if self.record_stats:
            self.last_stats = self._logit_stats(q, k, layout, key_bias)
        out = out.reshape(*lead, inner)
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(x))
        return self.out(out), weights

    # ------------------------------------------------------------------------------------------------
    def _attend(self, q, k, v, layout: SeqLayout, key_bias):
        if self.kind == "sigmoid":
            if layout.packed:
                m = int(layout.max_seqlen)
                return sigmoid_attn_varlen_func(q, k, v, layout.cu_seqlens, layout.cu_seqlens, m, m,
                                                scale=self.scale, bias=self.bias, key_bias=key_bias)
            return sigmoid_attn_func(q, k, v, scale=self.scale, bias=self.bias, seq_lens_q=layout.seq_lens,
                                     seq_lens_k=layout.seq_lens, key_bias=key_bias)
        if not layout.packed:
            return self._sdpa_padded(q, k, v, layout.seq_lens, key_bias)
        varlen_attn, has_gqa = _torch_varlen() if q.is_cuda else (None, False)
        if (USE_TORCH_VARLEN and varlen_attn is not None and key_bias is None
                and q.dtype in (torch.float16, torch.bfloat16) and self.head_dim % 8 == 0):
            m = int(layout.max_seqlen)
            gqa = self.n_kv_heads != self.n_heads
            if gqa and not has_gqa:
                group = self.n_heads // self.n_kv_heads
                k, v = k.repeat_interleave(group, dim=-2), v.repeat_interleave(group, dim=-2)
                gqa = False
            extra = {"enable_gqa": gqa} if has_gqa else {}
            cu = layout.cu_seqlens
            return varlen_attn(q, k, v, cu, cu, m, m, scale=self.scale, **extra)
        width = int(layout.max_seqlen)
        pad = lambda t: layout.to_padded(t, width)
        out = self._sdpa_padded(pad(q), pad(k), pad(v), layout.lengths(),
                                None if key_bias is None else pad(key_bias))
        return layout.from_padded(out, q.shape[0])

    def _sdpa_padded(self, q, k, v, seq_lens, key_bias):
        width = q.shape[1]
        valid = torch.arange(width, device=q.device).view(1, -1) < seq_lens.view(-1, 1)  # [B, L]
        if key_bias is None:
            mask = valid[:, None, None, :]
        else:
            mask = torch.where(valid, key_bias.float(), float("-inf")).to(q.dtype)[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=self.scale,
            enable_gqa=self.n_kv_heads != self.n_heads,
        ).transpose(1, 2)
        # Padded query rows are exactly 0, as the sigmoid op makes them.
        return out * valid[:, :, None, None].to(out.dtype)

    # ------------------------------------------------------------------------------------------------
    def _logits_padded(self, q, k, valid, key_bias):
        """float32 logits ``[B, H, L, L]`` exactly as the attention function sees them."""
        group = self.n_heads // self.n_kv_heads
        kr = k.repeat_interleave(group, dim=2) if group > 1 else k
        s = torch.einsum("bqhd,bkhd->bhqk", q.float(), kr.float()) * self.scale
        if key_bias is not None:
            s = s + key_bias.float()[:, None, None, :]
        if self.kind == "sigmoid":
            if self.bias is not None:
                s = s + self.bias.float().view(1, -1, 1, 1)
            else:
                n = valid.sum(1).clamp(min=1).float()
                s = s - torch.log(n).view(-1, 1, 1, 1)
        return s

    def _eager(self, q, k, v, layout: SeqLayout, key_bias):
        """Plain-PyTorch attention that materializes the probabilities (analysis, small inputs)."""
        width = q.shape[1] if not layout.packed else int(layout.max_seqlen)
        total = q.shape[0]
        if layout.packed:
            q, k, v = (layout.to_padded(t, width) for t in (q, k, v))
            key_bias = None if key_bias is None else layout.to_padded(key_bias, width)
        valid = layout.padded_valid(width, q.device)  # [B, L]
        s = self._logits_padded(q, k, valid, key_bias)
        pair = valid[:, None, :, None] & valid[:, None, None, :]
        if self.kind == "sigmoid":
            p = torch.where(pair, torch.sigmoid(s), 0.0)
        else:
            s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
            p = torch.where(pair, torch.softmax(s, -1), 0.0)
        group = self.n_heads // self.n_kv_heads
        vr = v.repeat_interleave(group, dim=2) if group > 1 else v
        out = torch.einsum("bhqk,bkhd->bqhd", p, vr.float()).to(q.dtype)
        return (layout.from_padded(out, total) if layout.packed else out), p

    @torch.no_grad()
    def _logit_stats(self, q, k, layout: SeqLayout, key_bias) -> torch.Tensor:
        """Statistics of the logits of the first cell's first queries against all its keys (float32).

        Order: ``STAT_NAMES``. ``prob_max`` is the mean over rows of the largest probability;
        ``row_mass`` the mean row sum of the probabilities (1 for softmax, free for sigmoid).
        """
        n = int(layout.lengths()[0])
        if layout.packed:
            qs, ks = q[:n].unsqueeze(0), k[:n].unsqueeze(0)
            kb = None if key_bias is None else key_bias[:n].unsqueeze(0)
        else:
            qs, ks = q[:1, :n], k[:1, :n]
            kb = None if key_bias is None else key_bias[:1, :n]
        valid = torch.ones(1, n, dtype=torch.bool, device=q.device)
        s = self._logits_padded(qs[:, :_STAT_QUERIES], ks, valid, kb)  # [1, H, nq, n]
        p = torch.sigmoid(s) if self.kind == "sigmoid" else torch.softmax(s, -1)
        return torch.stack([s.max(), s.min(), s.mean(), s.std(correction=0), p.amax(-1).mean(),
                            p.sum(-1).mean()])
