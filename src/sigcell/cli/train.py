"""``sigcell pretrain`` and ``sigcell presets``: parse flags into a TrainConfig and call the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

# Flag name -> dotted config field. Defaults are None so that only flags given override the config.
_FLAGS: dict[str, str] = {
    "out": "out_dir",
    "corpus": "data.corpus",
    "vocab": "data.vocab",
    "steps": "steps",
    "compile": "compile",
    "batch_size": "data.batch_size",
    "token_budget": "data.token_budget",
    "grad_accum": "grad_accum",
    "lr": "optim.lr",
    "warmup_steps": "optim.warmup_steps",
    "attention": "model.attention",
    "layout": "data.layout",
    "precision": "precision",
    "device": "device",
    "parallel": "parallel",
    "seed": "seed",
    "clip": "optim.clip_grad_norm",
    "log_every": "log_every",
    "val_every": "val_every",
    "ckpt_every": "ckpt_every",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pretrain`` and ``presets``."""
    p = subparsers.add_parser(
        "pretrain",
        help="masked-expression pretraining of a cell encoder (CPU, one GPU, or torchrun)",
        description=(
            "Pretrain a CellEncoder with sigmoid or softmax attention. Defaults come from the config "
            "dataclasses, then --config (a preset name or YAML file), then these flags and --set. "
            "Multi-GPU: torchrun --nproc_per_node=N -m sigcell pretrain --config base --out DIR "
            "(DDP; --parallel fsdp shards the model)."
        ),
    )
    p.add_argument("--config", default=None,
                   help="preset (tiny, small, base, large) or YAML file; default tiny, or the run's own "
                        "config.yaml with --resume")
    p.add_argument("--out", help="run directory (config, metrics.jsonl, tensorboard/, checkpoints/)")
    p.add_argument("--corpus", help="corpus directory from sigcell.data; omit for synthetic cells")
    p.add_argument("--vocab", help="gene vocabulary JSON stored with the checkpoints")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest intact checkpoint in --out (a fresh start when it has "
                        "none, so a restarted job can always pass it)")
    p.add_argument("--steps", type=int, help="optimizer steps of the whole run")
    p.add_argument("--batch-size", type=int, help="cells per micro-batch per process")
    p.add_argument("--token-budget", type=int,
                   help="corpus: cut micro-batches by tokens instead of cells (padded counts padding)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, help="linear warmup steps")
    p.add_argument("--attention", choices=("sigmoid", "softmax"), help="the attention function")
    p.add_argument("--layout", choices=("packed", "padded"), help="batch layout")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), help="auto: bf16 autocast on CUDA")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--parallel", choices=("ddp", "fsdp"), help="strategy under torchrun")
    p.add_argument("--compile", choices=("auto", "on", "off"),
                   help="torch.compile the model (auto: on CUDA, off on the CPU)")
    p.add_argument("--seed", type=int)
    p.add_argument("--clip", type=float, help="max gradient norm")
    p.add_argument("--no-clip", action="store_true", help="turn gradient clipping off (stress tests)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--val-every", type=int, help="0 = never")
    p.add_argument("--ckpt-every", type=int, help="0 = only at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tensorboard", action="store_true", help="JSONL metrics only")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field, e.g. --set model.qk_norm=true --set optim.weight_decay=0.1")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and parameter counts, then exit")
    p.set_defaults(func=run_pretrain)

    q = subparsers.add_parser("presets", help="list the model size presets with parameter counts")
    q.set_defaults(func=run_presets)


def parse_value(text: str) -> Any:
    """A ``--set`` value: int, float, bool, null or string (YAML scalars; ``1e-3`` is a float)."""
    import yaml

    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def resolve_config(args: argparse.Namespace):
    """The TrainConfig the flags describe (also used by the tests)."""
    from sigcell.train import TrainConfig

    overrides: dict[str, Any] = {}
    for flag, key in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    if args.no_clip:
        if args.clip is not None:
            msg = "--clip and --no-clip contradict each other; pass one"
            raise ValueError(msg)
        overrides["optim.clip_grad_norm"] = None
    if args.no_progress:
        overrides["progress"] = False
    if args.no_tensorboard:
        overrides["tensorboard"] = False
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"--set expects KEY=VALUE (e.g. model.qk_norm=true), got {item!r}"
            raise ValueError(msg)
        overrides[key.strip()] = parse_value(value.strip())
    source = args.config
    if source is None and args.resume and args.out and (Path(args.out) / "config.yaml").is_file():
        source = Path(args.out) / "config.yaml"  # resume with the run's own resolved config
    return TrainConfig.from_preset(source or "tiny", overrides)


def run_pretrain(args: argparse.Namespace) -> int:
    from sigcell.model import MaskedExpressionModel
    from sigcell.train import pretrain

    config = resolve_config(args)
    if args.dry_run:
        model = MaskedExpressionModel(config.model)
        print(config.to_yaml(), end="")
        print(f"# parameters: {model.num_parameters():,} ({model.num_parameters(embeddings=False):,} "
              "without gene tables)")
        return 0
    result = pretrain(config, resume=args.resume)
    if result.status == "nonfinite":
        print(f"sigcell pretrain: {result.message}", file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") == "0":
        print(f"sigcell pretrain: {result.status} at step {result.step}; checkpoint {result.checkpoint}")
    return 0


def run_presets(args: argparse.Namespace) -> int:
    from sigcell.model import PRESETS, MaskedExpressionModel
    from sigcell.train import TrainConfig

    print(f"{'preset':8} {'d_model':>7} {'layers':>6} {'heads':>5} {'vocab':>7} {'params':>13} "
          f"{'w/o genes':>13}")
    for name in PRESETS:
        cfg = TrainConfig.from_preset(name).model
        with _meta_device():
            model = MaskedExpressionModel(cfg)
        print(f"{name:8} {cfg.d_model:>7} {cfg.n_layers:>6} {cfg.n_heads:>5} {cfg.vocab_size:>7} "
              f"{model.num_parameters():>13,} {model.num_parameters(embeddings=False):>13,}")
    return 0


def _meta_device():
    import torch

    return torch.device("meta")
