"""Outputs of ``sigcell bench train``: terminal tables (rich if installed), a PNG (matplotlib if installed).

The JSON file itself is written by :func:`sigcell.bench.report.write_json`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from sigcell.bench.report import import_pyplot, render_tables
from sigcell.bench.train import result_key

__all__ = ["plot_train_png", "print_train_tables", "train_tables"]

Table = tuple[str, list[str], list[list[str]]]


def _columns(results: list[dict]) -> list[str]:
    """``provider/layout`` columns: sigcell first, then the other sigmoid, then softmax."""
    seen: dict[str, None] = {}
    order = lambda r: (r["provider"] != "sigcell", r["attention"] != "sigmoid", r["layout"] != "padded",
                       r.get("compile", "eager") != "eager")
    for r in sorted(results, key=order):
        seen.setdefault(result_key(r), None)
    return list(seen)


def _wide(results: list[dict], value) -> tuple[list[str], list[list[str]]]:
    cols = _columns(results)
    cases: dict[str, dict[str, dict]] = {}
    for r in results:
        cases.setdefault(r["case"], {})[result_key(r)] = r
    rows = [[case, str(next(iter(row.values()))["B"]), *(value(row[c]) if c in row else "-" for c in cols)]
            for case, row in cases.items()]
    return ["case", "cells", *cols], rows


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def train_tables(data: dict) -> list[Table]:
    """(title, header, rows) of the step-time, tokens/s, memory, ratio, target, memory and skip tables."""
    results = data["results"]
    env, conf = data["env"], data["config"]
    where = f"{env.get('gpu') or env.get('device')}, {conf['dtype']}, model {data['model']['preset']}"
    tables: list[Table] = []
    if results:
        header, rows = _wide(results, lambda r: f"{r['ms']:.2f}")
        tables.append((f"ms per optimizer step (median of {conf['steps']}) on {where}", header, rows))
        if any(r.get("host_ms") is not None for r in results):
            header, rows = _wide(results, lambda r: f"{r['host_ms']:.2f}" + (
                f" / {r['gpu_busy_ms']:.2f}" if r.get("gpu_busy_ms") is not None else ""))
            tables.append(("host ms to issue a step / GPU kernel ms per step (host >= GPU: host-bound)",
                           header, rows))
        header, rows = _wide(results, lambda r: f"{r['tokens_per_s'] / 1e3:.1f}")
        tables.append(("k tokens/s (cells' tokens, padding not counted)", header, rows))
        if any(r["peak_mem_gib"] is not None for r in results):
            header, rows = _wide(results, lambda r: "-" if r["peak_mem_gib"] is None
                                 else f"{r['peak_mem_gib']:.1f}")
            tables.append(("peak memory (GiB)", header, rows))
    rows = [[r["case"], r["sigcell"].partition("/")[2], f"{r['sigcell_ms']:.2f}", r.get("best_softmax", "-"),
             _x(r.get("x_best_softmax")), _x(r.get("x_tritonsigmoid")),
             _x(r.get("packed_gain_vs_masked_softmax")), _x(r.get("packed_gain_vs_padded_sigcell"))]
            for r in data["ratios"]]
    if rows:
        tables.append(("sigcell vs peers: step-time ratio sigcell / peer (< 1: sigcell faster); packed "
                       "tokens/s gains (> 1: packed faster)",
                       ["case", "sigcell layout", "ms", "best softmax", "x best softmax", "x TritonSigmoid",
                        "packed vs masked softmax", "packed vs padded sigcell"], rows))
    rows = [[t["target"], t["case"] or "-", "-" if t["value"] is None else f"{t['value']:.3g}",
             f"{t['op']} {t['threshold']:g}", t["status"], t["detail"]] for t in data["targets"]]
    if rows:
        tables.append(("whole-step targets", ["target", "case", "value", "needed", "status", "detail"], rows))
    rows = [[m["provider"], m["case"], f"{m['ms']:.1f}",
             "-" if m["peak_mem_gib"] is None else f"{m['peak_mem_gib']:.2f}",
             "-" if m["peak_mem_gib"] is None else f"{m['peak_mem_gib'] * 2**30 / 1e9:.2f}",
             "yes" if m.get("fits_80gb") else "no"] for m in data["memory_check"]]
    if rows:
        tables.append(("memory check: one long cell, padded layout, one optimizer step",
                       ["provider", "case", "ms/step", "peak GiB", "peak GB", "fits 80 GB"], rows))
    counts: dict[tuple[str, str], int] = {}
    for s in data["skipped"]:
        counts[(s["provider"], s["reason"])] = counts.get((s["provider"], s["reason"]), 0) + 1
    if counts:
        tables.append(("skipped", ["provider", "times", "reason"],
                       [[p, str(n), why] for (p, why), n in counts.items()]))
    return tables


def print_train_tables(data: dict, out: TextIO) -> None:
    """Print :func:`train_tables` (rich tables if installed, else plain text)."""
    render_tables(train_tables(data), out, left_columns=2)


def plot_train_png(data: dict, path: Path) -> str | None:
    """Two panels (ms per step, k tokens/s): a group of bars per case, a bar per provider/layout.

    Returns
    -------
    ``None`` when written, else the reason no PNG was made.
    """
    results = data["results"]
    if not results:
        return "no results to plot"
    plt, reason = import_pyplot()
    if plt is None:
        return reason
    cols = _columns(results)
    cases = list(dict.fromkeys(r["case"] for r in results))
    colors = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(cols)}
    width = min(40.0, max(8.0, 0.12 * len(cases) * len(cols) + 3))
    fig, axes = plt.subplots(2, 1, figsize=(width, 8), squeeze=False)
    bar = 0.8 / len(cols)
    for ax, (key, label) in zip(axes[:, 0], (("ms", "ms per optimizer step"),
                                             ("tokens_per_s", "k tokens/s")), strict=True):
        for j, col in enumerate(cols):
            xs, ys = [], []
            for g, case in enumerate(cases):
                hit = [r for r in results if r["case"] == case and result_key(r) == col]
                if hit:
                    xs.append(g - 0.4 + bar * (j + 0.5))
                    ys.append(hit[0][key] / (1e3 if key == "tokens_per_s" else 1))
            ax.bar(xs, ys, bar, label=col, color=colors[col])
        ax.set_xticks(range(len(cases)), cases, fontsize=8, rotation=15)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=min(5, len(cols)), loc="upper left")
    env, conf = data["env"], data["config"]
    fig.suptitle(f"sigcell bench train '{data['name']}': model {data['model']['preset']} "
                 f"({data['model']['parameters'] / 1e6:.1f}M), {env.get('gpu') or env.get('device')}, "
                 f"{conf['dtype']}, torch {env.get('torch')}", fontsize=11)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return None
