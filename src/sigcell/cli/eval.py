"""``sigcell embed``, ``sigcell evaluate`` and ``sigcell compare``: parse flags, call ``sigcell.eval``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``embed``, ``evaluate`` and ``compare``."""
    from sigcell.data.split import HELDOUT_FRACTION, MAX_HELDOUT

    e = subparsers.add_parser(
        "embed", help="embed the cells of an .h5ad with a pretrained run (obsm['X_sigcell'])",
        description="Write cell embeddings of a pretrained run into a copy of an .h5ad; everything else "
                    "in the file is kept. The output is written to a temporary name and renamed.")
    e.add_argument("--model", required=True, help="pretrained model name (e.g. sigcell-small; see `python -m "
                                                  "sigcell.pretrained list`), run folder or checkpoint")
    e.add_argument("--data", required=True, help="input .h5ad or registered dataset name (sigcell datasets)")
    e.add_argument("--out", required=True, help="output .h5ad (may equal --data with --overwrite)")
    e.add_argument("--key", default="X_sigcell", help="obsm key (default X_sigcell)")
    e.add_argument("--batch-size", type=int, default=64, help="cells per forward pass")
    e.add_argument("--pooling", choices=("cls", "mean"), default=None, help="default: the model's")
    e.add_argument("--layer", default=None, help="read values from this layer")
    e.add_argument("--use-raw", action="store_true", help="read values and genes from .raw")
    e.add_argument("--gene-col", default=None, help="var column with gene ids (default var_names)")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    e.set_defaults(func=run_embed)

    v = subparsers.add_parser(
        "evaluate", help="cell-type metrics of an embedding in an .h5ad (scib-metrics + cohesion)",
        description="Score adata.obsm[KEY] against adata.obs[LABEL]: ASW, cLISI, NMI/ARI, isolated labels "
                    "(scib-metrics), kNN purity and within/between distance ratio (sigcell).")
    v.add_argument("data", help=".h5ad file")
    v.add_argument("--key", default="X_sigcell", help="obsm key of the embedding")
    v.add_argument("--label-col", default="cell_type", help="obs column with cell types")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(func=run_evaluate)

    c = subparsers.add_parser(
        "compare", help="softmax vs sigmoid attention on labelled datasets, with a report",
        description="For each dataset x attention (softmax, sigmoid) x seed: pretrain with the same config, "
                    "data order and step count, embed the held-out cells, score them; write "
                    "OUT/report/index.html and README.md. Without arguments: every labelled registered "
                    "dataset, preset tiny, 3 seeds, on the CPU in about 10 minutes. Stages: prepare (needs "
                    "anndata/scanpy), train (torch + numpy only: run it on a GPU box with --prepared), "
                    "report. A re-run with the same --out reuses finished work.")
    c.add_argument("datasets", nargs="*", help="registered dataset names and/or .h5ad files "
                                               "(default: all labelled registered datasets)")
    c.add_argument("--out", default="sigcell-compare", help="output directory (default sigcell-compare)")
    c.add_argument("--preset", default=None, help="model preset: tiny (default; CPU), small (GPU), ...")
    c.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 300 tiny, "
                                                             "1200 small)")
    c.add_argument("--seeds", default=None, help="comma-separated training seeds (default 0,1,2)")
    c.add_argument("--stage", choices=("all", "prepare", "train", "report"), default="all",
                   help="run one stage only (default all)")
    c.add_argument("--prepared", default=None, help="prepared inputs directory for --stage train/report "
                                                    "(default OUT/prepared)")
    c.add_argument("--label-col", default=None, help="obs label column of .h5ad inputs (default cell_type)")
    c.add_argument("--max-genes", type=int, default=None, help="genes kept per cell (default 128 tiny, "
                                                               "1024 small)")
    c.add_argument("--heldout-fraction", type=float, default=HELDOUT_FRACTION,
                   help=f"held-out share of labelled cells (default {HELDOUT_FRACTION})")
    c.add_argument("--truncation", choices=("sample", "top"), default="sample",
                   help="cutting cells to --max-genes: expression-weighted sample (default) or top genes")
    c.add_argument("--max-heldout", type=int, default=MAX_HELDOUT,
                   help=f"cap on held-out cells per dataset (default {MAX_HELDOUT})")
    c.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the train stage: size --steps from measured step times")
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    c.add_argument("--threads", type=int, default=None, help="CPU threads for training (default 1 on CPU)")
    c.add_argument("--embedding-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of saved held-out embeddings (float16 halves a GPU run's results)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, e.g. --set data.batch_size=64")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=run_compare)


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        msg = f"--seeds expects comma-separated integers >= 0 (e.g. 0,1,2), got {text!r}"
        raise ValueError(msg)
    return seeds


