"""Benchmark cases (one attention problem each), the named presets, and FLOP counting.

Shapes follow the TritonSigmoid paper's convention: a fixed budget of 16,384 padded tokens per batch
(``B = 16384 / L``) and a model width of 2,048 (``H = 2048 / D``).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

from sigcell.bench.cell_lengths import sample_cell_lengths

__all__ = [
    "MODES",
    "PRESETS",
    "Case",
    "Preset",
    "attention_flops",
    "build_cases",
    "paper_batch_heads",
    "uniform_lengths",
]

MODES: tuple[str, ...] = ("fwd", "bwd", "fwd+bwd")
# Cost of each mode in units of the forward FLOPs (backward = 2.5x forward, the flash-attn convention).
_MODE_FACTOR: dict[str, float] = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}

PAPER_TOKENS = 16384  # padded tokens per batch: B = PAPER_TOKENS / L
PAPER_WIDTH = 2048  # model width: H = PAPER_WIDTH / D


def paper_batch_heads(seq_len: int, head_dim: int, tokens: int = PAPER_TOKENS) -> tuple[int, int]:
    """Batch and head count of the paper's convention: ``B = tokens / L`` (at least 1), ``H = 2048 / D``."""
    if seq_len < 1 or head_dim < 1:
        msg = f"L and D must be positive, got L={seq_len}, D={head_dim}"
        raise ValueError(msg)
    return max(1, tokens // seq_len), max(1, PAPER_WIDTH // head_dim)


def attention_flops(lengths: list[int] | tuple[int, ...], heads: int, head_dim: int, *, causal: bool,
                    mode: str) -> float:
    """FLOPs of one attention call over the valid tokens only.

    Forward: ``4 * H * D * sum(L_i ** 2)`` (two matmuls of ``2 * L_i**2 * D`` each per head), halved when
    causal; backward 2.5x and forward + backward 3.5x the forward.

    Parameters
    ----------
    lengths
        Valid length of each sequence of the batch.
    heads, head_dim
        Query heads ``H`` and head dimension ``D``.
    causal
        Whether future keys are masked (counts half the score matrix).
    mode
        ``"fwd"``, ``"bwd"`` or ``"fwd+bwd"``.

    Returns
    -------
    The FLOP count as a float.
    """
    if mode not in _MODE_FACTOR:
        msg = f"unknown mode {mode!r}; choose one of {list(_MODE_FACTOR)}"
        raise ValueError(msg)
    fwd = 4 * heads * head_dim * sum(int(n) * int(n) for n in lengths)
    if causal:
        fwd /= 2
    return float(fwd) * _MODE_FACTOR[mode]


def uniform_lengths(batch: int, seq_len: int, padding: float, seed: int) -> list[int]:
    """Lengths drawn uniformly from ``[ceil((1 - padding) * L), L]``; all ``L`` when ``padding == 0``.

    The draw depends only on ``(seed, L, padding)``, so the same batch is used for every D, causal flag,
    mode and provider.
    """
    if not 0.0 <= padding < 1.0:
        msg = f"padding must be a fraction in [0, 1), got {padding}"
        raise ValueError(msg)
    if padding == 0:
        return [seq_len] * batch
    low = max(1, math.ceil((1.0 - padding) * seq_len))
    rng = random.Random(f"{seed}-{seq_len}-{round(padding * 1000)}")
    return [rng.randint(low, seq_len) for _ in range(batch)]


@dataclass(frozen=True)
class Case:
    """One attention problem: a padded batch ``[B, L, H, D]``; sequence ``i`` has ``lengths[i]`` valid tokens.

    ``padding`` is the nominal fraction (lengths uniform in ``[(1 - p) L, L]``); ``lengths_source`` says where
    the lengths came from (``"uniform"`` or ``"cells:<table>"``).
    """

    head_dim: int
    seq_len: int
    batch: int
    heads: int
    padding: float
    causal: bool
    lengths: tuple[int, ...]
    lengths_source: str = "uniform"

    def __post_init__(self) -> None:
        if len(self.lengths) != self.batch:
            msg = f"Case needs one length per sequence: batch={self.batch}, got {len(self.lengths)} lengths"
            raise ValueError(msg)
        if any(not 1 <= n <= self.seq_len for n in self.lengths):
            msg = f"every length must lie in [1, L={self.seq_len}], got {list(self.lengths)}"
            raise ValueError(msg)

    @property
    def is_padded(self) -> bool:
        """Whether any sequence is shorter than ``L``."""
        return any(n < self.seq_len for n in self.lengths)

    @property
    def valid_tokens(self) -> int:
        """Number of non-padding tokens in the batch."""
        return sum(self.lengths)

    @property
    def label(self) -> str:
        """Short name such as ``D128 L4096 p25 causal`` or ``D64 L2048 cells:celltypist``."""
        parts = [f"D{self.head_dim}", f"L{self.seq_len}"]
        if self.lengths_source != "uniform":
            parts.append(self.lengths_source)
        elif self.padding:
            parts.append(f"p{round(self.padding * 100)}")
        if self.causal:
            parts.append("causal")
        return " ".join(parts)

    def flops(self, mode: str) -> float:
        """FLOPs over the valid tokens (see :func:`attention_flops`)."""
        return attention_flops(self.lengths, self.heads, self.head_dim, causal=self.causal, mode=mode)

    def to_json(self) -> dict:
        """The case's fields for the results file."""
        return {
            "D": self.head_dim, "L": self.seq_len, "B": self.batch, "H": self.heads,
            "padding": self.padding, "causal": self.causal, "lengths_source": self.lengths_source,
            "valid_tokens": self.valid_tokens, "total_tokens": self.batch * self.seq_len,
            "lengths": list(self.lengths),
        }


@dataclass(frozen=True)
class Preset:
    """A named grid of cases plus the modes and providers to run on it."""

    name: str
    description: str
    head_dims: tuple[int, ...]
    seq_lens: tuple[int, ...]
    paddings: tuple[float, ...] = (0.0,)
    causal: tuple[bool, ...] = (False,)
    modes: tuple[str, ...] = ("fwd", "bwd")
    # Provider names or groups (see sigcell.bench.providers.resolve_providers).
    providers: tuple[str, ...] = ("default",)
    # Cell-length table for a realistic preset (then `paddings` is ignored).
    cell_dist: str | None = None
    tokens: int = PAPER_TOKENS


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny", "CPU smoke test of the harness itself: D 16, 32 x L 16, 32, 64 tokens per batch, every mode",
        head_dims=(16, 32), seq_lens=(16, 32), paddings=(0.0, 0.25), causal=(False, True), modes=MODES,
        tokens=64,
    ),
    "quick": Preset(
        "quick", "smoke test: D 64, 128 x L 1k, dense and 25 %% padding, forward and backward",
        head_dims=(64, 128), seq_lens=(1024,), paddings=(0.0, 0.25),
    ),
    "paper": Preset(
        "paper", "the TritonSigmoid paper's table: D 64, 128 x L 1k, 4k, 16k, dense and 25 %% padding",
        head_dims=(64, 128), seq_lens=(1024, 4096, 16384), paddings=(0.0, 0.25),
    ),
    "full": Preset(
        "full", "every head dim, length, padding, causal flag and mode (long: split it with --d)",
        head_dims=(64, 128, 256), seq_lens=(512, 1024, 2048, 4096, 8192, 16384), paddings=(0.0, 0.25, 0.5),
        causal=(False, True), modes=MODES,
    ),
    "cells": Preset(
        "cells", "realistic batches: cell lengths from a real expressed-genes-per-cell distribution, "
        "truncated to the context L; B = 65536 / L cells",
        head_dims=(64, 128), seq_lens=(1024, 2048, 4096, 8192), cell_dist="celltypist", tokens=65536,
    ),
}


