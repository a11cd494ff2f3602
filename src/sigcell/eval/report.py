"""Stage 3 of ``sigcell compare``: score every run, aggregate over seeds, write the report.

Writes ``<out>/report/``: ``index.html`` and ``README.md`` (same content; images are PNG files beside
them), ``summary.json`` (every number), ``umap_<dataset>.png``, ``val_loss.png``, ``step_time.png``.
Metrics of each run are cached in its folder (``metrics.json``) so a re-run only scores new runs.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from sigcell.eval._io import read_json, write_json, write_text
from sigcell.eval.document import Document
from sigcell.eval.labels import scored_mask
from sigcell.eval.metrics import METRICS, MetricInfo, evaluate_embedding
from sigcell.eval.stats import RELATIVE_FLOOR, bootstrap_interval, paired_verdict, relative_change

__all__ = ["aggregate", "build_report", "collect"]

METRICS_VERSION = 2  # bump when a metric changes, so cached metrics.json are recomputed
EMBEDDING_METRICS = [m.key for m in METRICS if m.kind != "loss"]


def _metrics_cached(path: Path, x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if path.is_file():
        cached = read_json(path)
        if cached.get("version") == METRICS_VERSION and cached.get("n_cells") == len(labels):
            return cached["metrics"]
    metrics = evaluate_embedding(x, labels)
    write_json(path, {"version": METRICS_VERSION, "n_cells": len(labels), "metrics": metrics})
    return metrics


def collect(out: Path, prepared: Path, bar=None) -> dict[str, Any]:
    """Load every run of the stored plan and score its embedding; returns the raw per-run records.

    Raises ``FileNotFoundError`` naming the runs that have no ``result.json`` yet.
    """
    from sigcell.eval.prepare import read_manifest
    from sigcell.eval.runner import run_dir

    manifest = read_manifest(prepared)
    runs = out / "runs"
    plan_path = runs / "plan.json"
    if not plan_path.is_file():
        msg = f"{runs}: no runs (plan.json missing); run `sigcell compare --stage train --out {out}` first"
        raise FileNotFoundError(msg)
    plan = read_json(plan_path)
    missing = [str(run_dir(runs, d, a, s)) for d in plan["datasets"] for s in plan["seeds"]
               for a in plan["attentions"] if not (run_dir(runs, d, a, s) / "result.json").is_file()]
    if missing:
        msg = (f"{len(missing)} run(s) are not finished (no result.json), e.g. {missing[:3]}; run "
               f"`sigcell compare --stage train --out {out}` to finish them (finished runs are reused)")
        raise FileNotFoundError(msg)
    data: dict[str, Any] = {"plan": plan, "manifest": manifest, "datasets": {}}
    for name in plan["datasets"]:
        folder = prepared / name
        meta = read_json(folder / "meta.json")
        labels = np.asarray(read_json(folder / "labels.json"), dtype=str)
        pca = np.load(folder / "pca.npy", allow_pickle=False)
        scored = scored_mask(labels, name)  # placeholders and other species are not cell types to score
        left_out, counts = np.unique(labels[~scored], return_counts=True)
        entry = {"meta": meta, "labels": labels, "pca": pca, "runs": [],
                 "unscored": {str(k): int(c) for k, c in zip(left_out, counts, strict=True)}}
        entry["pca_metrics"] = _metrics_cached(out / "report_cache" / f"{name}-pca-metrics.json", pca[scored],
                                               labels[scored])
        entry["pca_train_metrics"] = None  # inputs prepared by older versions have no train-fit PCA
        if (folder / "pca_train.npy").is_file():
            fitted = np.load(folder / "pca_train.npy", allow_pickle=False)
            cache = out / "report_cache" / f"{name}-pca-train-metrics.json"
            entry["pca_train_metrics"] = _metrics_cached(cache, fitted[scored], labels[scored])
        if bar is not None:
            bar.advance(1, f"scored {name} PCA")
        for seed in plan["seeds"]:
            for attention in plan["attentions"]:
                folder_run = run_dir(runs, name, attention, seed)
                result = read_json(folder_run / "result.json")
                emb = np.load(folder_run / "embedding.npy", allow_pickle=False).astype(np.float32)
                if emb.shape[0] != labels.size:
                    msg = (f"{folder_run}/embedding.npy has {emb.shape[0]} cells, the prepared held-out set "
                           f"{labels.size}; the runs come from other prepared inputs: use the matching --out")
                    raise ValueError(msg)
                finite = np.isfinite(emb).all()
                metrics = (_metrics_cached(folder_run / "metrics.json", emb[scored], labels[scored]) if finite
                           else dict.fromkeys(EMBEDDING_METRICS, math.nan))
                metrics["val_loss"] = result["heldout_loss"]
                init_path = folder_run / "embedding_init.npy"  # runs of older versions have none
                init_metrics = None
                if init_path.is_file():
                    init = np.load(init_path, allow_pickle=False).astype(np.float32)
                    init_metrics = dict.fromkeys(EMBEDDING_METRICS, math.nan)
                    if np.isfinite(init).all():
                        init_metrics = _metrics_cached(folder_run / "metrics_init.json", init[scored],
                                                       labels[scored])
                entry["runs"].append({"seed": seed, "attention": attention, "result": result,
                                      "metrics": metrics, "init_metrics": init_metrics, "embedding": emb,
                                      "finite": bool(finite)})
                if bar is not None:
                    bar.advance(1, f"scored {name} {attention} seed {seed}")
        data["datasets"][name] = entry
    return data


def _better(info: MetricInfo, a: float, b: float) -> bool:
    """True when value ``a`` is strictly better than ``b`` for this metric."""
    return a > b if info.higher_is_better else a < b


def aggregate(data: dict[str, Any]) -> dict[str, Any]:
    """Per dataset and metric: mean / std over seeds of each attention, the random-initialisation control,
    PCA, the seed-paired difference (positive = sigmoid better) with its 95 % bootstrap interval, and the
    verdict (:func:`sigcell.eval.stats.paired_verdict`)."""
    summary: dict[str, Any] = {}
    for name, entry in data["datasets"].items():
        per_metric = {}
        for info in METRICS:
            by_attention: dict[str, dict[int, float]] = {}
            init_by_attention: dict[str, list[float]] = {}
            for run in entry["runs"]:
                by_attention.setdefault(run["attention"], {})[run["seed"]] = float(run["metrics"][info.key])
                if info.kind != "loss" and run.get("init_metrics") is not None:
                    init_by_attention.setdefault(run["attention"], []).append(
                        float(run["init_metrics"][info.key]))
            soft, sig = by_attention.get("softmax", {}), by_attention.get("sigmoid", {})
            seeds = sorted(set(soft) & set(sig))
            ok = [s for s in seeds if math.isfinite(soft[s]) and math.isfinite(sig[s])]
            sign = 1.0 if info.higher_is_better else -1.0
            diffs = [sign * (sig[s] - soft[s]) for s in ok]
            stats = {a: {"mean": _mean(v.values()), "std": _std(v.values()), "values": v}
                     for a, v in by_attention.items()}
            m_soft, m_sig = stats["softmax"]["mean"], stats["sigmoid"]["mean"]
            init = {a: _mean(v) for a, v in init_by_attention.items()}
            learned = None
            pair = ("softmax", "sigmoid")
            if (info.kind != "loss" and set(init) >= set(pair)
                    and all(math.isfinite(stats[a]["mean"]) and math.isfinite(init[a]) for a in pair)):
                learned = all(_better(info, stats[a]["mean"], init[a]) for a in pair)
            interval = bootstrap_interval(diffs)
            pca = entry["pca_metrics"].get(info.key) if info.kind != "loss" else None
            fitted = entry.get("pca_train_metrics")
            pca_train = fitted.get(info.key) if fitted is not None and info.kind != "loss" else None
            per_metric[info.key] = {
                **stats, "pca": pca, "pca_train": pca_train, "init": init or None, "learned": learned,
                "difference": _mean(diffs), "interval": list(interval) if interval else None,
                "absolute_change": m_sig - m_soft if math.isfinite(m_sig - m_soft) else None,
                "relative_change_pct": relative_change(m_sig, m_soft),
                "sigmoid_wins": sum(d > 0 for d in diffs), "n_pairs": len(ok),
                "verdict": paired_verdict(interval, learned),
                "beats_pca": ({a: _better(info, s["mean"], pca) for a, s in stats.items()}
                              if pca is not None else None),
            }
        summary[name] = per_metric
    return summary


def _mean(values) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _std(values) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    digits = 3 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.1f} %"


def _delta(s: dict) -> str:
    """The change sigmoid vs softmax: relative where softmax is well above zero, absolute otherwise."""
    if s["relative_change_pct"] is not None:
        return _pct(s["relative_change_pct"])
    a = s["absolute_change"]
    return "n/a" if a is None else f"{a:+.3f} (abs.)"


def _interval(s: dict) -> str:
    iv = s["interval"]
    return "n/a" if iv is None else f"[{iv[0]:+.3f}, {iv[1]:+.3f}]"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("sigcell", "torch", "numpy", "scanpy", "anndata", "scib-metrics", "jax", "scikit-learn",
                "umap-learn", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _figures(data: dict[str, Any], folder: Path, bar=None) -> dict[str, str]:
    from sigcell.eval.plots import plot_step_times, plot_umaps, plot_val_curves, umap_coords

    files = {}
    first_seed = data["plan"]["seeds"][0]
    for name, entry in data["datasets"].items():
        panels = [(f"PCA ({entry['pca'].shape[1]} comps)", umap_coords(entry["pca"]))]
        for attention in data["plan"]["attentions"]:
            run = next(r for r in entry["runs"] if r["attention"] == attention and r["seed"] == first_seed)
            if run["finite"]:
                panels.append((f"{attention} (seed {first_seed})", umap_coords(run["embedding"])))
            if bar is not None:
                bar.advance(1, f"UMAP {name} {attention}")
        path = folder / f"umap_{name}.png"
        plot_umaps(panels, entry["labels"], path, f"{name}: held-out cells by cell type")
        files[f"umap_{name}"] = path.name
    curves = {name: {a: [r["result"]["val_curve"] for r in entry["runs"] if r["attention"] == a]
                     for a in data["plan"]["attentions"]} for name, entry in data["datasets"].items()}
    files["val_loss"] = plot_val_curves(curves, folder / "val_loss.png").name
    times = {name: {a: [r["result"]["timing"]["fwd_bwd_ms_median"]
                        for r in entry["runs"] if r["attention"] == a]
                    for a in data["plan"]["attentions"]} for name, entry in data["datasets"].items()}
    files["step_time"] = plot_step_times(times, folder / "step_time.png",
                                         "forward + backward (ms)").name
    return files


def _forest(summary: dict, path: Path) -> Path:
    from sigcell.eval.plots import plot_forest

    rows = []
    for info in METRICS:
        for name, per in summary.items():
            s = per[info.key]
            interval = tuple(s["interval"]) if s["interval"] else None
            rows.append((f"{info.key} / {name}", s["difference"], interval, s["verdict"]))
    return plot_forest(rows, path)


def build_report(out, prepared=None, *, show: bool = True, command: str | None = None,
                 wall_s: float | None = None) -> dict[str, Any]:
    """Score all runs of ``out`` and write ``out/report`` (HTML, Markdown, PNG, summary.json).

    Parameters
    ----------
    out
        The compare output directory (with ``runs/``).
    prepared
        The prepared inputs (default ``out/prepared``).
    show
        Progress bar.
    command, wall_s
        The command line and the wall time so far, recorded in the report.

    Returns
    -------
    dict
        The summary (``summary.json``): per dataset and metric, per-attention mean / std / values, PCA,
        relative change, paired wins and the verdict.
    """
    from sigcell.eval.progress import progress

    out = Path(out)
    prepared = Path(prepared) if prepared is not None else out / "prepared"
    start = time.perf_counter()
    plan = read_json(out / "runs" / "plan.json") if (out / "runs" / "plan.json").is_file() else None
    n_work = 0
    if plan is not None:
        n_runs = len(plan["datasets"]) * len(plan["seeds"]) * len(plan["attentions"])
        n_work = n_runs + len(plan["datasets"]) * (1 + len(plan["attentions"]))
    with progress(max(n_work, 1), "report", show) as bar:
        data = collect(out, prepared, bar)
        summary = aggregate(data)
        folder = out / "report"
        folder.mkdir(parents=True, exist_ok=True)
        files = _figures(data, folder, bar)
        files["forest"] = _forest(summary, folder / "differences.png").name
    versions = _versions()
    doc = _document(data, summary, files, versions, command=command, wall_s=wall_s)
    write_text(folder / "README.md", doc.markdown())
    write_text(folder / "index.html", doc.html())
    write_json(folder / "summary.json", {
        "paper": PAPER, "claims": claims(data, summary), "summary": summary, "plan": data["plan"],
        "versions": versions, "command": command,
        "wall_s_before_report": wall_s, "report_s": time.perf_counter() - start,
        "runs": [{k: v for k, v in r["result"].items() if k not in ("config", "train_curve")}
                 for e in data["datasets"].values() for r in e["runs"]],
    })
    return summary


# -- the document -----------------------------------------------------------------------------------------


def _summary_rows(summary: dict, names: list[str]) -> list[list[str]]:
    rows = []
    for info in METRICS:
        row = [f"{info.name} {'↑' if info.higher_is_better else '↓'}"]
        for name in names:
            s = summary[name][info.key]
            row.append(f"{_delta(s)} {_interval(s)}: {s['verdict']}")
        verdicts = [summary[n][info.key]["verdict"] for n in names]
        row.append(" / ".join(str(verdicts.count(v)) for v in
                              ("sigmoid better", "softmax better", "no clear difference", "not learned")))
        rows.append(row)
    return rows


def _document(data, summary, files, versions, *, command, wall_s) -> Document:
    plan = data["plan"]
    names = list(data["datasets"])
    first = data["datasets"][names[0]]["runs"][0]["result"]
    device = first.get("gpu") or f"CPU ({first.get('cpu', '?')}, {first.get('cpu_threads')} thread(s))"
    doc = Document("sigcell compare: sigmoid vs softmax attention")
    doc.para(f"**{len(names)} dataset(s)** ({', '.join(names)}), preset **{plan['preset']}**, "
             f"**{plan['steps']} steps** per run ({plan['steps_from']}), seeds {plan['seeds']}, trained on "
             f"**{device}** with torch {first.get('torch')}. Every (dataset, seed) pair of runs shares the "
             "config, initialization seed, data order, masks and step count; only `model.attention` differs.")
    if command:
        doc.para(f"Command: `{command}`" + (f"; wall time before the report stage {wall_s / 60:.1f} min."
                                            if wall_s else ""))
    bad = [f"{r['result']['dataset']} {r['attention']} seed {r['seed']}: {r['result']['status']}"
           for e in data["datasets"].values() for r in e["runs"] if r["result"]["status"] != "completed"]
    if bad:
        doc.para("**Runs that did not complete** (their numbers are included as they are): "
                 + "; ".join(bad), "warn")

    doc.heading("The paper's claims")
    doc.para(f"This report tests the claims of {PAPER} on these runs. A claim is supported only where "
             "sigmoid is better with a 95 % interval that excludes 0 on most metric x dataset cells and both "
             "models beat their random-initialisation control; models at the control's level cannot test it.")
    doc.table(["claim", "verdict", "why"], [[c["claim"], c["verdict"], c["reason"]] for c in claims(data,
                                                                                                      summary)])
    doc.heading("Summary")
    doc.para("Change of the seed-mean, sigmoid vs softmax: relative where the softmax value is at least "
             f"{RELATIVE_FLOOR} from zero, absolute (abs.) otherwise (relative changes of values near zero "
             "mislead). In brackets: the 95 % bootstrap interval of the seed-paired difference, oriented so "
             "that positive means sigmoid is better (↑/↓ says which direction of the metric is better). "
             "Verdicts: sigmoid / softmax better (interval excludes 0 and both models beat the "
             "random-initialisation control), no clear difference, not learned (a model at the control's "
             "level). The last column counts datasets per verdict in that order.")
    doc.table(["metric", *names, "sigmoid / softmax / no clear / not learned"], _summary_rows(summary, names))
    doc.para(_headline(summary, names))
    doc.image(files["forest"], "seed-paired differences with 95 % intervals")

    doc.heading("Metrics per dataset")
    doc.para("Mean ± standard deviation over seeds (sample std). PCA is deterministic (one value). "
             "Separation metrics are computed by **scib-metrics** "
             f"{versions.get('scib-metrics')}; their values are not comparable to numbers from the older "
             "`scib` package (different kNN, k-means and isolated-label definitions). Cohesion metrics and "
             "the loss are computed by sigcell (definitions below).")
    for info in METRICS:
        doc.heading(f"{info.name} ({'higher' if info.higher_is_better else 'lower'} is better; "
                    f"{info.source})", 3)
        rows = []
        for name in names:
            s = summary[name][info.key]
            beats, init = s["beats_pca"], s["init"] or {}
            rows.append([name, _fmt(s["softmax"]["mean"], s["softmax"]["std"]),
                         _fmt(s["sigmoid"]["mean"], s["sigmoid"]["std"]),
                         " / ".join(_fmt(init.get(a)) for a in ("softmax", "sigmoid")) if init else "—",
                         _fmt(s["pca"]) if s["pca"] is not None else "—",
                         _fmt(s.get("pca_train")) if s.get("pca_train") is not None else "—",
                         _delta(s), _interval(s), f"{s['sigmoid_wins']}/{s['n_pairs']}", s["verdict"],
                         "—" if beats is None else ", ".join(a for a, b in beats.items() if b) or "neither"])
        doc.table(["dataset", "softmax", "sigmoid", "untrained (softmax / sigmoid)", "PCA", "PCA (train-fit)",
                   "Δ sigmoid vs softmax", "95 % interval", "sigmoid better in", "verdict", "beats PCA"],
                  rows)

    doc.heading("UMAPs of the held-out cells")
    doc.para(f"Coloured by cell type; models are seed {plan['seeds'][0]}. UMAP: umap-learn, 15 neighbours, "
             "min_dist 0.3, random_state 0.")
    for name in names:
        doc.image(files[f"umap_{name}"], f"UMAP {name}")

    doc.heading("Validation loss")
    doc.para("Masked-expression loss on held-out batches during training (thin: each seed; thick: mean). "
             "The table's loss is computed after training on every held-out cell with masks that are "
             "identical for all runs.")
    doc.image(files["val_loss"], "validation loss curves")

    doc.heading("Step time")
    doc.para(_timing_note(first))
    doc.image(files["step_time"], "forward + backward time")
    doc.table(["dataset", "attention", "fwd+bwd ms (fixed batches)", "logged train step ms",
               "train wall s", "tokens / batch"], _timing_rows(data))

    doc.heading("Data")
    doc.table(["dataset", "cells", "genes", "train", "held-out", "cell types", "not scored",
               "genes kept / cell", "mean tokens / cell", "truncated cells", "bin entropy (nats)", "source"],
              _data_rows(data))
    doc.para("Held-out cells are a label-stratified random subset (split seed 0, the same for every run). "
             "Cells labelled as placeholders (Unknown, nan, doublet ...) or as another species (citeseq's "
             "mouse spike-ins) are trained on and shown in the UMAPs but not scored (column 'not scored'). "
             "They are never trained on; the gene vocabulary comes from the training cells. Cells longer "
             "than the gene limit keep an expression-weighted seeded sample of their genes (truncation "
             f"`{data['manifest']['prepare'].get('truncation', 'top')}`); bin entropy near 0 would mean a "
             "trivial masked-value target. The PCA "
             "baseline (`normalize_total(1e4)` → `log1p` → 2,000 highly variable genes (seurat flavour) → "
             "50 components) is fit on the held-out cells themselves, a slight advantage for PCA; "
             "'PCA (train-fit)' runs the same recipe fit on the training cells (genes, centring, components) "
             "and projects the held-out cells, which it never saw, as a pretrained model does.", "note")

    doc.heading("Metric definitions")
    doc.bullets([
        "ASW: scib-metrics `silhouette_label` — mean silhouette width by cell type (Euclidean), "
        "rescaled to (s + 1) / 2.",
        "cLISI: scib-metrics `clisi_knn` on the 90 exact Euclidean nearest neighbours (self included), "
        "scaled to [0, 1].",
        "NMI / ARI: scib-metrics `nmi_ari_cluster_labels_kmeans` — k-means with k = number of cell types.",
        "Isolated labels: scib-metrics `isolated_labels` with one batch, so every type counts as isolated: "
        "the mean over types of their cells' rescaled silhouette (a class-balanced ASW).",
        "Linear probe macro-F1: logistic regression (scikit-learn, standardized features) from the "
        "embedding to the cell type, 5-fold stratified cross-validation (seed 0); macro-averaged F1.",
        "kNN purity = 1/n Σ_i (1/k) Σ_{j ∈ kNN(i)} [y_j = y_i], k = 15, the cell itself excluded.",
        "Within / between distance = mean over types c of W_c / B_c; W_c = mean Euclidean distance between "
        "two different cells of c, B_c = mean distance from a cell of c to a cell of another type.",
        "Validation loss: mean masked-token loss (cross-entropy over expression bins for the binned "
        "encoding) on all held-out cells, 15 % of genes masked with run-independent masks.",
    ])

    doc.heading("Configuration")
    doc.para("Per-dataset settings that differ between datasets (everything else is shared):")
    doc.table(["dataset", "model.vocab_size", "val_batches", "data.max_genes", "parameters",
               "parameters w/o gene tables"], _config_rows(data))
    import yaml

    doc.para(f"Resolved config of `{names[0]}` softmax seed {plan['seeds'][0]} (the sigmoid run differs in "
             "`model.attention` only; other seeds in `seed`):")
    cfg = dict(data["datasets"][names[0]]["runs"][0]["result"]["config"])
    doc.pre(yaml.safe_dump(cfg, sort_keys=False))
    doc.para(f"Plan overrides applied to every run: `{plan['overrides'] or {}}`. "
             f"Prepared with `{data['manifest']['prepare']}`.")

    doc.heading("Versions")
    keys = ("torch", "cuda", "triton", "gpu", "device", "python")
    train_side = {k: first.get(k) for k in keys if first.get(k)}
    doc.para("Training machine: " + ", ".join(f"{k} {v}" for k, v in train_side.items()) + ".")
    doc.para("Report machine: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    return doc


PAPER = ("arXiv 2604.27124, \"Better Models, Faster Training: Sigmoid Attention for single-cell Foundation "
         "Models\"")
# The paper's claims and the metrics that test them here.
CLAIMS = (
    ("separation", "sigmoid attention separates cell types better (+25 % cell-type separation)",
     ("asw", "nmi", "ari", "linear_probe_f1")),
    ("cohesion", "sigmoid attention gives more cohesive cell types", ("knn_purity", "distance_ratio")),
    ("loss", "sigmoid attention reaches a lower validation loss", ("val_loss",)),
    ("speed", "sigmoid attention trains faster (up to 10 %)", ()),
)


def claims(data: dict, summary: dict) -> list[dict]:
    """A verdict per claim of the paper: ``supported`` (sigmoid better, interval excluding 0, on a majority
    of the metric x dataset cells), ``not supported`` (otherwise), or ``not testable here`` (the models did
    not learn: at least half of the cells are at the random-initialisation level; or, for speed, a CPU run,
    where sigmoid runs the plain-PyTorch reference)."""
    names = list(summary)
    out = []
    for key, text, metrics in CLAIMS:
        if key == "speed":
            out.append({"claim": text, **_speed_verdict(data)})
            continue
        cells = [summary[n][m] for n in names for m in metrics]
        better = sum(c["verdict"] == "sigmoid better" for c in cells)
        worse = sum(c["verdict"] == "softmax better" for c in cells)
        unlearned = sum(c["verdict"] == "not learned" for c in cells)
        counts = (f"sigmoid better in {better}, softmax better in {worse}, no clear difference in "
                  f"{len(cells) - better - worse - unlearned}, not learned in {unlearned} of {len(cells)} "
                  f"(metric x dataset: {', '.join(metrics)})")
        if unlearned * 2 >= len(cells):
            verdict = "not testable here"
            reason = "the models stay at the random-initialisation level; " + counts
        elif better * 2 > len(cells):
            verdict, reason = "supported", counts
        else:
            verdict, reason = "not supported", counts
        out.append({"claim": text, "verdict": verdict, "reason": reason})
    return out


def _speed_verdict(data: dict) -> dict:
    first = next(iter(data["datasets"].values()))["runs"][0]["result"]
    if not first.get("gpu"):
        return {"verdict": "not testable here",
                "reason": "a CPU run: sigmoid runs sigcell's plain-PyTorch reference, softmax PyTorch's "
                          "fused kernel; `sigcell bench train` on a GPU measures whole training steps"}
    faster, total = 0, 0
    for entry in data["datasets"].values():
        ms = {a: _mean([r["result"]["timing"]["fwd_bwd_ms_median"] for r in entry["runs"]
                        if r["attention"] == a]) for a in ("softmax", "sigmoid")}
        total += 1
        faster += ms["sigmoid"] < ms["softmax"]
    verdict = "supported" if faster * 2 > total else "not supported"
    return {"verdict": verdict, "reason": f"forward + backward faster with sigmoid on {faster} of {total} "
                                          f"dataset(s) ({first['gpu']})"}


def _headline(summary: dict, names: list[str]) -> str:
    asw = [summary[n]["asw"] for n in names]
    loss = [summary[n]["val_loss"] for n in names]
    count = lambda cells, v: sum(c["verdict"] == v for c in cells)
    parts = [f"ASW: sigmoid better on {count(asw, 'sigmoid better')}, softmax better on "
             f"{count(asw, 'softmax better')}, not learned (at the random-initialisation level) on "
             f"{count(asw, 'not learned')} of {len(names)} datasets",
             f"validation loss: sigmoid lower on {count(loss, 'sigmoid better')}, higher on "
             f"{count(loss, 'softmax better')} of {len(names)}"]
    below_pca = [n for n in names if not any(summary[n]["asw"]["beats_pca"].values())]
    if below_pca:
        parts.append(f"neither model beats the PCA baseline's ASW on {', '.join(below_pca)}")
    return "In short: " + "; ".join(parts) + "."


def _timing_note(first: dict) -> str:
    if first.get("gpu"):
        return (f"Measured on {first['gpu']} ({first.get('precision')} precision: bf16 autocast on CUDA). "
                "fwd+bwd: median of 10 timed forward + backward passes on three fixed training batches "
                "(after 3 warm-up passes), the same cells for both attentions.")
    return ("Measured on the CPU. On the CPU sigmoid attention runs sigcell's plain-PyTorch reference while "
            "softmax runs PyTorch's fused SDPA kernel, so these times say nothing about the GPU kernels. "
            "fwd+bwd: median of 10 forward + backward passes on three fixed training batches.")


def _timing_rows(data) -> list[list[str]]:
    rows = []
    for name, entry in data["datasets"].items():
        for attention in data["plan"]["attentions"]:
            rs = [r["result"] for r in entry["runs"] if r["attention"] == attention]
            fb = [r["timing"]["fwd_bwd_ms_median"] for r in rs]
            logged = [r["logged_step_ms_median"] for r in rs if r.get("logged_step_ms_median") is not None]
            rows.append([name, attention, _fmt(_mean(fb), _std(fb)),
                         _fmt(_mean(logged), _std(logged)) if logged else "n/a",
                         _fmt(_mean([r["train_wall_s"] for r in rs])),
                         str(int(np.mean(rs[0]["timing"]["tokens_per_batch"])))])
    return rows


def _data_rows(data) -> list[list[str]]:
    rows = []
    for name, entry in data["datasets"].items():
        m = entry["meta"]
        unscored = ", ".join(f"{k} ({c})" for k, c in entry["unscored"].items()) or "—"
        rows.append([name, str(m["n_cells"]), str(m["n_genes"]), str(m["n_train"]), str(m["n_heldout"]),
                     str(len(m["heldout_label_counts"])), unscored, str(m["tokenizer"]["max_genes"]),
                     f"{m['length']['mean']:.0f}", str(m["tokenize"]["n_truncated"]),
                     "—" if m.get("value_entropy") is None else f"{m['value_entropy']:.2f}",
                     str(m["provenance"].get("package", m["source"]))])
    return rows


def _config_rows(data) -> list[list[str]]:
    rows = []
    for name, entry in data["datasets"].items():
        r = entry["runs"][0]["result"]
        c = r["config"]
        rows.append([name, str(c["model"]["vocab_size"]), str(c["val_batches"]), str(c["data"]["max_genes"]),
                     f"{r['n_params']:,}", f"{r['n_params_core']:,}"])
    return rows
