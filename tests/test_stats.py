"""The statistics the gate stands on: medians and bootstrap intervals."""
import numpy as np
import pytest

from workloads.measure.stats import ratio_of_medians, summarize


def test_interval_covers_a_known_ratio_most_of_the_time():
    """Over many synthetic A/B experiments with a true ratio of 2.5, the 95% interval holds it."""
    rng = np.random.default_rng(0)
    trials, covered = 60, 0
    for i in range(trials):
        slow = rng.lognormal(np.log(10.0), 0.05, size=12)
        fast = rng.lognormal(np.log(4.0), 0.05, size=12)
        est = ratio_of_medians(slow, fast, paired=False, seed=i)
        assert est.lo <= est.median <= est.hi
        covered += est.lo <= 2.5 <= est.hi
    assert covered / trials >= 0.85


def test_pairing_cancels_drift_common_to_both_sides():
    """Rounds taken interleaved share the machine's drift; pairing removes it from the ratio."""
    rng = np.random.default_rng(1)
    drift = np.linspace(1.0, 2.0, 10)   # e.g. clocks falling over a run
    a = 10 * drift * rng.lognormal(0, 0.01, 10)
    b = 5 * drift * rng.lognormal(0, 0.01, 10)
    paired = ratio_of_medians(a, b, paired=True)
    unpaired = ratio_of_medians(a, b, paired=False)
    assert paired.lo <= 2.0 <= paired.hi
    assert paired.hi - paired.lo < (unpaired.hi - unpaired.lo) / 3


def test_degenerate_inputs():
    assert summarize([3.0]).as_dict() == {"median": 3.0, "ci": [3.0, 3.0]}
    assert ratio_of_medians([4.0, 4.0], [2.0, 2.0], paired=True).median == 2.0
    with pytest.raises(ValueError, match="no samples"):
        summarize([])
    with pytest.raises(ValueError, match="differ in length"):
        ratio_of_medians([1.0, 2.0], [1.0], paired=True)


def test_summary_interval_brackets_the_median():
    x = np.random.default_rng(2).normal(100, 5, 25)
    s = summarize(x)
    assert s.lo <= s.median <= s.hi
    assert s.median == pytest.approx(np.median(x))
