"""``sigcell stress`` and ``sigcell analyze {jacobian,sinks}``: parse flags, call sigcell.analysis."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``stress`` and ``analyze`` (with ``jacobian`` and ``sinks``)."""
    p = subparsers.add_parser(
        "stress",
        help="softmax vs sigmoid attention trained without gradient clipping at a high learning rate",
        description=(
            "Train the same model with softmax and with sigmoid attention (no clipping, high LR, long "
            "synthetic cells) for several seeds; stop a run when it diverges (non-finite loss / gradient, "
            "or gradient norm above FACTOR x the median of its first WINDOW steps). Writes OUT/stress.json "
            "and per-run metrics.jsonl; with matplotlib also OUT/stress.png (else draw it later with "
            "--plot-only OUT/stress.json). Progress goes to stdout, one line per event."
        ),
    )
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                   help="cpu: minutes on 2 cores (small model, 256-token cells); paper: ~170M parameters, "
                        "8192-token cells, bf16, one GPU")
    p.add_argument("--out", help="results directory (required unless --plot-only)")
    p.add_argument("--attention", nargs="+", choices=("softmax", "sigmoid"), default=["softmax", "sigmoid"],
                   help="attention kinds to compare (default both)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the preset's 0 1 2)")
    p.add_argument("--lr", type=float, help="peak learning rate (overrides the preset)")
    p.add_argument("--steps", type=int, help="most optimizer steps per run")
    p.add_argument("--genes", type=int, help="expressed genes per synthetic cell (tokens = genes + 1)")
    p.add_argument("--batch-size", type=int, help="cells per step")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"))
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="training seconds for all runs together, split evenly, counted after each "
                        "run's first step (paper preset: 300)")
    p.add_argument("--factor", type=float, default=100.0,
                   help="divergence: grad norm above FACTOR x its early median (default 100)")
    p.add_argument("--window", type=int, default=20, help="steps whose median is the reference (default 20)")
    p.add_argument("--progress-every", type=int, default=10, help="steps between progress lines")
    p.add_argument("--save-checkpoint", action="store_true", help="save each run's final weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field, e.g. --set model.qk_norm=true")
    p.add_argument("--no-plot", action="store_true", help="do not draw stress.png")
    p.add_argument("--plot-only", metavar="RESULTS",
                   help="draw the figure of an existing stress.json (or its directory) and exit")
    p.set_defaults(func=run_stress_cmd)

    a = subparsers.add_parser("analyze", help="attention analyses: Jacobians, attention sinks")
    sub = a.add_subparsers(dest="analysis", metavar="ANALYSIS")
    a.set_defaults(func=lambda args: _missing(a))

    j = sub.add_parser(
        "jacobian",
        help="exact Jacobians of attention weights (w.r.t. logits) and of a layer (w.r.t. its input)",
        description=(
            "Closed-form Jacobians of softmax (diag(p) - p p^T) and sigmoid (diag(sigma'), <= 1/4) attention "
            "weights w.r.t. random logits over sequence lengths and logit scales (checked against autograd), "
            "and autograd Jacobians of attention sub-layers of fresh models (both kinds, same weights) or "
            "trained runs. Writes OUT/jacobian.json, jacobian.md and jacobian.png."
        ),
    )
    j.add_argument("--out", required=True, help="results directory")
    j.add_argument("--lengths", nargs="+", type=int, default=[16, 64, 256, 1024, 4096],
                   help="sequence lengths of the weight-Jacobian sweep")
    j.add_argument("--scales", nargs="+", type=float, default=[0.5, 1, 2, 4, 8, 16],
                   help="logit scales: logits = scale * N(0, 1)")
    j.add_argument("--rows", type=int, default=64, help="query rows per (length, scale)")
    j.add_argument("--sigmoid-bias", choices=("neg_log_n", "zero"), default="neg_log_n",
                   help="sigmoid logit bias: -log L (sigcell's default) or 0")
    j.add_argument("--layer-lengths", nargs="+", type=int, default=[8, 16, 32],
                   help="cell lengths of the layer Jacobian (its matrix is (L d)^2)")
    j.add_argument("--layer-scales", nargs="+", type=float, default=[1, 8, 64],
                   help="logit scales for layers")
    j.add_argument("--layers", nargs="+", type=int, default=[0], help="layer indices")
    j.add_argument("--no-layer", action="store_true", help="skip the layer Jacobians")
    _model_args(j)
    j.set_defaults(func=run_jacobian_cmd)

    s = sub.add_parser(
        "sinks",
        help="first-token (<cls>) attention share per layer and head, and the sink rate",
        description=(
            "Per layer and head, the mean share of each query's attention on token 0 (<cls>) over held-out "
            "cells; a head is a sink head when its share exceeds --threshold (metric of 'When Attention Sink "
            "Emerges', Gu et al.); the sink rate is the fraction of sink heads. Sigmoid rows are divided by "
            "their sum for the share; the raw sigmoid weight and row mass are reported too. Writes "
            "OUT/sinks.json and sinks.png."
        ),
    )
    s.add_argument("--out", required=True, help="results directory")
    s.add_argument("--cells", type=int, default=64, help="held-out cells to average over")
    s.add_argument("--threshold", type=float, default=0.3, help="sink threshold on the share (default 0.3)")
    s.add_argument("--positions", type=int, default=16, help="leading key positions in the position profile")
    s.add_argument("--corpus", help="take the cells from this corpus instead of the run's data")
    s.add_argument("--batch-size", type=int,
                   help="cells per forward pass (default: the run's); all layers' maps are held at once, "
                        "so use 1 for 8k-token cells")
    s.add_argument("--prepared", metavar="DIR",
                   help="take the held-out cells of a `sigcell compare` prepared dataset "
                        "(OUT/prepared/NAME), for runs trained by compare")
    s.add_argument("--device", default="cpu", help="torch device for the forward passes")
    _model_args(s)
    s.set_defaults(func=run_sinks_cmd)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", action="append", default=[], metavar="DIR",
                   help="a trained run folder (repeatable, e.g. a softmax and a sigmoid run)")
    p.add_argument("--config", help="preset or YAML for fresh models when no --run is given (default tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed of fresh models and random inputs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fresh model's config field, e.g. --set model.n_layers=4")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _overrides(items: list[str]) -> dict[str, Any]:
    from sigcell.cli.train import parse_value

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = f"--set expects KEY=VALUE (e.g. model.qk_norm=true), got {item!r}"
            raise ValueError(msg)
        out[key.strip()] = parse_value(value.strip())
    return out


