"""Divergence detection on constructed gradient-norm series."""

import math

import pytest
import torch

from sigcell.analysis.divergence import DivergenceDetector, detect


def _noise(n: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (1.0 + 0.2 * torch.rand(n, generator=g)).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stable_series_never_diverges(seed):
    assert detect(_noise(300, seed), factor=10, window=20) is None


@pytest.mark.parametrize(("spike_at", "seed"), [(25, 3), (120, 4), (299, 5)])
def test_spike_is_found_at_its_step(spike_at, seed):
    series = _noise(300, seed)
    series[spike_at - 1] = 50.0  # steps are 1-based
    verdict = detect(series, factor=10, window=20)
    assert verdict is not None and verdict.reason == "grad_norm" and verdict.step == spike_at


def test_growth_below_the_factor_is_not_divergence():
    series = _noise(40, 6) + [8.0] * 10  # 8x the early median, factor 10
    assert detect(series, factor=10, window=20) is None
    assert detect(series, factor=5, window=20).step == 41


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_grad_or_loss(bad):
    series = _noise(10, 7)
    series[3] = bad
    verdict = detect(series, factor=10, window=20)
    assert verdict.reason == "nonfinite" and verdict.step == 4  # even before the window is full
    losses = [1.0] * 10
    losses[6] = bad
    assert detect(_noise(10, 8), losses, factor=10, window=20).step == 7


def test_no_grad_verdict_before_the_window_and_median_is_robust():
    series = [100.0] + [1.0] * 19 + [60.0]  # a large first step does not move the median
    det = DivergenceDetector(factor=50, window=20)
    verdicts = [det.update(i + 1, 0.0, g) for i, g in enumerate(series)]
    assert verdicts[:20] == [None] * 20
    assert det.early_median == 1.0 and verdicts[20].step == 21
    assert det.update(22, 0.0, 1.0) is verdicts[20]  # a diverged run stays diverged
    assert det.ratio(3.0) == 3.0


@pytest.mark.parametrize(("factor", "window"), [(1.0, 20), (math.nan, 20), (10, 0), (10, 2.5)])
def test_bad_settings(factor, window):
    with pytest.raises(ValueError, match=r"factor|window"):
        DivergenceDetector(factor=factor, window=window)


def test_detect_length_mismatch():
    with pytest.raises(ValueError, match="equal lengths"):
        detect([1.0, 2.0], [1.0])
