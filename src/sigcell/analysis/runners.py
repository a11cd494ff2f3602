"""End-to-end Jacobian and sink analyses: pick models (trained or fresh), run, write JSON / Markdown / PNG."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sigcell.analysis import jacobian as jac
from sigcell.analysis.sinks import analyze_encoder
from sigcell.analysis.stress import environment, write_json

__all__ = ["ModelSource", "load_models", "run_jacobian_analysis", "run_sinks_analysis"]


class ModelSource:
    """A labelled model to analyze: its :class:`~sigcell.train.TrainConfig` and encoder."""

    def __init__(self, label: str, config: Any, encoder: torch.nn.Module, origin: str) -> None:
        self.label, self.config, self.encoder, self.origin = label, config, encoder, origin


def load_models(runs: Sequence[str | os.PathLike] = (), *, config: str | None = None,
                attentions: Sequence[str] = ("softmax", "sigmoid"), seed: int = 0,
                overrides: dict[str, Any] | None = None) -> list[ModelSource]:
    """Trained models from run folders, or fresh ones (one per attention, same seed, same weights).

    Parameters
    ----------
    runs
        Run folders written by ``sigcell pretrain`` (their latest checkpoint). When given, ``config`` and
        ``attentions`` are not used.
    config
        Preset or YAML for fresh models (default ``tiny``).
    overrides
        Dotted TrainConfig overrides for fresh models.
    """
    from sigcell.model import MaskedExpressionModel
    from sigcell.train import TrainConfig, load_checkpoint

    sources = []
    if runs:
        for run in runs:
            loaded = load_checkpoint(run)
            label = f"{loaded.config.model.attention} ({Path(run).name}, step {loaded.step})"
            sources.append(ModelSource(label, loaded.config, loaded.model.encoder, str(loaded.path)))
        return sources
    for attention in attentions:
        cfg = TrainConfig.from_preset(config or "tiny", {**(overrides or {}), "model.attention": attention,
                                                          "seed": seed})
        torch.manual_seed(seed)  # same seed -> identical weights for both kinds (they share every parameter)
        model = MaskedExpressionModel(cfg.model).eval()
        sources.append(ModelSource(f"{attention} (fresh {config or 'tiny'}, seed {seed})", cfg, model.encoder,
                                   "fresh"))
    return sources


def _out_dir(out: str | os.PathLike, name: str, create: bool = True) -> Path:
    path = Path(out)
    if (path / name).exists():
        msg = f"{str(path / name)!r} already exists; choose another --out or delete it"
        raise FileExistsError(msg)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def run_jacobian_analysis(out: str | os.PathLike, *, lengths: Sequence[int] = (16, 64, 256, 1024, 4096),
                          scales: Sequence[float] = (0.5, 1, 2, 4, 8, 16), rows: int = 64,
                          sigmoid_bias: str = "neg_log_n", layer_lengths: Sequence[int] = (8, 16, 32, 64),
                          layer_scales: Sequence[float] = (1, 8, 64), layers: Sequence[int] = (0,),
                          models: Sequence[ModelSource] = (), seed: int = 0, plot: bool = True,
                          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Weight-Jacobian sweep on random logits plus layer Jacobians of ``models``; writes
    ``jacobian.json``, ``jacobian.md`` and (with matplotlib) ``jacobian.png`` under ``out``.

    Fresh models are evaluated with both attention kinds on the same weights; trained models with their own.

    Returns
    -------
    The results dict (``weights``, ``layer``, ``environment``, ``settings``).
    """
    out = _out_dir(out, "jacobian.json")
    if rows < 1:
        msg = f"rows must be >= 1, got {rows}"
        raise ValueError(msg)
    log(f"jacobian: weight Jacobians for L in {list(lengths)}, scales {list(scales)}, {rows} rows each")
    weights = jac.sweep_weights(lengths, scales, rows=rows, seed=seed, sigmoid_bias=sigmoid_bias)
    layer_rows: list[dict[str, Any]] = []
    # Fresh models of both kinds share their weights: the first is evaluated with both kinds.
    fresh = [s for s in models if s.origin == "fresh"]
    targets = [(fresh[0], ("softmax", "sigmoid"))] if fresh else []
    targets += [(s, (None,)) for s in models if s.origin != "fresh"]
    for src, kinds in targets:
        n_layers = len(src.encoder.blocks)
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad:
            msg = (f"layer index(es) {bad} out of range for {src.label} with {n_layers} layers; "
                   f"pass 0..{n_layers - 1}")
            raise ValueError(msg)
        name = "fresh" if src.origin == "fresh" else src.label
        chosen = [(f"{name} L{i}", src.encoder.blocks[i].attn.float()) for i in layers]
        log(f"jacobian: layer Jacobians of {name}, layers {list(layers)}, L in {list(layer_lengths)}")
        layer_rows += jac.sweep_layer(chosen, kinds, layer_lengths, layer_scales, seed=seed)
    results = {"kind": "sigcell-jacobian", "version": 1, "environment": environment(),
               "settings": {"lengths": list(lengths), "scales": list(scales), "rows": rows,
                            "sigmoid_bias": sigmoid_bias, "layer_lengths": list(layer_lengths),
                            "layer_scales": list(layer_scales), "layers": list(layers), "seed": seed,
                            "models": [{"label": s.label, "origin": s.origin} for s in models]},
               "weights": weights, "layer": layer_rows}
    write_json(out / "jacobian.json", results)
    (out / "jacobian.md").write_text("# Attention Jacobians\n\n" + jac.markdown_tables(weights, layer_rows))
    if plot:
        _maybe_plot("plot_jacobian", results, out / "jacobian.png", log)
    log(f"jacobian: results in {out}")
    return results


