"""The end-to-end training benchmark (``sigcell bench train``): one optimizer step of the same model with
each attention provider, padded and packed batches.

A step is what pretraining does per batch: forward under bf16 autocast, masked-expression loss, backward,
fused AdamW step, ``zero_grad``. Each (case, layout, provider) gets a fresh model from the same seed (the same
weights for every provider), ``warmup`` untimed steps, then ``steps`` timed ones; the median is reported with
tokens/s (the cells' tokens, padding never counted), cells/s and the peak memory of the whole step.

The results file is rewritten after every case, so a run stopped early keeps its numbers.
"""

from __future__ import annotations

import gc
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from sigcell.bench.environment import collect_environment
from sigcell.bench.timing import first_call_ms, step_times_ms, synchronize
from sigcell.bench.train_cases import LAYOUTS, TrainCase
from sigcell.bench.train_providers import TrainProvider

__all__ = [
    "SCHEMA",
    "TARGETS",
    "TrainBenchConfig",
    "estimate_seconds",
    "load_model_config",
    "make_batches",
    "ratios",
    "run_train_bench",
    "targets",
]

SCHEMA = "sigcell.bench.train/1"
PRECISIONS = ("bf16", "fp32")
# How the model runs: as written ("eager"), through torch.compile's default mode ("compiled": Inductor, no
# CUDA graphs) or its "reduce-overhead" mode ("cudagraphs": the compiled step replayed as CUDA graphs, no
# host launch cost; needs fixed shapes, which the benchmark's batches have).
COMPILE_MODES = ("eager", "compiled", "cudagraphs")
_UTC = timezone.utc  # noqa: UP017 (datetime.UTC needs Python 3.11; GPU machines may have older)
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# The targets (issue 5, "Benchmark (end to end)").
TARGETS = {
    "vs_softmax_2k": 0.95,  # sigmoid step <= 0.95x the best softmax step, full batches, L = 2k
    "vs_softmax_8k": 0.90,  # ... <= 0.9x at L >= 8k
    "vs_tritonsigmoid": 0.75,  # sigcell step <= 0.75x the same model with TritonSigmoid
    "packed_gain": 1.3,  # real mixes: packed sigmoid tokens/s >= 1.3x masked softmax and padded sigmoid
    "memory_gb": 80.0,  # one 16k-gene cell trains with the base preset on one 80 GB card
}


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------


