"""Student-t confidence intervals over seeds: the one place the toolkit computes them
(topology's families and dense differences, search's best-so-far curves, the benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
               axis: int | None = None) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Mean and half-width of the Student-t interval of ``values`` along ``axis`` (all of
    them when None), NaN left out: each position counts only its finite values, and the
    half-width is NaN where fewer than two remain (the mean too where none does)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    data = np.asarray(values, dtype=float)
    count = np.sum(~np.isnan(data), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(data, axis=axis)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        centred = np.where(np.isnan(data), 0.0, data - (mean if axis is None else np.expand_dims(mean, axis)))
        variance = np.sum(centred ** 2, axis=axis) / (count - 1)
        half = stats.t.ppf(0.5 + confidence / 2, count - 1) * np.sqrt(variance / count)
    half = np.where(count >= 2, half, np.nan)
    if np.ndim(mean) == 0:
        return float(mean), float(half)
    return mean, half
