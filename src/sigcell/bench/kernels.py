"""The kernel benchmark: every case x provider x mode, timed, with skips and cold starts recorded.

The results file is rewritten after every case, so a run that is stopped early still leaves its numbers.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from sigcell.bench.cases import MODES, Case
from sigcell.bench.checks import accuracy_checks
from sigcell.bench.environment import collect_environment
from sigcell.bench.providers import Provider, Workload
from sigcell.bench.timing import bench_ms, first_call_ms, matmul_tflops

__all__ = ["DTYPES", "KernelBenchConfig", "run_kernel_bench"]

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SCHEMA = "sigcell.bench.kernels/1"
_UTC = timezone.utc  # noqa: UP017 (datetime.UTC needs Python 3.11; GPU machines may have older)
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class KernelBenchConfig:
    """Everything one run needs; the CLI fills it from a preset and the flags."""

    name: str
    cases: list[Case]
    providers: list[Provider]
    modes: tuple[str, ...] = ("fwd", "bwd")
    dtype: str = "bf16"
    device: str = "cuda"
    warmup_ms: float = 25.0  # do_bench warmup per measurement
    rep_ms: float = 100.0  # do_bench measuring time per measurement
    seed: int = 0
    matmul: bool = True  # measure the bf16 8192^3 matmul rate in the same run
    check: bool = True  # accuracy check of sigcell's entry points before timing
    time_limit_s: float | None = None  # stop starting new cases after this long
    out: Path = Path("benchmarks/results")
    plot: bool = True
    table: bool = True
    argv: list[str] = field(default_factory=list)
    preset: str | None = None
    plan_only: bool = False  # --dry-run: no device needed

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            msg = f"unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}"
            raise ValueError(msg)
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            msg = f"modes must be a non-empty subset of {list(MODES)}, got {list(self.modes)}"
            raise ValueError(msg)
        if not self.cases:
            msg = "no case to run: check --d / --l / --padding / --causal"
            raise ValueError(msg)
        if self.warmup_ms < 0 or self.rep_ms <= 0:
            msg = f"--warmup-ms must be >= 0 and --rep-ms > 0, got {self.warmup_ms} and {self.rep_ms}"
            raise ValueError(msg)
        if self.device.startswith("cuda") and not torch.cuda.is_available() and not self.plan_only:
            msg = "--device cuda was asked for but torch sees no CUDA device; use --device cpu"
            raise ValueError(msg)

    def output_paths(self, stamp: str) -> tuple[Path, Path]:
        """The JSON and PNG paths: ``out/<name>-<stamp>.json`` or, if ``out`` ends in .json, that file."""
        if self.out.suffix == ".json":
            return self.out, self.out.with_suffix(".png")
        base = self.out / f"{self.name}-{stamp}"
        return base.with_suffix(".json"), base.with_suffix(".png")


def _timed_fn(wl: Workload, mode: str) -> Callable[[], object]:
    """The closure to time: forward, backward alone (forward run once outside), or both."""
    if mode == "fwd":
        return wl.fwd
    grad = torch.randn_like(wl.inputs[0])
    if mode == "bwd":
        out = wl.fwd()
        return lambda: torch.autograd.grad(out, wl.inputs, grad, retain_graph=True)
    return lambda: torch.autograd.grad(wl.fwd(), wl.inputs, grad)


def _sig(x: float) -> float:
    """Five significant digits (TFLOPS of tiny CPU cases are far below 0.01)."""
    return float(f"{x:.5g}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _shape_fields(case: Case) -> dict:
    return {"case": case.label, "D": case.head_dim, "L": case.seq_len, "B": case.batch, "H": case.heads,
            "padding": case.padding, "causal": case.causal, "lengths_source": case.lengths_source,
            "valid_tokens": case.valid_tokens}


def _measure(provider: Provider, case: Case, mode: str, cfg: KernelBenchConfig, device: torch.device,
             dtype: torch.dtype) -> dict:
    wl = provider.build(case, device, dtype, mode != "fwd", cfg.seed)
    fn = _timed_fn(wl, mode)
    cold = first_call_ms(fn, device)
    ms = bench_ms(fn, device, warmup_ms=cfg.warmup_ms, rep_ms=cfg.rep_ms)
    flops = case.flops(mode)
    rec = {**_shape_fields(case), "provider": provider.name, "attention": provider.attention,
           "sigcell": provider.sigcell, "mode": mode, "ms": round(ms, 5), "flops": flops,
           "tflops": _sig(flops / (ms * 1e-3) / 1e12), "first_call_ms": round(cold, 3)}
    if wl.computed_lengths is not None:
        computed = Case(case.head_dim, case.seq_len, case.batch, case.heads, 0.0, case.causal,
                        wl.computed_lengths).flops(mode)
        rec["computed_tflops"] = _sig(computed / (ms * 1e-3) / 1e12)
    if wl.note:
        rec["note"] = wl.note
    return rec


def run_kernel_bench(cfg: KernelBenchConfig, log: Callable[[str], None] | None = None) -> tuple[dict, Path]:
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
    from sigcell.bench import report

    log = log or (lambda line: print(line, flush=True))
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    started = time.perf_counter()
    stamp = datetime.now(_UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path, png_path = cfg.output_paths(stamp)
    env = collect_environment(device)
    log(f"sigcell bench kernels: {cfg.name} on {env['gpu'] or env['device']}, {cfg.dtype}, {len(cfg.cases)} "
        f"cases x {len(cfg.providers)} providers x modes {','.join(cfg.modes)} -> {json_path}")
    data: dict = {
        "schema": SCHEMA, "name": cfg.name, "preset": cfg.preset,
        "created": datetime.now(_UTC).isoformat(timespec="seconds"), "argv": cfg.argv,
        "env": env,
        "config": {
            "dtype": cfg.dtype, "modes": list(cfg.modes), "warmup_ms": cfg.warmup_ms, "rep_ms": cfg.rep_ms,
            "seed": cfg.seed, "providers": [p.name for p in cfg.providers],
            "timer": "triton.testing.do_bench median" if device.type == "cuda" else "host clock median",
            "flops": "fwd 4*H*D*sum(L_i^2) over valid tokens (half if causal); bwd 2.5x, fwd+bwd 3.5x",
        },
        "cases": [{"case": c.label, **c.to_json()} for c in cfg.cases],
        "matmul": None, "checks": [], "results": [], "skipped": [], "cold_start": [], "ratios": [],
        "complete": False,
    }

    def save() -> None:
        data["elapsed_s"] = round(time.perf_counter() - started, 1)
        data["cold_start"] = report.cold_starts(data["results"])
        data["ratios"] = report.ratios(data["results"], data["matmul"])
        report.write_json(json_path, data)

    def skip(provider: str, reason: str, case: Case | None = None, mode: str | None = None) -> None:
        data["skipped"].append({"provider": provider, "case": case.label if case else None, "mode": mode,
                                "reason": reason})
        where = f" [{case.label}{' ' + mode if mode else ''}]" if case else ""
        log(f"  skip {provider}{where}: {reason}")

    providers = []
    for p in cfg.providers:
        reason = p.unavailable(device)
        if reason:
            skip(p.name, reason)
        else:
            providers.append(p)
    env["tritonsigmoid"] = next((why for p in cfg.providers if p.name.startswith("tritonsigmoid")
                                 for why in [_tritonsigmoid_version(p)] if why), None)

    if cfg.matmul:
        if device.type == "cuda":
            try:
                data["matmul"] = matmul_tflops(device, warmup_ms=cfg.warmup_ms, rep_ms=cfg.rep_ms)
                log(f"  bf16 8192^3 matmul: {data['matmul']['tflops']} TFLOPS")
            except Exception as err:  # a broken matmul must not cost the attention numbers
                skip("matmul", _first_line(err))
            _free(device)
        else:
            skip("matmul", "the matmul roofline is measured on CUDA only")

    if cfg.check and any(p.sigcell for p in providers):
        try:
            data["checks"] = accuracy_checks(device, dtype, sorted({c.head_dim for c in cfg.cases}),
                                             sorted({c.causal for c in cfg.cases}), seed=cfg.seed)
            for c in data["checks"]:
                log(f"  check {c['provider']} D{c['D']}{' causal' if c['causal'] else ''}: rel err "
                    f"{c['rel_err']:.2e} (plain PyTorch {cfg.dtype}: {c['baseline_rel_err']:.2e})"
                    f"{'' if c['ok'] else '  <-- MORE THAN 2x THE PRECISION ERROR'}")
        except Exception as err:
            skip("accuracy-check", _first_line(err))
        _free(device)
    save()

    for i, case in enumerate(cfg.cases):
        if cfg.time_limit_s is not None and time.perf_counter() - started > cfg.time_limit_s:
            for rest in cfg.cases[i:]:
                skip("*", f"time limit of {cfg.time_limit_s:g} s reached before this case", rest)
            break
        log(f"[{i + 1}/{len(cfg.cases)}] {case.label}: B={case.batch} H={case.heads} "
            f"valid {case.valid_tokens}/{case.batch * case.seq_len} tokens")
        for provider in providers:
            if not provider.applies(case):
                continue
            for mode in cfg.modes:
                try:
                    rec = _measure(provider, case, mode, cfg, device, dtype)
                except _OOM as err:
                    reason = f"out of memory: {_first_line(err)}"
                    rec = None
                except Exception as err:  # any failure of one provider is recorded, the run goes on
                    reason = _first_line(err)
                    rec = None
                if rec is None:
                    skip(provider.name, reason, case, mode)
                    _free(device)
                    continue
                data["results"].append(rec)
                log(f"  {provider.name:<22} {mode:<8} {rec['ms']:>10.4f} ms {rec['tflops']:>8.1f} TFLOPS"
                    f"   (first call {rec['first_call_ms']:.0f} ms)")
        _free(device)
        save()

    data["complete"] = True
    save()
    if cfg.table:
        report.print_tables(data, out=sys.stdout)
    if cfg.plot:
        reason = report.plot_png(data, png_path)
        if reason:
            log(f"  no PNG: {reason}")
        else:
            data["png"] = png_path.name
            report.write_json(json_path, data)
            log(f"wrote {png_path}")
    log(f"wrote {json_path} ({len(data['results'])} results, {len(data['skipped'])} skips, "
        f"{data['elapsed_s']} s)")
    return data, json_path


def _tritonsigmoid_version(provider: Provider) -> str | None:
    from sigcell.bench.providers import load_tritonsigmoid

    if not torch.cuda.is_available():
        return None
    module, why = load_tritonsigmoid(getattr(provider, "path", None))
    return why if module is not None else None


# Rough rates (FLOP/s) of the slow providers, used only by the --dry-run estimate.
_SLOW_RATES = {"torch-sigmoid": 50e12, "sdpa-math": 50e12}


def estimate_seconds(cfg: KernelBenchConfig) -> tuple[int, float]:
    """Number of measurements and a rough GPU timing estimate in seconds (compilation not included)."""
    count, seconds = 0, 0.0
    per = 1.3 * (cfg.warmup_ms + cfg.rep_ms) / 1e3 + 0.05
    for case in cfg.cases:
        for p in cfg.providers:
            if not p.applies(case):
                continue
            for mode in cfg.modes:
                count += 1
                seconds += per + 10 * case.flops(mode) / _SLOW_RATES.get(p.name, float("inf"))
    return count, seconds
