"""Tokenization: one cell -> its expressed genes as token ids plus one value per gene.

Two encodings (``TokenizerConfig.encoding``):

* ``"rank"`` (Geneformer): ``score = counts / total x 1e4 / median_g``, where ``median_g`` is the
  gene's nonzero median of ``counts / total x 1e4`` over the corpus (``GeneVocab.medians``). Genes
  are ordered by descending score (ties: lower token id first): the order carries the information.
  ``values`` holds the score itself (float32), so a model may also use the magnitude.
* ``"binned"`` (scGPT): ``normalize_total(1e4) + log1p``, then per-cell quantile bins over the
  cell's nonzero genes: bin ``1 + floor(r (n_bins - 2) / (n - 1))`` where ``n`` is the number of
  nonzero genes and ``r`` the 0-based ascending rank of the last member of the value's tie group
  (bin ``n_bins - 1`` for the largest value, and for a single gene). This is
  ``np.digitize(v, np.quantile(nonzero, np.linspace(0, 1, n_bins - 1)))`` computed on ranks, so it
  needs no float interpolation and equal values share a bin. Bin 0 means zero expression, which
  tokenized cells never contain (only nonzero genes become tokens); ``<cls>`` and padding get 0.
  Genes are ordered by token id (binned models are order-free; this keeps the order canonical).
  Since the bins depend only on ranks within a cell, log-normalized input gives the same bins.

Only nonzero genes become tokens; genes missing from the vocabulary are dropped and counted.
``max_genes`` bounds the genes kept per cell (the ``<cls>`` token added at batching is extra; the
default None keeps every expressed gene):
``truncation="top"`` keeps the highest scores (rank) / expression (binned), ties by token id;
``truncation="sample"`` draws without replacement with probability proportional to the score /
expression (Efraimidis-Spirakis keys from a counter-based hash of ``(seed, cell id, gene id)``), so
the draw does not depend on chunking, cell order or gene order. Binned values are computed on all
nonzero genes before truncation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sigcell.data.io import check_adata, detect_values, require_counts, to_count_scale
from sigcell.data.vocab import GeneVocab

if TYPE_CHECKING:  # scipy loads with the first matrix, not with the model's imports
    import scipy.sparse as sp

__all__ = [
    "GeneMedianSketch",
    "TokenizedCells",
    "TokenizerConfig",
    "cell_hash",
    "gene_medians",
    "tokenize",
]

ENCODINGS = ("rank", "binned")
TRUNCATIONS = ("top", "sample")


@dataclass(frozen=True)
class TokenizerConfig:
    """How cells become tokens. Written into corpus manifests and model checkpoints."""

    encoding: str = "rank"  # "rank" (Geneformer rank-value) or "binned" (scGPT per-cell quantile bins)
    n_bins: int = 51  # binned only: bins 1..n_bins-1 for nonzero values; 0 = zero / <cls> / padding
    # genes kept per cell, <cls> excluded; None (default) keeps every expressed gene (full-length cells);
    # Geneformer cuts to 2048, scGPT to 1200
    max_genes: int | None = None
    truncation: str = "top"  # "top": highest-ranked genes; "sample": expression-weighted, seeded
    seed: int = 0  # seed of truncation="sample"
    target_sum: float = 1e4  # per-cell normalization total, both encodings
    require_counts: bool = False  # refuse input that is not raw integer counts (or log1p of them)

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            msg = f"TokenizerConfig.encoding: expected one of {ENCODINGS}, got {self.encoding!r}"
            raise ValueError(msg)
        if self.truncation not in TRUNCATIONS:
            msg = f"TokenizerConfig.truncation: expected one of {TRUNCATIONS}, got {self.truncation!r}"
            raise ValueError(msg)
        if not 3 <= self.n_bins <= 32767:
            msg = f"TokenizerConfig.n_bins: expected 3..32767, got {self.n_bins}"
            raise ValueError(msg)
        if self.max_genes is not None and (isinstance(self.max_genes, bool) or self.max_genes < 1):
            msg = f"TokenizerConfig.max_genes: expected >= 1 or None (all genes), got {self.max_genes}"
            raise ValueError(msg)
        if not self.target_sum > 0:
            msg = f"TokenizerConfig.target_sum: expected > 0, got {self.target_sum}"
            raise ValueError(msg)

    @property
    def value_dtype(self) -> np.dtype:
        """dtype of stored values: float32 scores (rank) or int16 bins (binned)."""
        return np.dtype(np.float32) if self.encoding == "rank" else np.dtype(np.int16)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def cell_hash(cell_ids: Sequence[str], *, salt: str = "") -> np.ndarray:
    """A stable uint64 per cell id (blake2b), independent of process, platform and cell order.

    Shapes
    ------
    cell_ids: ``[n]`` -> uint64 ``[n]``.
    """
    prefix = salt.encode() + b"\x1f"
    out = np.empty(len(cell_ids), dtype=np.uint64)
    for i, cid in enumerate(cell_ids):
        out[i] = int.from_bytes(hashlib.blake2b(prefix + str(cid).encode(), digest_size=8).digest(), "little")
    return out


def _uniform_hash(seed: int, cell_keys: np.ndarray, gene_ids: np.ndarray) -> np.ndarray:
    """Uniform (0, 1) floats from a splitmix64 hash of ``(seed, cell key, gene id)``."""
    with np.errstate(over="ignore"):
        z = cell_keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z ^= gene_ids.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        z ^= np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x165667B19E3779F9)
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


# -- gene medians --------------------------------------------------------------------------------------------

# Log-histogram resolution of the median sketch: 128 bins per octave (0.54 % wide), 2^-20 .. 2^20.
_BINS_PER_OCTAVE = 128
_LOG2_MIN, _LOG2_MAX = -20, 20
_N_HBINS = (_LOG2_MAX - _LOG2_MIN) * _BINS_PER_OCTAVE


class GeneMedianSketch:
    """Streaming nonzero median of ``counts / total x target_sum`` per gene, over many AnnData.

    Values are counted in a log-spaced histogram (128 bins per octave, stored sparsely) and the
    median is interpolated inside its bin: relative error < 0.3 %, memory independent of the number
    of cells. ``add`` accepts count-scale CSR matrices and their gene names.
    """

    def __init__(self, target_sum: float = 1e4) -> None:
        self.target_sum = target_sum
        self._gene_index: dict[str, int] = {}
        self._pieces: list[tuple[np.ndarray, np.ndarray]] = []  # (row * _N_HBINS + bin, count)

    def add(self, x: sp.csr_matrix, genes: Sequence[str], totals: np.ndarray | None = None) -> None:
        """Count the nonzero normalized values of ``x`` ``[n_cells, n_genes]`` (CSR, count scale).

        ``totals`` (``[n_cells]``) defaults to the row sums of ``x``.
        """
        rows_of = np.array([self._gene_index.setdefault(str(g), len(self._gene_index)) for g in genes])
        if totals is None:
            totals = np.asarray(x.sum(axis=1)).ravel()
        cell = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        keep = x.data > 0
        norm = x.data[keep].astype(np.float64) / totals[cell[keep]] * self.target_sum
        hbin = np.floor((np.log2(norm) - _LOG2_MIN) * _BINS_PER_OCTAVE).astype(np.int64)
        hbin = np.clip(hbin, 0, _N_HBINS - 1)
        key = rows_of[x.indices[keep]].astype(np.int64) * _N_HBINS + hbin
        uniq, counts = np.unique(key, return_counts=True)
        self._pieces.append((uniq, counts))
        if len(self._pieces) > 16:  # keep memory bounded when adding many files
            self._pieces = [self._merged()]

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._pieces:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        keys = np.concatenate([p[0] for p in self._pieces])
        counts = np.concatenate([p[1] for p in self._pieces])
        uniq, inv = np.unique(keys, return_inverse=True)
        return uniq, np.bincount(inv, weights=counts).astype(np.int64)

    def medians(self, genes: Sequence[str]) -> np.ndarray:
        """Median per gene in ``genes`` (float64 ``[n]``); NaN for genes never seen nonzero.

        All genes at once: one global cumulative count and one ``searchsorted`` find each gene's
        two middle order statistics (a per-gene Python loop cost ~1 s per 20k genes). Each
        statistic is interpolated inside its bin, spreading the bin's members evenly in log space.
        """
        keys, counts = self._merged()
        row = keys // _N_HBINS
        hbin = keys % _N_HBINS  # keys are sorted, so bins are ascending within each row
        out = np.full(len(genes), np.nan)
        starts = np.searchsorted(row, np.arange(len(self._gene_index) + 1))
        r = np.array([self._gene_index.get(str(g), -1) for g in genes], dtype=np.int64)
        seen = r >= 0
        seen[seen] = starts[r[seen]] < starts[r[seen] + 1]
        if not seen.any():
            return out
        r = r[seen]
        cum = np.cumsum(counts)
        s, e = starts[r], starts[r + 1]
        base = np.where(s > 0, cum[np.maximum(s - 1, 0)], 0)  # values counted in the rows before
        n = cum[e - 1] - base
        vals = []
        for pos in ((n - 1) // 2, n // 2):  # the two middle order statistics (0-based)
            k = np.searchsorted(cum, base + pos, side="right")  # global index of the bin holding it
            before = np.where(k > s, cum[np.maximum(k - 1, 0)], base) - base
            frac = (pos - before + 0.5) / counts[k]
            expo = _LOG2_MIN + (hbin[k] + frac) / _BINS_PER_OCTAVE
            # Python's pow (C libm) as the former per-gene loop used: numpy's SIMD power may differ
            # in the last bit, and the medians must stay bit-identical
            vals.append(np.array([2.0**x for x in expo.tolist()]))
        # odd n: both positions are the same value, which the former np.mean of a 1-element set kept
        out[seen] = np.where(n % 2 == 1, vals[0], (vals[0] + vals[1]) / 2)
        return out


def gene_medians(adata, *, target_sum: float = 1e4) -> np.ndarray:
    """Nonzero median of ``counts / total x target_sum`` of each gene of one AnnData.

    Returns
    -------
    np.ndarray
        float64 ``[n_genes]`` in ``var_names`` order; NaN for genes with no nonzero value.
    """
    if "sigcell_input" not in adata.uns:
        adata = check_adata(adata)
    import scipy.sparse as sp

    info = detect_values(adata.X)
    x = to_count_scale(sp.csr_matrix(adata.X), info)
    sketch = GeneMedianSketch(target_sum)
    sketch.add(x, list(adata.var_names))
    return sketch.medians(list(adata.var_names))


# -- tokenized cells ---------------------------------------------------------------------------------------


@dataclass
class TokenizedCells:
    """Tokenized cells held in memory, ragged: cell ``i`` owns tokens ``offsets[i]:offsets[i+1]``.

    Attributes
    ----------
    gene_ids : np.ndarray
        int32 ``[T]``: token ids (genes only; ``<cls>`` is added at batching).
    values : np.ndarray
        ``[T]``: float32 scores (rank) or int16 bins (binned).
    offsets : np.ndarray
        int64 ``[N + 1]``.
    cell_index : np.ndarray
        int64 ``[N]``: row of each cell in the source AnnData (cells may have been dropped).
    config : TokenizerConfig
    stats : dict
        ``n_cells``, ``n_tokens``, ``n_truncated``, ``n_empty_dropped``, ``n_unknown_genes``, ...
    """

    gene_ids: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    cell_index: np.ndarray
    config: TokenizerConfig
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def n_genes(self) -> np.ndarray:
        """int64 ``[N]``: number of gene tokens of each cell (``<cls>`` excluded)."""
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(gene_ids, values)`` of cell ``i``, genes only."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.gene_ids[a:b], self.values[a:b]

    def gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenated ``(gene_ids [t], values [t], n_genes [len(idx)])`` of cells ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        starts, lens = self.offsets[idx], self.n_genes[idx]
        flat = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        return self.gene_ids[flat], self.values[flat], lens

    def source_index(self, idx: np.ndarray) -> np.ndarray:
        """Row in the source AnnData of cells ``idx`` (int64)."""
        return self.cell_index[np.asarray(idx, dtype=np.int64)]


def _row_order(rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Permutation sorting by ``(rows, key)``, ties keeping input order.

    This is the tokenizer's hot spot (a few sorts of every expressed gene of a chunk). One global
    argsort of millions of floats is cache-unfriendly and slow, and ``np.lexsort`` is slower still;
    so when ``rows`` is non-decreasing (CSR order, all callers) the row, the top bits of the key and
    the entry's position in its row are packed into one unique uint64 and sorted with ``np.sort``
    (SIMD, no index array). Entries whose truncated keys tie but whose full keys differ are put
    in order afterwards by ``_fix_truncated_ties``, so the result equals the exact sort.
    """
    n = key.size
    rows = rows.astype(np.int64, copy=False)
    if n == 0 or (n > 1 and np.any(rows[1:] < rows[:-1])):
        return _row_order_exact(rows, key)
    starts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
    lens = np.diff(np.concatenate([starts, [n]]))
    row_rank = np.repeat(np.arange(starts.size, dtype=np.int64), lens)  # dense row number
    pos = np.arange(n, dtype=np.int64) - np.repeat(starts, lens)
    row_bits = max(int(starts.size - 1).bit_length(), 1)
    pos_bits = max(int(lens.max() - 1).bit_length(), 1)
    key_bits = 64 - row_bits - pos_bits
    if key_bits < 16:  # too few key bits left to be worth it: exact fallback
        return _row_order_exact(rows, key)
    full = _ordered_bits(key)
    packed = (
        (row_rank.astype(np.uint64) << np.uint64(64 - row_bits))
        | ((full >> np.uint64(64 - key_bits)) << np.uint64(pos_bits))
        | pos.astype(np.uint64)
    )
    packed.sort()
    s_row = (packed >> np.uint64(64 - row_bits)).astype(np.int64)
    order = starts[s_row] + (packed & np.uint64((1 << pos_bits) - 1)).astype(np.int64)
    trunc = packed >> np.uint64(pos_bits)  # (row, truncated key) of each sorted entry
    return _fix_truncated_ties(order, trunc, full)


