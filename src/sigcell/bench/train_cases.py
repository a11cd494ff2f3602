"""Workloads of the end-to-end training benchmark (``sigcell bench train``): batches of cells and presets.

A :class:`TrainCase` is one batch of cells given by their lengths in tokens (``<cls>`` included):

* ``full``: ``B = tokens / L`` cells of exactly ``L`` tokens (the TritonSigmoid paper's budget of 16,384);
* ``p25`` (any padding ``p``): the same ``B``, lengths uniform in ``[(1 - p) L, L]`` (seeded);
* ``cells:<table>``: lengths from a real expressed-genes-per-cell table (:mod:`sigcell.bench.cell_lengths`),
  truncated to the context ``L``, as many cells as fit in a token budget when packed;
* ``memory``: one cell of 16,384 genes, the issue's "fits on one 80 GB card" check.

Each case runs in the padded layout (``[B, max length]`` with ``seq_lens``) and the packed one
(``[T]`` with ``cu_seqlens``) on the same cells.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sigcell.bench.cases import PAPER_TOKENS, uniform_lengths
from sigcell.bench.cell_lengths import CELL_LENGTH_QUANTILES, sample_cell_lengths

__all__ = [
    "LAYOUTS",
    "TRAIN_PRESETS",
    "Mix",
    "TrainCase",
    "TrainPreset",
    "build_train_cases",
    "memory_case",
    "mix_lengths",
    "parse_mix",
]

LAYOUTS: tuple[str, ...] = ("padded", "packed")


@dataclass(frozen=True)
class Mix:
    """A real cell-length mix: table ``dist`` (lengths times ``scale``) truncated to context ``seq_len``."""

    dist: str
    seq_len: int
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.dist not in CELL_LENGTH_QUANTILES:
            msg = f"unknown cell-length table {self.dist!r}; choose one of {sorted(CELL_LENGTH_QUANTILES)}"
            raise ValueError(msg)
        if self.seq_len < 2 or not self.scale > 0:
            msg = f"a mix needs a context L >= 2 and a scale > 0, got L={self.seq_len}, scale={self.scale}"
            raise ValueError(msg)

    @property
    def source(self) -> str:
        """``cells:celltypist`` or ``cells:celltypistx2``."""
        return f"cells:{self.dist}" + (f"x{self.scale:g}" if self.scale != 1.0 else "")

    def spec(self) -> str:
        """The command-line spelling: ``celltypistx2@8192``."""
        return self.dist + (f"x{self.scale:g}" if self.scale != 1.0 else "") + f"@{self.seq_len}"


_MIX_RE = re.compile(r"^(?P<dist>[a-z_]+)(?:x(?P<scale>[0-9.]+))?@(?P<L>[0-9]+)$")


def parse_mix(text: str) -> Mix:
    """Parse ``DIST[xSCALE]@L`` (e.g. ``celltypist@4096``, ``celltypistx2@8192``) into a :class:`Mix`."""
    match = _MIX_RE.match(text.strip())
    if not match:
        msg = (f"expected a mix as DIST[xSCALE]@L such as celltypist@4096 or scmarkx2@2048 (tables: "
               f"{', '.join(sorted(CELL_LENGTH_QUANTILES))}), got {text!r}")
        raise ValueError(msg)
    try:
        scale = float(match["scale"]) if match["scale"] else 1.0
    except ValueError:
        msg = f"bad scale in mix {text!r}: expected a number after 'x'"
        raise ValueError(msg) from None
    return Mix(match["dist"], int(match["L"]), scale)


def mix_lengths(mix: Mix, token_budget: int, seed: int = 0) -> list[int]:
    """The largest stratified draw of cells from ``mix`` whose tokens fit in ``token_budget`` (packed).

    Lengths count ``<cls>``: a cell of ``n`` expressed genes is ``n + 1`` tokens, at most ``L``. The draw is
    stratified over the quantile table (see :func:`sample_cell_lengths`), so even a small batch spans the
    distribution; at least one cell is returned.
    """
    if token_budget < mix.seq_len:
        msg = f"the token budget ({token_budget}) must hold one cell of the context L={mix.seq_len}"
        raise ValueError(msg)
    best = [mix.seq_len]
    count = 1
    while True:
        genes = sample_cell_lengths(count, mix.seq_len - 1, dist=mix.dist, scale=mix.scale, seed=seed)
        lengths = [n + 1 for n in genes]
        if sum(lengths) > token_budget:
            return best
        best, count = lengths, count + 1


@dataclass(frozen=True)
class TrainCase:
    """One batch of cells: ``lengths[i]`` tokens in cell ``i`` (``<cls>`` included), context ``seq_len``.

    ``kind`` is ``"full"`` (every cell ``L`` long), ``"padded"`` (uniform padding), ``"mix"`` (a real
    cell-length mix) or ``"memory"`` (the single-long-cell check).
    """

    kind: str
    seq_len: int
    lengths: tuple[int, ...]
    source: str
    padding: float = 0.0

    def __post_init__(self) -> None:
        if not self.lengths or any(not 2 <= n <= self.seq_len for n in self.lengths):
            msg = f"every cell needs 2..L={self.seq_len} tokens (<cls> + genes), got {list(self.lengths)}"
            raise ValueError(msg)

    @property
    def cells(self) -> int:
        """Number of cells ``B``."""
        return len(self.lengths)

    @property
    def valid_tokens(self) -> int:
        """Tokens of the cells (what the packed layout computes)."""
        return sum(self.lengths)

    @property
    def padded_tokens(self) -> int:
        """``B * max length``: what the padded layout computes."""
        return self.cells * max(self.lengths)

    @property
    def is_full(self) -> bool:
        """Whether no cell is shorter than the longest (no padding, no mask needed)."""
        return min(self.lengths) == max(self.lengths)

    @property
    def label(self) -> str:
        """``full L2048``, ``p25 L8192``, ``cells:celltypist L4096``, ``memory L16385``."""
        return f"{self.source} L{self.seq_len}"

    def attention_pairs(self, layout: str) -> int:
        """Query-key pairs per head and layer the layout computes: ``sum L_i^2`` packed, ``B L^2`` padded."""
        if layout == "packed":
            return sum(n * n for n in self.lengths)
        return self.cells * max(self.lengths) ** 2

    def to_json(self) -> dict:
        """The case's fields for the results file."""
        return {"case": self.label, "kind": self.kind, "L": self.seq_len, "B": self.cells,
                "source": self.source, "padding": round(1 - self.valid_tokens / self.padded_tokens, 4),
                "nominal_padding": self.padding, "valid_tokens": self.valid_tokens,
                "padded_tokens": self.padded_tokens, "max_len": max(self.lengths),
                "lengths": list(self.lengths)}


