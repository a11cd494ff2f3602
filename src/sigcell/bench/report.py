"""Outputs of the kernel benchmark: the JSON file, derived summaries, the terminal tables and the PNG of bars.

rich and matplotlib are optional: without rich the tables are plain text; without matplotlib there is no PNG
(and the reason is printed).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import TextIO

__all__ = ["cold_starts", "main_sigcell", "plot_png", "print_tables", "ratios", "render_tables", "write_json"]

# Order in which sigcell's own entry points stand for "sigcell" in a ratio: the dense kernel where it applies.
_SIGCELL_ORDER = ("sigcell-dense", "sigcell-padded", "sigcell-varlen")


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _by_case_mode(results: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    grouped: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in results:
        grouped[(r["case"], r["mode"])][r["provider"]] = r
    return grouped


def main_sigcell(row: dict[str, dict]) -> str | None:
    """The sigcell provider that represents sigcell for one (case, mode): dense, else padded, else varlen."""
    return next((name for name in _SIGCELL_ORDER if name in row), None)


def ratios(results: list[dict], matmul: dict | None = None) -> list[dict]:
    """sigcell's speed relative to each peer on the same case and mode: ``peer_ms / sigcell_ms``.

    A ratio > 1 means sigcell is faster.

    Every sigcell provider is compared with every peer (``tflops`` ratios are the same numbers, since both
    count the valid tokens). With a matmul measurement, ``of_matmul`` is sigcell's TFLOPS over the matmul's.
    """
    out = []
    for (case, mode), row in _by_case_mode(results).items():
        for sig in (n for n in _SIGCELL_ORDER if n in row):
            for peer, rec in row.items():
                if rec["sigcell"]:
                    continue
                out.append({"case": case, "mode": mode, "sigcell_provider": sig, "peer": peer,
                            "ratio": float(f"{rec['ms'] / row[sig]['ms']:.4g}")})
            if matmul and matmul.get("tflops"):
                out.append({"case": case, "mode": mode, "sigcell_provider": sig, "peer": "matmul",
                            "of_matmul": float(f"{row[sig]['tflops'] / matmul['tflops']:.4g}")})
    return out


def cold_starts(results: list[dict]) -> list[dict]:
    """First-call time (compilation / autotuning included) and steady time of sigcell's providers."""
    keys = ("case", "provider", "mode", "first_call_ms")
    return [{**{k: r[k] for k in keys}, "steady_ms": r["ms"]} for r in results if r["sigcell"]]


# ----------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------