def run_stress_cmd(args: argparse.Namespace) -> int:
    from sigcell.analysis import stress

    if args.plot_only:
        from sigcell.analysis.plots import plot_stress

        results = stress.load_results(args.plot_only)
        source = Path(args.plot_only)
        target = (source if source.is_dir() else source.parent) / "stress.png"
        print(f"sigcell stress: wrote {plot_stress(results, target)}")
        for line in stress.summary_lines(results):
            print(line)
        return 0
    if not args.out:
        msg = "--out is required (the results directory), unless --plot-only RESULTS is given"
        raise ValueError(msg)
    overrides = _overrides(args.set)
    for flag, key in (("lr", "optim.lr"), ("steps", "steps"), ("batch_size", "data.batch_size"),
                      ("precision", "precision"), ("device", "device")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.genes is not None:
        overrides["data.synthetic_min_genes"] = overrides["data.synthetic_max_genes"] = args.genes
    cfg = stress.StressConfig(preset=args.preset, out_dir=args.out, attentions=tuple(args.attention),
                              seeds=tuple(args.seeds) if args.seeds else None, overrides=overrides,
                              factor=args.factor, window=args.window, time_budget_s=args.time_budget,
                              progress_every=args.progress_every, save_checkpoint=args.save_checkpoint)
    results = stress.run_stress(cfg)
    if not args.no_plot:
        from sigcell.analysis.plots import have_matplotlib, plot_stress

        if have_matplotlib():
            print(f"sigcell stress: wrote {plot_stress(results, Path(args.out) / 'stress.png')}", flush=True)
        else:
            print(f"sigcell stress: matplotlib is not installed here; draw the figure elsewhere with "
                  f"`sigcell stress --plot-only {Path(args.out) / 'stress.json'}`", flush=True)
    return 0


def _sources(args: argparse.Namespace):
    from sigcell.analysis.runners import load_models

    if args.run and (args.config or args.set):
        msg = "--run loads trained models with their own config; --config / --set apply to fresh models only"
        raise ValueError(msg)
    return load_models(args.run, config=args.config, seed=args.seed, overrides=_overrides(args.set))


def run_jacobian_cmd(args: argparse.Namespace) -> int:
    from sigcell.analysis.runners import run_jacobian_analysis

    models = [] if args.no_layer else _sources(args)
    run_jacobian_analysis(args.out, lengths=args.lengths, scales=args.scales, rows=args.rows,
                          sigmoid_bias=args.sigmoid_bias, layer_lengths=args.layer_lengths,
                          layer_scales=args.layer_scales, layers=args.layers, models=models, seed=args.seed,
                          plot=not args.no_plot)
    return 0


def run_sinks_cmd(args: argparse.Namespace) -> int:
    from sigcell.analysis.runners import run_sinks_analysis

    run_sinks_analysis(args.out, _sources(args), cells=args.cells, threshold=args.threshold,
                       positions=args.positions, corpus=args.corpus, prepared=args.prepared,
                       batch_size=args.batch_size,
                       device=args.device,
                       plot=not args.no_plot)
    return 0
