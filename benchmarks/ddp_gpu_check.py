"""The 2-GPU check of the training issue: DDP over 2 GPUs vs 1 GPU at the same global batch.

Runs `sigcell pretrain` (synthetic cells, preset `small`, sigmoid attention by default) two ways per
precision: one GPU with `--grad-accum 2` and micro-batch B, and torchrun (2 GPUs) with micro-batch B
per rank (the same 2B cells per optimizer step, in the same order: rank r takes micro-batch r of each step, as
accumulation step r does on one GPU). The per-step training loss and the validation loss of the runs are
compared; JSON with both curves, the largest relative differences and the card names goes to --out.

    PYTHONPATH=src python3 benchmarks/ddp_gpu_check.py --out "$OUT/ddp" [--steps 60] [--precisions bf16,fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _losses(run: Path, kind: str) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == kind:
            out[int(rec["step"])] = float(rec["loss"])
    return out


def _max_rel(a: dict[int, float], b: dict[int, float]) -> tuple[float, int | None]:
    worst, at = 0.0, None
    for step in sorted(set(a) & set(b)):
        rel = abs(a[step] - b[step]) / max(abs(a[step]), 1e-12)
        if rel > worst:
            worst, at = rel, step
    return worst, at


def _run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        sys.stdout.write(log.read_text()[-4000:])
        msg = f"command failed with exit code {done.returncode}: {' '.join(cmd)}"
        raise SystemExit(msg)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8, help="micro-batch per rank")
    p.add_argument("--config", default="small")
    p.add_argument("--attention", default="sigmoid")
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    args = p.parse_args()

    import torch

    if torch.cuda.device_count() < 2:
        msg = f"ddp_gpu_check: needs 2 GPUs, found {torch.cuda.device_count()}"
        raise SystemExit(msg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    common = ["--config", args.config, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
              "--attention", args.attention, "--lr", "1e-3", "--warmup-steps", "10", "--no-progress",
              "--no-tensorboard", "--val-every", "10", "--ckpt-every", "0", "--log-every", "1",
              "--set", "data.synthetic_min_genes=128", "--set", "data.synthetic_max_genes=1024"]
    results = {"kind": "sigcell-ddp-check", "config": args.config, "attention": args.attention,
               "steps": args.steps, "micro_batch": args.batch_size, "global_batch": 2 * args.batch_size,
               "parallel": args.parallel,
               "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
               "torch": torch.__version__, "runs": {}}
    for precision in args.precisions.split(","):
        one, two = out / f"one-gpu-{precision}", out / f"two-gpu-{precision}"
        t1 = _run([sys.executable, "-m", "sigcell", "pretrain", *common, "--out", str(one), "--precision",
                   precision, "--grad-accum", "2"], dict(env, CUDA_VISIBLE_DEVICES="0"),
                  out / f"one-{precision}.log")
        t2 = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                   "sigcell", "pretrain", *common, "--out", str(two), "--precision", precision, "--parallel",
                   args.parallel], env, out / f"two-{precision}.log")
        entry = {"one_gpu_s": round(t1, 1), "two_gpu_s": round(t2, 1)}
        for kind in ("train", "val"):
            a, b = _losses(one, kind), _losses(two, kind)
            rel, at = _max_rel(a, b)
            entry[kind] = {"one_gpu": a, "two_gpu": b, "max_rel_diff": rel, "at_step": at,
                           "first": [a.get(min(a)), b.get(min(b))] if a and b else None,
                           "last": [a.get(max(a)), b.get(max(b))] if a and b else None}
            print(f"{precision} {kind}: {len(a)} steps, max |rel diff| {rel:.2e} at step {at}; "
                  f"last loss one-GPU {entry[kind]['last'][0]:.5f} two-GPU {entry[kind]['last'][1]:.5f}")
        results["runs"][precision] = entry
        print(f"{precision}: one GPU {t1:.0f} s, two GPUs {t2:.0f} s (incl. start-up)")
    (out / "ddp-check.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
