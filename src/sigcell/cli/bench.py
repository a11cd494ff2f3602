"""``sigcell bench kernels`` / ``sigcell bench train`` (also ``python -m sigcell.bench ...``).

``kernels``: sigcell's attention vs its peers. ``train``: optimizer steps of one model with each attention.

Only argument parsing lives here; the work is done by :mod:`sigcell.bench`. Heavy imports happen when the
command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys

__all__ = [
    "add_kernels_arguments",
    "add_train_arguments",
    "config_from_args",
    "register",
    "run_kernels",
    "run_train",
    "train_config_from_args",
]

_MODES = ("fwd", "bwd", "fwd+bwd")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        msg = f"expected comma-separated integers such as 64,128, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not values or any(v < 1 for v in values):
        msg = f"expected positive integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def _padding_list(text: str) -> list[float]:
    """Padding fractions: ``0,25,50`` (percent) or ``0,0.25,0.5`` (fractions)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        msg = f"expected comma-separated paddings such as 0,25,50 (percent), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    fractions = [v / 100 if v >= 1 else v for v in values]
    if not fractions or any(not 0 <= f < 1 for f in fractions):
        msg = f"paddings must lie in [0, 100) percent, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return fractions


def _mode_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if text.strip() == "all":
        return list(_MODES)
    bad = [v for v in values if v not in _MODES]
    if bad or not values:
        msg = f"modes must be some of {','.join(_MODES)} (or all), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_kernels_arguments(p: argparse.ArgumentParser) -> None:
    """Add the flags of ``bench kernels`` to ``p``."""
    from sigcell.bench.cases import PRESETS

    presets = ", ".join(f"{k} ({v.description})" for k, v in PRESETS.items())
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                   help=f"named set of shapes, modes and providers (default paper): {presets}")
    shapes = p.add_argument_group("shape overrides (replace the preset's axis)")
    shapes.add_argument("--d", type=_int_list, metavar="D,...", help="head dimensions, e.g. 64,128,256")
    shapes.add_argument("--l", type=_int_list, metavar="L,...", help="sequence lengths, e.g. 1024,4096,16384")
    shapes.add_argument("--padding", type=_padding_list, metavar="P,...",
                        help="padding in percent (lengths uniform in [(1-p)L, L], seeded), e.g. 0,25,50")
    shapes.add_argument("--causal", choices=("off", "on", "both"), help="causal masking")
    shapes.add_argument("--modes", type=_mode_list, metavar="M,...", help="fwd, bwd, fwd+bwd, or all")
    shapes.add_argument("--batch-tokens", type=int, metavar="N",
                        help="padded tokens per batch: B = N / L (paper: 16384; cells preset: 65536)")
    shapes.add_argument("--cell-dist", choices=("celltypist", "scmark"),
                        help="draw lengths from this real cell-length table instead of --padding")
    shapes.add_argument("--cell-scale", type=float, default=1.0,
                        help="multiply cell lengths by this before truncating to L (default 1)")
    p.add_argument("--providers", type=_name_list, metavar="NAME,...",
                   help="providers or groups (default, all, sigcell, tritonsigmoid, sdpa, peers, or names: "
                        "sigcell-dense, sigcell-padded, sigcell-varlen, tritonsigmoid-dense, "
                        "tritonsigmoid-padded, sdpa-flash, sdpa-cudnn, sdpa-efficient, sdpa-math, flex, "
                        "torch-sigmoid)")
    p.add_argument("--skip-providers", type=_name_list, default=[], metavar="NAME,...",
                   help="providers or groups to leave out")
    p.add_argument("--tritonsigmoid", metavar="PATH",
                   help="triton-sigmoid wheel or unpacked folder, if it is not installed (default: "
                        "$SIGCELL_BENCH_TRITONSIGMOID, then .whl/triton_sigmoid-*.whl)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: cuda when available")
    p.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warmup per measurement (ms)")
    p.add_argument("--rep-ms", type=float, default=100.0, help="do_bench measuring time per measurement (ms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="start no new case after this long; the rest is recorded as skipped")
    p.add_argument("--out", default="benchmarks/results",
                   help="folder for <name>-<timestamp>.json/.png, or a .json file path")
    p.add_argument("--name", help="name of the run (default: the preset)")
    p.add_argument("--no-matmul", action="store_true", help="skip the bf16 8192^3 matmul roofline")
    p.add_argument("--no-check", action="store_true", help="skip the accuracy check of sigcell")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--no-table", action="store_true", help="print no summary table")
    p.add_argument("--dry-run", action="store_true", help="print the plan and a time estimate, run nothing")


def config_from_args(args: argparse.Namespace, argv: list[str] | None = None):
    """Resolve a preset plus overrides into a :class:`sigcell.bench.kernels.KernelBenchConfig`."""
    from pathlib import Path

    import torch

    from sigcell.bench.cases import PRESETS, build_cases
    from sigcell.bench.kernels import KernelBenchConfig
    from sigcell.bench.providers import PROVIDERS, resolve_providers

    preset = PRESETS[args.preset]
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    causal = {"off": (False,), "on": (True,), "both": (False, True)}.get(args.causal or "", preset.causal)
    cell_dist = args.cell_dist or (preset.cell_dist if args.padding is None else None)
    tokens = args.batch_tokens if args.batch_tokens is not None else preset.tokens
    if tokens < 1:
        msg = f"--batch-tokens must be positive, got {tokens}"
        raise ValueError(msg)
    cases = build_cases(args.d or preset.head_dims, args.l or preset.seq_lens,
                        args.padding or preset.paddings, causal, seed=args.seed, tokens=tokens,
                        cell_dist=cell_dist, cell_scale=args.cell_scale)
    providers = resolve_providers(args.providers or preset.providers, torch.device(device),
                                  args.skip_providers)
    if args.tritonsigmoid:
        for name in ("tritonsigmoid-dense", "tritonsigmoid-padded"):
            PROVIDERS[name].path = args.tritonsigmoid
    return KernelBenchConfig(
        name=args.name or args.preset, cases=cases, providers=providers,
        modes=tuple(args.modes or preset.modes), dtype=args.dtype, device=device, warmup_ms=args.warmup_ms,
        rep_ms=args.rep_ms, seed=args.seed, matmul=not args.no_matmul, check=not args.no_check,
        time_limit_s=args.time_limit, out=Path(args.out), plot=not args.no_plot, table=not args.no_table,
        argv=list(sys.argv if argv is None else argv), preset=args.preset, plan_only=args.dry_run,
    )


def _dry_run(cfg) -> int:
    from sigcell.bench.kernels import estimate_seconds

    print(f"{cfg.name}: {len(cfg.cases)} cases, modes {','.join(cfg.modes)}, {cfg.dtype} on {cfg.device}")
    print("providers: " + ", ".join(p.name for p in cfg.providers))
    for case in cfg.cases:
        names = [p.name for p in cfg.providers if p.applies(case)]
        print(f"  {case.label:<28} B={case.batch:<3} H={case.heads:<3} valid {case.valid_tokens}/"
              f"{case.batch * case.seq_len}: {', '.join(names)}")
    count, seconds = estimate_seconds(cfg)
    print(f"{count} measurements; about {seconds / 60:.1f} min of timing on a GPU, plus first-call "
          "compilation (sigcell: seconds per kernel variant; TritonSigmoid: minutes of autotuning on a cold "
          "cache)")
    return 0


def run_kernels(args: argparse.Namespace) -> int:
    from sigcell.bench.kernels import run_kernel_bench

    cfg = config_from_args(args)
    if args.dry_run:
        return _dry_run(cfg)
    data, _ = run_kernel_bench(cfg)
    return 0 if data["results"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its subcommands ``kernels`` and ``train`` to the ``sigcell`` command line."""
    bench = subparsers.add_parser("bench", help="benchmarks (kernels: attention vs peers; train: steps)",
                                  description="Benchmarks that write JSON + PNG under benchmarks/results/.")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    add_subcommands(sub)
    bench.set_defaults(func=lambda args: (bench.print_help(), 2)[1])


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add ``kernels`` and ``train`` to ``sigcell bench``'s (or ``python -m sigcell.bench``'s) subparsers."""
    kernels = sub.add_parser(
        "kernels", help="time sigcell's attention against TritonSigmoid, SDPA, FlexAttention, plain PyTorch",
        description="Time sigcell's sigmoid attention (dense, padded, varlen) against its peers on the "
                    "paper's shapes (B = 16384/L, H = 2048/D). Writes JSON (+ PNG) and prints sigcell's "
                    "ratio to each peer.",
    )
    add_kernels_arguments(kernels)
    kernels.set_defaults(func=run_kernels)
    train = sub.add_parser(
        "train", help="time optimizer steps of the same model with sigmoid (sigcell, TritonSigmoid) and "
                      "softmax (SDPA backends, varlen) attention, padded and packed",
        description="Time whole training steps (forward, backward, AdamW; bf16 autocast) of one model preset "
                    "with each attention provider, on full batches (B = 16384/L), padded batches and real "
                    "cell-length mixes, padded and packed. Writes JSON (+ PNG) and prints sigcell's ratio "
                    "to the best softmax and to TritonSigmoid against the issue's targets.",
    )
    add_train_arguments(train)
    train.set_defaults(func=run_train)
    report = sub.add_parser(
        "report", help="print the tables of saved benchmark JSON and draw its PNG (e.g. from a GPU box)",
        description="Re-render results written by `bench kernels` or `bench train` (for example on a GPU "
                    "machine without matplotlib): print the tables and write RESULTS.png beside each file.",
    )
    report.add_argument("results", nargs="+", metavar="RESULTS.json")
    report.add_argument("--no-plot", action="store_true", help="write no PNG")
    report.add_argument("--no-table", action="store_true", help="print no tables")
    report.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from sigcell.bench.report import plot_png, print_tables
    from sigcell.bench.train_report import plot_train_png, print_train_tables

    renderers = {"sigcell.bench.kernels/1": (print_tables, plot_png),
                 "sigcell.bench.train/1": (print_train_tables, plot_train_png)}
    loaded = []
    for name in args.results:
        path = Path(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"sigcell bench report: cannot read {path}: {err}", file=sys.stderr)
            return 2
        if not isinstance(data, dict) or data.get("schema") not in renderers:
            print(f"sigcell bench report: {path} is not a sigcell benchmark result (schema "
                  f"{data.get('schema') if isinstance(data, dict) else None!r}; expected one of "
                  f"{', '.join(renderers)})", file=sys.stderr)
            return 2
        loaded.append((path, data))
    for path, data in loaded:
        tables, plot = renderers[data["schema"]]
        if not args.no_table:
            print(f"== {path}")
            tables(data, sys.stdout)
        if not args.no_plot:
            png = path.with_suffix(".png")
            reason = plot(data, png)
            print(f"wrote {png}" if reason is None else f"no PNG for {path}: {reason}")
    return 0


# ----------------------------------------------------------------------------------------------------
# bench train
# ----------------------------------------------------------------------------------------------------


def _percent_list(text: str) -> list[float]:
    """Paddings in percent only (``0,25``): 0 is the full batch."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        msg = f"expected comma-separated paddings in percent such as 0,25, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not values or any(not 0 <= v < 100 for v in values):
        msg = f"paddings must lie in [0, 100) percent, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return [v / 100 for v in values]


def _mix_list(text: str) -> list:
    from sigcell.bench.train_cases import parse_mix

    if text.strip() == "none":
        return []
    try:
        return [parse_mix(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _layout_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values or any(v not in ("padded", "packed") for v in values):
        msg = f"layouts must be padded and / or packed, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def _compile_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values or any(v not in ("eager", "compiled", "cudagraphs") for v in values):
        msg = f"--compile takes eager, compiled and / or cudagraphs (reduce-overhead), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def _assignment(text: str) -> tuple[str, object]:
    from sigcell.bench.train import _scalar

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        msg = f"expected FIELD=VALUE such as n_layers=4, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return key.strip(), _scalar(value.strip())


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Add the flags of ``bench train`` to ``p``."""
    from sigcell.bench.train_cases import TRAIN_PRESETS

    presets = ", ".join(f"{k} ({v.description})" for k, v in TRAIN_PRESETS.items())
    p.add_argument("--preset", default="quick", choices=list(TRAIN_PRESETS),
                   help=f"named plan (default quick): {presets}")
    p.add_argument("--model", metavar="PRESET|YAML",
                   help="model preset (tiny, small, base, large) or YAML file (default: the plan's, base)")
    p.add_argument("--set", type=_assignment, action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model field, e.g. --set n_layers=4 --set qk_norm=true (repeatable)")
    shapes = p.add_argument_group("workload overrides (replace the preset's)")
    shapes.add_argument("--l", type=_int_list, metavar="L,...",
                        help="context lengths, e.g. 1024,2048,4096,8192")
    shapes.add_argument("--padding", type=_percent_list, metavar="P,...",
                        help="padding in percent, 0 = full batch (lengths uniform in [(1-p)L, L]), e.g. 0,25")
    shapes.add_argument("--batch-tokens", type=int, metavar="N",
                        help="padded tokens per uniform batch: B = N / L cells (default 16384)")
    shapes.add_argument("--mixes", type=_mix_list, metavar="DIST[xSCALE]@L,...",
                        help="real cell-length mixes truncated to L, e.g. celltypist@4096,scmark@2048,"
                             "celltypistx2@8192, or none")
    shapes.add_argument("--mix-tokens", type=int, metavar="N",
                        help="token budget of a packed mix batch (default: --batch-tokens)")
    shapes.add_argument("--layouts", type=_layout_list, metavar="padded,packed", help="batch layouts")
    shapes.add_argument("--memory-genes", type=int, metavar="N",
                        help="genes of the single-cell memory check (default 16384)")
    shapes.add_argument("--no-memory-check", action="store_true", help="skip the single-long-cell check")
    p.add_argument("--providers", type=_name_list, metavar="NAME,...",
                   help="providers or groups (default, all, softmax, sdpa, sigmoid, or names: sigcell, "
                        "sdpa-cudnn, sdpa-flash, sdpa-efficient, sdpa-math, softmax-varlen, tritonsigmoid)")
    p.add_argument("--skip-providers", type=_name_list, default=[], metavar="NAME,...",
                   help="providers or groups to leave out")
    p.add_argument("--tritonsigmoid", metavar="PATH",
                   help="triton-sigmoid wheel or unpacked folder, if it is not installed (default: "
                        "$SIGCELL_BENCH_TRITONSIGMOID, then .whl/triton_sigmoid-*.whl)")
    p.add_argument("--compile", type=_compile_list, metavar="eager,compiled,cudagraphs",
                   help="run each provider as written, under torch.compile and / or torch.compile "
                        "mode=reduce-overhead (default: eager,compiled on a GPU, eager on the CPU)")
    p.add_argument("--steps", type=int, help="timed optimizer steps per measurement (median reported)")
    p.add_argument("--warmup", type=int, help="untimed steps before them (after the first step)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: cuda when available")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="start no new measurement after this long; the rest is recorded as skipped")
    p.add_argument("--out", default="benchmarks/results",
                   help="folder for <name>-<timestamp>.json/.png, or a .json file path")
    p.add_argument("--name", help="name of the run (default: train-<preset>)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--no-table", action="store_true", help="print no summary table")
    p.add_argument("--dry-run", action="store_true", help="print the plan and a time estimate, run nothing")


def train_config_from_args(args: argparse.Namespace, argv: list[str] | None = None):
    """Resolve a preset plus overrides into a :class:`sigcell.bench.train.TrainBenchConfig`."""
    from pathlib import Path

    import torch

    from sigcell.bench.train import TrainBenchConfig
    from sigcell.bench.train_cases import TRAIN_PRESETS, build_train_cases, memory_case
    from sigcell.bench.train_providers import TRAIN_PROVIDERS, resolve_train_providers

    preset = TRAIN_PRESETS[args.preset]
    device = args.device
    if device == "auto":
        # A dry run plans the GPU run even where there is no GPU.
        device = "cuda" if torch.cuda.is_available() or args.dry_run else "cpu"
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if device == "cuda" else "fp32"
    for flag, value in (("--batch-tokens", args.batch_tokens), ("--mix-tokens", args.mix_tokens),
                        ("--memory-genes", args.memory_genes)):
        if value is not None and value < 1:
            msg = f"{flag} must be positive, got {value}"
            raise ValueError(msg)
    tokens = args.batch_tokens or preset.tokens
    cases = build_train_cases(args.l or preset.seq_lens,
                              args.padding if args.padding is not None else preset.paddings,
                              args.mixes if args.mixes is not None else preset.mix_objects(),
                              tokens=tokens, mix_tokens=args.mix_tokens or preset.mix_tokens or tokens,
                              seed=args.seed)
    genes = args.memory_genes or preset.memory_genes
    memory = None if args.no_memory_check or genes is None else memory_case(genes)
    providers = resolve_train_providers(args.providers or preset.providers, torch.device(device),
                                        args.skip_providers)
    if args.tritonsigmoid:
        TRAIN_PROVIDERS["tritonsigmoid"].path = args.tritonsigmoid
    return TrainBenchConfig(
        name=args.name or f"train-{args.preset}", cases=cases, providers=providers,
        model=args.model or preset.model, model_overrides=dict(args.set), layouts=tuple(args.layouts or
                                                                                        preset.layouts),
        warmup=preset.warmup if args.warmup is None else args.warmup,
        steps=preset.steps if args.steps is None else args.steps, precision=precision, device=device,
        compile_modes=tuple(args.compile or (("eager", "compiled") if device == "cuda" else ("eager",))),
        seed=args.seed, memory_case=memory, time_limit_s=args.time_limit, out=Path(args.out),
        plot=not args.no_plot, table=not args.no_table, argv=list(sys.argv if argv is None else argv),
        preset=args.preset, plan_only=args.dry_run,
    )


def _train_dry_run(cfg) -> int:
    from sigcell.bench.train import _model_summary, estimate_seconds, plan

    summary = _model_summary(cfg)
    print(f"{cfg.name}: model {cfg.model} ({summary['parameters'] / 1e6:.1f}M parameters, "
          f"{summary['parameters_without_embeddings'] / 1e6:.1f}M without embeddings), {cfg.precision} on "
          f"{cfg.device}, {cfg.warmup} warmup + {cfg.steps} timed steps per measurement")
    print("providers: " + ", ".join(p.name for p in cfg.providers) + "; layouts: " + ", ".join(cfg.layouts))
    items = plan(cfg)
    cases = ([cfg.memory_case] if cfg.memory_case is not None else []) + list(cfg.cases)
    for case in cases:
        runs = [f"{p.name}/{lay}" for c, lay, p in items if c is case]
        print(f"  {case.label:<28} B={case.cells:<3} tokens {case.valid_tokens}/{case.padded_tokens} padded: "
              f"{', '.join(runs) or '-'}")
    count, seconds = estimate_seconds(cfg)
    print(f"{count} measurements; about {seconds / 60:.1f} min on an H100 / H200, plus first-call "
          "compilation (sigcell: seconds per kernel variant; TritonSigmoid: minutes of autotuning on a cold "
          "cache)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from sigcell.bench.train import run_train_bench

    cfg = train_config_from_args(args)
    if args.dry_run:
        return _train_dry_run(cfg)
    data, _ = run_train_bench(cfg)
    return 0 if data["results"] or data["memory_check"] else 1
