"""On-disk tokenized corpus: written once by ``prepare_corpus`` (``sigcell prepare``), read memory-mapped.

Layout of a corpus directory (all arrays raw little-endian binary; dtypes in the manifest)::

    manifest.json            config, inputs, counts, shards, splits; written last ("complete": true)
    vocab.json               the GeneVocab (with medians for the rank encoding)
    tokens/shard-00000.gene_ids.bin   int32 token ids, cells back to back (no <cls>)
    tokens/shard-00000.values.bin     float32 rank scores or int16 bins
    cells/n_genes.bin        int32 [N]   genes per cell
    cells/token_start.bin    int64 [N]   first token of each cell, counted over all shards
    cells/source.bin         int16 [N]   which input the cell came from
    cells/row.bin            int64 [N]   the cell's row in that input
    cells/split.bin          uint8 [N]   0 = train, 1 = val
    cells/cell_ids.bin + cells/cell_id_offsets.bin   utf-8 cell ids
    splits/train.bin, splits/val.bin  int64 corpus cell indices of each split

Genes are keyed by symbol (``sigcell.data.genes``): Ensembl ids become GENCODE symbols, genes of
datasets without gene names stay dataset-local tokens; each input's manifest entry counts them
(``genes``). Labelled registered datasets (and ``.h5ad`` inputs when ``label_col`` is given) lose their
evaluation hold-out first (``sigcell.data.split``, the split ``sigcell compare`` scores): those cells
enter neither the vocabulary, nor the medians, nor the corpus, and their ids are listed in the
manifest (``inputs[i]["heldout"]["cell_ids"]``, or ``Corpus.heldout_cells()``).

Shards end at cell boundaries. The split of a cell is a pure function of its id:
``blake2b("split" + cell id) / 2**64 < val_fraction`` (independent of file order and chunking).
Everything is written to ``.<name>.partial-<pid>`` next to the output and renamed at the end, so an
interrupted prepare never leaves a directory that ``Corpus`` accepts.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sigcell.data.genes import harmonize_genes
from sigcell.data.io import check_adata, read_h5ad
from sigcell.data.split import HELDOUT_FRACTION, MAX_HELDOUT, SPLIT_SEED, HeldoutSplit, heldout_split
from sigcell.data.tokenize import GeneMedianSketch, TokenizerConfig, cell_hash, tokenize
from sigcell.data.vocab import GeneVocab

__all__ = ["Corpus", "prepare_corpus", "summarize_manifest"]

_FORMAT = "sigcell-corpus"
_VERSION = 1
_SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class _Input:
    name: str  # dataset name or file path, as given
    kind: str  # "file" | "dataset"
    local_genes: bool = False  # the source has no gene names: its genes stay dataset-local tokens
    label_col: str | None = None  # hold out the evaluation cells stratified by this obs column


@dataclass(frozen=True)
class _Holdout:
    enabled: bool = True
    label_col: str | None = None  # .h5ad inputs: hold out by this column (datasets: their registry label)
    fraction: float = HELDOUT_FRACTION
    max_heldout: int = MAX_HELDOUT
    seed: int = SPLIT_SEED


def _resolve_inputs(inputs: Sequence[str | os.PathLike], holdout: _Holdout = _Holdout()) -> list[_Input]:
    from sigcell import datasets

    if not inputs:
        msg = "prepare: no inputs; pass .h5ad files and/or dataset names (see `sigcell datasets`)"
        raise ValueError(msg)
    out = []
    for item in inputs:
        name = str(item)
        if Path(name).exists() or name.endswith(".h5ad"):
            if not Path(name).is_file():
                msg = f"{name}: no such file; pass an existing .h5ad or a dataset name {datasets.available()}"
                raise FileNotFoundError(msg)
            out.append(_Input(name, "file", label_col=holdout.label_col if holdout.enabled else None))
        elif name in datasets.available():
            spec = datasets.info(name)
            label = spec.labels[0] if spec.labels and holdout.enabled else None
            out.append(_Input(name, "dataset", spec.gene_ids == "dataset-local", label))
        else:
            msg = f"{name!r} is neither an existing file nor a dataset name; datasets: {datasets.available()}"
            raise FileNotFoundError(msg)
    return out


def _load(inp: _Input, *, layer, use_raw, gene_col, holdout: _Holdout, map_ensembl: bool, gene_table):
    """(the input's cells minus its hold-out, their rows in the input, the hold-out or None).

    ``var_names`` of the returned AnnData are vocabulary keys (``harmonize_genes``).
    """
    if inp.kind == "file":
        adata = read_h5ad(inp.name, layer=layer, use_raw=use_raw, gene_col=gene_col)
    else:
        from sigcell import datasets

        adata = check_adata(datasets.load(inp.name), source=f"dataset {inp.name}")
    harmonize_genes(adata, dataset_local=inp.local_genes, map_ensembl=map_ensembl, table=gene_table)
    split: HeldoutSplit | None = None
    rows = np.arange(adata.n_obs, dtype=np.int64)
    if inp.label_col is not None:
        split = heldout_split(adata, inp.label_col, fraction=holdout.fraction,
                              max_heldout=holdout.max_heldout, seed=holdout.seed, source=inp.name)
        rows = split.train
        info = adata.uns["sigcell_input"]
        adata = adata[rows].copy()
        adata.uns["sigcell_input"] = info
    return adata, rows, split


def _length_summary(n_genes: np.ndarray) -> dict:
    """Distribution of sequence lengths (genes + <cls>)."""
    if n_genes.size == 0:
        return {}
    q = np.percentile(n_genes + 1, [0, 5, 25, 50, 75, 95, 100])
    keys = ["min", "p5", "p25", "median", "p75", "p95", "max"]
    return {**{k: float(v) for k, v in zip(keys, q, strict=True)}, "mean": float(np.mean(n_genes + 1))}


class _Writer:
    """Appends cells to shard files and per-cell arrays inside the temporary corpus directory."""

    def __init__(self, root: Path, value_dtype: np.dtype, shard_tokens: int) -> None:
        self.root, self.value_dtype, self.shard_tokens = root, value_dtype, shard_tokens
        (root / "tokens").mkdir()
        (root / "cells").mkdir()
        self.cell_files = {
            name: open(root / "cells" / f"{name}.bin", "wb")  # noqa: SIM115 - closed in close()
            for name in ("n_genes", "token_start", "source", "row", "split", "cell_ids", "cell_id_offsets")
        }
        self.cell_files["cell_id_offsets"].write(np.zeros(1, np.int64).tobytes())
        self.id_bytes = 0
        self.shards: list[dict] = []
        self.n_tokens = 0
        self.n_cells = 0
        self._ids = self._vals = None

    def _open_shard(self) -> None:
        self._close_shard()
        name = f"shard-{len(self.shards):05d}"
        self._ids = open(self.root / "tokens" / f"{name}.gene_ids.bin", "wb")  # noqa: SIM115
        self._vals = open(self.root / "tokens" / f"{name}.values.bin", "wb")  # noqa: SIM115
        start = self.shards[-1]["token_start"] + self.shards[-1]["n_tokens"] if self.shards else 0
        self.shards.append({"name": name, "token_start": start, "n_tokens": 0, "n_cells": 0})

    def _close_shard(self) -> None:
        for f in (self._ids, self._vals):
            if f is not None:
                f.close()

    def add(self, gene_ids, values, n_genes, source: int, rows, cell_ids, split) -> None:
        offsets = np.concatenate([[0], np.cumsum(n_genes)])
        start = 0
        while start < n_genes.size:  # fill the current shard, roll over at a cell boundary
            if not self.shards or self.shards[-1]["n_tokens"] >= self.shard_tokens:
                self._open_shard()
            room = self.shard_tokens - self.shards[-1]["n_tokens"]
            stop = int(np.searchsorted(offsets, offsets[start] + room, side="right")) - 1
            stop = min(max(stop, start + 1), n_genes.size)  # at least one cell per shard
            a, b = offsets[start], offsets[stop]
            self._ids.write(np.ascontiguousarray(gene_ids[a:b], dtype=np.int32).tobytes())
            self._vals.write(np.ascontiguousarray(values[a:b], dtype=self.value_dtype).tobytes())
            self.shards[-1]["n_tokens"] += int(b - a)
            self.shards[-1]["n_cells"] += stop - start
            start = stop
        f = self.cell_files
        f["n_genes"].write(n_genes.astype(np.int32).tobytes())
        f["token_start"].write((self.n_tokens + offsets[:-1]).astype(np.int64).tobytes())
        f["source"].write(np.full(n_genes.size, source, np.int16).tobytes())
        f["row"].write(np.asarray(rows, np.int64).tobytes())
        f["split"].write(np.asarray(split, np.uint8).tobytes())
        encoded = [str(c).encode() for c in cell_ids]
        f["cell_ids"].write(b"".join(encoded))
        ends = self.id_bytes + np.cumsum([len(e) for e in encoded], dtype=np.int64)
        f["cell_id_offsets"].write(ends.astype(np.int64).tobytes())
        self.id_bytes = int(ends[-1]) if ends.size else self.id_bytes
        self.n_tokens += int(offsets[-1])
        self.n_cells += int(n_genes.size)

    def close(self) -> None:
        self._close_shard()
        for f in self.cell_files.values():
            f.close()


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def prepare_corpus(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    config: TokenizerConfig | None = None,
    vocab: GeneVocab | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    gene_col: str | None = None,
    val_fraction: float = 0.05,
    min_cells_per_gene: int = 1,
    drop_empty: bool = False,
    holdout: bool = True,
    label_col: str | None = None,
    heldout_fraction: float = HELDOUT_FRACTION,
    max_heldout: int = MAX_HELDOUT,
    split_seed: int = SPLIT_SEED,
    map_ensembl: bool | None = None,
    gene_table=None,
    shard_tokens: int = 1 << 28,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Tokenize ``.h5ad`` files and/or registered datasets into an on-disk corpus.

    Parameters
    ----------
    inputs
        Paths of ``.h5ad`` files and/or names from ``sigcell.datasets.available()``.
    out_dir
        Corpus directory to create (must not exist unless ``overwrite``).
    config
        Tokenizer settings (default ``TokenizerConfig()``: every expressed gene of every cell, no
        truncation unless ``max_genes`` is set), stored in the manifest.
    vocab
        Use this vocabulary (e.g. a pretrained model's) instead of building one from the inputs;
        its medians are used when present, else computed over the inputs.
    layer, use_raw, gene_col
        Where counts and gene ids are in each ``.h5ad`` (see ``read_h5ad``); datasets use their own.
    val_fraction
        Fraction of cells in the validation split (by hash of the cell id).
    min_cells_per_gene
        A built vocabulary keeps genes nonzero in at least this many cells over all inputs.
    drop_empty
        Skip cells without any vocabulary gene instead of failing.
    holdout
        Keep the evaluation hold-out out of the corpus: the cells :func:`sigcell.data.heldout_cells`
        returns for each labelled registered dataset (its registry label column) and, when
        ``label_col`` is given, for each ``.h5ad`` input. Their ids go to the manifest.
    label_col
        obs column that ``.h5ad`` inputs are stratified by for the hold-out (None: files keep all cells).
    heldout_fraction, max_heldout, split_seed
        The hold-out's parameters (those of ``sigcell compare``: 0.2, 1000, 0).
    map_ensembl
        Map Ensembl gene ids to GENCODE symbols (default: yes, unless ``vocab`` is keyed by Ensembl id).
    gene_table
        Ensembl id -> symbol table (DataFrame ``gene_id``, ``gene_name`` or a dict); None: GENCODE v44.
    shard_tokens
        Tokens per shard file.
    overwrite
        Replace an existing corpus at ``out_dir`` (only once the new one is complete).
    progress
        Show a progress bar.

    Returns
    -------
    dict
        The manifest (also in ``out_dir/manifest.json``): cells, tokens, dropped genes, truncated
        cells and length distribution per input and in total, split sizes, wall time; per input
        ``genes`` (how many genes were symbols, mapped from Ensembl, dataset-local or unmapped, and how
        many are shared with another input) and ``heldout`` (parameters and cell ids, or None).
    """
    t0 = time.perf_counter()
    config = config or TokenizerConfig()
    out_dir = Path(out_dir)
    if not 0 <= val_fraction < 1:
        msg = f"val_fraction must be in [0, 1), got {val_fraction}"
        raise ValueError(msg)
    if out_dir.exists() and not overwrite:
        msg = f"{out_dir} already exists; choose another --out or pass overwrite=True (--overwrite)"
        raise FileExistsError(msg)
    if out_dir.exists():
        _check_replaceable(out_dir)
    hold = _Holdout(bool(holdout), label_col, heldout_fraction, max_heldout, split_seed)
    srcs = _resolve_inputs(inputs, hold)
    if map_ensembl is None:
        map_ensembl = vocab is None or vocab.gene_id_kind != "ensembl"
    load_kw = {"layer": layer, "use_raw": use_raw, "gene_col": gene_col, "holdout": hold,
               "map_ensembl": map_ensembl, "gene_table": gene_table}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    writer = None
    try:
        with _progress(progress) as bar:
            # pass 1: gene vocabulary and corpus medians (skipped when the vocabulary has what we need)
            need_medians = config.encoding == "rank" and (vocab is None or vocab.medians is None)
            if vocab is None or need_medians:
                task = bar.add_task("scanning genes", total=len(srcs))
                sketch = GeneMedianSketch(config.target_sum)
                n_cells_expr: dict[str, int] = {}
                kinds = set()
                for src in srcs:
                    adata = _load(src, **load_kw)[0]
                    kinds.add(adata.uns["sigcell_input"]["gene_id_kind"])
                    nz = np.asarray((adata.X != 0).sum(axis=0)).ravel()
                    for g, c in zip(adata.var_names, nz, strict=True):
                        n_cells_expr[g] = n_cells_expr.get(g, 0) + int(c)
                    if need_medians:
                        from sigcell.data.io import detect_values, to_count_scale

                        x = to_count_scale(adata.X, detect_values(adata.X))
                        sketch.add(x, list(adata.var_names))
                    del adata
                    bar.advance(task)
                if vocab is None:
                    genes = [g for g, c in n_cells_expr.items() if c >= min_cells_per_gene]
                    if not genes:
                        msg = f"no gene is nonzero in >= {min_cells_per_gene} cells over the inputs"
                        raise ValueError(msg)
                    kind = kinds.pop() if len(kinds) == 1 else "mixed"
                    vocab = GeneVocab.from_genes(genes, gene_id_kind=kind)
                if need_medians:
                    med = sketch.medians(vocab.genes)
                    unseen = np.isnan(med)
                    if unseen.any():
                        msg = (
                            f"{int(unseen.sum())} vocabulary genes are never expressed in the inputs "
                            f"(e.g. {list(np.asarray(vocab.genes)[unseen][:5])}), so their rank medians "
                            "are undefined; pass a vocabulary with medians or more data"
                        )
                        raise ValueError(msg)
                    vocab = vocab.with_medians(med)
            vocab.save(tmp / "vocab.json")

            # pass 2: tokenize and write
            writer = _Writer(tmp, config.value_dtype, shard_tokens)
            per_input = []
            keys_per_input: list[set[str]] = []
            for i, src in enumerate(srcs):
                adata, in_rows, held = _load(src, **load_kw)
                keys_per_input.append(set(adata.var_names))
                task = bar.add_task(f"tokenizing {Path(src.name).name}", total=adata.n_obs)
                cells = tokenize(
                    adata,
                    vocab,
                    config,
                    empty="drop" if drop_empty else "error",
                    progress=lambda n, task=task: bar.advance(task, n),
                )
                cell_ids = np.asarray(adata.obs_names)[cells.cell_index]
                bad = [c for c in cell_ids[:100000] if "\n" in c]
                if bad:
                    msg = f"{src.name}: cell ids must not contain newlines (e.g. {bad[0]!r})"
                    raise ValueError(msg)
                h = cell_hash(cell_ids, salt="split")
                split = (h.astype(np.float64) / 2.0**64 < val_fraction).astype(np.uint8)
                rows = in_rows[cells.cell_index]  # rows of the input file / dataset, hold-out included
                writer.add(cells.gene_ids, cells.values, cells.n_genes, i, rows, cell_ids, split)
                per_input.append(
                    {
                        "name": src.name,
                        "kind": src.kind,
                        "input": {k: v for k, v in adata.uns["sigcell_input"].items() if k != "genes"},
                        **{k: v for k, v in cells.stats.items() if k != "values"},
                        "n_val": int(split.sum()),
                        "length": _length_summary(cells.n_genes),
                        "genes": dict(adata.uns["sigcell_input"]["genes"]),
                        "heldout": None if held is None else held.describe(),
                    }
                )
                del adata, cells
            writer.close()
            for i, p in enumerate(per_input):  # genes this input shares with at least one other input
                others = set().union(*(k for j, k in enumerate(keys_per_input) if j != i))
                p["genes"]["n_shared"] = len(keys_per_input[i] & others)

        split_all = np.fromfile(tmp / "cells" / "split.bin", dtype=np.uint8)
        (tmp / "splits").mkdir()
        for name, code in _SPLITS.items():
            np.flatnonzero(split_all == code).astype(np.int64).tofile(tmp / "splits" / f"{name}.bin")
        n_genes_all = np.fromfile(tmp / "cells" / "n_genes.bin", dtype=np.int32)
        manifest = {
            "format": _FORMAT,
            "version": _VERSION,
            "complete": True,
            "tokenizer": config.to_dict(),
            "value_dtype": config.value_dtype.name,
            "vocab": {"file": "vocab.json", "n_genes": vocab.n_genes, "gene_id_kind": vocab.gene_id_kind},
            "inputs": per_input,
            "n_cells": writer.n_cells,
            "n_tokens": writer.n_tokens,
            "n_tokens_with_cls": writer.n_tokens + writer.n_cells,
            "n_truncated": sum(p["n_truncated"] for p in per_input),
            "n_empty_dropped": sum(p["n_empty_dropped"] for p in per_input),
            "n_dropped_genes": sum(p["n_unknown_genes"] for p in per_input),
            "n_heldout": sum(p["heldout"]["n_heldout"] for p in per_input if p["heldout"]),
            "length": _length_summary(n_genes_all),
            "splits": {
                "val_fraction": val_fraction,
                "rule": "blake2b('split' + 0x1f + cell_id) / 2**64 < val_fraction",
                **{k: int((split_all == c).sum()) for k, c in _SPLITS.items()},
            },
            "shards": writer.shards,
            "wall_time_s": round(time.perf_counter() - t0, 3),
        }
        manifest_tmp = tmp / "manifest.json.tmp"
        manifest_tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(manifest_tmp, tmp / "manifest.json")
        if out_dir.exists():  # overwrite: swap in the new corpus, then delete the old one
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
        return manifest
    except BaseException:
        if writer is not None:
            writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to overwrite anything but a sigcell corpus or an empty folder (never a user's files)."""
    if not out_dir.is_dir():
        msg = (f"{out_dir} exists and is not a folder; --overwrite replaces only a corpus that sigcell "
               "wrote: choose another --out or move the file away")
        raise FileExistsError(msg)
    if not any(out_dir.iterdir()):
        return
    manifest = out_dir / "manifest.json"
    try:
        ours = json.loads(manifest.read_text()).get("format") == _FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        msg = (f"{out_dir} is not a sigcell corpus (no sigcell manifest.json); --overwrite replaces only a "
               "corpus that sigcell wrote: choose another --out, or empty or remove that folder yourself")
        raise FileExistsError(msg)


def _remove_stale_partials(out_dir: Path) -> None:
    """Delete ``.NAME.partial-PID`` folders of earlier runs whose process is gone (a killed prepare)."""
    for path in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def summarize_manifest(manifest: dict) -> str:
    """Human-readable summary of a corpus manifest (what ``sigcell prepare`` prints)."""
    tok = manifest["tokenizer"]
    lines = [
        f"corpus: {manifest['n_cells']:,} cells, {manifest['n_tokens_with_cls']:,} tokens (with <cls>), "
        f"{manifest['vocab']['n_genes']:,} genes in vocab ({manifest['vocab']['gene_id_kind']}), "
        f"encoding {tok['encoding']}, max_genes {tok['max_genes']} ({tok['truncation']})",
        f"splits: train {manifest['splits']['train']:,}, val {manifest['splits']['val']:,}; "
        f"truncated cells {manifest['n_truncated']:,}, empty cells dropped {manifest['n_empty_dropped']:,}, "
        f"dropped genes {manifest['n_dropped_genes']:,}; {manifest['wall_time_s']:.1f} s",
        f"{'input':<20} {'values':<15} {'cells':>7} {'held':>5} {'tokens':>11} {'trunc':>6} {'dropG':>6}  "
        f"{'genes: symbol/ensembl/local/unmapped, shared':<44} length min/median/mean/p95/max",
    ]
    for p in manifest["inputs"]:
        ln = p["length"]
        dist = "/".join(f"{ln[k]:.0f}" for k in ("min", "median", "mean", "p95", "max")) if ln else "-"
        g = p.get("genes")
        genes = (f"{g['symbol']}/{g['ensembl']}/{g['local']}/{g['unmapped']}, {g['n_shared']} shared"
                 if g else "-")
        held = p["heldout"]["n_heldout"] if p.get("heldout") else 0
        lines.append(
            f"{Path(p['name']).name[:20]:<20} {p['input']['values']:<15} {p['n_cells']:>7,} {held:>5,} "
            f"{p['n_tokens'] + p['n_cells']:>11,} {p['n_truncated']:>6,} {p['n_unknown_genes']:>6,}  "
            f"{genes:<44} {dist}"
        )
    if manifest.get("n_heldout"):
        lines.append(f"held out for evaluation (not in the corpus): {manifest['n_heldout']:,} cells; ids in "
                     "manifest.json inputs[i].heldout.cell_ids (sigcell.data.Corpus(...).heldout_cells())")
    return "\n".join(lines)


class Corpus:
    """A prepared corpus, memory-mapped: ``len``, ``corpus[i] -> (gene_ids, values)``, ``gather``.

    Parameters
    ----------
    path
        Directory written by ``prepare_corpus`` / ``sigcell prepare``.
    split
        ``"train"`` (default), ``"val"`` or ``"all"``. Indices ``0..len-1`` address this split's cells.

    Attributes
    ----------
    config : TokenizerConfig
    vocab : GeneVocab
    manifest : dict
    """

    def __init__(self, path: str | os.PathLike, split: str = "train") -> None:
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            partial = " (it looks like an interrupted prepare: run it again)" if self.path.is_dir() else ""
            msg = f"{self.path}: not a finished sigcell corpus, no manifest.json{partial}"
            raise FileNotFoundError(msg)
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != _FORMAT or not manifest.get("complete"):
            msg = f"{self.path}: manifest is not a complete {_FORMAT}; re-run sigcell prepare"
            raise ValueError(msg)
        if manifest.get("version") != _VERSION:
            msg = f"{self.path}: corpus version {manifest.get('version')}, this sigcell reads {_VERSION}"
            raise ValueError(msg)
        if split not in (*_SPLITS, "all"):
            msg = f"split must be one of {[*_SPLITS, 'all']}, got {split!r}"
            raise ValueError(msg)
        self.manifest, self.split = manifest, split
        self.config = TokenizerConfig(**manifest["tokenizer"])
        self.vocab = GeneVocab.load(self.path / manifest["vocab"]["file"])
        n, t = manifest["n_cells"], manifest["n_tokens"]
        vdt = np.dtype(manifest["value_dtype"])
        self._cells = {
            name: self._map(f"cells/{name}.bin", dt, n)
            for name, dt in [
                ("n_genes", np.int32),
                ("token_start", np.int64),
                ("source", np.int16),
                ("row", np.int64),
                ("split", np.uint8),
            ]
        }
        self._id_offsets = self._map("cells/cell_id_offsets.bin", np.int64, n + 1)
        self._ids_blob = self._map("cells/cell_ids.bin", np.uint8, int(self._id_offsets[-1]) if n else 0)
        self._shard_start = np.array([s["token_start"] for s in manifest["shards"]], dtype=np.int64)
        self._shards = [
            (
                self._map(f"tokens/{s['name']}.gene_ids.bin", np.int32, s["n_tokens"]),
                self._map(f"tokens/{s['name']}.values.bin", vdt, s["n_tokens"]),
            )
            for s in manifest["shards"]
        ]
        if sum(s["n_tokens"] for s in manifest["shards"]) != t:
            msg = f"{self.path}: shards hold a different token count than the manifest ({t}); re-run prepare"
            raise ValueError(msg)
        if split == "all":
            self._index = np.arange(n, dtype=np.int64)
        else:
            self._index = self._map(f"splits/{split}.bin", np.int64, manifest["splits"][split])
        self._n_genes = np.asarray(self._cells["n_genes"][self._index], dtype=np.int64)

    def _map(self, rel: str, dtype, count: int) -> np.ndarray:
        f = self.path / rel
        expected = int(count) * np.dtype(dtype).itemsize
        size = f.stat().st_size if f.is_file() else -1
        if size != expected:
            got = size if size >= 0 else "no file"
            msg = f"{f}: expected {expected} bytes, got {got}; the corpus is damaged, re-run prepare"
            raise ValueError(msg)
        if count == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(f, dtype=dtype, mode="r", shape=(int(count),))

    def __len__(self) -> int:
        return int(self._index.size)

    def heldout_cells(self) -> dict[str, list[str]]:
        """Evaluation cells kept out of this corpus: ``{input name: [cell id, ...]}``, inputs with a hold-out.

        The ids are ``obs_names`` of the input as ``sigcell.datasets.load`` / ``read_h5ad`` return it; the
        split's parameters are in ``manifest["inputs"][i]["heldout"]``.
        """
        inputs = self.manifest["inputs"]
        return {p["name"]: list(p["heldout"]["cell_ids"]) for p in inputs if p.get("heldout")}

    @property
    def n_genes(self) -> np.ndarray:
        """int64 ``[len]``: gene tokens per cell of this split (``<cls>`` excluded)."""
        return self._n_genes

    def source_index(self, idx: np.ndarray) -> np.ndarray:
        """Corpus-wide cell index (int64) of split cells ``idx`` (what ``CellBatch.cell_index`` holds)."""
        return np.asarray(self._index[np.asarray(idx, dtype=np.int64)], dtype=np.int64)

    def origin(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(input number, row in that input)`` of split cells ``idx``; inputs in ``manifest['inputs']``."""
        g = self.source_index(idx)
        return np.asarray(self._cells["source"][g]), np.asarray(self._cells["row"][g])

    def cell_ids(self, idx: np.ndarray) -> list[str]:
        """Cell ids (obs names) of split cells ``idx``."""
        g = self.source_index(idx)
        a, b = self._id_offsets[g], self._id_offsets[g + 1]
        return [bytes(self._ids_blob[s:e]).decode() for s, e in zip(a, b, strict=True)]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(gene_ids int32, values)`` of split cell ``i``, genes only (no ``<cls>``)."""
        if not -len(self) <= i < len(self):
            msg = f"cell {i} out of range for a split of {len(self)} cells"
            raise IndexError(msg)
        ids, vals, _ = self.gather(np.array([i % len(self)]))
        return ids, vals

    def gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenated ``(gene_ids [t], values [t], n_genes [len(idx)])`` of split cells ``idx``.

        Reads only the pages holding those cells.
        """
        g = self.source_index(idx)
        starts = np.asarray(self._cells["token_start"][g], dtype=np.int64)
        lens = np.asarray(self._cells["n_genes"][g], dtype=np.int64)
        shard = np.searchsorted(self._shard_start, starts, side="right") - 1
        pos = np.repeat(starts - self._shard_start[shard] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        pos += np.arange(lens.sum())
        tok_shard = np.repeat(shard, lens)
        ids = np.empty(pos.size, np.int32)
        vals = np.empty(pos.size, self._shards[0][1].dtype if self._shards else np.float32)
        for s in np.unique(tok_shard):
            sel = tok_shard == s
            ids[sel] = self._shards[s][0][pos[sel]]
            vals[sel] = self._shards[s][1][pos[sel]]
        return ids, vals, lens

    def __repr__(self) -> str:
        return (
            f"Corpus({str(self.path)!r}, split={self.split!r}: {len(self):,} of {self.manifest['n_cells']:,} "
            f"cells, encoding {self.config.encoding})"
        )
