"""Speed of ``prepare_corpus`` (``sigcell prepare``) on a seeded synthetic dataset, rank and binned.

Builds ``sigcell.datasets.synthetic(n_cells, n_genes, median_genes=...)`` once, writes it as an
``.h5ad`` (cached in a temporary directory for the run, so file reading is part of what is timed,
as in ``sigcell prepare``), then times ``prepare_corpus`` ``--repeats`` times per encoding and
reports min / median / max. The machine may be shared, so the spread matters as much as the best.

``Mtok/s`` counts *input* expressed genes (nonzeros of the matrix) per second: that is the work the
tokenizer does whatever ``max_genes`` keeps; output tokens are reported next to it.

Usage::

    .venv/bin/python benchmarks/prepare_speed.py --tag baseline            # 20k x 20k, ~3.4k genes/cell
    .venv/bin/python benchmarks/prepare_speed.py --cells 2000 --tag quick   # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def _cpu_info() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"model": model, "n_cpus": os.cpu_count(), "loadavg_at_start": load, "machine": platform.machine()}


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--median-genes", type=int, default=3400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encodings", default="rank,binned")
    ap.add_argument("--tag", default="run", help="name of this run (e.g. baseline, after)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    from sigcell.data import TokenizerConfig
    from sigcell.data.corpus import prepare_corpus
    from sigcell.datasets import synthetic

    cpu = _cpu_info()
    t0 = time.perf_counter()
    adata = synthetic(args.cells, args.genes, median_genes=args.median_genes, seed=args.seed)
    t_gen = time.perf_counter() - t0
    nnz = int(adata.X.nnz)
    print(
        f"synthetic {args.cells} x {args.genes}, {nnz / args.cells:.0f} expressed genes/cell "
        f"({nnz:,} nonzeros), built in {t_gen:.1f} s; CPU {cpu['model']} x{cpu['n_cpus']}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="sigcell-bench-") as tmp:
        h5 = Path(tmp) / "synthetic.h5ad"
        adata.write_h5ad(h5)
        del adata
        for enc in args.encodings.split(","):
            config = TokenizerConfig(encoding=enc)
            times, n_tokens = [], 0
            for r in range(args.repeats):
                t = time.perf_counter()
                manifest = prepare_corpus([h5], Path(tmp) / f"corpus-{enc}-{r}", config=config)
                times.append(time.perf_counter() - t)
                n_tokens = manifest["n_tokens"]
                print(
                    f"  {enc:<6} run {r}: {times[-1]:.2f} s ({args.cells / times[-1]:.0f} cells/s)",
                    flush=True,
                )
            row = {
                "encoding": enc,
                "max_genes": config.max_genes,
                "times_s": [round(x, 3) for x in times],
                "n_output_tokens": n_tokens,
            }
            for stat, fn in (("best", min), ("median", statistics.median), ("worst", max)):
                s = fn(times)
                row[f"cells_per_s_{stat}"] = round(args.cells / s, 1)
                row[f"input_mtok_per_s_{stat}"] = round(nnz / s / 1e6, 3)
            results.append(row)
            print(
                f"{enc:<6} cells/s best {row['cells_per_s_best']:.0f} median {row['cells_per_s_median']:.0f} "
                f"worst {row['cells_per_s_worst']:.0f}; input Mtok/s best {row['input_mtok_per_s_best']:.2f} "
                f"median {row['input_mtok_per_s_median']:.2f} worst {row['input_mtok_per_s_worst']:.2f}"
            )
    report = {
        "name": f"prepare_speed-{args.tag}",
        "git": _git_rev(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu,
        "loadavg_at_end": os.getloadavg(),
        "numpy": np.__version__,
        "dataset": {
            "generator": "sigcell.datasets.synthetic",
            "n_cells": args.cells,
            "n_genes": args.genes,
            "median_genes": args.median_genes,
            "seed": args.seed,
            "nnz": nnz,
            "genes_per_cell_mean": round(nnz / args.cells, 1),
        },
        "repeats": args.repeats,
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"prepare_speed-{args.tag}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
