"""Head over base with an interval, and the smallest change worth calling one."""
from __future__ import annotations

import numpy as np

from ..measure.stats import CONFIDENCE, Estimate

RESAMPLES = 2000
SEED = 0


def _medians(processes: list[list[float]]) -> list[float]:
    return [float(np.median(p)) for p in processes]


def center(processes: list[list[float]]) -> float:
    """A side's figure: the median of its processes' medians."""
    return float(np.median(_medians(processes)))


def _draws(processes: list[list[float]], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """`resamples` bootstrap draws of `center`: processes drawn with replacement, then each drawn
    process's rounds drawn again, each slot on its own."""
    n = len(processes)
    pick = rng.integers(0, n, size=(resamples, n))
    med = np.empty((resamples, n))
    for p, rounds in enumerate(processes):
        x = np.asarray(rounds, dtype=float)
        slots = pick == p
        k = int(slots.sum())
        if k:
            med[slots] = np.median(x[rng.integers(0, x.size, size=(k, x.size))], axis=1)
    return np.median(med, axis=1)


def ratio(base: list[list[float]], head: list[list[float]], *, resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """head/base of `center`, with a percentile interval from a hierarchical bootstrap. Rounds
    of one process share its host state and its compile, so processes are the unit and rounds
    are drawn within them; scipy's bootstrap has no hierarchical resampling, hence this one.
    With one value a process (GPU time), processes are all that is drawn."""
    rng = np.random.default_rng(seed)
    draws = _draws(head, rng, resamples) / _draws(base, rng, resamples)
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return Estimate(center(head) / center(base), float(lo), float(hi))


def min_effect(base: list[list[float]], floor: float) -> float:
    """The smallest change called one: how far base's own processes lie apart (its slowest
    process's median over its fastest's), and never under `floor`. A change smaller than the
    code's spread between processes of the same build cannot be told from that spread."""
    meds = _medians(base)
    return max(floor, max(meds) / min(meds) - 1)
