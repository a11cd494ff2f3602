"""Where the time of one training step goes: torch.profiler over a few `Trainer.train_step` calls.

    PYTHONPATH=src python3 benchmarks/profile_train_step.py [--preset small] [--prepared DIR] [--steps 6]

Synthetic cells by default; `--prepared runs/compare-small/prepared/zeisel` uses a compare-prepared dataset
with the compare stage's config (so the numbers match `sigcell compare`). Prints the wall time of each step
(with and without the per-step logging work) and the top operators by self CPU and by device time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def build_trainer(args, out: Path, attention: str):
    from sigcell.train.trainer import Trainer

    if args.prepared:
        from sigcell.eval.runner import Plan, PreparedDataset, _config, _train_data

        data = PreparedDataset.load(args.prepared)
        plan = Plan(preset=args.preset, steps=1000, seeds=[0], datasets=[data.name], attentions=[attention],
                    overrides={}, device="cuda" if torch.cuda.is_available() else "cpu")
        config = _config(plan, data, attention, 0, out)
        config.log_every, config.val_every, config.ckpt_every = args.log_every, 0, 0
        held = data.subset("heldout")
        return Trainer(config, data=_train_data(config, data, data.subset("train"), held))
    from sigcell.train.config import TrainConfig

    config = TrainConfig.from_preset(args.preset, {"out_dir": str(out), "model.attention": attention,
                                                   "log_every": args.log_every, "val_every": 0,
                                                   "ckpt_every": 0, "progress": False, "tensorboard": False})
    return Trainer(config)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--prepared")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--log-every", type=int, default=1000, help="1 = every step records metrics (slow path)")
    p.add_argument("--attention", default="sigmoid,softmax")
    p.add_argument("--rows", type=int, default=22)
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    for attention in args.attention.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(args, Path(tmp), attention)
            for _ in range(3):  # compile / warm up
                trainer.train_step()
            times = []
            for _ in range(args.steps):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                trainer.train_step()
                if cuda:
                    torch.cuda.synchronize()
                times.append(1e3 * (time.perf_counter() - start))
            print(f"== {attention}: step wall ms {[round(t, 1) for t in times]}")
            kinds = torch.profiler.ProfilerActivity
            acts = [kinds.CPU, kinds.CUDA] if cuda else [kinds.CPU]
            with torch.profiler.profile(activities=acts) as prof:
                for _ in range(3):
                    trainer.train_step()
                if cuda:
                    torch.cuda.synchronize()
            table = prof.key_averages()
            print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))
            if cuda:
                print(table.table(sort_by="self_cuda_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
