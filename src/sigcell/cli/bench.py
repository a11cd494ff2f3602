"""``sigcell bench kernels`` (also ``python -m sigcell.bench kernels``): sigcell's attention vs its peers.

Only argument parsing lives here; the work is done by :mod:`sigcell.bench`. Heavy imports happen when the
command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_kernels_arguments", "config_from_args", "register", "run_kernels"]

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
    """Add ``bench`` and its subcommand ``kernels`` to the ``sigcell`` command line."""
    bench = subparsers.add_parser("bench", help="benchmarks (kernels: sigmoid attention vs peers)",
                                  description="Benchmarks that write JSON + PNG under benchmarks/results/.")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    kernels = sub.add_parser(
        "kernels", help="time sigcell's attention against TritonSigmoid, SDPA, FlexAttention, plain PyTorch",
        description="Time sigcell's sigmoid attention (dense, padded, varlen) against its peers on the "
                    "paper's shapes (B = 16384/L, H = 2048/D). Writes JSON (+ PNG) and prints sigcell's "
                    "ratio to each peer.",
    )
    add_kernels_arguments(kernels)
    kernels.set_defaults(func=run_kernels)
    bench.set_defaults(func=lambda args: (bench.print_help(), 2)[1])
