"""The foundation-model benchmark: pretrain `small` on the pooled corpus, embed held-out cells, score.

Three stages, so the GPU stage needs only torch + numpy (the GPU image has no anndata / scanpy):

* ``prepare`` (CPU, anndata): the pooled corpus of every registered dataset (``sigcell prepare``:
  shared symbol vocabulary, full-length cells, evaluation hold-out excluded) into ``DIR/corpus``, and
  for every labelled dataset its held-out cells tokenized with that vocabulary (``DIR/heldout/<name>.npz``),
  their labels and the PCA baseline of the same cells (``<name>.json``, ``<name>.pca.npy``).
* ``train`` (GPU): per seed, ``sigcell.train`` pretrains the ``small`` preset on the corpus (the step count
  is sized from a measured step time to fit ``--budget-s``), then embeds the held-out cells with the
  trained model and with a freshly initialised model of the same architecture and seed (the control),
  with ``cls`` and ``mean`` pooling -> ``OUT/emb/*.npy``; seed 0 is exported as ``sigcell-small``.
* ``score`` (CPU): ASW, NMI and kNN purity (``sigcell.eval.metrics``) of every embedding and of PCA ->
  JSON + PNG under ``benchmarks/results/``.

    python benchmarks/foundation.py prepare --out fm
    python benchmarks/foundation.py train --data fm --out $OUT --seeds 0 1 2 --budget-s 450
    python benchmarks/foundation.py score --data fm --runs RUNS --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

LABELLED = ("scmark", "zeisel", "citeseq", "pbmc68k")  # registered datasets with cell-type labels
POOLINGS = ("cls", "mean")
METRICS = ("asw", "nmi", "knn_purity")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# prepare (CPU)
# ---------------------------------------------------------------------------------------------------


def prepare(out: Path) -> None:
    from sigcell import datasets
    from sigcell.data import Corpus, TokenizerConfig, prepare_corpus
    from sigcell.data.genes import harmonize_genes
    from sigcell.data.io import check_adata
    from sigcell.data.split import heldout_split
    from sigcell.data.tokenize import tokenize
    from sigcell.eval.baselines import pca_baseline

    corpus_dir = out / "corpus"
    if not (corpus_dir / "manifest.json").is_file():
        prepare_corpus(datasets.available(), corpus_dir, config=TokenizerConfig(encoding="binned", n_bins=51))
    corpus = Corpus(corpus_dir)
    tok = corpus.config
    held_dir = out / "heldout"
    held_dir.mkdir(parents=True, exist_ok=True)
    for name in LABELLED:
        adata = datasets.load(name)
        label_col = datasets.info(name).labels[0]
        split = heldout_split(adata, label_col, source=name)
        held = adata[split.heldout].copy()
        labels = held.obs[label_col].astype(str).to_numpy()
        pca, pca_info = pca_baseline(held, seed=0)
        checked = check_adata(held, source=f"{name} hold-out")
        harmonize_genes(checked)
        match = corpus.vocab.match(checked.var_names)
        cells = tokenize(checked, corpus.vocab, tok, empty="drop")
        np.savez(held_dir / f"{name}.npz", gene_ids=cells.gene_ids, values=cells.values,
                 offsets=cells.offsets, cell_index=cells.cell_index)
        np.save(held_dir / f"{name}.pca.npy", pca.astype(np.float32))
        info = {"labels": labels.tolist(), "label_col": label_col, "n_cells": int(held.n_obs),
                "n_tokenized": len(cells), "n_genes": int(held.n_vars), "n_genes_known": int(match.n_known),
                "pca": pca_info}
        (held_dir / f"{name}.json").write_text(json.dumps(info))
        _say(f"{name}: {held.n_obs} held-out cells, {match.n_known}/{held.n_vars} genes known, "
             f"median length {np.median(np.diff(cells.offsets)):.0f}")


# ---------------------------------------------------------------------------------------------------
# train (GPU; torch + numpy only)
# ---------------------------------------------------------------------------------------------------


def _heldout_cells(data: Path, tok):
    from sigcell.data.tokenize import TokenizedCells

    out = {}
    for name in LABELLED:
        with np.load(data / "heldout" / f"{name}.npz") as z:
            out[name] = TokenizedCells(z["gene_ids"], z["values"], z["offsets"], z["cell_index"], tok)
    return out


def _config(data: Path, run: Path, seed: int, steps: int, args):
    from sigcell.data import Corpus
    from sigcell.train import TrainConfig

    corpus = Corpus(data / "corpus")
    overrides = {
        "model.vocab_size": len(corpus.vocab), "data.corpus": str(data / "corpus"), "out_dir": str(run),
        "data.layout": args.layout, "data.token_budget": args.token_budget, "optim.lr": args.lr,
        "optim.warmup_steps": max(1, min(500, steps // 10)), "steps": steps, "seed": seed,
        "compile": args.compile, "val_every": max(1, steps // 10), "val_batches": 8,
        "ckpt_every": 0, "keep_checkpoints": 1, "log_every": max(1, steps // 200), "progress": False,
        "tensorboard": False, "device": args.device,
    }
    from sigcell.cli.eval import _parse_sets

    return TrainConfig.from_preset("small", {**overrides, **_parse_sets(args.set)})


def _embed_all(model, cells: dict, out: Path, tag: str) -> None:
    from sigcell.eval.embed import embed_cells

    for name, c in cells.items():
        for pooling in POOLINGS:
            emb = embed_cells(model, c, batch_size=64, pooling=pooling)
            np.save(out / f"{tag}-{pooling}-{name}.npy", emb.astype(np.float16))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_seconds(config, n: int = 40, warmup: int = 20) -> float:
    """Mean seconds per optimizer step of a throwaway run (after compile warmup)."""
    import tempfile

    from sigcell.train.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="fm-calibrate-") as tmp:
        cfg = type(config).from_dict({**config.to_dict(), "out_dir": tmp})
        trainer = Trainer(cfg)
        for i in range(warmup + n):
            if i == warmup:
                _sync(trainer.device)
                start = time.perf_counter()
            trainer.train_step()
        _sync(trainer.device)
        seconds = (time.perf_counter() - start) / n
        trainer.logger.close()
    return seconds


def train(data: Path, out: Path, args) -> None:
    import torch

    from sigcell import pretrained
    from sigcell.data import Corpus
    from sigcell.model import MaskedExpressionModel
    from sigcell.train.trainer import Trainer

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / "emb").mkdir(exist_ok=True)
    corpus = Corpus(data / "corpus")
    cells = _heldout_cells(data, corpus.config)
    if args.steps is not None:  # a fixed step count: no calibration run
        step_s, steps = None, args.steps
    else:
        probe = _config(data, out / "probe", args.seeds[0], 1000, args)
        step_s = _step_seconds(probe, n=args.calibrate_steps, warmup=args.calibrate_steps // 2)
        spent = time.perf_counter() - t0
        per_seed = (args.budget_s - spent) / len(args.seeds) - args.overhead_s
        steps = int(min(args.max_steps, max(100, per_seed / (step_s * 1.08))))
        _say(f"calibration: {step_s * 1e3:.1f} ms/step after {spent:.0f} s; {steps} steps per seed")
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    summary = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "torch": torch.__version__, "step_s": step_s,
               "steps": steps, "args": {k: v for k, v in vars(args).items() if k != "func"}, "runs": []}
    for seed in args.seeds:
        run = out / f"seed{seed}"
        config = _config(data, run, seed, steps, args)
        torch.manual_seed(seed)
        control = MaskedExpressionModel(config.model).to(device)  # same architecture, same init seed
        _embed_all(control, cells, out / "emb", f"seed{seed}-init")
        del control
        start = time.perf_counter()
        trainer = Trainer(config)
        result = trainer.fit()
        train_s = time.perf_counter() - start
        _embed_all(trainer.model, cells, out / "emb", f"seed{seed}-trained")
        record = {"seed": seed, "status": result.status, "step": result.step, "train_s": train_s,
                  "last_loss": result.last_loss, "last_val_loss": result.last_val_loss}
        summary["runs"].append(record)
        _say(f"seed {seed}: {result.status} {result.step} steps in {train_s:.0f} s, "
             f"loss {result.last_loss}, val {result.last_val_loss}")
        if seed == args.seeds[0]:
            meta = pretrained.export(run, "sigcell-small", out_root=out / "models", encoder_only=True,
                                      overwrite=True)
            summary["exported"] = {"total_bytes": meta.get("total_bytes"), "step": meta.get("step")}
        for ckpt in run.glob("checkpoints"):
            shutil.rmtree(ckpt)  # the export holds what is kept; full checkpoints are too large to return
        del trainer
        torch.cuda.empty_cache()
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["total_s"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


# ---------------------------------------------------------------------------------------------------
# score (CPU)
# ---------------------------------------------------------------------------------------------------


def _scores(x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sigcell.eval.metrics import asw, knn_purity, nmi_ari

    x = np.asarray(x, dtype=np.float32)
    return {"asw": float(asw(x, labels)), "nmi": float(nmi_ari(x, labels)["nmi"]),
            "knn_purity": float(knn_purity(x, labels))}


def score(data: Path, runs: Path, out: Path) -> Path:
    summary = json.loads((runs / "summary.json").read_text())
    seeds = [r["seed"] for r in summary["runs"]]
    result = {"device": summary["device"], "steps": summary["steps"], "runs": summary["runs"],
              "train_args": summary["args"], "datasets": {}}
    for name in LABELLED:
        info = json.loads((data / "heldout" / f"{name}.json").read_text())
        labels_all = np.asarray(info["labels"])
        with np.load(data / "heldout" / f"{name}.npz") as z:
            rows = z["cell_index"]
        labels = labels_all[rows]
        pca = np.load(data / "heldout" / f"{name}.pca.npy")[rows]
        entry = {"n_cells": int(rows.size), "n_genes_known": info["n_genes_known"],
                 "n_genes": info["n_genes"],
                 "pca": _scores(pca, labels)}
        for kind in ("trained", "init"):
            for pooling in POOLINGS:
                per_seed = [_scores(np.load(runs / "emb" / f"seed{s}-{kind}-{pooling}-{name}.npy"), labels)
                            for s in seeds]
                entry[f"{kind}-{pooling}"] = {
                    m: {"mean": float(np.mean([p[m] for p in per_seed])),
                        "std": float(np.std([p[m] for p in per_seed], ddof=1)) if len(seeds) > 1 else 0.0,
                        "seeds": [p[m] for p in per_seed]} for m in METRICS}
        result["datasets"][name] = entry
        _say(f"{name}: " + ", ".join(
            f"{k} nmi {entry[k]['nmi']['mean']:.3f}" for k in entry if "-" in k) +
            f", pca nmi {entry['pca']['nmi']:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    card = summary["device"].replace(" ", "_")
    path = out / f"foundation-{card}.json"
    path.write_text(json.dumps(result, indent=1))
    _plot(result, path.with_suffix(".png"))
    return path


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    kinds = ["init-cls", "trained-cls", "init-mean", "trained-mean"]
    colors = {"init-cls": "#bbbbbb", "trained-cls": "#1f77b4", "init-mean": "#dddddd",
              "trained-mean": "#2ca02c", "pca": "#d62728"}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4), constrained_layout=True)
    width = 0.16
    for ax, metric in zip(axes, METRICS, strict=True):
        x = np.arange(len(names))
        for i, kind in enumerate(kinds):
            means = [result["datasets"][n][kind][metric]["mean"] for n in names]
            stds = [result["datasets"][n][kind][metric]["std"] for n in names]
            ax.bar(x + (i - 2) * width, means, width, yerr=stds, label=kind, color=colors[kind], capsize=2)
        ax.bar(x + 2 * width, [result["datasets"][n]["pca"][metric] for n in names], width, label="PCA",
               color=colors["pca"])
        ax.set_xticks(x, names)
        ax.set_title(metric)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"sigcell-small on held-out cells ({result['device']}, {result['steps']} steps, "
                 f"{len(result['runs'])} seeds; bars: mean, whiskers: seed std)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--budget-s", type=float, default=450.0, help="wall seconds for all seeds")
    t.add_argument("--overhead-s", type=float, default=25.0, help="per seed: compile, embeds, export")
    t.add_argument("--max-steps", type=int, default=6000)
    t.add_argument("--steps", type=int, default=None, help="fixed steps per seed (skips the calibration)")
    t.add_argument("--token-budget", type=int, default=16384)
    t.add_argument("--layout", default="padded")
    t.add_argument("--compile", default="on")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--device", default="auto")
    t.add_argument("--calibrate-steps", type=int, default=40)
    t.add_argument("--set", nargs="*", default=[], help="extra config overrides KEY=VALUE (YAML values)")
    s = sub.add_parser("score")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--runs", type=Path, required=True)
    s.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.stage == "prepare":
        prepare(args.out)
    elif args.stage == "train":
        if not math.isfinite(args.budget_s) or args.budget_s <= 0:
            parser.error("--budget-s must be positive")
        train(args.data, args.out, args)
    else:
        print(score(args.data, args.runs, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