def run_sinks_analysis(out: str | os.PathLike, models: Sequence[ModelSource], *, cells: int = 64,
                       threshold: float = 0.3, positions: int = 16, corpus: str | None = None,
                       prepared: str | os.PathLike | None = None, batch_size: int | None = None,
                       device: str = "cpu", plot: bool = True,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """First-token attention shares of each model on the same held-out cells; writes ``sinks.json`` and
    (with matplotlib) ``sinks.png`` under ``out``.

    Cells are the held-out batches of the first model's data configuration (synthetic cells, or
    ``corpus`` / the run's corpus), or the held-out cells of a ``sigcell compare`` prepared dataset
    (``prepared``, for runs trained by compare), so every model sees the same cells. ``batch_size`` (default:
    the run's) sets the cells per forward pass: the maps of all layers are held at once, layers x B x H x L^2
    floats, so long cells want 1.
    """
    from sigcell.train import build_data
    from sigcell.train.parallel import DistInfo

    if not models:
        msg = "sinks: no model to analyze; pass --run DIR (repeatable) or a --config for fresh models"
        raise ValueError(msg)
    if not isinstance(cells, int) or cells < 1:
        msg = f"sinks: cells must be an integer >= 1, got {cells!r}"
        raise ValueError(msg)
    if corpus is not None and prepared is not None:
        msg = "sinks: pass either corpus or prepared, not both"
        raise ValueError(msg)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        msg = f"sinks: batch_size must be an integer >= 1, got {batch_size!r}"
        raise ValueError(msg)
    out = _out_dir(out, "sinks.json", create=False)  # created once the cells are loaded
    cfg = models[0].config
    if batch_size is not None:
        cfg.data.batch_size = batch_size
    per_batch = cfg.data.batch_size
    n_batches = -(-cells // per_batch)
    if prepared is not None:
        batches, source = _prepared_heldout_batches(prepared, cfg, n_batches)
    else:
        if corpus is not None:
            cfg.data.corpus = corpus
        data = build_data(cfg, DistInfo())
        batches = [b for _, b in data.val_batches(n_batches)]
        source = data.info.get("source", "data")
    out.mkdir(parents=True, exist_ok=True)
    log(f"sinks: {len(models)} model(s), {sum(b.num_cells for b in batches)} held-out cells "
        f"({source}), threshold {threshold:g}")
    results_models = []
    for src in models:
        stats = analyze_encoder(src.encoder, batches, threshold=threshold, positions=positions, device=device)
        stats.update(label=src.label, origin=src.origin)
        log(f"sinks: {src.label}: sink rate {stats['sink_rate']:.3f} (share of row mass > {threshold:g}), "
            f"raw {stats['sink_rate_raw']:.3f}, mean share {_mean2(stats['share']):.3f} vs uniform "
            f"{stats['uniform']:.3f}")
        results_models.append(stats)
    results = {"kind": "sigcell-sinks", "version": 1, "environment": environment(), "threshold": threshold,
               "metric": ("fraction of (layer, head) pairs whose mean attention share on token 0 (<cls>) "
                          "exceeds the threshold (Gu et al., When Attention Sink Emerges, ICLR 2025); "
                          "bidirectional: all queries of a cell"),
               "normalization": ("softmax weights are shares already; each sigmoid query row is divided by "
                                 "its sum; 'raw' is the unnormalized sigmoid weight on token 0 and "
                                 "'row_mass' "
                                 "the mean row sum"),
               "models": results_models}
    write_json(out / "sinks.json", results)
    if plot:
        _maybe_plot("plot_sinks", results, out / "sinks.png", log)
    log(f"sinks: results in {out}")
    return results


def _prepared_heldout_batches(prepared: str | os.PathLike, cfg: Any, n_batches: int) -> tuple[list, str]:
    """The first ``n_batches`` held-out batches of a compare-prepared dataset, in the run's layout."""
    from sigcell.eval.runner import PreparedDataset, heldout_loader

    folder = Path(prepared)
    if not (folder / "tokens.npz").is_file() or not (folder / "meta.json").is_file():
        msg = (f"sinks: {folder} is not a prepared dataset (no tokens.npz / meta.json); pass one dataset "
               "folder of `sigcell compare --stage prepare`, e.g. OUT/prepared/zeisel")
        raise ValueError(msg)
    data = PreparedDataset.load(folder)
    loader = heldout_loader(cfg, data.subset("heldout"))
    plan = loader.sampler.plan(0)[:n_batches]
    return [loader.collate(idx) for idx in plan], f"held-out cells of prepared dataset {data.name}"


def _mean2(rows: list[list[float]]) -> float:
    flat = [v for r in rows for v in r]
    return sum(flat) / len(flat)


def _maybe_plot(name: str, results: dict[str, Any], path: Path, log: Callable[[str], None]) -> None:
    from sigcell.analysis import plots

    if not plots.have_matplotlib():
        log(f"matplotlib is not installed: {path.name} not drawn (the JSON holds every number)")
        return
    getattr(plots, name)(results, path)
