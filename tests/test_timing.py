"""Timing primitives: interleaving order, schedules, marks, and the pytest-benchmark replay."""
import pytest
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


def test_a_group_times_the_reference_once_a_round_and_closes_each_variant_on_its_own_budget():
    """Rungs of one reference share its rounds: the reference runs in every round, and a slow
    rung closes on the time it and the reference spent, while a fast one goes on to max_rounds,
    as each would alone. Sample i of every rung comes from the reference's round i."""
    import time

    log = []

    def run(name, s):
        return lambda sw: (log.append(name), time.sleep(s))

    ref, fast, slow = Variant("ref", run("ref", 0.001)), Variant("fast", run("fast", 0.001)), Variant("slow", run("slow", 0.06))
    interleave([ref, fast, slow], "cpu", Schedule(warmup=0, min_rounds=2, max_rounds=10, budget_s=0.5))
    assert len(ref.samples) == len(fast.samples) == 10
    assert 2 <= len(slow.samples) <= 9           # 61 ms a round with the reference: over 0.5 s by round 9
    rounds = [log[i:i + 3] for i in range(0, 3 * len(slow.samples), 3)]
    assert rounds[:2] == [["ref", "fast", "slow"], ["slow", "fast", "ref"]]
    assert log[3 * len(slow.samples):] == [x for k in range(len(slow.samples), 10)
                                          for x in (["ref", "fast"] if k % 2 == 0 else ["fast", "ref"])]


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


def test_breakdown_sums_spans_and_leaves_the_rest_as_other():
    from workloads.measure import breakdown

    marks = {"first_token": 3.0, "end": 10.0, "span:encoder": 2.0, "span:decoder.step": 3.0, "span:kv_reorder": 1.0}
    m = breakdown.modules(marks, share=("kv_reorder", ("decoder.step", "kv_reorder")))
    assert m["encoder"] == 2.0 and m["other"] == 4.0 and m["total"] == 10.0
    assert m["kv_reorder_share"] == 0.25
    assert breakdown.modules({"end": 5.0}) == {}
    fast = {"encoder": 1.0, "decoder.step": 0.5, "kv_reorder": 0.5}
    sp = breakdown.group_speedup(m, fast, {"enc": ("encoder",), "dec": ("decoder.step", "kv_reorder"), "voc": ("vocoder",)})
    assert sp == {"enc": 2.0, "dec": 4.0}   # a group neither side ran is left out