def _scalar(text: str):
    """A YAML-ish scalar: int, float, true / false, null, else the string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~", ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def _read_flat_yaml(path: Path) -> dict:
    """The files of ``sigcell/configs/`` (``section: {key: scalar}`` and ``key: scalar``) without PyYAML."""
    sections: dict = {}
    current: dict | None = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        key, _, value = line.strip().partition(":")
        if not line.startswith((" ", "\t")):
            current = sections.setdefault(key, {}) if not value.strip() else None
            if value.strip():
                sections[key] = _scalar(value.strip())
        elif current is not None:
            current[key] = _scalar(value.strip())
    return sections


def load_model_config(preset: str, overrides: dict | None = None, attention: str | None = None):
    """The :class:`~sigcell.model.ModelConfig` of a preset name / YAML path, with overrides applied.

    Parameters
    ----------
    preset
        ``tiny``, ``small``, ``base``, ``large`` or a YAML file (its ``model`` section is read; PyYAML is used
        when installed, else a reader of the presets' flat format).
    overrides
        Model fields to replace, e.g. ``{"n_layers": 4}``.
    attention
        ``"sigmoid"`` or ``"softmax"`` (None keeps the preset's).
    """
    from sigcell.model import ModelConfig, preset_path

    path = preset_path(preset)
    try:
        import yaml  # noqa: F401
    except ImportError:
        sections = _read_flat_yaml(path)
    else:
        from sigcell.model import load_preset

        sections = load_preset(path)
    values = dict(sections.get("model") or {})
    values.update(overrides or {})
    if attention is not None:
        values["attention"] = attention
    return ModelConfig.from_dict(values)


@dataclass
class TrainBenchConfig:
    """Everything one run needs; the CLI fills it from a preset and the flags."""

    name: str
    cases: list[TrainCase]
    providers: list[TrainProvider]
    model: str = "base"  # model preset name or YAML path
    model_overrides: dict = field(default_factory=dict)
    layouts: tuple[str, ...] = LAYOUTS
    warmup: int = 3  # untimed steps per measurement (after the first, timed separately as first_step_ms)
    steps: int = 10  # timed steps per measurement; the median is reported
    precision: str = "bf16"  # "bf16" autocast or "fp32"
    compile_modes: tuple[str, ...] = ("eager",)  # each provider runs once per mode (COMPILE_MODES)
    device: str = "cuda"
    seed: int = 0
    mask_fraction: float = 0.15
    memory_case: TrainCase | None = None  # the single-long-cell check (None: skip it)
    time_limit_s: float | None = None  # start no new measurement after this long
    out: Path = Path("benchmarks/results")
    plot: bool = True
    table: bool = True
    argv: list[str] = field(default_factory=list)
    preset: str | None = None
    plan_only: bool = False  # --dry-run: no device needed

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            msg = f"unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}"
            raise ValueError(msg)
        modes = [m for m in self.compile_modes if m not in COMPILE_MODES]
        if modes or not self.compile_modes:
            msg = (f"compile modes must be a non-empty subset of {list(COMPILE_MODES)}, "
                   f"got {list(self.compile_modes)}")
            raise ValueError(msg)
        bad = [lay for lay in self.layouts if lay not in LAYOUTS]
        if bad or not self.layouts:
            msg = f"layouts must be a non-empty subset of {list(LAYOUTS)}, got {list(self.layouts)}"
            raise ValueError(msg)
        if not self.cases and self.memory_case is None:
            msg = "nothing to run: no case (check --l / --padding / --mixes) and no memory check"
            raise ValueError(msg)
        if self.warmup < 0 or self.steps < 1:
            msg = f"--warmup must be >= 0 and --steps >= 1, got {self.warmup} and {self.steps}"
            raise ValueError(msg)
        if not 0.0 < self.mask_fraction < 1.0:
            msg = f"the mask fraction must lie in (0, 1), got {self.mask_fraction}"
            raise ValueError(msg)
        if self.device.startswith("cuda") and not torch.cuda.is_available() and not self.plan_only:
            msg = "--device cuda was asked for but torch sees no CUDA device; use --device cpu"
            raise ValueError(msg)
        if "attention" in self.model_overrides:
            msg = "the attention is set by each provider; remove attention= from --set"
            raise ValueError(msg)
        load_model_config(self.model, self.model_overrides)  # fail here, not after the first case

    def output_paths(self, stamp: str) -> tuple[Path, Path]:
        """The JSON and PNG paths: ``out/<name>-<stamp>.json`` or, if ``out`` ends in .json, that file."""
        if self.out.suffix == ".json":
            return self.out, self.out.with_suffix(".png")
        base = self.out / f"{self.name}-{stamp}"
        return base.with_suffix(".json"), base.with_suffix(".png")


# ----------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------


def make_batches(case: TrainCase, model_config, mask_fraction: float = 0.15, seed: int = 0) -> dict:
    """The case's cells as a masked packed batch and the same cells (same masks) padded, on the CPU.

    Cell ``i`` is a synthetic cell (:class:`sigcell.train.synthetic.SyntheticCells`) of exactly
    ``lengths[i] - 1`` genes after ``<cls>``, with the model's value encoding.

    Returns
    -------
    ``{"packed": CellBatch, "padded": CellBatch}``; the padded batch is ``[B, max length]``.
    """
    from sigcell.data.batch import CellBatch
    from sigcell.ops.padding import cu_seqlens_from_lengths, unpack_to_padded
    from sigcell.train.masking import mask_batch
    from sigcell.train.synthetic import SyntheticCells

    ids, vals = [], []
    for i, n in enumerate(case.lengths):
        src = SyntheticCells(model_config.vocab_size, model_config.value_encoding, model_config.n_bins,
                             n - 1, n - 1, seed=seed)
        cell = src.batch(i, 1, packed=True)
        ids.append(cell.gene_ids)
        vals.append(cell.values)
    lengths = torch.tensor(case.lengths, dtype=torch.int32)
    cu = cu_seqlens_from_lengths(lengths)
    packed = CellBatch(gene_ids=torch.cat(ids), values=torch.cat(vals), cu_seqlens=cu,
                       max_seqlen=max(case.lengths))
    packed = mask_batch(packed, mask_fraction, model_config.value_encoding,
                        torch.Generator().manual_seed(seed))
    width = max(case.lengths)
    pad = lambda t: unpack_to_padded(t, cu, width)
    padded = CellBatch(gene_ids=pad(packed.gene_ids), values=pad(packed.values), seq_lens=lengths,
                       mask=pad(packed.mask), targets=pad(packed.targets))
    return {"packed": packed, "padded": padded}


# ----------------------------------------------------------------------------------------------------
# One measurement
# ----------------------------------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _autocast(device: torch.device, precision: str):
    import contextlib

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _graph_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) that torch._dynamo counted since its last reset."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def _device_busy_ms(fn: Callable[[], object], device: torch.device) -> float | None:
    """Sum of the GPU kernel times of one call of ``fn`` (torch.profiler): the step's device work with
    the host's gaps left out. None on the CPU or when the profiler records no kernel."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        synchronize(device)
    total_us = sum(e.device_time_total for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA)
    return total_us / 1e3 if total_us else None


def _measure(provider: TrainProvider, case: TrainCase, layout: str, batch, cfg: TrainBenchConfig,
             device: torch.device, mode: str = "eager") -> dict:
    from sigcell.model import MaskedExpressionModel
    from sigcell.train.config import OptimConfig
    from sigcell.train.optim import build_optimizer

    model_config = load_model_config(cfg.model, cfg.model_overrides, provider.attention)
    torch.manual_seed(cfg.seed)
    model = MaskedExpressionModel(model_config).to(device)
    optimizer = build_optimizer(model, OptimConfig(), device)
    run = model
    if mode != "eager":
        from torch._dynamo.utils import counters

        torch._dynamo.reset()  # a fresh cache per measurement: counts and recompile limits are its own
        counters.clear()
        run = torch.compile(model, mode="reduce-overhead") if mode == "cudagraphs" else torch.compile(model)
    losses: list[torch.Tensor] = []

    def step() -> None:
        with _autocast(device, cfg.precision):
            out = run(batch)
        loss = out.loss_sum.float() / out.n_masked.clamp(min=1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with provider.patch(case, layout):
            first = first_call_ms(step, device)
            graphs, breaks = _graph_counts() if mode != "eager" else (None, None)
            step_times_ms(step, device, cfg.warmup)
            times, host = step_times_ms(step, device, cfg.steps, host_times=True)
            busy = _device_busy_ms(step, device)
        ms = statistics.median(times)
        loss = float(losses[-1])
        rec = {**_case_fields(case), "provider": provider.name, "attention": provider.attention,
               "layout": layout, "compile": mode, "ms": round(ms, 4),
               "host_ms": round(statistics.median(host), 4),
               "gpu_busy_ms": None if busy is None else round(busy, 4), "graphs": graphs,
               "graph_breaks": breaks, "ms_min": round(min(times), 4),
               "ms_max": round(max(times), 4), "first_step_ms": round(first, 2),
               "step_ms": [round(t, 3) for t in times], "steps": cfg.steps, "warmup": cfg.warmup,
               "computed_tokens": case.valid_tokens if layout == "packed" else case.padded_tokens,
               "tokens_per_s": round(case.valid_tokens / (ms * 1e-3), 1),
               "cells_per_s": round(case.cells / (ms * 1e-3), 3),
               "peak_mem_gib": None, "peak_reserved_gib": None, "loss": loss}
        if device.type == "cuda":
            rec["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
            rec["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 3)
        note = provider.note(case, layout)
        if not math.isfinite(loss):
            note = f"{note + '; ' if note else ''}non-finite loss {loss}"
        if note:
            rec["note"] = note
        return rec
    finally:
        losses.clear()


def _case_fields(case: TrainCase) -> dict:
    fields = case.to_json()
    fields.pop("lengths")
    return fields


# ----------------------------------------------------------------------------------------------------
# Derived numbers: ratios and the targets
# ----------------------------------------------------------------------------------------------------


def result_key(rec: dict) -> str:
    """``provider/layout`` or ``provider/layout/compiled``: a measurement's column."""
    mode = rec.get("compile", "eager")
    return f"{rec['provider']}/{rec['layout']}" + ("" if mode == "eager" else f"/{mode}")


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


def ratios(results: list[dict]) -> list[dict]:
    """Per case: sigcell's step time relative to each peer, and the packed layout's tokens/s gains.

    Step-time ratios are ``sigcell ms / peer ms`` (< 1: sigcell is faster), the issue's convention.

    * ``x_best_softmax``: sigcell's faster layout vs the fastest softmax measurement of the case (any
      provider and layout);
    * ``x_tritonsigmoid``: sigcell padded vs TritonSigmoid padded (the same layout: only the kernel differs);
    * ``packed_gain_vs_masked_softmax``: sigcell packed tokens/s over the fastest padded (masked) softmax;
    * ``packed_gain_vs_padded_sigcell``: sigcell packed tokens/s over sigcell padded;
    * ``x_peers``: sigcell's faster layout vs every other measurement of the case.

    Returns
    -------
    One dict per case with at least one sigcell result.
    """
    by_case: dict[str, list[dict]] = {}
    for r in results:
        by_case.setdefault(r["case"], []).append(r)
    out = []
    for case, rows in by_case.items():
        sig: dict[str, dict] = {}  # the faster compile mode of each layout
        for r in rows:
            if r["provider"] == "sigcell" and (r["layout"] not in sig or r["ms"] < sig[r["layout"]]["ms"]):
                sig[r["layout"]] = r
        if not sig:
            continue
        best = min(sig.values(), key=lambda r: r["ms"])
        softmax = [r for r in rows if r["attention"] == "softmax"]
        masked = [r for r in softmax if r["layout"] == "padded"]
        ts = min((r for r in rows if r["provider"] == "tritonsigmoid"), key=lambda r: r["ms"], default=None)
        rec: dict = {"case": case, "kind": rows[0]["kind"], "L": rows[0]["L"], "sigcell": result_key(best),
                     "sigcell_ms": best["ms"], "sigcell_ms_by_layout": {k: v["ms"] for k, v in sig.items()}}
        if softmax:
            top = min(softmax, key=lambda r: r["ms"])
            rec.update(best_softmax=result_key(top), best_softmax_ms=top["ms"],
                       x_best_softmax=_round(best["ms"] / top["ms"]))
        if ts is not None and "padded" in sig:
            rec.update(tritonsigmoid_ms=ts["ms"], x_tritonsigmoid=_round(sig["padded"]["ms"] / ts["ms"]))
        if "packed" in sig:
            tps = sig["packed"]["tokens_per_s"]
            if masked:
                top = max(masked, key=lambda r: r["tokens_per_s"])
                rec.update(masked_softmax=result_key(top),
                           packed_gain_vs_masked_softmax=_round(tps / top["tokens_per_s"]))
            if "padded" in sig:
                rec["packed_gain_vs_padded_sigcell"] = _round(tps / sig["padded"]["tokens_per_s"])
        rec["x_peers"] = {result_key(r): _round(best["ms"] / r["ms"]) for r in rows if r is not best}
        out.append(rec)
    return out


def _target(name: str, case: str | None, value: float | None, op: str, threshold: float,
            detail: str = "") -> dict:
    if value is None:
        status = "not measured"
    else:
        status = "pass" if (value <= threshold if op == "<=" else value >= threshold) else "FAIL"
    return {"target": name, "case": case, "value": value, "op": op, "threshold": threshold, "status": status,
            "detail": detail}


def targets(ratio_rows: list[dict], memory: list[dict] | None, model: str) -> list[dict]:
    """The issue's targets, each with its measured value and ``pass`` / ``FAIL`` / ``not measured``.

    Parameters
    ----------
    ratio_rows
        Output of :func:`ratios`.
    memory
        Results of the single-long-cell check (None when it did not run).
    model
        The model preset the run used (the memory target is about ``base``).
    """
    out = []
    full = [r for r in ratio_rows if r["kind"] == "full"]
    for name, pick, threshold in (
        ("sigmoid step <= 0.95x best softmax (full batch, L = 2k)", lambda r: r["L"] == 2048,
         TARGETS["vs_softmax_2k"]),
        ("sigmoid step <= 0.9x best softmax (full batch, L >= 8k)", lambda r: r["L"] >= 8192,
         TARGETS["vs_softmax_8k"]),
    ):
        rows = [r for r in full if pick(r)]
        for r in rows:
            out.append(_target(name, r["case"], r.get("x_best_softmax"), "<=", threshold,
                               f"{r['sigcell']} vs {r.get('best_softmax', '-')}"))
        if not rows:
            out.append(_target(name, None, None, "<=", threshold, "no such case in this run"))
    rows = [r for r in ratio_rows if r["kind"] in ("full", "padded")]
    hits = [r for r in rows if r.get("x_tritonsigmoid") is not None]
    for r in hits:
        out.append(_target("sigcell step <= 0.75x TritonSigmoid (padded layout)", r["case"],
                           r["x_tritonsigmoid"], "<=", TARGETS["vs_tritonsigmoid"]))
    if not hits:
        out.append(_target("sigcell step <= 0.75x TritonSigmoid (padded layout)", None, None, "<=",
                           TARGETS["vs_tritonsigmoid"], "TritonSigmoid did not run (see skipped)"))
    mixes = [r for r in ratio_rows if r["kind"] == "mix"]
    for key, what in (("packed_gain_vs_masked_softmax", "masked softmax"),
                      ("packed_gain_vs_padded_sigcell", "padded sigmoid")):
        name = f"packed sigmoid tokens/s >= 1.3x {what} (real mixes)"
        for r in mixes:
            out.append(_target(name, r["case"], r.get(key), ">=", TARGETS["packed_gain"],
                               f"vs {r.get('masked_softmax', '-')}" if "softmax" in key else ""))
        if not mixes:
            out.append(_target(name, None, None, ">=", TARGETS["packed_gain"], "no mix in this run"))
    name = "one 16k-gene cell trains on one 80 GB card (peak GB)"
    sig = [m for m in memory or [] if m["provider"] == "sigcell" and m.get("peak_mem_gib") is not None]
    if sig:
        gb = round(sig[0]["peak_mem_gib"] * 2**30 / 1e9, 2)
        detail = f"model preset {model}" + ("" if model == "base" else " (the target is about base)")
        out.append(_target(name, sig[0]["case"], gb, "<=", TARGETS["memory_gb"], detail))
    else:
        out.append(_target(name, None, None, "<=", TARGETS["memory_gb"],
                           "the memory check did not run or did not finish (see skipped)"))
    return out


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------


def _model_summary(cfg: TrainBenchConfig) -> dict:
    from sigcell.model import MaskedExpressionModel

    model_config = load_model_config(cfg.model, cfg.model_overrides, "sigmoid")
    with torch.device("meta"):
        model = MaskedExpressionModel(model_config)
    summary = {"preset": cfg.model, "overrides": cfg.model_overrides,
               "parameters": model.num_parameters(),
               "parameters_without_embeddings": model.num_parameters(embeddings=False),
               "config": {k: v for k, v in asdict(model_config).items() if k != "attention"}}
    del model
    return summary


def run_train_bench(cfg: TrainBenchConfig, log: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """Run the benchmark and write its JSON (and PNG, and print the tables).

    Parameters
    ----------
    cfg
        The run's configuration.
    log
        Where progress lines go (default: print to stdout, flushed).

    Returns
    -------
    (the results dict, the path of the JSON file).
    """
    from sigcell.bench import report, train_report

    log = log or (lambda line: print(line, flush=True))
    device = torch.device(cfg.device)
    started = time.perf_counter()
    stamp = datetime.now(_UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path, png_path = cfg.output_paths(stamp)
    env = collect_environment(device)
    model = _model_summary(cfg)
    log(f"sigcell bench train: {cfg.name} on {env['gpu'] or env['device']}, model {cfg.model} "
        f"({model['parameters'] / 1e6:.1f}M parameters), {cfg.precision}, {len(cfg.cases)} cases x "
        f"{len(cfg.providers)} providers x layouts {','.join(cfg.layouts)} -> {json_path}")
    data: dict = {
        "schema": SCHEMA, "name": cfg.name, "preset": cfg.preset,
        "created": datetime.now(_UTC).isoformat(timespec="seconds"), "argv": cfg.argv, "env": env,
        "model": model,
        "config": {
            "precision": cfg.precision, "dtype": "bf16 autocast" if cfg.precision == "bf16" else "fp32",
            "warmup": cfg.warmup, "steps": cfg.steps, "seed": cfg.seed, "mask_fraction": cfg.mask_fraction,
            "layouts": list(cfg.layouts), "providers": [p.name for p in cfg.providers],
            "step": "forward (autocast) + masked-expression loss + backward + fused AdamW step + zero_grad; "
                    "no gradient clipping; a fresh model from the same seed per measurement",
            "compile_modes": list(cfg.compile_modes),
            "timer": "host clock around each step, device synchronized; median of the timed steps",
            "host_ms": "median time until the step's Python returned (before the final synchronize): the "
                       "host's cost of issuing the step",
            "gpu_busy_ms": "sum of the CUDA kernel times of one profiled step (torch.profiler): device work "
                           "without the host's gaps",
            "compiled": "torch.compile(model) (default mode; 'cudagraphs': mode='reduce-overhead'); the "
                        "optimizer step stays eager; graphs / graph_breaks are torch._dynamo's counters "
                        "after the first step",
            "tokens": "tokens/s and cells/s count the cells' tokens (<cls> + genes), never padding",
            "memory": "peak torch.cuda.max_memory_allocated over the measurement (model, AdamW state, "
                      "activations)",
            "targets": TARGETS,
        },
        "cases": [c.to_json() for c in cfg.cases],
        "results": [], "skipped": [], "memory_check": [], "ratios": [], "targets": [], "complete": False,
    }

    def save() -> None:
        data["elapsed_s"] = round(time.perf_counter() - started, 1)
        data["ratios"] = ratios(data["results"])
        data["targets"] = targets(data["ratios"], data["memory_check"] if cfg.memory_case else None,
                                  cfg.model)
        report.write_json(json_path, data)

    said: set[tuple[str, str]] = set()

    def skip(provider: str, reason: str, case: TrainCase | None = None, layout: str | None = None) -> None:
        data["skipped"].append({"provider": provider, "case": case.label if case else None, "layout": layout,
                                "reason": reason})
        if (provider, reason) not in said:  # each reason is printed once; the JSON has every skip
            said.add((provider, reason))
            where = f" [{case.label} {layout}]" if case else ""
            log(f"  skip {provider}{where}: {reason}")

    model_config = load_model_config(cfg.model, cfg.model_overrides)
    providers = []
    for p in cfg.providers:
        reason = p.unavailable(device, cfg.precision, model_config)
        if reason:
            skip(p.name, reason)
        else:
            providers.append(p)
    peer = next((p for p in cfg.providers if p.name == "tritonsigmoid"), None)
    if peer is not None and device.type == "cuda":
        from sigcell.bench.providers import load_tritonsigmoid

        module, why = load_tritonsigmoid(getattr(peer, "path", None))
        env["tritonsigmoid"] = why if module is not None else None

    def out_of_time() -> bool:
        return cfg.time_limit_s is not None and time.perf_counter() - started > cfg.time_limit_s

    def run_case(case: TrainCase, layouts: tuple[str, ...], sink: list[dict], tag: str) -> None:
        try:
            batches = make_batches(case, model_config, cfg.mask_fraction, cfg.seed)
        except ValueError as err:
            skip("*", f"cannot build the batch: {err}", case)
            return
        log(f"{tag} {case.label}: {case.cells} cells, {case.valid_tokens} tokens "
            f"({case.padded_tokens} padded)")
        for layout in layouts:
            batch = batches[layout].to(device)
            for provider, mode in itertools.product(providers, modes):
                reason = provider.skip_reason(case, layout)
                if reason:
                    skip(provider.name, reason, case, layout)
                    continue
                if out_of_time():
                    skip(provider.name, f"time limit of {cfg.time_limit_s:g} s reached", case, layout)
                    continue
                try:
                    rec = _measure(provider, case, layout, batch, cfg, device, mode)
                except _OOM as err:
                    skip(provider.name, f"out of memory: {_first_line(err)}", case, layout)
                    continue
                except Exception as err:  # one provider's failure is recorded, the run goes on
                    skip(provider.name, _first_line(err), case, layout)
                    continue
                finally:
                    _free(device)  # the model and its optimizer state are gone once _measure returns
                sink.append(rec)
                mem = f", {rec['peak_mem_gib']:.1f} GiB" if rec["peak_mem_gib"] is not None else ""
                busy = f", GPU {rec['gpu_busy_ms']:.2f}" if rec["gpu_busy_ms"] is not None else ""
                graphs = (f", {rec['graphs']} graphs / {rec['graph_breaks']} breaks"
                          if rec["graphs"] is not None else "")
                log(f"  {provider.name:<15} {layout:<7} {mode:<8} {rec['ms']:>9.2f} ms/step (host "
                    f"{rec['host_ms']:.2f}{busy})  {rec['tokens_per_s'] / 1e3:>9.1f} k tok/s{mem}"
                    f"   (first step {rec['first_step_ms']:.0f} ms{graphs})")
            del batch
            _free(device)

    modes = cfg.compile_modes
    total = len(cfg.cases) + (cfg.memory_case is not None)
    if cfg.memory_case is not None:
        modes = ("eager",)  # the memory check measures the model, not the compiler
        run_case(cfg.memory_case, ("padded",), data["memory_check"], f"[memory 1/{total}]")
        modes = cfg.compile_modes
        for m in data["memory_check"]:
            m["fits_80gb"] = m["peak_mem_gib"] is not None and m["peak_mem_gib"] * 2**30 <= 80e9
        save()
    for i, case in enumerate(cfg.cases):
        run_case(case, cfg.layouts, data["results"], f"[{i + 1 + (total - len(cfg.cases))}/{total}]")
        save()

    data["complete"] = True
    save()
    if cfg.table:
        train_report.print_train_tables(data, out=sys.stdout)
    if cfg.plot:
        reason = train_report.plot_train_png(data, png_path)
        if reason:
            log(f"  no PNG: {reason}")
        else:
            data["png"] = png_path.name
            report.write_json(json_path, data)
            log(f"wrote {png_path}")
    log(f"wrote {json_path} ({len(data['results'])} results, {len(data['skipped'])} skips, "
        f"{data['elapsed_s']} s)")
    return data, json_path


# ----------------------------------------------------------------------------------------------------
# --dry-run estimate
# ----------------------------------------------------------------------------------------------------

# Rates calibrated on the anchor (H200, base model, bf16): the non-attention work of a step runs at
# about 160 TFLOP/s (6 x parameters x tokens), attention forward + backward at about 350 TFLOP/s.
_DENSE_RATE = 160e12
_ATTN_RATE = 350e12
_SETUP_S = 1.5  # building the model, moving the batch, the first step's launch work


def plan(cfg: TrainBenchConfig) -> list[tuple[TrainCase, str, TrainProvider]]:
    """Every (case, layout, provider) the run would measure (the memory check first)."""
    items = []
    if cfg.memory_case is not None:
        items += [(cfg.memory_case, "padded", p) for p in cfg.providers
                  if p.skip_reason(cfg.memory_case, "padded") is None]
    for case in cfg.cases:
        for layout in cfg.layouts:
            items += [(case, layout, p) for p in cfg.providers for _ in cfg.compile_modes
                      if p.skip_reason(case, layout) is None]
    return items


def step_ms_estimate(case: TrainCase, layout: str, dense_params: int, d_model: int, n_layers: int) -> float:
    """A rough GPU time of one step in ms (see the rates above); ignores which attention runs."""
    tokens = case.valid_tokens if layout == "packed" else case.padded_tokens
    dense = 6 * dense_params * tokens
    attn = 3.5 * 4 * d_model * case.attention_pairs(layout) * n_layers
    return (dense / _DENSE_RATE + attn / _ATTN_RATE) * 1e3


def estimate_seconds(cfg: TrainBenchConfig) -> tuple[int, float]:
    """Number of measurements and a rough GPU time in seconds (first-call compilation not included)."""
    summary = _model_summary(cfg)
    mc = summary["config"]
    items = plan(cfg)
    seconds = 0.0
    for case, layout, _ in items:
        ms = step_ms_estimate(case, layout, summary["parameters_without_embeddings"], mc["d_model"],
                              mc["n_layers"])
        seconds += _SETUP_S + (1 + cfg.warmup + cfg.steps) * ms / 1e3
    return len(items), seconds
