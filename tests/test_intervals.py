"""graphprior.intervals.t_interval: the Student-t interval, NaN-aware, per axis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import stats

from graphprior.intervals import t_interval

finite = st.floats(-1e3, 1e3, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-6)  # scipy underflows below


@given(st.lists(finite, min_size=2, max_size=30), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_it_is_scipy_s_t_interval(values: list[float], confidence: float) -> None:
    mean, half = t_interval(values, confidence)
    assert mean == pytest.approx(np.mean(values), abs=1e-9)
    if np.ptp(values) > 0:
        low, high = stats.t.interval(confidence, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert (mean - half, mean + half) == pytest.approx((low, high), rel=1e-9, abs=1e-9)
    else:
        assert half == pytest.approx(0.0, abs=1e-9)


@given(st.lists(st.lists(st.one_of(finite, st.just(math.nan)), min_size=4, max_size=4), min_size=1, max_size=8))
def test_along_an_axis_each_position_counts_its_finite_values(rows: list[list[float]]) -> None:
    data = np.array(rows)
    mean, half = t_interval(data, axis=0)
    for j in range(data.shape[1]):
        column = data[:, j][~np.isnan(data[:, j])]
        one_mean, one_half = t_interval(column)
        assert (math.isnan(mean[j]) and math.isnan(one_mean)) or mean[j] == pytest.approx(one_mean)
        assert (math.isnan(half[j]) and math.isnan(one_half)) or half[j] == pytest.approx(one_half)
        assert math.isnan(half[j]) == (len(column) < 2)


def test_fewer_than_two_values_give_no_width_and_bad_confidence_is_named() -> None:
    assert t_interval([]) == pytest.approx((math.nan, math.nan), nan_ok=True)
    mean, half = t_interval([0.7])
    assert mean == 0.7 and math.isnan(half)
    assert t_interval([1.0, 2.0, 3.0])[1] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.5"):
        t_interval([1.0, 2.0], 1.5)
