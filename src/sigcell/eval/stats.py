"""Paired statistics of ``sigcell compare``: seed-paired differences, bootstrap intervals, verdicts.

A difference is always oriented so that a positive value means sigmoid is better (for a metric where lower
is better the sign is flipped). Its interval is a percentile bootstrap over the paired seeds with a fixed
generator, so the same runs give the same summary on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["RELATIVE_FLOOR", "bootstrap_interval", "paired_verdict", "relative_change"]

# Relative changes are reported only against a softmax value at least this far from zero: near zero
# (NMI 0.01, ARI 0.005) a relative change is huge and says nothing (+1342 % ARI); below it the report
# gives the absolute difference.
RELATIVE_FLOOR = 0.1
N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0


def bootstrap_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the mean of ``diffs`` (resampling the pairs), or None with
    fewer than two pairs. With very few pairs the interval is coarse (with 3 pairs it can only take the
    values of means of 3 resampled pairs), which is why verdicts also need a clear sign."""
    d = np.asarray([x for x in diffs if math.isfinite(x)], dtype=np.float64)
    if d.size < 2:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = d[rng.integers(0, d.size, size=(N_BOOTSTRAP, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def relative_change(sigmoid: float, softmax: float) -> float | None:
    """``(sigmoid - softmax) / |softmax|`` in percent, or None where softmax is within
    :data:`RELATIVE_FLOOR` of zero (or not finite)."""
    if not (math.isfinite(sigmoid) and math.isfinite(softmax)) or abs(softmax) < RELATIVE_FLOOR:
        return None
    return (sigmoid - softmax) / abs(softmax) * 100


def paired_verdict(interval: tuple[float, float] | None, learned: bool | None) -> str:
    """``"sigmoid better"`` / ``"softmax better"`` only when the interval of the oriented difference
    excludes 0 and both models beat their random-initialisation control (``learned``; None: no control for
    this metric); ``"no clear difference"`` otherwise, or ``"not learned"`` when a model is at the control's
    level (a difference between two untrained embeddings says nothing about attention)."""
    if learned is False:
        return "not learned"
    if interval is None:
        return "no clear difference"
    lo, hi = interval
    if lo > 0:
        return "sigmoid better"
    if hi < 0:
        return "softmax better"
    return "no clear difference"
