"""The paired statistics of the compare report (sigcell.eval.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from sigcell.eval.stats import bootstrap_interval, paired_verdict, relative_change


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.05, 0.02, size=6).tolist()
    lo, hi = bootstrap_interval(diffs)
    assert lo <= float(np.mean(diffs)) <= hi and lo > 0
    assert bootstrap_interval(diffs) == (lo, hi)  # fixed generator: the same summary every time
    assert bootstrap_interval([0.1]) is None and bootstrap_interval([]) is None
    assert bootstrap_interval([0.1, float("nan")]) is None  # one finite pair only
    wide = bootstrap_interval([-0.3, 0.1, 0.4, -0.2, 0.05])
    assert wide[0] < 0 < wide[1]


def test_relative_change_only_away_from_zero():
    assert relative_change(0.6, 0.5) == pytest.approx(20.0)
    assert relative_change(0.13, 0.009) is None  # +1344 % of an ARI near 0 says nothing: absolute instead
    assert relative_change(-0.4, -0.5) == pytest.approx(20.0)
    assert relative_change(float("nan"), 0.5) is None


@pytest.mark.parametrize(
    ("interval", "learned", "expected"),
    [
        ((0.01, 0.05), True, "sigmoid better"),
        ((-0.05, -0.01), True, "softmax better"),
        ((-0.01, 0.05), True, "no clear difference"),
        ((0.01, 0.05), False, "not learned"),  # both near the untrained control: no verdict on attention
        ((0.01, 0.05), None, "sigmoid better"),  # a metric without a control (the loss)
        (None, True, "no clear difference"),
    ],
)
def test_paired_verdict(interval, learned, expected):
    assert paired_verdict(interval, learned) == expected
