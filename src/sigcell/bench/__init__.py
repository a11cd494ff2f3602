"""Benchmarks of sigcell's attention kernels against their peers (``sigcell bench kernels``).

``python -m sigcell.bench kernels --preset paper`` runs the paper's shapes (the README's kernel table),
writes ``benchmarks/results/<name>-<timestamp>.json`` and ``.png`` and prints sigcell's ratio to each peer.
"""

from __future__ import annotations

from sigcell.bench.cases import PRESETS, Case, attention_flops, build_cases

__all__ = ["PRESETS", "Case", "KernelBenchConfig", "attention_flops", "build_cases", "run_kernel_bench"]


def __getattr__(name: str):
    # The kernel benchmark imports torch and Triton: loaded on first use (the CLI's --help stays quick).
    if name in ("KernelBenchConfig", "run_kernel_bench"):
        from sigcell.bench import kernels

        return getattr(kernels, name)
    msg = f"module 'sigcell.bench' has no attribute {name!r}"
    raise AttributeError(msg)
