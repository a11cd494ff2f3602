"""Timers: ``triton.testing.do_bench`` (median) on CUDA, a host-clock median on the CPU, the matmul rate."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["bench_ms", "first_call_ms", "matmul_tflops", "step_times_ms", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call including everything it waits for (compilation, autotuning), in ms."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def step_times_ms(fn: Callable[[], object], device: torch.device, steps: int, *,
                  host_times: bool = False) -> list[float] | tuple[list[float], list[float]]:
    """Wall time of each of ``steps`` calls of ``fn`` in ms, the device synchronized around every call.

    For whole training steps (tens of ms, host work included): unlike :func:`bench_ms` the caches are not
    flushed and the host's share of a step is counted, as a training loop sees it.

    ``host_times=True`` also returns, per call, the time until ``fn`` returned (before the final
    synchronize): the host's cost of issuing the step. When it is close to the wall time the step is
    host-bound; a device sync inside ``fn`` makes it include device time.
    """
    times, host = [], []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        issued = time.perf_counter()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
        host.append((issued - start) * 1e3)
    return (times, host) if host_times else times


def _host_median_ms(fn: Callable[[], object], warmup_ms: float, rep_ms: float, min_reps: int = 3,
                    max_reps: int = 1000) -> float:
    deadline = time.perf_counter() + warmup_ms / 1e3
    fn()
    while time.perf_counter() < deadline:
        fn()
    times: list[float] = []
    stop = time.perf_counter() + rep_ms / 1e3
    while len(times) < min_reps or (time.perf_counter() < stop and len(times) < max_reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_ms(fn: Callable[[], object], device: torch.device, *, warmup_ms: float = 25.0,
             rep_ms: float = 100.0) -> float:
    """Median time of one call of ``fn`` in milliseconds.

    On CUDA: ``triton.testing.do_bench(fn, warmup, rep, return_mode="median")`` (CUDA events, L2 flushed
    between calls). On the CPU: the median of a host clock over at least three calls and about ``rep_ms`` of
    calls.
    """
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    return _host_median_ms(fn, warmup_ms, rep_ms)


def matmul_tflops(device: torch.device, dtype: torch.dtype = torch.bfloat16, size: int = 8192, *,
                  warmup_ms: float = 25.0, rep_ms: float = 100.0) -> dict:
    """Rate of one ``size``-cubed ``torch.matmul`` (``2 * size**3`` FLOPs): the card's practical roofline.

    Returns
    -------
    dict with ``shape``, ``dtype``, ``ms`` and ``tflops``.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)
    ms = bench_ms(lambda: torch.matmul(a, b), device, warmup_ms=warmup_ms, rep_ms=rep_ms)
    return {"shape": [size, size, size], "dtype": str(dtype).removeprefix("torch."), "ms": round(ms, 4),
            "tflops": round(2 * size**3 / (ms * 1e-3) / 1e12, 1)}