def _providers_in_order(results: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for r in sorted(results, key=lambda r: (not r["sigcell"], r["attention"] != "sigmoid")):
        seen.setdefault(r["provider"], None)
    return list(seen)


def _num(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.3g}"


def _tables(data: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the TFLOPS table, the ratio table and the skip list."""
    results = data["results"]
    grouped = _by_case_mode(results)
    providers = _providers_in_order(results)
    gpu = data["env"].get("gpu") or data["env"].get("device")
    tables = []
    rows = [[case, mode, *(_num(row[p]["tflops"]) if p in row else "-" for p in providers)]
            for (case, mode), row in grouped.items()]
    tables.append((f"TFLOPS (valid tokens) on {gpu}, {data['config']['dtype']}", ["case", "mode", *providers],
                   rows))

    peers = [p for p in providers if not any(r["provider"] == p and r["sigcell"] for r in results)]
    matmul = (data.get("matmul") or {}).get("tflops")
    header = ["case", "mode", "sigcell", "ms", "TFLOPS", "first call ms"]
    header += (["of matmul"] if matmul else []) + [f"x {p}" for p in peers]
    rows = []
    for (case, mode), row in grouped.items():
        sig = main_sigcell(row)
        if sig is None:
            continue
        s = row[sig]
        line = [case, mode, sig, f"{s['ms']:.4f}", _num(s["tflops"]), f"{s['first_call_ms']:.0f}"]
        line += [f"{s['tflops'] / matmul:.0%}"] if matmul else []
        line += [f"{row[p]['ms'] / s['ms']:.2f}" if p in row else "-" for p in peers]
        rows.append(line)
    if rows:
        title = "sigcell vs peers: peer time / sigcell time (> 1: sigcell faster)"
        if matmul:
            title += f"; bf16 8192^3 matmul {matmul} TFLOPS"
        tables.append((title, header, rows))

    reasons: dict[tuple[str, str], int] = defaultdict(int)
    for s in data["skipped"]:
        reasons[(s["provider"], s["reason"])] += 1
    if reasons:
        tables.append(("skipped", ["provider", "times", "reason"],
                       [[p, str(n), why] for (p, why), n in reasons.items()]))
    return tables


def _plain_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    lines = [title, fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
    return "\n".join(lines)


def print_tables(data: dict, out: TextIO) -> None:
    """Print the TFLOPS table, sigcell's ratio to each peer and the skip reasons (rich if installed)."""
    render_tables(_tables(data), out)


def render_tables(tables: list[tuple[str, list[str], list[list[str]]]], out: TextIO,
                  left_columns: int = 3) -> None:
    """Print ``(title, header, rows)`` tables with rich if it is installed, else as plain text.

    The first ``left_columns`` columns (and any named ``reason``) are left-aligned, the rest right-aligned.
    """
    if not tables:
        return
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for title, header, rows in tables:
            print("\n" + _plain_table(title, header, rows), file=out)
        return
    console = Console(file=out, width=max(120, min(400, 14 * max(len(h) for _, h, _ in tables))))
    for title, header, rows in tables:
        table = Table(title=title, title_justify="left")
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i < left_columns or h == "reason" else "right",
                             overflow="fold")
        for r in rows:
            table.add_row(*r)
        console.print(table)


# ----------------------------------------------------------------------------------------------------
# PNG
# ----------------------------------------------------------------------------------------------------


def _panel_key(r: dict) -> tuple[str, bool, str]:
    group = f"padding {r['padding']:.0%}" if r["lengths_source"] == "uniform" else r["lengths_source"]
    return r["mode"], r["causal"], group


def import_pyplot():
    """``(matplotlib.pyplot, None)`` with the file-only Agg backend, or ``(None, reason)`` without matplotlib
    (the bare GPU machines have none)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        return None, f"matplotlib is not installed ({err})"
    return plt, None


def plot_png(data: dict, path: Path) -> str | None:
    """Grouped bars of TFLOPS: a panel per (mode, causal, padding), a group per (D, L), a bar per provider.

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

    providers = _providers_in_order(results)
    colors = {p: plt.get_cmap("tab20")(i % 20) for i, p in enumerate(providers)}
    panels: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        panels[_panel_key(r)].append(r)
    keys = sorted(panels, key=lambda k: (["fwd", "bwd", "fwd+bwd"].index(k[0]), k[1], k[2]))
    groups_max = max(len({(r["D"], r["L"]) for r in panels[k]}) for k in keys)
    width = min(60.0, max(8.0, 0.16 * groups_max * len(providers) + 3))
    fig, axes = plt.subplots(len(keys), 1, figsize=(width, 3.4 * len(keys)), squeeze=False)
    matmul = (data.get("matmul") or {}).get("tflops")
    for ax, key in zip(axes[:, 0], keys, strict=True):
        rows = panels[key]
        groups = sorted({(r["D"], r["L"]) for r in rows})
        present = [p for p in providers if any(r["provider"] == p for r in rows)]
        bar = 0.8 / max(1, len(present))
        for j, p in enumerate(present):
            xs, ys = [], []
            for g, (d, seq) in enumerate(groups):
                hit = [r for r in rows if r["provider"] == p and (r["D"], r["L"]) == (d, seq)]
                if hit:
                    xs.append(g - 0.4 + bar * (j + 0.5))
                    ys.append(hit[0]["tflops"])
            ax.bar(xs, ys, bar, label=p, color=colors[p])
        if matmul:
            ax.axhline(matmul, color="black", linestyle="--", linewidth=0.8, label=f"bf16 matmul {matmul}")
        ax.set_xticks(range(len(groups)), [f"D{d} L{seq}" for d, seq in groups], fontsize=8)
        mode, causal, group = key
        ax.set_title(f"{mode}, {'causal' if causal else 'non-causal'}, {group}", fontsize=10)
        ax.set_ylabel("TFLOPS (valid tokens)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=min(6, len(present) + 1), loc="upper left")
    env = data["env"]
    title = (f"sigcell bench kernels '{data['name']}': {env.get('gpu') or env.get('device')}, "
             f"{data['config']['dtype']}, torch {env.get('torch')}, triton {env.get('triton')}")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.5 / fig.get_figheight()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return None
