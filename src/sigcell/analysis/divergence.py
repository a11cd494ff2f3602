"""Divergence detection on a stream of per-step training metrics."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

__all__ = ["DivergenceDetector", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """Why and where a run diverged.

    Attributes
    ----------
    step
        The optimizer step (1-based) whose metrics triggered the detection.
    reason
        ``"nonfinite"`` (NaN / inf loss or gradient norm) or ``"grad_norm"`` (gradient norm above
        ``factor`` times its early median).
    detail
        A human-readable sentence with the numbers.
    """

    step: int
    reason: str
    detail: str


@dataclass
class DivergenceDetector:
    """Flags a run as diverged from its loss and global gradient norm, one step at a time.

    A run diverges at the first step whose loss or gradient norm is not finite, or whose gradient norm
    exceeds ``factor`` times the median gradient norm of its first ``window`` steps (the "early median",
    fixed once those steps are seen; no grad-norm verdict is possible before that).

    Parameters
    ----------
    factor
        Multiple of the early median that counts as divergence (> 1).
    window
        Number of first steps whose median is the reference (>= 1).

    Examples
    --------
    >>> det = DivergenceDetector(factor=10, window=3)
    >>> [det.update(s, 1.0, g) for s, g in enumerate([1.0, 2.0, 1.5, 30.0], 1)][-1].reason
    'grad_norm'
    """

    factor: float = 100.0
    window: int = 20
    history: list[float] = field(default_factory=list, repr=False)
    early_median: float | None = None
    verdict: Verdict | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor) and self.factor > 1):
            msg = (f"DivergenceDetector: factor must be a finite number > 1, got {self.factor!r}; "
                   "100 is typical")
            raise ValueError(msg)
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            msg = f"DivergenceDetector: window must be an integer >= 1, got {self.window!r}"
            raise ValueError(msg)

    def update(self, step: int, loss: float, grad_norm: float) -> Verdict | None:
        """Feed one step's metrics; returns the verdict at the diverging step, else None.

        After a verdict the detector keeps returning it (a diverged run stays diverged).
        """
        if self.verdict is not None:
            return self.verdict
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.verdict = Verdict(step, "nonfinite", f"non-finite value at step {step}: loss {loss}, "
                                                      f"gradient norm {grad_norm}")
            return self.verdict
        self.history.append(float(grad_norm))
        if self.early_median is None:
            if len(self.history) >= self.window:
                # The median ignores the large first-step norms of a fresh initialization.
                self.early_median = statistics.median(self.history[: self.window])
            return None
        if grad_norm > self.factor * self.early_median:
            self.verdict = Verdict(step, "grad_norm",
                                   f"gradient norm {grad_norm:.3g} at step {step} exceeds "
                                   f"{self.factor:g} x the "
                                   f"early median {self.early_median:.3g} (first {self.window} steps)")
        return self.verdict

    def ratio(self, grad_norm: float) -> float | None:
        """``grad_norm`` over the early median (None before the median is known)."""
        if self.early_median is None or self.early_median <= 0:
            return None
        return grad_norm / self.early_median


def detect(grad_norms: list[float], losses: list[float] | None = None, *, factor: float = 100.0,
           window: int = 20) -> Verdict | None:
    """Run a :class:`DivergenceDetector` over whole series (steps numbered from 1).

    Parameters
    ----------
    grad_norms
        Global gradient norm of each step.
    losses
        Loss of each step (same length); None treats every loss as finite.

    Returns
    -------
    The first verdict, or None if the series never diverges.
    """
    if losses is not None and len(losses) != len(grad_norms):
        msg = (f"detect: losses has {len(losses)} entries but grad_norms has {len(grad_norms)}; "
               "pass equal lengths")
        raise ValueError(msg)
    det = DivergenceDetector(factor=factor, window=window)
    for i, g in enumerate(grad_norms):
        verdict = det.update(i + 1, 0.0 if losses is None else losses[i], g)
        if verdict is not None:
            return verdict
    return None
