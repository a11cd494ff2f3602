"""Figures of the analyses, drawn from their JSON results (matplotlib is imported only here, lazily)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["have_matplotlib", "plot_jacobian", "plot_sinks", "plot_stress"]

_COLORS = {"softmax": "tab:red", "sigmoid": "tab:blue"}


def have_matplotlib() -> bool:
    """Whether figures can be drawn here."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        msg = ("matplotlib is not installed, so no figure can be drawn here; install it (pip install "
               "matplotlib) or draw the figure on another machine from the JSON results")
        raise RuntimeError(msg) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_stress(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Loss, global gradient norm (log axis) and largest attention logit per step, every run.

    Softmax runs are red, sigmoid blue, one line style per seed; an x marks where a run diverged.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = ["-", "--", ":", "-."]
    seeds = sorted({r["seed"] for r in results["runs"]})
    for run in results["runs"]:
        s = run["series"]
        steps = s["step"]
        color = _COLORS.get(run["attention"], "gray")
        ls = styles[seeds.index(run["seed"]) % len(styles)]
        label = f"{run['attention']} seed {run['seed']}" + (
            f" (diverged @ {run['diverged_step']})" if run["status"] == "diverged" else "")
        logit_keys = [k for k in s if k.startswith("attn/") and k.endswith("/logit_max")]
        logit_max = [max((s[k][i] for k in logit_keys if s[k][i] is not None), default=None)
                     for i in range(len(steps))]
        for ax, ys in zip(axes, (s.get("loss", []), s.get("grad_norm", []), logit_max), strict=True):
            pts = [(x, y) for x, y in zip(steps, ys, strict=False) if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), ls, color=color, lw=1.1, label=label, alpha=0.85)
            if run["status"] == "diverged" and pts:
                ax.plot([pts[-1][0]], [pts[-1][1]], "x", color=color, ms=9, mew=2)
    axes[0].set_ylabel("masked-token loss")
    axes[1].set_ylabel("global gradient norm (no clipping)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("largest attention logit (any layer)")
    axes[2].set_yscale("symlog", linthresh=10)
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    st = results["settings"]
    tc = st["train_config"]
    env = results["environment"]
    fig.suptitle(f"sigcell stress ({st['preset']}): d_model {tc['model']['d_model']}, "
                 f"{tc['model']['n_layers']} "
                 f"layers, {tc['data']['synthetic_max_genes'] + 1} tokens/cell, lr {tc['optim']['lr']:g}, "
                 f"{tc['precision']}, no clipping, QK-norm {'on' if tc['model']['qk_norm'] else 'off'}; "
                 f"{env['device']}", fontsize=10)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_jacobian(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Weight-Jacobian metrics vs sequence length (one line per logit scale) and layer-Jacobian metrics."""
    plt = _pyplot()
    w = results["weights"]["rows"]
    layer = results.get("layer", [])
    metrics = ("max_abs", "offdiag_mass", "spectral_norm")
    ncols = len(metrics) + (2 if layer else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.9))
    scales = sorted({r["scale"] for r in w})
    shades = {c: 0.35 + 0.65 * i / max(1, len(scales) - 1) for i, c in enumerate(scales)}
    for ax, m in zip(axes, metrics, strict=False):
        for kind, cmap in (("softmax", plt.cm.Reds), ("sigmoid", plt.cm.Blues)):
            for c in scales:
                pts = sorted((r["length"], r[m]) for r in w if r["kind"] == kind and r["scale"] == c)
                ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", ms=3, color=cmap(shades[c]),
                        label=f"{kind} x{c:g}")
        ax.set_xscale("log", base=2)
        if m != "offdiag_mass":  # sigmoid's off-diagonal mass is exactly 0: keep that axis linear
            ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_title(f"dP/dS: {m.replace('_', ' ')}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.25, color="k", lw=0.8, ls=":")
    axes[0].text(axes[0].get_xlim()[0], 0.27, " sigma' <= 1/4", fontsize=7)
    axes[0].legend(fontsize=6, ncol=2)
    if layer:
        # One layer per kind: the first analyzed layer evaluated with that kind.
        first = {}
        for r in layer:
            first.setdefault(r["kind"], r["layer"])
        layer_scales = sorted({r["scale"] for r in layer})
        lshade = {c: 0.35 + 0.65 * i / max(1, len(layer_scales) - 1) for i, c in enumerate(layer_scales)}
        for ax, m in zip(axes[len(metrics):], ("offdiag_fraction", "spectral_norm"), strict=True):
            for kind, cmap in (("softmax", plt.cm.Reds), ("sigmoid", plt.cm.Blues)):
                for c in layer_scales:
                    pts = sorted((r["length"], r[m]) for r in layer
                                 if r["kind"] == kind and r["scale"] == c and r["layer"] == first.get(kind))
                    if pts:
                        ax.plot([x for x, _ in pts], [y for _, y in pts], "s-", ms=3, color=cmap(lshade[c]),
                                label=f"{kind} x{c:g}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("cell length L")
            ax.set_title(f"layer dY/dX: {m.replace('_', ' ')}", fontsize=10)
            ax.grid(alpha=0.3)
        axes[-1].set_yscale("log")
        axes[-1].legend(fontsize=6, ncol=2)
        fig.text(0.99, 0.005, "layers: " + "; ".join(f"{k}: {v}" for k, v in first.items()), fontsize=6,
                 ha="right")
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_sinks(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Heatmaps (layer x head) of the first-token share per model, plus raw sigmoid mass on token 0."""
    plt = _pyplot()
    models = results["models"]
    panels = [(m, "share") for m in models] + [(m, "raw") for m in models if m["attention"] == "sigmoid"]
    n_layers, n_heads = len(models[0]["share"]), len(models[0]["share"][0])
    width = max(3.6, 0.3 * n_heads + 1.2)  # wide enough for one label per head
    height = max(3.4, 0.25 * n_layers + 1.4)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 0.8, height), squeeze=False)
    label_cells = n_heads <= 8  # numbers in the cells only while they fit
    im = None
    for ax, (m, key) in zip(axes[0], panels, strict=True):
        data = m[key]
        im = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                if label_cells:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 else "black")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        what = "share of row mass" if key == "share" else "raw weight"
        rate = m["sink_rate" if key == "share" else "sink_rate_raw"]
        ax.set_title(f"{m['label']}\n{what} on <cls>; sink rate {rate:.2f}",
                     fontsize=8)
        ax.set_xticks(range(len(data[0])))
        ax.set_yticks(range(len(data)))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(f"attention on the first token (threshold {results['threshold']:g}; uniform share "
                 f"{models[0]['uniform']:.2g})", fontsize=9, y=1.1)
    out = _save(fig, path)
    plt.close(fig)
    return out
