"""Timing primitives: interleaving order, schedules, marks, and the pytest-benchmark replay."""
import torch

from workloads.measure.timing import ReplayClock, Schedule, Stopwatch, Variant, interleave


def test_interleave_alternates_order_and_keeps_warmup_out():
    log = []
    a = Variant("a", lambda sw: log.append("a"))
    b = Variant("b", lambda sw: log.append("b"), prepare=lambda: log.append("prep-b"))
    interleave([a, b], "cpu", Schedule(warmup=1, min_rounds=3, max_rounds=3, budget_s=0))
    runs = [x for x in log if x != "prep-b"]
    assert runs == ["a", "b", "a", "b", "b", "a", "a", "b"]   # warm-up a, b; then AB, BA, AB
    assert len(a.samples) == len(b.samples) == 3
    assert log.count("prep-b") == 4                          # prepared before every round


def test_schedule_stops_at_max_rounds_and_respects_min():
    v = Variant("v", lambda sw: None)
    interleave([v], "cpu", Schedule(warmup=0, min_rounds=2, max_rounds=4, budget_s=1e9))
    assert len(v.samples) == 4
    w = Variant("w", lambda sw: None)
    interleave([w], "cpu", Schedule(warmup=0, min_rounds=2, max_rounds=4, budget_s=0))
    assert len(w.samples) == 2


def test_stopwatch_marks_are_ordered():
    sw = Stopwatch("cpu")
    sw.start()
    torch.ones(1000, 1000).sum()
    sw.mark("first_token")
    marks = sw.stop()
    assert 0 <= marks["first_token"] <= marks["end"]


def test_replay_clock_reproduces_samples():
    clock = ReplayClock()
    clock.load([0.5, 0.25])
    t0 = clock(); clock.advance(); t1 = clock(); clock.advance(); t2 = clock()
    assert (t1 - t0, t2 - t1) == (0.5, 0.25)
