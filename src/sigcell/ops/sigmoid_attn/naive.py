"""Plain-PyTorch sigmoid attention: the CPU path and, run in float64, the reference for the kernels.

Works on padded batches ``q [B, Lq, H, D]``, ``k, v [B, Lk, Hkv, D]`` with per-sequence lengths and
computes the score matrix block by block (never the whole ``Lq x Lk`` matrix when it is large), in the
forward and in the hand-written backward, so memory stays linear in the sequence length.

The logit of query ``i`` and key ``j`` of sequence ``b`` and head ``h`` is::

    s = scale * q_i . k_j + bias[b, h] + key_bias[b, j] - slope[b, h] * |i + (Lk_b - Lq_b) - j|

and ``p = sigmoid(s)`` where key ``j`` is valid for query ``i`` (``i < Lq_b``, ``j < Lk_b`` and, if
causal, ``j <= i + Lk_b - Lq_b``), else 0. Low-precision inputs are multiplied in their own dtype
and accumulated in float32, as the kernels do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Largest number of score elements held at once (per block of queries x keys, all batches and heads).
_MAX_BLOCK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class _Problem:
    """Everything about one call except the q / k / v data, in the layout the block loop uses."""

    lens_q: torch.Tensor  # [B] int64
    lens_k: torch.Tensor  # [B] int64
    bias: torch.Tensor  # [B, Hkv, G, 1, 1] accumulation dtype
    key_bias: torch.Tensor | None  # [B, Lk] accumulation dtype
    slopes: torch.Tensor | None  # [B, Hkv, G, 1, 1] accumulation dtype
    scale: float
    causal: bool
    acc_dtype: torch.dtype
    # Over the batch: shortest query / key length and smallest Lk - Lq. Blocks inside these bounds need
    # no mask (the common case), which saves a pass over every score.
    min_len_q: int
    min_len_k: int
    min_shift: int

    def probabilities(self, q_blk: torch.Tensor, k_blk: torch.Tensor, i0: int, j0: int) -> torch.Tensor:
        """Masked sigmoid probabilities ``[B, Hkv, G, bq, bk]`` of one block (accumulation dtype)."""
        batch, i1, j1 = q_blk.shape[0], i0 + q_blk.shape[3], j0 + k_blk.shape[2]
        # A fresh tensor, so the steps below work in place.
        s = torch.einsum("bhgid,bhjd->bhgij", q_blk, k_blk).to(self.acc_dtype)
        s.mul_(self.scale).add_(self.bias)
        rows = torch.arange(i0, i1, device=q_blk.device).view(1, -1, 1)
        cols = torch.arange(j0, j1, device=q_blk.device).view(1, 1, -1)
        if self.key_bias is not None:
            s.add_(self.key_bias[:, j0:j1].reshape(batch, 1, 1, 1, -1))
        shift = (self.lens_k - self.lens_q).view(-1, 1, 1)  # bottom-right alignment of the diagonal
        if self.slopes is not None:
            distance = (rows + shift - cols).abs().to(self.acc_dtype)
            s.sub_(self.slopes * distance.unsqueeze(1).unsqueeze(1))
        p = s.sigmoid_()
        whole = i1 <= self.min_len_q and j1 <= self.min_len_k
        if self.causal:
            whole = whole and j1 - 1 <= i0 + self.min_shift
        if whole:
            return p
        valid = (rows < self.lens_q.view(-1, 1, 1)) & (cols < self.lens_k.view(-1, 1, 1))
        if self.causal:
            valid = valid & (cols <= rows + shift)
        return p.masked_fill_(~valid.unsqueeze(1).unsqueeze(1), 0.0)


def _block_size(batch: int, heads: int, lq: int, lk: int) -> tuple[int, int]:
    block_k = max(1, min(lk, 1024))
    block_q = max(1, min(lq, _MAX_BLOCK_ELEMENTS // max(1, batch * heads * block_k)))
    return block_q, block_k


def _prepare(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens_q: torch.Tensor,
    lens_k: torch.Tensor,
    bias: torch.Tensor,
    key_bias: torch.Tensor | None,
    slopes: torch.Tensor | None,
    scale: float,
    causal: bool,
) -> tuple[_Problem, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero the padding of q / k / v, move heads first and group query heads by their KV head."""
    batch, lq, heads, dim = q.shape
    lk, kv_heads = k.shape[1], k.shape[2]
    group = heads // kv_heads
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    lens_q = lens_q.to(torch.int64)
    lens_k = lens_k.to(torch.int64)
    valid_q = torch.arange(lq, device=q.device).view(1, -1) < lens_q.view(-1, 1)
    valid_k = torch.arange(lk, device=q.device).view(1, -1) < lens_k.view(-1, 1)
    min_len_q = int(lens_q.min()) if batch else 0
    min_len_k = int(lens_k.min()) if batch else 0
    min_shift = int((lens_k - lens_q).min()) if batch else 0
    # Padding may hold anything (even NaN); zero it so that 0 * padding stays 0.
    if min_len_q < lq:
        q = torch.where(valid_q[..., None, None], q, 0)
    if min_len_k < lk:
        k = torch.where(valid_k[..., None, None], k, 0)
        v = torch.where(valid_k[..., None, None], v, 0)
    q = q.permute(0, 2, 1, 3).reshape(batch, kv_heads, group, lq, dim)
    k, v = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    as_heads = lambda t: t.to(acc_dtype).reshape(batch, kv_heads, group, 1, 1)
    problem = _Problem(
        lens_q=lens_q,
        lens_k=lens_k,
        bias=as_heads(bias),
        key_bias=None if key_bias is None else torch.where(valid_k, key_bias.to(acc_dtype), 0),
        slopes=None if slopes is None else as_heads(slopes),
        scale=scale,
        causal=causal,
        acc_dtype=acc_dtype,
        min_len_q=min_len_q,
        min_len_k=min_len_k,
        min_shift=min_shift,
    )
    return problem, q, k, v