def memory_case(genes: int = 16384) -> TrainCase:
    """One cell of ``genes`` expressed genes (``genes + 1`` tokens with ``<cls>``)."""
    if genes < 1:
        msg = f"the memory check needs at least one gene, got {genes}"
        raise ValueError(msg)
    return TrainCase("memory", genes + 1, (genes + 1,), f"memory:{genes}-genes")


def build_train_cases(seq_lens: tuple[int, ...] | list[int], paddings: tuple[float, ...] | list[float],
                      mixes: tuple[Mix, ...] | list[Mix] = (), *, tokens: int = PAPER_TOKENS,
                      mix_tokens: int | None = None, seed: int = 0) -> list[TrainCase]:
    """The grid of cases: for each L and padding a batch of ``tokens / L`` cells, then each mix.

    Parameters
    ----------
    seq_lens
        Context lengths ``L`` of the uniform cases.
    paddings
        Fractions in ``[0, 1)``; ``0`` is the full batch.
    mixes
        Realistic cell-length mixes, each packed to ``mix_tokens`` (default ``tokens``).
    tokens
        Padded tokens per uniform batch: ``B = tokens / L`` (at least 1).
    seed
        Seed of the length draws.

    Returns
    -------
    list of :class:`TrainCase`.
    """
    if tokens < 1:
        msg = f"the token budget must be positive, got {tokens}"
        raise ValueError(msg)
    cases = []
    for seq in seq_lens:
        if seq < 2:
            msg = f"L must be >= 2 (<cls> + one gene), got {seq}"
            raise ValueError(msg)
        batch = max(1, tokens // seq)
        for pad in paddings:
            lengths = [max(2, n) for n in uniform_lengths(batch, seq, pad, seed)]
            if pad == 0:
                cases.append(TrainCase("full", seq, tuple(lengths), "full"))
            else:
                cases.append(TrainCase("padded", seq, tuple(lengths), f"p{round(pad * 100)}", pad))
    for mix in mixes:
        lengths = mix_lengths(mix, mix_tokens or tokens, seed + mix.seq_len)
        cases.append(TrainCase("mix", mix.seq_len, tuple(lengths), mix.source))
    return cases


@dataclass(frozen=True)
class TrainPreset:
    """A named plan of ``sigcell bench train``: model preset, cases, providers and step counts."""

    name: str
    description: str
    model: str = "base"
    seq_lens: tuple[int, ...] = (2048, 8192)
    paddings: tuple[float, ...] = (0.0, 0.25)
    mixes: tuple[str, ...] = ("celltypist@4096",)
    tokens: int = PAPER_TOKENS
    mix_tokens: int | None = None
    layouts: tuple[str, ...] = LAYOUTS
    providers: tuple[str, ...] = ("default",)
    warmup: int = 3
    steps: int = 10
    memory_genes: int | None = 16384

    def mix_objects(self) -> tuple[Mix, ...]:
        """The preset's mixes parsed."""
        return tuple(parse_mix(m) for m in self.mixes)


TRAIN_PRESETS: dict[str, TrainPreset] = {
    "tiny": TrainPreset(
        "tiny", "CPU test of the harness: tiny model, L 32 and 64, 128 tokens per batch, 2 steps",
        model="tiny", seq_lens=(32, 64), paddings=(0.0, 0.25), mixes=("scmarkx0.05@64",), tokens=128,
        warmup=1, steps=2, memory_genes=None,
    ),
    "quick": TrainPreset(
        "quick", "GPU smoke run (< 2 min): base model, L 2k and 8k full and 25 %% padded, one real mix",
        seq_lens=(2048, 8192), mixes=("celltypist@4096",), warmup=3, steps=10,
    ),
    "full": TrainPreset(
        "full", "the issue's grid: base model, L 1k, 2k, 4k, 8k full and 25 %% padded, four real mixes, "
        "the 16k-gene memory check",
        seq_lens=(1024, 2048, 4096, 8192),
        mixes=("scmark@2048", "celltypist@4096", "celltypist@8192", "celltypistx2@8192"),
        warmup=5, steps=20,
    ),
}
