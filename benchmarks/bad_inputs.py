"""Bad inputs a new user could give the CLI, each checked for one clear error and nothing left behind.

Every case runs ``sigcell ARGS...`` in a fresh folder (with a few files a user might pass: an empty file,
a text file named .h5ad, a truncated .h5ad, a YAML that is not valid, a folder that exists) and passes when:
the exit code is non-zero, stderr holds no Python traceback and ends in one ``sigcell ...:`` line, and the
folder holds exactly the files it held before. Prints one line per case and the count; writes the
results as JSON when ``--out`` is given.

Usage: python benchmarks/bad_inputs.py [--only SUBSTRING] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (name, argv); {h5} is a small valid .h5ad, {text} a text file named .h5ad, {trunc} a truncated .h5ad,
# {empty} an empty file, {yaml} an invalid YAML, {dir} an existing folder holding a user's file.
CASES: list[tuple[str, list[str]]] = [
    ("unknown command", ["frobnicate"]),
    ("pretrain: missing config", ["pretrain", "--config", "nope.yaml", "--out", "r"]),
    ("pretrain: unknown preset", ["pretrain", "--config", "huge", "--out", "r"]),
    ("pretrain: invalid YAML", ["pretrain", "--config", "{yaml}", "--out", "r"]),
    ("pretrain: --set without =", ["pretrain", "--config", "tiny", "--set", "steps", "--out", "r"]),
    ("pretrain: --set unknown key", ["pretrain", "--config", "tiny", "--set", "model.nope=1", "--out", "r"]),
    ("pretrain: negative steps", ["pretrain", "--config", "tiny", "--steps", "-5", "--out", "r"]),
    ("pretrain: zero batch", ["pretrain", "--config", "tiny", "--set", "data.batch_size=0", "--out", "r"]),
    ("pretrain: bad attention", ["pretrain", "--config", "tiny", "--set", "model.attention=relu",
                                 "--out", "r"]),
    ("pretrain: cuda without GPU", ["pretrain", "--config", "tiny", "--device", "cuda", "--out", "r"]),
    # (--resume on a folder without a checkpoint starts fresh, by design: a restarted job passes it always)
    ("pretrain: out is a file", ["pretrain", "--config", "tiny", "--out", "{empty}"]),
    ("pretrain: corpus missing", ["pretrain", "--config", "tiny", "--set", "data.corpus=nowhere",
                                  "--out", "r"]),
    ("prepare: missing input", ["prepare", "missing.h5ad", "--out", "c"]),
    ("prepare: text as h5ad", ["prepare", "{text}", "--out", "c"]),
    ("prepare: truncated h5ad", ["prepare", "{trunc}", "--out", "c"]),
    ("prepare: empty file", ["prepare", "{empty}", "--out", "c"]),
    ("prepare: out is a user folder", ["prepare", "{h5}", "--out", "{dir}", "--overwrite"]),
    ("prepare: max-genes 0", ["prepare", "{h5}", "--out", "c", "--max-genes", "0"]),
    ("prepare: bad layer", ["prepare", "{h5}", "--out", "c", "--layer", "nope"]),
    ("prepare: bad gene col", ["prepare", "{h5}", "--out", "c", "--gene-col", "nope"]),
    ("prepare: unknown dataset", ["prepare", "not-a-dataset", "--out", "c"]),
    ("embed: unknown model", ["embed", "--model", "nope", "--data", "{h5}", "--out", "e.h5ad"]),
    ("embed: missing data", ["embed", "--model", "sigcell-small", "--data", "missing.h5ad", "--out",
                             "e.h5ad"]),
    ("embed: text as h5ad", ["embed", "--model", "sigcell-small", "--data", "{text}", "--out", "e.h5ad"]),
    ("embed: truncated h5ad", ["embed", "--model", "sigcell-small", "--data", "{trunc}", "--out", "e.h5ad"]),
    ("embed: out exists", ["embed", "--model", "sigcell-small", "--data", "{h5}", "--out", "{empty}"]),
    ("embed: batch size 0", ["embed", "--model", "sigcell-small", "--data", "pbmc68k", "--out", "e.h5ad",
                             "--batch-size", "0"]),
    ("embed: bad pooling", ["embed", "--model", "sigcell-small", "--data", "pbmc68k", "--out", "e.h5ad",
                            "--pooling", "max"]),
    ("embed: no known gene", ["embed", "--model", "sigcell-small", "--data", "{h5}", "--out", "e.h5ad"]),
    ("embed: cuda without GPU", ["embed", "--model", "sigcell-small", "--data", "{h5}", "--out", "e.h5ad",
                                 "--device", "cuda"]),
    ("embed: run folder without checkpoint", ["embed", "--model", "{dir}", "--data", "{h5}", "--out",
                                              "e.h5ad"]),
    ("evaluate: missing file", ["evaluate", "missing.h5ad"]),
    ("evaluate: no such key", ["evaluate", "{h5}", "--key", "X_nope"]),
    ("evaluate: text as h5ad", ["evaluate", "{text}"]),
    ("compare: unknown dataset", ["compare", "not-a-dataset", "--out", "o"]),
    ("compare: bad seeds", ["compare", "--seeds", "0,x", "--out", "o"]),
    ("compare: steps 0", ["compare", "zeisel", "--steps", "0", "--out", "o"]),
    ("compare: unlabelled dataset", ["compare", "celltypist-sample", "--out", "o"]),
    ("compare: missing label column", ["compare", "{h5}", "--label-col", "nope", "--out", "o"]),
    ("compare: text as h5ad", ["compare", "{text}", "--out", "o"]),
    ("compare: report without runs", ["compare", "--stage", "report", "--out", "o"]),
    ("datasets: unknown name", ["datasets", "info", "nope"]),
    ("bench kernels: bad length", ["bench", "kernels", "--l", "abc", "--dry-run"]),
    ("bench train: bad compile mode", ["bench", "train", "--compile", "fast", "--dry-run"]),
    ("bench train: unknown provider", ["bench", "train", "--providers", "nope", "--dry-run"]),
    ("analyze jacobian: missing run", ["analyze", "jacobian", "--run", "missing", "--out", "j"]),
    ("analyze sinks: missing run", ["analyze", "sinks", "--run", "missing", "--out", "s"]),
    ("analyze sinks: run is a file", ["analyze", "sinks", "--run", "{empty}", "--out", "s"]),
]


# What the placeholders of CASES name (files _fixtures makes).
FIXTURES = {"h5": "cells.h5ad", "trunc": "trunc.h5ad", "text": "text.h5ad", "empty": "empty",
            "yaml": "bad.yaml", "dir": "mine"}


def _fixtures(folder: Path) -> None:
    """The files a case may name, made in ``folder`` (a valid AnnData of unknown genes among them)."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    x = sp.random(60, 40, density=0.3, random_state=0, format="csr", dtype=np.float32)
    x.data = np.ceil(x.data * 10)
    obs = pd.DataFrame({"cell_type": rng.choice(["a", "b", "c"], 60)}, index=[f"c{i}" for i in range(60)])
    adata = ad.AnnData(X=x, obs=obs)
    adata.var_names = [f"NOTAGENE{j}" for j in range(40)]
    adata.write_h5ad(folder / "cells.h5ad")
    data = (folder / "cells.h5ad").read_bytes()
    (folder / "trunc.h5ad").write_bytes(data[: len(data) // 3])
    (folder / "text.h5ad").write_text("gene,count\nCD3E,4\n")
    (folder / "empty").write_bytes(b"")
    (folder / "bad.yaml").write_text("model: [unclosed\n")
    (folder / "mine").mkdir()
    (folder / "mine" / "notes.txt").write_text("my own file\n")


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")}


def run_case(argv: list[str], template: Path, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="sigcell-bad-") as tmp:
        work = Path(tmp) / "w"
        shutil.copytree(template, work)
        args = [a.format(**FIXTURES) for a in argv]
        before = _snapshot(work)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "sigcell", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
        after = _snapshot(work)
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    checks = {
        "nonzero_exit": proc.returncode != 0,
        "no_traceback": "Traceback (most recent call last)" not in proc.stderr,
        "one_error_line": bool(err_lines) and err_lines[-1].startswith(("sigcell", "usage:"))
        and sum(line.startswith("sigcell") and "error" in line for line in err_lines) == 1,
        "nothing_left": after == before,
    }
    return {"argv": args, "returncode": proc.returncode, "seconds": round(seconds, 2),
            "message": err_lines[-1][:300] if err_lines else "", "checks": checks, "ok": all(checks.values()),
            "changed": sorted(set(after) ^ set(before))[:5]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="run the cases whose name holds this text")
    ap.add_argument("--out", help="write the results here (JSON)")
    args = ap.parse_args()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    results = []
    with tempfile.TemporaryDirectory(prefix="sigcell-bad-template-") as tmp:
        template = Path(tmp)
        _fixtures(template)
        for name, argv in CASES:
            if args.only and args.only not in name:
                continue
            r = run_case(argv, template, env)
            r["case"] = name
            results.append(r)
            failed = [k for k, v in r["checks"].items() if not v]
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {name:<40} rc={r['returncode']} {r['seconds']:5.1f}s "
                  f"{'' if r['ok'] else failed}  {r['message'][:110]}", flush=True)
    n_ok = sum(r["ok"] for r in results)
    print(f"{n_ok} of {len(results)} bad inputs give one clear error with nothing left behind")
    if args.out:
        Path(args.out).write_text(json.dumps({"cases": results, "ok": n_ok, "total": len(results)}, indent=1))
    return 0 if n_ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
