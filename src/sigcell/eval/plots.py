"""Report figures (matplotlib, Agg backend): UMAPs by cell type, validation-loss curves, step times, the
forest plot of the sigmoid-vs-softmax differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_forest", "plot_step_times", "plot_umaps", "plot_val_curves", "umap_coords"]

COLORS = {"softmax": "#1f77b4", "sigmoid": "#d62728", "pca": "#555555"}
DPI = 72  # small PNGs: the report is committed to the repository
UMAP_PANEL_IN = 5.6  # inches per UMAP panel: 403 px at DPI, readable at 100 % zoom


def _type_colors(plt, n: int) -> list:
    """``n`` distinguishable colours: tab10 up to 10 types, tab20 up to 20, then tab20 + tab20b."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    tab20 = plt.get_cmap("tab20")
    # the ten strong hues first, then their light partners, then tab20b
    pool = [tab20(i) for i in range(0, 20, 2)] + [tab20(i) for i in range(1, 20, 2)]
    pool += [plt.get_cmap("tab20b")(i) for i in range(20)]
    return [pool[i % len(pool)] for i in range(n)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def umap_coords(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D UMAP (umap-learn; 15 neighbours, min_dist 0.3, fixed seed) of an embedding ``[n, d]``."""
    import umap

    n_neighbors = int(min(15, x.shape[0] - 1))
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.3, random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(np.asarray(x, dtype=np.float32)))


def plot_umaps(panels: list[tuple[str, np.ndarray]], labels: np.ndarray, path: Path, title: str) -> Path:
    """One row of UMAP panels (``(name, coords [n, 2])``) coloured by cell type, one shared legend."""
    plt = _pyplot()
    types = sorted(set(labels.tolist()))
    colors = _type_colors(plt, len(types))
    legend_w = 1.1 + 0.075 * max(len(t) for t in types)  # inches for the legend column (9 pt text)
    width = UMAP_PANEL_IN * len(panels) + legend_w
    fig, axes = plt.subplots(1, len(panels), figsize=(width, UMAP_PANEL_IN + 0.5), squeeze=False)
    for ax, (name, xy) in zip(axes[0], panels, strict=True):
        for i, t in enumerate(types):
            sel = labels == t
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=colors[i], label=t, linewidths=0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=9, markerscale=2.5, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - legend_w / width, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_val_curves(curves: dict[str, dict[str, list[list[list[float]]]]], path: Path) -> Path:
    """Validation loss vs step: one panel per dataset, thin line per seed, thick mean per attention.

    ``curves[dataset][attention]`` is a list (one per seed) of ``[[step, loss], ...]``.
    """
    plt = _pyplot()
    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for attention, seeds in curves[name].items():
            color = COLORS.get(attention)
            for curve in seeds:
                if curve:
                    c = np.asarray(curve)
                    ax.plot(c[:, 0], c[:, 1], color=color, alpha=0.3, lw=0.8)
            lengths = {len(c) for c in seeds if c}
            if len(lengths) == 1:
                stacked = np.stack([np.asarray(c) for c in seeds if c])
                ax.plot(stacked[0, :, 0], stacked[:, :, 1].mean(0), color=color, lw=2, label=attention)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("held-out masked loss", fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_step_times(times: dict[str, dict[str, list[float]]], path: Path, ylabel: str) -> Path:
    """Grouped bars: mean (+- std over seeds) time per dataset and attention."""
    plt = _pyplot()
    names = list(times)
    attentions = sorted({a for per in times.values() for a in per})
    width = 0.8 / max(len(attentions), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.0))
    for j, attention in enumerate(attentions):
        vals = [np.asarray(times[n].get(attention, [np.nan])) for n in names]
        ax.bar(np.arange(len(names)) + j * width, [v.mean() for v in vals], width,
               yerr=[v.std() for v in vals], color=COLORS.get(attention), label=attention)
    ax.set_xticks(np.arange(len(names)) + width * (len(attentions) - 1) / 2, names, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


VERDICT_COLORS = {"sigmoid better": COLORS["sigmoid"], "softmax better": COLORS["softmax"],
                  "no clear difference": "#777777", "not learned": "#bbbbbb"}


def plot_forest(rows: list[tuple[str, float, tuple[float, float] | None, str]], path: Path) -> Path:
    """One row per (metric, dataset): the seed-paired difference (positive = sigmoid better) as a dot and
    its 95 % interval as a bar, coloured by verdict; the line at 0 is "no difference"."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.26 * len(rows) + 1.2))
    for i, (_label, mean, interval, verdict) in enumerate(rows):
        color = VERDICT_COLORS.get(verdict, "#777777")
        if interval is not None:
            ax.plot(interval, [i, i], color=color, linewidth=2)
        if np.isfinite(mean):
            ax.plot([mean], [i], "o", color=color, markersize=4)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("sigmoid - softmax, oriented: > 0 = sigmoid better (95 % bootstrap interval)", fontsize=9)
    handles = [plt.Line2D([], [], color=c, marker="o", linewidth=2, label=v)
               for v, c in VERDICT_COLORS.items()]
    ax.legend(handles=handles, fontsize=9, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
