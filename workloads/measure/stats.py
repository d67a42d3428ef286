"""Summaries of timing samples: medians and bootstrap confidence intervals (scipy)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

CONFIDENCE = 0.95
_RESAMPLES = 4000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval."""

    median: float
    lo: float
    hi: float

    def as_dict(self) -> dict:
        return {"median": self.median, "ci": [self.lo, self.hi]}


def _ci(data: tuple, statistic, *, paired: bool, seed: int) -> tuple[float, float]:
    # Percentile intervals: BCa degenerates on the handful of rounds a GPU case affords.
    res = _st.bootstrap(
        data,
        statistic,
        paired=paired,
        vectorized=True,
        n_resamples=_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    lo, hi = res.confidence_interval
    return float(lo), float(hi)


def summarize(samples, *, seed: int = 0) -> Estimate:
    """Median of `samples` with a bootstrap interval; a single sample has a zero-width interval."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    med = float(np.median(x))
    if x.size < 2 or np.all(x == x[0]):
        return Estimate(med, med, med)
    lo, hi = _ci((x,), lambda a, axis=-1: np.median(a, axis=axis), paired=False, seed=seed)
    return Estimate(med, lo, hi)


def ratio_of_medians(numerator, denominator, *, paired: bool, seed: int = 0) -> Estimate:
    """median(numerator) / median(denominator) with a bootstrap interval.

    Paired for samples taken interleaved in one process (round i of A next to round i of B),
    so that drift common to both cancels; unpaired for samples from two different runs.
    """
    a = np.asarray(numerator, dtype=float)
    b = np.asarray(denominator, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("no samples for a ratio")
    if paired and a.size != b.size:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    point = float(np.median(a) / np.median(b))

    def stat(x, y, axis=-1):
        return np.median(x, axis=axis) / np.median(y, axis=axis)

    if a.size < 2 or b.size < 2:
        return Estimate(point, point, point)
    if np.all(a == a[0]) and np.all(b == b[0]):
        return Estimate(point, point, point)
    lo, hi = _ci((a, b), stat, paired=paired, seed=seed)
    return Estimate(point, min(lo, point), max(hi, point))