def _parse_sets(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = f"--set expects KEY=VALUE (e.g. data.batch_size=64), got {item!r}"
            raise ValueError(msg)
        out[key.strip()] = yaml.safe_load(value.strip())
    return out


def run_compare(args: argparse.Namespace) -> int:
    from sigcell.eval.compare import compare

    result = compare(args.datasets or None, out=args.out, preset=args.preset, steps=args.steps,
                     seeds=_parse_seeds(args.seeds), stage=args.stage, prepared=args.prepared,
                     label_col=args.label_col, max_genes=args.max_genes,
                     heldout_fraction=args.heldout_fraction, max_heldout=args.max_heldout,
                     truncation=args.truncation,
                     time_budget=args.time_budget, overrides=_parse_sets(args.set), device=args.device,
                     threads=args.threads, embedding_dtype=args.embedding_dtype, progress=not args.quiet)
    out = Path(result["out"])
    if "summary" in result:
        print((out / "report" / "README.md").read_text().split("## Metrics per dataset")[0].rstrip())
        print(f"\nreport: {out / 'report' / 'index.html'}")
    print(f"sigcell compare ({', '.join(result['stages'])}) finished in {result['wall_s'] / 60:.1f} min",
          file=sys.stderr)
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from sigcell import pretrained
    from sigcell.eval.embed import embed, load_input

    dst = Path(args.out)
    if dst.exists() and not args.overwrite:
        msg = f"--out {dst} exists; pass --overwrite to replace it or choose another path"
        raise FileExistsError(msg)
    if pretrained.is_model_name(args.model):
        pretrained.model_dir(args.model)  # a bad name fails before the data is read
    try:
        adata = load_input(args.data)
    except FileNotFoundError as err:
        msg = f"--data {err}; pass an .h5ad file or a dataset name"
        raise FileNotFoundError(msg) from None
    embed(adata, args.model, key_added=args.key, batch_size=args.batch_size, pooling=args.pooling,
          layer=args.layer, use_raw=args.use_raw, gene_col=args.gene_col, device=args.device,
          source=str(args.data))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}.h5ad")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    params = adata.uns[args.key]["params"]
    n_in, n_known = params["n_genes_in_input"], params["n_genes_used"]
    mapped = params["gene_keys"]["ensembl"]
    note = f"; {mapped:,} Ensembl ids mapped to symbols" if mapped else ""
    print(f"model {params['model']} knows {n_known:,} of the {n_in:,} genes of {args.data} "
          f"({100 * n_known / n_in:.1f} %{note}); {params['n_genes_unknown']:,} unknown genes ignored, "
          f"{params['n_cells_without_known_genes']} cells without a known gene (NaN)", file=sys.stderr)
    print(f"wrote {dst}: obsm[{args.key!r}] {adata.obsm[args.key].shape}", file=sys.stderr)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from sigcell.data.io import open_h5ad
    from sigcell.eval.metrics import METRICS, evaluate_embedding

    path = Path(args.data)
    if not path.is_file():
        msg = f"{path}: no such file; pass an .h5ad"
        raise FileNotFoundError(msg)
    adata = open_h5ad(path)
    if args.key not in adata.obsm:
        msg = f"{path}: no obsm[{args.key!r}]; keys are {list(adata.obsm)}; run `sigcell embed` or pass --key"
        raise ValueError(msg)
    if args.label_col not in adata.obs:
        msg = f"{path}: no obs[{args.label_col!r}]; columns are {list(adata.obs.columns)}; pass --label-col"
        raise ValueError(msg)
    x = np.asarray(adata.obsm[args.key])
    labels = adata.obs[args.label_col]
    keep = ~labels.isna().to_numpy() & np.isfinite(x).all(axis=1)
    scores = evaluate_embedding(x[keep], labels.astype(str).to_numpy()[keep])
    if args.json:
        print(json.dumps({"n_cells": int(keep.sum()), **scores}, indent=2))
    else:
        info = {m.key: m for m in METRICS}
        print(f"{int(keep.sum())} of {adata.n_obs} cells scored (labelled, finite embedding)")
        for key, value in scores.items():
            m = info[key]
            print(f"{m.name:48s} {value:8.4f}  ({'higher' if m.higher_is_better else 'lower'} is better, "
                  f"{m.source})")
    return 0
