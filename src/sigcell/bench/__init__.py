"""Benchmarks of sigcell's attention kernels against their peers (``sigcell bench kernels``).

``python -m sigcell.bench kernels --preset paper`` runs the shapes of DESIGN.md's table, writes
``benchmarks/results/<name>-<timestamp>.json`` and ``.png`` and prints sigcell's ratio to each peer.
"""

from sigcell.bench.cases import PRESETS, Case, attention_flops, build_cases
from sigcell.bench.kernels import KernelBenchConfig, run_kernel_bench

__all__ = ["PRESETS", "Case", "KernelBenchConfig", "attention_flops", "build_cases", "run_kernel_bench"]