def test_source_fingerprint_names_the_code_not_the_checkout(tmp_path):
    from workloads.measure.device import source_fingerprint

    for rel, text in (("conftest.py", "a = 1\n"), ("workloads/x.py", "b = 2\n"), ("perf_tests/test_y.py", "c\n"),
                      ("README.md", "not code\n")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    first = source_fingerprint(str(tmp_path))
    source_fingerprint.cache_clear()
    (tmp_path / "README.md").write_text("edited prose\n")
    assert source_fingerprint(str(tmp_path)) == first          # prose is not code
    source_fingerprint.cache_clear()
    (tmp_path / "workloads/x.py").write_text('"""A docstring."""\n# why b is 2\n\nb = 2   # still two\n')
    assert source_fingerprint(str(tmp_path)) == first          # comments, docstrings, layout compute nothing
    source_fingerprint.cache_clear()
    (tmp_path / "workloads/x.py").write_text("b = 3\n")
    assert source_fingerprint(str(tmp_path)) != first
    source_fingerprint.cache_clear()
    (tmp_path / "workloads/x.py").write_text("b = 'b = 3'\n")   # a string that is a value, not a docstring
    assert source_fingerprint(str(tmp_path)) != first
    source_fingerprint.cache_clear()
    second = source_fingerprint(str(tmp_path))
    for rel in ("workloads/gate/verdict.py", "workloads/report/__init__.py"):   # they judge and render, never measure
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("gate = 2\n")
        source_fingerprint.cache_clear()
        assert source_fingerprint(str(tmp_path)) == second
    source_fingerprint.cache_clear()


def test_source_fingerprint_leaves_out_other_workloads_files(tmp_path):
    from workloads.measure.device import source_fingerprint

    for rel in ("workloads/run/schedule.py", "workloads/models/a.py", "workloads/models/b.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    of_a = frozenset({"workloads/models/b.py"})   # what workload a's cases leave out
    first = source_fingerprint(str(tmp_path), of_a)
    source_fingerprint.cache_clear()
    (tmp_path / "workloads/models/b.py").write_text("x = 2\n")
    assert source_fingerprint(str(tmp_path), of_a) == first     # b's model is not a's code
    source_fingerprint.cache_clear()
    (tmp_path / "workloads/models/a.py").write_text("x = 2\n")
    second = source_fingerprint(str(tmp_path), of_a)
    assert second != first                                      # a's own model is
    source_fingerprint.cache_clear()
    (tmp_path / "workloads/run/schedule.py").write_text("x = 2\n")
    assert source_fingerprint(str(tmp_path), of_a) != second    # and so is the common code
    source_fingerprint.cache_clear()


def test_a_round_records_how_much_of_it_the_thread_spent_on_a_cpu():
    import time as _time

    def spin(sw):
        t = _time.perf_counter()
        while _time.perf_counter() - t < 0.03:
            pass

    asleep, busy = Variant("asleep", lambda sw: _time.sleep(0.03)), Variant("busy", spin)
    for v in (asleep, busy):
        v.once("cpu", record=False)
        assert v.on_cpu == []                      # warm-up and instrumented rounds are not timed rounds
        v.once("cpu", record=True)
    assert asleep.on_cpu[0] < 0.5 < busy.on_cpu[0] <= 1.0


def test_a_round_records_the_cores_the_process_s_other_threads_kept_busy():
    """A thread of the suite's own process spinning beside the timing thread competes with it
    for the host; other_cores leaves the process out, so each round records its other threads'
    load: the spinner's CPU seconds over the round's, none while the process is otherwise idle.
    (Against the spinner's own clock: on a loaded host it gets less than a core.)"""
    import threading
    import time as _time

    spun_cpu, walls = [], []

    def spin():
        t0 = _time.thread_time()
        stop = _time.perf_counter() + 0.1
        while _time.perf_counter() < stop:
            pass
        spun_cpu.append(_time.thread_time() - t0)

    def beside_a_spinner(sw):
        t0 = _time.perf_counter()
        spinner = threading.Thread(target=spin)
        spinner.start()
        spinner.join()              # the timing thread waits, off the CPU, while the other spins
        walls.append(_time.perf_counter() - t0)

    alone, spun = Variant("alone", lambda sw: _time.sleep(0.1)), Variant("spun", beside_a_spinner)
    for v in (alone, spun):
        v.once("cpu", record=True)
    assert alone.own_threads[0] < 0.2
    assert spun_cpu[0] > 0.02     # the spinner ran
    assert spun.own_threads[0] == pytest.approx(spun_cpu[0] / walls[0], abs=0.15)


def test_a_round_records_the_time_pythons_garbage_collector_took_in_it():
    """Each timed round records the ms its process spent in cyclic garbage collection and how
    many full collections ran; a full collection scans every live object, so a round that
    triggers one over many objects shows it, and a round that makes no garbage shows none."""
    import gc

    hoard = [[i] for i in range(300_000)]          # live objects a full collection must scan

    def collects(sw):
        gc.collect()

    def idle(sw):
        pass

    was = gc.isenabled()
    gc.disable()                                   # no collection but the one the round asks for
    try:
        full, none = Variant("full", collects), Variant("none", idle)
        for v in (full, none):
            v.once("cpu", record=False)
            assert v.gc_ms == [] and v.gc_full == []   # only timed rounds count
            v.once("cpu", record=True)
    finally:
        if was:
            gc.enable()
    assert full.gc_full == [1] and full.gc_ms[0] > 0.5
    assert none.gc_full == [0] and none.gc_ms == [0.0]
    assert len(hoard) == 300_000


def test_a_long_warm_up_round_gives_the_breakdown_when_it_ran_like_a_timed_one():
    """A side that compiles nothing warms up with spans on; where that round is long and no
    slower than 1.05x its slowest timed round, its spans are the breakdown and no instrumented
    round is run after the timed ones. A compiled side warms up as it is timed, spans off."""
    from workloads.engine.plan import Plan
    from workloads.run import schedule

    seen = []

    def run(sw):
        seen.append(sw.spans)
        with sw.span("decode"):
            pass

    v = Variant("eager", run)
    memory, warm = schedule._warm_up(v, Plan(), "cpu")
    assert seen == [True] and set(warm) >= {"end", "span:decode"}
    _, none = schedule._warm_up(Variant("compile", run), Plan(compile=True, compiles=True), "cpu")
    assert seen[-1] is False and none is None

    class _WL:
        share_spans = None

    long = schedule.LONG_ROUND_MS
    v.samples = [{"end": long * 1.00}, {"end": long * 1.10}]
    warm = {"end": long * 1.12, "span:decode": long}
    assert schedule._breakdown_of_warm_up(warm, v, _WL) == {"decode": long, "other": pytest.approx(long * 0.12),
                                                           "total": long * 1.12}
    assert schedule._breakdown_of_warm_up(warm | {"end": long * 1.2}, v, _WL) is None     # slower: first-call costs
    # A first call's cost in a short phase hardly moves the whole round, but the phase says it.
    v.samples = [{"first_token": 30.0, "decode_end": long, "end": long + 20.0},
                 {"first_token": 31.0, "decode_end": long * 1.01, "end": long * 1.01 + 21.0}]
    warm = {"first_token": 31.5, "decode_end": long * 1.005, "end": long * 1.005 + 22.0, "span:decode": long}
    assert schedule._breakdown_of_warm_up(warm, v, _WL)["total"] == warm["end"]        # within 5% and 1 ms each
    cold = warm | {"first_token": 466.0, "span:prefill": 466.0}
    assert cold["end"] < 1.05 * max(v.series("end"))
    assert schedule._breakdown_of_warm_up(cold, v, _WL) is None                         # the prefill was cold
    cold_tail = warm | {"end": long * 1.005 + 240.0}
    assert schedule._breakdown_of_warm_up(cold_tail, v, _WL) is None                    # so was what follows decoding
    v.samples = [{"end": 10.0}]
    assert schedule._breakdown_of_warm_up({"end": 10.0, "span:decode": 9.0}, v, _WL) is None   # short: run once more
    assert schedule._breakdown_of_warm_up(None, v, _WL) is None


def test_profiled_events_are_the_events_the_profiler_lists(device):
    """Kernel counting reads the profiler's raw results, not `prof.events()` (which builds a
    Python object per event): the two must list the same events, or the counters would move."""
    import collections

    from torch.profiler import ProfilerActivity, profile

    from workloads.measure.counters import profiled_events

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    x = torch.zeros(4, device=device)
    with profile(activities=activities, profile_memory=True) as prof:
        for _ in range(50):
            torch.add(x, 1)
            x.is_leaf   # an event prof.events() leaves out
        if x.is_cuda:
            torch.cuda.synchronize()
    ours = collections.Counter((name, str(dt)) for name, dt, _ in profiled_events(prof))
    theirs = collections.Counter((e.name, str(e.device_type)) for e in prof.events() if e.name != "[memory]")
    assert ours == theirs and sum(ours.values()) >= 50
    us = sorted(us for _, dt, us in profiled_events(prof) if dt == torch.autograd.DeviceType.CUDA)
    assert us == pytest.approx(sorted(e.time_range.elapsed_us() for e in prof.events()
                                      if e.device_type == torch.autograd.DeviceType.CUDA))