def _ordered_bits(key: np.ndarray) -> np.ndarray:
    """uint64 whose unsigned order is the float order of ``key`` (float64; -0.0 counts as 0.0)."""
    u = (np.asarray(key, dtype=np.float64) + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    neg = (u >> np.uint64(63)).astype(bool)
    return np.where(neg, ~u, u | np.uint64(1 << 63))


def _fix_truncated_ties(order: np.ndarray, trunc: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Re-sort, by (full key, input position), runs of ``order`` whose truncated keys are equal
    but whose full keys are not already non-decreasing. Such runs are rare (equal keys are common,
    e.g. counts of 1, but those are already in input order), so this touches few entries."""
    f = full[order]
    same = trunc[1:] == trunc[:-1]
    bad = same & (f[1:] < f[:-1])
    if not bad.any():
        return order
    run_id = np.cumsum(np.concatenate([[True], ~same]))  # one id per run of equal truncated keys
    bad_runs = np.unique(run_id[1:][bad])
    sel = np.flatnonzero(np.isin(run_id, bad_runs))  # contiguous runs, in sorted order
    sub = np.lexsort((order[sel], f[sel], run_id[sel]))
    order = order.copy()
    order[sel] = order[sel][sub]
    return order


def _row_order_exact(rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Reference of ``_row_order`` for any ``rows``: two argsorts (stable key rank, then rows)."""
    n = key.size
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(key, kind="stable")] = np.arange(n)
    return np.argsort(rows.astype(np.int64) * n + rank)  # unique keys: any sort is stable


def _bins_from_ranks(rows: np.ndarray, norm: np.ndarray, n_per_row: np.ndarray, n_bins: int) -> np.ndarray:
    """Per-cell quantile bins (see module docstring) of entries grouped by ``rows``; int16."""
    order = _row_order(rows, norm)
    r_sorted, v_sorted = rows[order], norm[order]
    total = order.size
    starts = np.concatenate([[0], np.cumsum(n_per_row)])[r_sorted]
    pos = np.arange(total)
    is_last = np.ones(total, dtype=bool)
    is_last[:-1] = (r_sorted[1:] != r_sorted[:-1]) | (v_sorted[1:] != v_sorted[:-1])
    last = np.where(is_last, pos, total)
    last = np.minimum.accumulate(last[::-1])[::-1] - starts  # rank of the tie group's last member
    n = n_per_row[r_sorted]
    k = n_bins - 1
    bins = np.where(n > 1, (last * (k - 1)) // np.maximum(n - 1, 1) + 1, k)
    out = np.empty(total, dtype=np.int16)
    out[order] = bins
    return out


def _tokenize_block(
    x: sp.csr_matrix,
    token_ids: np.ndarray,
    totals: np.ndarray,
    medians: np.ndarray | None,
    cell_keys: np.ndarray | None,
    config: TokenizerConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Tokenize CSR rows whose columns are the vocabulary genes ``token_ids`` (ascending, so that
    each row's entries are in token-id order and stable sorts break ties by token id).

    ``medians`` is indexed by token id. Returns ``(gene_ids int32, values, n_genes int64, n_truncated)``.
    """
    n_cells = x.shape[0]
    n_per_row = np.diff(x.indptr).astype(np.int64)
    rows = np.repeat(np.arange(n_cells), n_per_row)
    ids = token_ids[x.indices].astype(np.int64)
    norm = x.data.astype(np.float64) / totals[rows] * config.target_sum
    if config.encoding == "rank":
        score = norm / medians[ids]
        values = score.astype(np.float32)
    else:
        score = norm
        values = _bins_from_ranks(rows, norm, n_per_row, config.n_bins)

    n_truncated = 0 if config.max_genes is None else int((n_per_row > config.max_genes).sum())
    if n_truncated:
        prio = score
        if config.truncation == "sample":
            u = _uniform_hash(config.seed, cell_keys[rows], ids)
            prio = np.log(u) / score  # Efraimidis-Spirakis: the k largest keys are a weighted draw
        order = _row_order(rows, -prio)
        pos = np.arange(order.size) - np.concatenate([[0], np.cumsum(n_per_row)])[rows[order]]
        keep = np.sort(order[pos < config.max_genes])
        rows, ids, score, values = rows[keep], ids[keep], score[keep], values[keep]
        n_per_row = np.minimum(n_per_row, config.max_genes)

    if config.encoding == "rank":
        order = _row_order(rows, -score)
        ids, values = ids[order], values[order]
    return ids.astype(np.int32), values, n_per_row, n_truncated


def tokenize(
    adata,
    vocab: GeneVocab,
    config: TokenizerConfig | None = None,
    *,
    empty: str = "error",
    chunk_cells: int = 8192,
    progress=None,
) -> TokenizedCells:
    """Tokenize every cell of an AnnData in memory (keeps cell order; see ``iter_batches``).

    Parameters
    ----------
    adata
        AnnData with counts in ``X`` (as returned by ``read_h5ad`` / ``check_adata``; anything else
        is passed through ``check_adata`` first) and gene ids as ``var_names``.
    vocab
        Gene vocabulary; the rank encoding needs ``vocab.medians``.
    config
        Tokenizer settings (default ``TokenizerConfig()``).
    empty
        ``"error"`` (default): raise if a cell has no nonzero vocabulary gene; ``"drop"``: skip such
        cells (``cell_index`` maps the kept cells back to rows of ``adata``).
    chunk_cells
        Cells tokenized at once (bounds temporary memory).
    progress
        Optional callable ``progress(n_cells_done)``.

    Returns
    -------
    TokenizedCells
        Shapes: ``gene_ids`` ``[T]``, ``values`` ``[T]``, ``offsets`` ``[N + 1]``, ``cell_index``
        ``[N]``; ``stats`` counts cells, tokens, truncated cells, dropped empty cells, unknown genes.
    """
    config = config or TokenizerConfig()
    if "sigcell_input" not in adata.uns:
        adata = check_adata(adata)
    source = adata.uns["sigcell_input"].get("source", "AnnData")
    where = f"{source}: {adata.uns['sigcell_input'].get('matrix', 'X')}"
    info = detect_values(adata.X, where=where)
    if config.require_counts:
        require_counts(info, where=where, encoding=config.encoding)
    if empty not in ("error", "drop"):
        msg = f"tokenize: empty must be 'error' or 'drop', got {empty!r}"
        raise ValueError(msg)
    if config.encoding == "rank" and vocab.medians is None:
        msg = (
            "the rank encoding needs per-gene medians, but the vocabulary has none; build it with "
            "sigcell prepare (or vocab.with_medians(gene_medians(adata))), or use encoding='binned'"
        )
        raise ValueError(msg)

    import scipy.sparse as sp

    x = to_count_scale(sp.csr_matrix(adata.X), info)
    totals = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    match = vocab.match(adata.var_names)
    if match.n_known == 0:
        msg = (
            f"{source}: none of its {adata.n_vars} genes is in the vocabulary ({vocab.n_genes} genes, "
            f"{vocab.gene_id_kind}); file genes look like {list(adata.var_names[:3])}, vocabulary genes "
            f"like {list(vocab.genes[:3])}: pass gene_col=... (--gene-col NAME) to use another var column"
        )
        raise ValueError(msg)
    known_cols = np.flatnonzero(match.known)
    known_cols = known_cols[np.argsort(match.ids[known_cols])]  # columns in token-id order
    xk = x[:, known_cols].tocsr()
    xk.eliminate_zeros()
    xk.sort_indices()
    token_ids = match.ids[known_cols]
    n_expr = np.diff(xk.indptr)
    empty_rows = np.flatnonzero(n_expr == 0)
    if empty_rows.size and empty == "error":
        msg = (
            f"{source}: {empty_rows.size} of {adata.n_obs} cells have no nonzero vocabulary gene "
            f"(e.g. {list(adata.obs_names[empty_rows[:3]])}); filter them (sc.pp.filter_cells(adata, "
            "min_genes=1)) or pass empty='drop' (--drop-empty)"
        )
        raise ValueError(msg)
    kept = np.flatnonzero(n_expr > 0)
    medians = None
    if config.encoding == "rank":
        medians = np.concatenate([np.ones(3), vocab.medians])  # index by token id
    need_keys = config.truncation == "sample"

    ids_parts, val_parts, len_parts = [], [], []
    n_truncated = 0
    for start in range(0, kept.size, chunk_cells):
        rows = kept[start : start + chunk_cells]
        keys = cell_hash(adata.obs_names[rows]) if need_keys else None
        ids, vals, lens, n_tr = _tokenize_block(xk[rows], token_ids, totals[rows], medians, keys, config)
        ids_parts.append(ids)
        val_parts.append(vals)
        len_parts.append(lens)
        n_truncated += n_tr
        if progress is not None:
            progress(rows.size)
    lens = np.concatenate(len_parts) if len_parts else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    stats = {
        "n_cells": int(kept.size),
        "n_tokens": int(offsets[-1]),
        "n_truncated": n_truncated,
        "n_empty_dropped": int(empty_rows.size),
        "n_genes_in_input": int(adata.n_vars),
        "n_unknown_genes": match.n_unknown,
        "unknown_gene_examples": list(match.unknown_examples),
        "values": info.kind,
    }
    return TokenizedCells(
        gene_ids=np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32),
        values=np.concatenate(val_parts) if val_parts else np.zeros(0, config.value_dtype),
        offsets=offsets,
        cell_index=kept.astype(np.int64),
        config=config,
        stats=stats,
    )