def _blocks(length: int, size: int):
    return ((start, min(start + size, length)) for start in range(0, length, size))


def sigmoid_attn_forward_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens_q: torch.Tensor,
    lens_k: torch.Tensor,
    bias: torch.Tensor,
    key_bias: torch.Tensor | None,
    slopes: torch.Tensor | None,
    scale: float,
    causal: bool,
) -> torch.Tensor:
    """Forward pass on a padded batch; padded query rows of the output are exactly 0.

    Shapes: q ``[B, Lq, H, D]``; k, v ``[B, Lk, Hkv, D]``; lens ``[B]``; bias and slopes ``[B, H]``;
    key_bias ``[B, Lk]``. Returns ``[B, Lq, H, D]`` in q's dtype.
    """
    batch, lq, heads, dim = q.shape
    problem, qh, kh, vh = _prepare(q, k, v, lens_q, lens_k, bias, key_bias, slopes, scale, causal)
    out = torch.zeros(qh.shape, dtype=problem.acc_dtype, device=q.device)
    block_q, block_k = _block_size(batch, heads, lq, k.shape[1])
    for i0, i1 in _blocks(lq, block_q):
        for j0, j1 in _blocks(k.shape[1], block_k):
            p = problem.probabilities(qh[:, :, :, i0:i1], kh[:, :, j0:j1], i0, j0)
            out[:, :, :, i0:i1] += torch.einsum("bhgij,bhjd->bhgid", p.to(v.dtype), vh[:, :, j0:j1])
    return out.reshape(batch, heads, lq, dim).permute(0, 2, 1, 3).to(q.dtype)


def sigmoid_attn_backward_padded(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens_q: torch.Tensor,
    lens_k: torch.Tensor,
    bias: torch.Tensor,
    key_bias: torch.Tensor | None,
    slopes: torch.Tensor | None,
    scale: float,
    causal: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`sigmoid_attn_forward_padded`, recomputing each block of probabilities.

    With ``dS = dP * p * (1 - p)`` and ``dP = dO . v``: ``dq = scale * dS k``, ``dk = scale * dS^T q``
    (summed over the query heads of each KV head), ``dv = p^T dO``, ``d bias[b, h] = sum dS`` and
    ``d key_bias[b, j] = sum over heads and queries of dS``.

    Returns
    -------
    (dq, dk, dv, dbias, dkey_bias) with the shapes of q, k, v, ``[B, H]`` (float32 / float64) and
    ``[B, Lk]`` (float32 / float64; zeros past each length).
    """
    batch, lq, heads, dim = q.shape
    lk = k.shape[1]
    problem, qh, kh, vh = _prepare(q, k, v, lens_q, lens_k, bias, key_bias, slopes, scale, causal)
    acc = problem.acc_dtype
    if problem.min_len_q < lq:  # gradients of padded rows may hold anything
        valid_q = torch.arange(lq, device=q.device).view(1, -1) < problem.lens_q.view(-1, 1)
        dout = torch.where(valid_q[..., None, None], dout, 0)
    do = dout.permute(0, 2, 1, 3).reshape(qh.shape).to(q.dtype)
    dq = torch.zeros(qh.shape, dtype=acc, device=q.device)
    dk = torch.zeros(kh.shape, dtype=acc, device=q.device)
    dv = torch.zeros(vh.shape, dtype=acc, device=q.device)
    dbias = torch.zeros(qh.shape[:3], dtype=acc, device=q.device)
    dkey_bias = torch.zeros(batch, lk, dtype=acc, device=q.device)
    block_q, block_k = _block_size(batch, heads, lq, lk)
    for i0, i1 in _blocks(lq, block_q):
        q_blk, do_blk = qh[:, :, :, i0:i1], do[:, :, :, i0:i1]
        for j0, j1 in _blocks(lk, block_k):
            k_blk, v_blk = kh[:, :, j0:j1], vh[:, :, j0:j1]
            p = problem.probabilities(q_blk, k_blk, i0, j0)
            dp = torch.einsum("bhgid,bhjd->bhgij", do_blk, v_blk).to(acc)
            ds = dp.mul_(p)  # dS = dP * p * (1 - p), in place on the fresh dP
            ds.addcmul_(ds, p, value=-1.0)
            dv[:, :, j0:j1] += torch.einsum("bhgij,bhgid->bhjd", p.to(q.dtype), do_blk)
            dq[:, :, :, i0:i1] += torch.einsum("bhgij,bhjd->bhgid", ds.to(q.dtype), k_blk)
            dk[:, :, j0:j1] += torch.einsum("bhgij,bhgid->bhjd", ds.to(q.dtype), q_blk)
            dbias += ds.sum(dim=(3, 4))
            dkey_bias[:, j0:j1] += ds.sum(dim=(1, 2, 3))
    dq = (dq * scale).reshape(batch, heads, lq, dim).permute(0, 2, 1, 3).to(q.dtype)
    dk = (dk * scale).permute(0, 2, 1, 3).to(k.dtype)
    dv = dv.permute(0, 2, 1, 3).to(v.dtype)
    return dq, dk, dv, dbias.reshape(batch, heads), dkey_bias
