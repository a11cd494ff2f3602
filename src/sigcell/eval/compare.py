"""``sigcell compare``: softmax vs sigmoid attention on real labelled cells, in three stages.

* ``prepare`` (CPU; anndata, scanpy): datasets -> ``<out>/prepared`` (tokenized cells, split,
  vocabulary, held-out labels, PCA baseline), see :mod:`sigcell.eval.prepare`.
* ``train`` (torch + numpy only; CPU or GPU): every dataset x attention x seed is pretrained with the
  same config, data order and step count, then its held-out cells are embedded and scored by
  masked-expression loss -> ``<out>/runs``, see :mod:`sigcell.eval.runner`.
* ``report`` (CPU; scib-metrics, matplotlib, umap): metrics, tables, figures ->
  ``<out>/report``, see :mod:`sigcell.eval.report`.

``stage="all"`` runs the three in turn. Every stage reuses what an earlier (possibly crashed) call
finished in the same ``out``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from sigcell.eval._io import read_json, write_json

__all__ = ["DEFAULT_MAX_GENES", "DEFAULT_SEEDS", "STAGES", "compare", "resolve_plan"]

STAGES = ("all", "prepare", "train", "report")
DEFAULT_SEEDS = (0, 1, 2)
# Genes kept per cell (highest expressed): the tiny CPU run keeps short cells to fit 10 minutes.
DEFAULT_MAX_GENES = {"tiny": 128, "small": 1024}
FALLBACK_MAX_GENES = 2048


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _stage_prepare(datasets, out: Path, preset: str, label_col, max_genes, heldout_fraction, max_heldout,
                   truncation: str, show: bool) -> dict:
    from sigcell.eval.prepare import PrepareConfig, prepare, resolve_datasets
    from sigcell.eval.progress import progress
    from sigcell.model.presets import load_preset

    inputs = resolve_datasets(datasets, label_col)
    model = load_preset(preset).get("model", {})
    from sigcell.model.config import ModelConfig

    defaults = ModelConfig()
    config = PrepareConfig(encoding=model.get("value_encoding", defaults.value_encoding),
                           n_bins=model.get("n_bins", defaults.n_bins),
                           max_genes=max_genes or DEFAULT_MAX_GENES.get(preset, FALLBACK_MAX_GENES),
                           heldout_fraction=heldout_fraction, max_heldout=max_heldout, truncation=truncation)
    with progress(len(inputs), "prepare", show) as bar:
        manifest = prepare(inputs, out / "prepared", config, preset=preset, bar=bar)
    _say(f"prepared {len(inputs)} dataset(s) in {out / 'prepared'} ({manifest['bytes'] / 2**20:.1f} MiB)")
    return manifest


def resolve_plan(runs: Path, manifest: dict, *, preset: str | None, steps: int | None, seeds, overrides,
                 device: str, threads: int | None, embedding_dtype: str, datasets=None) -> Any:
    """The plan of the train stage: the stored one for a re-run, checked against what was asked."""
    from sigcell.eval.runner import ATTENTIONS, DEFAULT_STEPS, Plan

    preset = preset or manifest["preset"]
    if preset != manifest["preset"]:
        msg = (f"the prepared inputs were made for preset {manifest['preset']!r}, not {preset!r}; pass "
               f"--preset {manifest['preset']} or prepare again into a new --out")
        raise ValueError(msg)
    names = list(manifest["datasets"])
    if datasets:
        wanted = [Path(d).stem if str(d).endswith(".h5ad") else str(d) for d in datasets]
        missing = [w for w in wanted if w not in names]
        if missing:
            msg = f"dataset(s) {missing} are not in the prepared inputs {names}; prepare them first"
            raise ValueError(msg)
        names = wanted
    stored_path = runs / "plan.json"
    stored = read_json(stored_path) if stored_path.is_file() else None
    default_steps = stored["steps"] if stored else DEFAULT_STEPS.get(preset, 1000)
    plan = Plan(preset=preset, steps=steps or default_steps,
                seeds=[int(s) for s in (seeds if seeds is not None else DEFAULT_SEEDS)], datasets=names,
                attentions=list(ATTENTIONS), overrides=dict(overrides or {}), device=device, threads=threads,
                embedding_dtype=embedding_dtype,
                steps_from="--steps" if steps else (stored["steps_from"] if stored else "default"))
    if stored is not None:
        for key in ("preset", "overrides"):
            if stored[key] != plan.to_dict()[key]:
                msg = (f"{runs} holds runs with {key} = {stored[key]!r}, this call asks for "
                       f"{plan.to_dict()[key]!r}; use another --out (or delete {runs})")
                raise ValueError(msg)
        if steps and steps != stored["steps"]:
            msg = (f"{runs} holds runs of {stored['steps']} steps, this call asks for {steps}; use another "
                   "--out (or delete it) to train anew")
            raise ValueError(msg)
    return plan


def _stage_train(out: Path, prepared: Path, *, preset, steps, seeds, datasets, overrides, device, threads,
                 time_budget, embedding_dtype, show: bool) -> list[dict]:
    import torch

    from sigcell.eval.prepare import read_manifest
    from sigcell.eval.progress import progress
    from sigcell.eval.runner import (
        PreparedDataset,
        calibrate,
        estimate_seconds,
        pending_runs,
        run_all,
        steps_for_budget,
    )

    manifest = read_manifest(prepared)
    runs = out / "runs"
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if threads is None and on_cpu:
        threads = 1  # tiny models gain little from intra-op threads, and one thread copes with a busy box
    if threads is not None:
        torch.set_num_threads(threads)
    plan = resolve_plan(runs, manifest, preset=preset, steps=steps, seeds=seeds, overrides=overrides,
                        device=device, threads=threads, embedding_dtype=embedding_dtype, datasets=datasets)
    data = [PreparedDataset.load(prepared / name) for name in plan.datasets]
    fresh = not (runs / "plan.json").is_file()
    n_runs = len(plan.datasets) * len(plan.attentions) * len(plan.seeds)
    pending = pending_runs(plan, runs)
    if not sum(pending.values()):
        _say(f"train stage: all {n_runs} runs of {runs} are finished; reusing them")
        write_json(runs / "plan.json", {**read_json(runs / "plan.json"), **plan.to_dict()})
        return run_all(plan, data, runs)
    t0 = time.perf_counter()
    step_s = calibrate(plan, data)
    if time_budget is not None and fresh and not steps:
        plan.steps = steps_for_budget(plan, step_s, data, time_budget)
        plan.steps_from = f"--time-budget {time_budget:g} s"
    timing = ", ".join(f"{d} {a} {1e3 * t:.0f} ms" for d, per in step_s.items() for a, t in per.items())
    estimate = estimate_seconds(plan, step_s, data, pending)
    _say(f"train stage: {sum(pending.values())} of {n_runs} runs to do, {plan.steps} steps each "
         f"({plan.steps_from}), preset {plan.preset}, seeds {plan.seeds}, threads {threads or 'default'}; "
         f"measured step times: {timing} (calibration {time.perf_counter() - t0:.0f} s); "
         f"estimated {estimate / 60:.1f} min")
    write_json(runs / "plan.json", {**plan.to_dict(), "calibration_step_s": step_s,
                                    "estimate_s": estimate, "prepared": manifest})
    with progress(n_runs * plan.steps, "train", show) as bar:
        results = run_all(plan, data, runs, bar=bar)
    return results


def compare(
    datasets: list[str] | None = None,
    *,
    out: str | os.PathLike = "sigcell-compare",
    preset: str | None = None,
    steps: int | None = None,
    seeds: list[int] | None = None,
    stage: str = "all",
    prepared: str | os.PathLike | None = None,
    label_col: str | None = None,
    max_genes: int | None = None,
    heldout_fraction: float = 0.2,
    max_heldout: int = 1000,
    truncation: str = "sample",
    time_budget: float | None = None,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    threads: int | None = None,
    embedding_dtype: str = "float32",
    progress: bool = True,
) -> dict:
    """Compare softmax and sigmoid attention on labelled datasets; see the module docstring.

    Parameters
    ----------
    datasets
        Registered dataset names and/or ``.h5ad`` paths; default: every labelled registered dataset.
    out
        Output directory (``prepared/``, ``runs/``, ``report/``); re-running reuses finished work.
    preset
        Model preset (``tiny`` on CPU, ``small`` on a GPU...); default ``tiny``, or the prepared one.
    steps
        Optimizer steps of every run; default the stored plan's, else 300 (tiny) / 1200 (small).
    seeds
        Training seeds (init, data order, masks); default ``[0, 1, 2]``.
    stage
        ``"all"``, ``"prepare"``, ``"train"`` or ``"report"``.
    prepared
        Prepared inputs directory (default ``<out>/prepared``), e.g. one carried to a GPU machine.
    label_col
        Label column of ``.h5ad`` inputs (default ``cell_type``); registered datasets know theirs.
    max_genes
        Genes kept per cell; default 128 (tiny) / 1024 (small) / 2048.
    heldout_fraction, max_heldout
        Held-out share of the labelled cells (stratified) and its cap per dataset.
    truncation
        How cells longer than ``max_genes`` are cut: ``"sample"`` (expression-weighted, seeded; default)
        or ``"top"`` (most expressed genes).
    time_budget
        Seconds for the train stage of a fresh ``out``: the step count is sized from a measured step time.
    overrides
        Extra ``{"section.field": value}`` settings applied to every run (both attentions).
    device, threads
        Training device (``auto``/``cpu``/``cuda``) and CPU threads (default 1 on CPU).
    embedding_dtype
        ``float32`` or ``float16`` held-out embeddings on disk (float16 halves what a GPU run returns).
    progress
        Show progress bars.

    Returns
    -------
    dict
        ``{"out", "stages", "wall_s", "summary"}``; ``summary`` is the report's summary (report stages).
    """
    if stage not in STAGES:
        msg = f"stage must be one of {list(STAGES)}, got {stage!r}"
        raise ValueError(msg)
    if embedding_dtype not in ("float32", "float16"):
        msg = f"embedding_dtype must be 'float32' or 'float16', got {embedding_dtype!r}"
        raise ValueError(msg)
    for name, value in (("steps", steps), ("max_genes", max_genes), ("threads", threads)):
        if value is not None and (not isinstance(value, int) or value < 1):
            msg = f"{name} must be a positive integer, got {value!r}"
            raise ValueError(msg)
    if seeds is not None and (not seeds or any(not isinstance(s, int) or s < 0 for s in seeds)):
        msg = f"seeds must be a non-empty list of integers >= 0, got {seeds!r}"
        raise ValueError(msg)
    if time_budget is not None and not time_budget > 0:
        msg = f"time_budget must be a positive number of seconds, got {time_budget!r}"
        raise ValueError(msg)
    start = time.perf_counter()
    out = Path(out)
    prepared_dir = Path(prepared) if prepared is not None else out / "prepared"
    stages = ["prepare", "train", "report"] if stage == "all" else [stage]
    result: dict[str, Any] = {"out": str(out), "stages": stages}
    if stage == "all":
        n = len(datasets) if datasets else "every labelled registered"
        n_seeds = len(seeds) if seeds is not None else len(DEFAULT_SEEDS)
        _say(f"sigcell compare: {n} dataset(s) x 2 attentions x {n_seeds} seeds, preset {preset or 'tiny'}, "
             f"into {out}. Stages: prepare (about 20 s per dataset), train (timed and estimated once the "
             f"data is prepared), report (about 2 min on 2 CPU cores for 4 datasets x 3 seeds)")
    if "prepare" in stages:
        if prepared is not None:
            msg = ("--prepared names existing inputs; the prepare stage writes <out>/prepared "
                   "(drop --prepared)")
            raise ValueError(msg)
        _stage_prepare(datasets, out, preset or "tiny", label_col, max_genes, heldout_fraction, max_heldout,
                       truncation, progress)
    if "train" in stages:
        _stage_train(out, prepared_dir, preset=preset, steps=steps, seeds=seeds,
                     datasets=datasets if stage == "train" or datasets else None, overrides=overrides,
                     device=device, threads=threads, time_budget=time_budget,
                     embedding_dtype=embedding_dtype, show=progress)
    if "report" in stages:
        from sigcell.eval.report import build_report

        result["summary"] = build_report(out, prepared_dir, show=progress,
                                         command=" ".join(sys.argv) if sys.argv else None,
                                         wall_s=time.perf_counter() - start if stage == "all" else None)
    result["wall_s"] = time.perf_counter() - start
    return result