def build_cases(
    head_dims: tuple[int, ...] | list[int],
    seq_lens: tuple[int, ...] | list[int],
    paddings: tuple[float, ...] | list[float] = (0.0,),
    causal: tuple[bool, ...] | list[bool] = (False,),
    *,
    seed: int = 0,
    tokens: int = PAPER_TOKENS,
    cell_dist: str | None = None,
    cell_scale: float = 1.0,
) -> list[Case]:
    """The grid of cases, ordered by D, L, padding, causal.

    Parameters
    ----------
    head_dims, seq_lens, paddings, causal
        The values of each axis.
    seed
        Seed of the length draws.
    tokens
        Padded tokens per batch (``B = tokens / L``).
    cell_dist, cell_scale
        When ``cell_dist`` names a table of :mod:`sigcell.bench.cell_lengths`, lengths are drawn from it
        (times ``cell_scale``, truncated to L) instead of the uniform padding model; ``paddings`` is ignored.

    Returns
    -------
    list of :class:`Case`.
    """
    cases = []
    pads = (0.0,) if cell_dist else tuple(paddings)
    for d, seq, pad, cz in itertools.product(head_dims, seq_lens, pads, causal):
        batch, heads = paper_batch_heads(seq, d, tokens)
        if cell_dist:
            lengths = sample_cell_lengths(batch, seq, dist=cell_dist, scale=cell_scale, seed=seed + seq)
            source = f"cells:{cell_dist}" + (f"x{cell_scale:g}" if cell_scale != 1.0 else "")
            pad = round(1.0 - sum(lengths) / (batch * seq), 4)
        else:
            lengths, source = uniform_lengths(batch, seq, pad, seed), "uniform"
        cases.append(Case(d, seq, batch, heads, pad, bool(cz), tuple(lengths), source))
    return cases
