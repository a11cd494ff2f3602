"""Stability stress test: the same model trained with softmax and with sigmoid attention, no clipping.

Each run is driven step by step through :meth:`sigcell.train.Trainer.train_step` (the trainer's own
masking, loss normalization, per-layer gradient norms and attention-logit statistics), its records go to
the trainer's ``metrics.jsonl``, and a :class:`~sigcell.analysis.divergence.DivergenceDetector` ends the
run at the step it diverges. Everything a report needs lands in one directory::

    OUT/stress.json              settings, environment, one summary + per-step series per run
    OUT/runs/<attention>-seed<k>/  the trainer's config.yaml and metrics.jsonl

This module needs only torch, numpy and pyyaml (bare GPU machines); plots are drawn from ``stress.json``
by :func:`sigcell.analysis.plots.plot_stress` wherever matplotlib is installed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sigcell.analysis.divergence import DivergenceDetector

__all__ = ["PRESETS", "RunSummary", "StressConfig", "build_train_config", "run_stress", "write_json"]

# Presets: a model-size preset plus dotted TrainConfig overrides. QK-norm is off in both because it is
# itself a stabilizer (it bounds the attention logits) and would hide the effect under test.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "base": "tiny",
        "overrides": {
            "model.vocab_size": 1027, "model.n_bins": 51, "model.d_model": 64, "model.n_layers": 3,
            "model.n_heads": 4, "model.d_ff": 256, "model.qk_norm": False,
            "data.batch_size": 4, "data.synthetic_min_genes": 255, "data.synthetic_max_genes": 255,
            "data.synthetic_cell_types": 8, "data.layout": "packed",
            "optim.lr": 1e-2, "optim.warmup_steps": 10, "optim.min_lr_ratio": 1.0,
            "precision": "fp32", "steps": 300,
        },
        "seeds": (0, 1, 2),
        "time_budget_s": None,
    },
    "paper": {
        "base": "large",  # d_model 1024, 12 layers, 16 heads, 20k genes: ~172M parameters (~151M core)
        "overrides": {
            "model.qk_norm": False, "data.batch_size": 2, "data.synthetic_min_genes": 8191,
            "data.synthetic_max_genes": 8191, "data.layout": "packed",
            "optim.lr": 3e-3, "optim.warmup_steps": 20, "optim.min_lr_ratio": 1.0,
            "precision": "bf16", "steps": 2000,
        },
        "seeds": (0, 1, 2),
        "time_budget_s": 300.0,  # training time of all runs together (start-up and first steps extra)
    },
}


@dataclass
class StressConfig:
    """What ``sigcell stress`` runs.

    Attributes
    ----------
    preset
        ``"cpu"`` or ``"paper"`` (see :data:`PRESETS`).
    out_dir
        Directory for ``stress.json`` and the per-run folders (must not already hold ``stress.json``).
    attentions
        Attention kinds to compare, trained in this order for each seed.
    seeds
        Seeds (init, data, masking); None = the preset's.
    overrides
        Dotted TrainConfig overrides applied after the preset (``{"optim.lr": 3e-2}``).
    factor, window
        Divergence: gradient norm above ``factor`` x the median of the first ``window`` steps.
    time_budget_s
        Training seconds for all runs together, split evenly and counted from the end of each run's first
        step (model build and kernel compilation excluded); a run out of time ends with status
        ``"time_budget"``. None = the preset's (None there = only the step count limits a run).
    progress_every
        Print a progress line every this many steps (and at the end of each run).
    """

    preset: str = "cpu"
    out_dir: str = "runs/stress"
    attentions: tuple[str, ...] = ("softmax", "sigmoid")
    seeds: tuple[int, ...] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    factor: float = 100.0
    window: int = 20
    time_budget_s: float | None = None
    progress_every: int = 10
    save_checkpoint: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.preset not in PRESETS:
            msg = f"stress: unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}"
            raise ValueError(msg)
        if not self.attentions or any(a not in ("softmax", "sigmoid") for a in self.attentions):
            msg = (f"stress: attentions must be a non-empty list of 'softmax' / 'sigmoid', "
                   f"got {self.attentions!r}")
            raise ValueError(msg)
        seeds = self.resolved_seeds()
        if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            msg = f"stress: seeds must be distinct integers >= 0, got {list(seeds)!r}"
            raise ValueError(msg)
        budget = self.resolved_budget()
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            msg = f"stress: time budget must be a positive number of seconds, got {budget!r}"
            raise ValueError(msg)
        if not isinstance(self.progress_every, int) or self.progress_every < 1:
            msg = f"stress: progress_every must be an integer >= 1, got {self.progress_every!r}"
            raise ValueError(msg)
        DivergenceDetector(self.factor, self.window)  # validates factor and window

    def resolved_seeds(self) -> tuple[int, ...]:
        return tuple(self.seeds) if self.seeds is not None else tuple(PRESETS[self.preset]["seeds"])

    def resolved_budget(self) -> float | None:
        return self.time_budget_s if self.time_budget_s is not None else PRESETS[self.preset]["time_budget_s"]


@dataclass
class RunSummary:
    """How one (attention, seed) run went; ``series`` holds its per-step records."""

    attention: str
    seed: int
    status: str  # "stable" (all steps, no divergence), "diverged" or "time_budget"
    steps: int  # optimizer steps whose metrics were recorded (incl. the diverging one)
    diverged_step: int | None
    reason: str | None
    detail: str
    early_median_grad_norm: float | None
    max_grad_norm: float | None  # largest grad norm after the first ``window`` steps
    max_grad_ratio: float | None  # max_grad_norm / early median
    final_loss: float | None
    wall_s: float
    mean_step_s: float | None
    run_dir: str
    series: dict[str, list[float | None]] = field(default_factory=dict)


def build_train_config(preset: str, attention: str, seed: int, run_dir: str | os.PathLike,
                       overrides: dict[str, Any] | None = None):
    """The :class:`~sigcell.train.TrainConfig` of one stress run (no clipping, log every step).

    Parameters
    ----------
    preset
        ``"cpu"`` or ``"paper"``.
    attention
        ``"softmax"`` or ``"sigmoid"``.
    overrides
        Extra dotted overrides (applied after the preset's; clipping, logging and checkpoint settings are
        always those of a stress run).
    """
    from sigcell.train import TrainConfig

    if preset not in PRESETS:
        msg = f"stress: unknown preset {preset!r}; choose one of {sorted(PRESETS)}"
        raise ValueError(msg)
    values = dict(PRESETS[preset]["overrides"])
    values.update(overrides or {})
    values.update({"model.attention": attention, "seed": seed, "out_dir": str(run_dir),
                   "optim.clip_grad_norm": None, "log_every": 1, "val_every": 0, "ckpt_every": 0,
                   "progress": False, "tensorboard": False})
    return TrainConfig.from_preset(PRESETS[preset]["base"], values)


# Per-step series copied into stress.json (prefix match); the JSONL keeps everything.
_SERIES_KEYS = ("loss", "lr", "grad_norm", "step_time_s")
_SERIES_PREFIXES = ("grad_norm/", "attn/")
_ATTN_SERIES = ("logit_max", "logit_std", "prob_max")


def _keep(key: str) -> bool:
    if key in _SERIES_KEYS or key.startswith("grad_norm/"):
        return True
    return key.startswith("attn/") and key.rsplit("/", 1)[-1] in _ATTN_SERIES


def run_one(cfg: StressConfig, attention: str, seed: int, budget_s: float | None,
            log: Callable[[str], None] = print) -> RunSummary:
    """Train one (attention, seed) run until it diverges, completes its steps or runs out of time."""
    from sigcell.train import NonFiniteError, Trainer

    run_dir = Path(cfg.out_dir) / "runs" / f"{attention}-seed{seed}"
    config = build_train_config(cfg.preset, attention, seed, run_dir, cfg.overrides)
    tag = f"[{attention} seed {seed}]"
    start = time.perf_counter()
    trainer = Trainer(config)
    detector = DivergenceDetector(cfg.factor, cfg.window)
    series: dict[str, list[float | None]] = {"step": []}
    status, verdict, step_times = "stable", None, []
    clock: float | None = None
    log(f"{tag} {trainer.model.num_parameters():,} parameters, {config.data.synthetic_max_genes + 1} tokens "
        f"per cell, batch {config.data.batch_size}, lr {config.optim.lr:g}, no clipping, "
        f"{config.steps} steps max" + (f", {budget_s:.0f} s budget" if budget_s else ""))
    trainer.wrapped.train()
    # Saturated sigmoid / softmax rows produce subnormal floats, which x86 CPUs process 10-100x slower
    # (sigmoid runs crawled as the logits grew); flushing them to zero changes values below 1e-38 only.
    # The flag is per thread and intra-op worker threads do not inherit it, hence one thread.
    threads = torch.get_num_threads()
    flush = trainer.device.type == "cpu" and torch.set_flush_denormal(True)
    if flush:
        torch.set_num_threads(1)
    try:
        while trainer.step < config.steps:
            try:
                metrics = trainer.train_step()
            except NonFiniteError as err:
                metrics = {"loss": err.loss, "grad_norm": err.grad_norm}
                trainer.logger.log(err.step, {**metrics, "message": str(err)}, kind="nonfinite")
                step = err.step
            else:
                step = trainer.step
                trainer.logger.log(step, metrics)
                step_times.append(metrics.get("step_time_s", float("nan")))
            _append(series, step, metrics)
            verdict = detector.update(step, metrics["loss"], metrics["grad_norm"])
            elapsed = time.perf_counter() - start
            if clock is None:
                # The budget counts training after the first step, which also pays for building the
                # model and compiling kernels (Triton, sigmoid only): both kinds get the same training time.
                clock = time.perf_counter()
            if verdict is not None or step % cfg.progress_every == 0 or step == config.steps:
                ratio = detector.ratio(metrics["grad_norm"])
                log(f"{tag} step {step}/{config.steps} loss {metrics['loss']:.4g} grad_norm "
                    f"{metrics['grad_norm']:.3g}" + (f" ({ratio:.3g}x early median)" if ratio else "")
                    + f" {elapsed:.0f}s")
            if verdict is not None:
                status = "diverged"
                trainer.logger.log(step, {"reason": verdict.reason, "message": verdict.detail},
                                   kind="diverged")
                log(f"{tag} DIVERGED: {verdict.detail}")
                break
            if budget_s is not None and time.perf_counter() - clock > budget_s:
                status = "time_budget"
                log(f"{tag} time budget of {budget_s:.0f} s used after {step} steps; stopping (not diverged)")
                break
        if cfg.save_checkpoint:
            trainer.save()  # after a divergence: the weights after the last applied step
    finally:
        trainer.logger.close()
        if flush:
            torch.set_flush_denormal(False)
            torch.set_num_threads(threads)
    wall = time.perf_counter() - start
    # Peaks after the reference window only: the first steps of a fresh model have large norms anyway.
    grads = [g for g in series.get("grad_norm", [])[cfg.window:] if g is not None and math.isfinite(g)]
    losses = [v for v in series.get("loss", []) if v is not None]
    median = detector.early_median
    summary = RunSummary(
        attention=attention, seed=seed, status=status, steps=len(series["step"]),
        diverged_step=verdict.step if verdict else None, reason=verdict.reason if verdict else None,
        detail=verdict.detail if verdict else f"no divergence in {len(series['step'])} steps",
        early_median_grad_norm=median, max_grad_norm=max(grads) if grads else None,
        max_grad_ratio=(max(grads) / median) if grads and median else None,
        final_loss=losses[-1] if losses else None, wall_s=wall,
        mean_step_s=_mean(step_times[1:] or step_times),  # step 1 includes compilation / autotuning
        run_dir=str(run_dir.relative_to(cfg.out_dir)), series=series)
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary


def _append(series: dict[str, list[float | None]], step: int, metrics: dict[str, Any]) -> None:
    n = len(series["step"])
    series["step"].append(step)
    for key, value in metrics.items():
        if not _keep(key):
            continue
        column = series.setdefault(key, [None] * n)  # a key first seen late is padded with None
        column.append(float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None)
    for column in series.values():
        if len(column) < n + 1:
            column.append(None)


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def environment() -> dict[str, Any]:
    """Device, dtype-relevant versions and host, for the results file."""
    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                           "host": platform.node(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    else:
        env["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return env


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON atomically (a temporary file renamed over ``path``); NaN/inf become null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(data), f, separators=(",", ":"))  # compact: per-step series are long
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def run_stress(cfg: StressConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every (seed, attention) pair and write ``<out_dir>/stress.json`` after each run.

    Parameters
    ----------
    cfg
        The stress settings.
    log
        Where progress lines go (default: stdout, flushed; one line per event, no TTY needed).

    Returns
    -------
    The results dict written to ``stress.json``: ``settings``, ``environment``, ``runs`` (one
    :class:`RunSummary` dict each) and ``summary`` (per attention: diverged runs and steps).
    """
    cfg.validate()
    log = log or (lambda text: print(text, flush=True))
    out = Path(cfg.out_dir)
    results_path = out / "stress.json"
    if results_path.exists():
        msg = f"{str(results_path)!r} already exists; choose another --out or delete it"
        raise FileExistsError(msg)
    seeds = cfg.resolved_seeds()
    budget = cfg.resolved_budget()
    pairs = [(a, s) for s in seeds for a in cfg.attentions]  # interleaved: a cut-off run still has pairs
    per_run = budget / len(pairs) if budget is not None else None
    # Resolve one config up front so a bad override fails before any training.
    example = build_train_config(cfg.preset, cfg.attentions[0], seeds[0], out / "runs" / "check",
                                 cfg.overrides)
    results: dict[str, Any] = {
        "kind": "sigcell-stress", "version": 1,
        "settings": {**asdict(cfg), "seeds": list(seeds), "time_budget_s": budget,
                     "per_run_budget_s": per_run,
                     "train_config": example.to_dict(), "argv": sys.argv},
        "environment": environment(), "runs": [], "summary": {},
    }
    results["settings"]["train_config"].pop("out_dir")
    results["settings"]["train_config"].pop("seed")
    results["settings"]["train_config"]["model"].pop("attention")
    log(f"sigcell stress: preset {cfg.preset}, {len(pairs)} runs ({', '.join(cfg.attentions)} x seeds "
        f"{list(seeds)}) on {results['environment']['device']}, divergence: grad norm > "
        f"{cfg.factor:g} x median "
        f"of first {cfg.window} steps or non-finite")
    started = time.perf_counter()
    for attention, seed in pairs:
        summary = run_one(cfg, attention, seed, per_run, log)
        results["runs"].append(asdict(summary))
        results["summary"] = summarize(results["runs"])
        results["total_wall_s"] = time.perf_counter() - started
        write_json(results_path, results)
    for line in summary_lines(results):
        log(line)
    log(f"sigcell stress: results in {results_path}")
    return results


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per attention: runs, diverged runs, their steps, median of the largest grad-norm ratios."""
    out: dict[str, Any] = {}
    for run in runs:
        entry = out.setdefault(run["attention"], {"runs": 0, "diverged": 0, "diverged_steps": {},
                                                  "max_grad_ratio": {}, "steps": {}})
        entry["runs"] += 1
        entry["steps"][str(run["seed"])] = run["steps"]
        entry["max_grad_ratio"][str(run["seed"])] = run["max_grad_ratio"]
        if run["status"] == "diverged":
            entry["diverged"] += 1
            entry["diverged_steps"][str(run["seed"])] = run["diverged_step"]
    return out


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A plain-text table of the runs (one line each)."""
    lines = [f"{'attention':9} {'seed':>4} {'status':>11} {'steps':>6} {'diverged@':>9} {'max g/g0':>9} "
             f"{'final loss':>10} {'s/step':>7}"]
    for r in results["runs"]:
        ratio = f"{r['max_grad_ratio']:.3g}" if r["max_grad_ratio"] else "-"
        loss = f"{r['final_loss']:.4g}" if r["final_loss"] is not None else "-"
        sps = f"{r['mean_step_s']:.3f}" if r["mean_step_s"] else "-"
        lines.append(f"{r['attention']:9} {r['seed']:>4} {r['status']:>11} {r['steps']:>6} "
                     f"{r['diverged_step'] or '-':>9} {ratio:>9} {loss:>10} {sps:>7}")
    return lines


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``stress.json`` (or the directory holding one), checking that it is one."""
    path = Path(path)
    if path.is_dir():
        path = path / "stress.json"
    if not path.is_file():
        msg = f"no stress results at {str(path)!r}; pass the stress.json written by `sigcell stress`"
        raise FileNotFoundError(msg)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        msg = f"{str(path)!r} is not valid JSON ({err}); pass the stress.json written by `sigcell stress`"
        raise ValueError(msg) from err
    if not isinstance(data, dict) or data.get("kind") != "sigcell-stress" or "runs" not in data:
        msg = f"{str(path)!r} is not a sigcell stress results file (missing kind 'sigcell-stress' / runs)"
        raise ValueError(msg)
    return data
