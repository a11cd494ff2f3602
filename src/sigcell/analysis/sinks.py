"""Attention sinks: how much of each head's attention lands on the first token (``<cls>``).

The sink metric follows Gu et al., "When Attention Sink Emerges in Language Models: An Empirical View"
(ICLR 2025). In our words: for every layer and head, average over queries the attention weight that a
query puts on the first token; a head counts as a sink head when that average exceeds a threshold
epsilon (0.3 in the paper), and the sink rate of a model is the fraction of all (layer, head) pairs that
are sink heads. Their models are causal, so each query sees a prefix; cells are encoded bidirectionally,
so here every query of a cell sees the whole cell and the average runs over all of its tokens.

Normalization. Softmax rows sum to 1, so a weight is already a share. Sigmoid rows do not: a query's
weights are independent numbers in (0, 1) whose sum (the row mass) is free. For the comparison each
sigmoid row is divided by its sum, giving the share of that query's attention mass on token 0 (the
quantity the threshold applies to for both kinds); the raw sigmoid weight on token 0 and the mean row mass
are reported beside it, since a large share of a tiny mass is not a sink in the softmax sense.

Per cell, the share is averaged over the cell's queries, then over cells (each cell weighs the same).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["analyze_encoder", "first_token_shares", "position_profile", "sink_rate"]


def _check_maps(attn: torch.Tensor, lengths: torch.Tensor) -> None:
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        msg = f"attention maps must be [B, H, L, L] (query, key), got shape {tuple(attn.shape)}"
        raise ValueError(msg)
    if lengths.dim() != 1 or lengths.numel() != attn.shape[0]:
        msg = f"lengths must be [B] = [{attn.shape[0]}], got shape {tuple(lengths.shape)}"
        raise ValueError(msg)
    if int(lengths.min()) < 1 or int(lengths.max()) > attn.shape[-1]:
        msg = f"lengths must lie in [1, {attn.shape[-1]}], got {lengths.tolist()}"
        raise ValueError(msg)


def first_token_shares(attn: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head attention on token 0, averaged over each cell's queries, then over cells.

    Parameters
    ----------
    attn
        One layer's attention weights ``[B, H, L, L]`` (query, key), zero outside each cell.
    lengths
        Tokens per cell ``[B]`` (``<cls>`` included).

    Returns
    -------
    dict of ``[H]`` float64 tensors: ``share`` (weight on token 0 divided by the query's row sum),
    ``raw`` (the weight itself; equals ``share`` for softmax), ``row_mass`` (row sum) and ``uniform``
    (the share of a uniform row, ``1 / length``, for reference).
    """
    _check_maps(attn, lengths)
    B, H, L, _ = attn.shape
    a = attn.double()
    valid = (torch.arange(L, device=a.device).view(1, -1) < lengths.to(a.device).view(-1, 1))
    valid = valid.double()  # [B, L]
    mass = a.sum(-1)  # [B, H, L]
    raw = a[..., 0]
    share = torch.where(mass > 0, raw / mass.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    n = valid.sum(-1).view(B, 1)  # [B, 1]

    def mean(x: torch.Tensor) -> torch.Tensor:  # over each cell's queries, then over cells
        return ((x * valid[:, None, :]).sum(-1) / n).mean(0)

    uniform = torch.full((H,), float((1.0 / lengths.double()).mean()), dtype=torch.float64)
    return {"share": mean(share), "raw": mean(raw), "row_mass": mean(mass), "uniform": uniform}


def position_profile(attn: torch.Tensor, lengths: torch.Tensor, positions: int = 16) -> torch.Tensor:
    """Mean normalized attention share on each of the first ``positions`` key positions, per head.

    Shapes
    ------
    attn ``[B, H, L, L]``, lengths ``[B]`` -> returns ``[H, positions]`` (NaN where no cell is that long).
    """
    _check_maps(attn, lengths)
    B, H, L, _ = attn.shape
    a = attn.double()
    valid = (torch.arange(L, device=a.device).view(1, -1) < lengths.to(a.device).view(-1, 1)).double()
    mass = a.sum(-1, keepdim=True)
    shares = torch.where(mass > 0, a / mass.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    per_cell = (shares * valid[:, None, :, None]).sum(2) / valid.sum(-1).view(B, 1, 1)  # [B, H, L_key]
    k = min(positions, L)
    out = torch.full((H, positions), float("nan"), dtype=torch.float64)
    for j in range(k):
        cells = lengths > j
        if cells.any():
            out[:, j] = per_cell[cells.to(per_cell.device), :, j].mean(0).cpu()
    return out


def sink_rate(shares: torch.Tensor, threshold: float = 0.3) -> float:
    """Fraction of (layer, head) pairs whose first-token share exceeds ``threshold``.

    Parameters
    ----------
    shares
        ``[n_layers, n_heads]`` first-token shares.
    threshold
        The sink threshold epsilon, in (0, 1).
    """
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0):
        msg = f"sink threshold must lie in (0, 1), got {threshold!r}; the paper uses 0.3"
        raise ValueError(msg)
    return float((shares > threshold).double().mean())


@torch.no_grad()
def analyze_encoder(encoder: torch.nn.Module, batches: Iterable[Any], *, threshold: float = 0.3,
                    positions: int = 16, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Sink statistics of a :class:`~sigcell.model.CellEncoder` over some batches of cells.

    Parameters
    ----------
    encoder
        The encoder (its ``attention_maps`` gives the plain-PyTorch probabilities).
    batches
        :class:`~sigcell.data.CellBatch` objects (padded or packed, unmasked).
    threshold
        Sink threshold on the first-token share.
    positions
        Number of leading key positions in the per-position profile.

    Returns
    -------
    dict with ``attention``, ``threshold``, ``cells``, per layer x head lists ``share``, ``raw``,
    ``row_mass``, ``uniform``; ``profile`` (per layer, mean over heads, ``positions`` values);
    ``sink_rate`` (share > threshold) and ``sink_rate_raw`` (raw weight > threshold).
    """
    sink_rate(torch.zeros(1, 1), threshold)  # validates the threshold
    encoder = encoder.to(device).eval()
    n_layers = len(encoder.blocks)
    sums: dict[str, list[torch.Tensor]] = {}
    profile = [torch.zeros(positions, dtype=torch.float64) for _ in range(n_layers)]
    profile_w = [torch.zeros(positions, dtype=torch.float64) for _ in range(n_layers)]
    cells = 0
    for batch in batches:
        batch = batch.to(device)
        lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]) if batch.packed else batch.seq_lens
        lengths = lengths.to(torch.int64).cpu()
        maps = encoder.attention_maps(batch)
        b = lengths.numel()
        for i in range(len(maps)):
            layer, maps[i] = maps[i], None  # free each layer's maps once reduced
            # Reduce on the maps' device: a layer's maps are B x H x L^2 (gigabytes at L = 8k).
            stats = {k: v.cpu() for k, v in first_token_shares(layer, lengths).items()}
            for key, value in stats.items():
                acc = sums.setdefault(key, [torch.zeros_like(value) for _ in range(n_layers)])
                acc[i] += value * b  # batch means -> cell-weighted sums
            prof = position_profile(layer, lengths, positions).mean(0)  # over heads, on the CPU
            del layer
            counts = torch.tensor([float((lengths > j).sum()) for j in range(positions)], dtype=torch.float64)
            profile[i] += torch.nan_to_num(prof) * counts
            profile_w[i] += counts
        cells += b
    if cells == 0:
        msg = "analyze_encoder: no cells were given; pass at least one batch"
        raise ValueError(msg)
    table = {k: torch.stack([v / cells for v in acc]) for k, acc in sums.items()}  # [n_layers, H]
    kind = encoder.config.attention
    prof = [(p / w.clamp(min=1)).where(w > 0, torch.tensor(float("nan"), dtype=torch.float64))
            for p, w in zip(profile, profile_w, strict=True)]
    return {
        "attention": kind, "threshold": threshold, "cells": cells,
        "n_layers": n_layers, "n_heads": int(table["share"].shape[1]),
        "share": table["share"].tolist(), "raw": table["raw"].tolist(),
        "row_mass": table["row_mass"].tolist(),
        "uniform": float(table["uniform"].mean()),
        "profile": [[None if math.isnan(x) else x for x in p.tolist()] for p in prof],
        "sink_rate": sink_rate(table["share"], threshold),
        "sink_rate_raw": sink_rate(table["raw"], threshold),
        "normalization": ("softmax rows sum to 1" if kind == "softmax" else
                          "each sigmoid query row divided by its sum (row_mass gives the raw sum)"),
    }
