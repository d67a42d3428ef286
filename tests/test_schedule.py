"""Scheduling: the rungs of one input timed in one loop against one eager reference, what a
case's result holds, the host figures per round, and the retry one by one after running out
of memory (on HSTU's tiny preset: one forward, seconds on the CPU)."""
from unittest.mock import ANY

import pytest
import torch

from workloads.case import Case
from workloads.engine.plan import Plan
from workloads.measure import device as md
from workloads.run import assemble, schedule
from workloads.run.schedule import run_case
from workloads.run.session import Session

CPU = torch.device("cpu")


def test_a_case_reports_latency_and_the_attention_share_but_no_token_times():
    """HSTU generates nothing: its result has no TTFT or TPOT, and its breakdown gives the
    attention's share of the forward on both sides and where the time went per module."""

    r = run_case(Case("hstu", "hstu-tiny", "H-A", "memory_efficient", "tiny", 2), Session(CPU))
    assert r["ttft_ms"] is None and r["tpot_ms"] is None and r["new_tokens"] == 0
    assert r["latency_ms"]["median"] > 0 and r["speedup"]["median"] > 0
    assert len(r["prompt_lengths"]) == 2 and r["agreement"] == 1.0   # the same items retrieved
    for side in ("eager", "lever"):
        m = r["modules_ms"][side]
        assert {"embedding", "dense", "attention", "heads"} <= set(m) and 0 < m["attention_share"] < 1
        assert r["span_tflops"][side]["attention"] > 0
    assert set(r["module_speedup"]) == {"attention", "dense", "embedding", "heads"}
    assert r["counters"] == {"recompiles": 0}


def test_each_case_probes_its_host_before_each_timed_round(monkeypatch):
    """The host's speed is probed before each timed round, not once a session or once after the
    rounds: a job that starts on the same host between two cases shows in the second case's
    figure, which the gate's allowance uses, and a slow window inside a case shows in its rounds'."""

    speed = {"us": 10.0, "calls": 0}

    def probe(device, ops=2000, repeats=7):
        speed["calls"] += 1
        return speed["us"] + speed["calls"] % 2   # alternates within a case: 10, 11, 10, ...

    monkeypatch.setattr(md, "launch_overhead_us", probe)
    session = Session(CPU)
    hosts = [run_case(Case("hstu", "hstu-tiny", "H-A", "eager", "tiny", 1), session)["host"]]
    speed["us"] = 25.0
    r = run_case(Case("hstu", "hstu-tiny", "H-A", "memory_efficient", "tiny", 1), session)
    hosts.append(r["host"])
    assert all(len(h["launch_us_rounds"]) >= 3 for h in hosts)      # one probe per timed round
    assert len(hosts[1]["launch_us_rounds"]) == r["rounds"]
    assert set(hosts[0]["launch_us_rounds"]) <= {10.0, 11.0} and set(hosts[1]["launch_us_rounds"]) <= {25.0, 26.0}
    assert 10.0 <= hosts[0]["launch_us"] <= 11.0 and 25.0 <= hosts[1]["launch_us"] <= 26.0   # their median
    assert all(h["other_cores"] >= 0 for h in hosts)   # other processes' load during the rounds
    assert all(0 < h["on_cpu"] <= 1 for h in hosts)    # the timing thread's time on a CPU
    assert all(h["gc_ms"] >= 0 and h["gc_full"] >= 0 for h in hosts)   # Python's collector in its rounds


def test_a_lever_case_records_its_eager_references_host_share(monkeypatch):
    """The speedup floor's host allowance needs the reference's host-bound share beside the
    lever's: taken from the eager case where the session ran it, else counted once."""

    counted = []

    def count(fn, device):
        fn()
        counted.append(1)
        return {"kernels": 4, "launches": 4, "gpu_ms": 0.0}   # all idle: share 1.0

    monkeypatch.setattr(assemble.mc, "count_kernels", count)

    def case(lever, session):
        counted.clear()
        r = run_case(Case("hstu", "hstu-tiny", "H-A", lever, "tiny", 1), session)
        return r["host"], len(counted)

    session = Session(CPU)
    assert case("eager", session) == ({"launch_us": ANY, "launch_us_rounds": ANY, "share": 1.0, "other_cores": ANY, "on_cpu": ANY,
                                       "throttled_ms": ANY, "own_threads": ANY, "gc_ms": ANY, "gc_full": ANY,
                                       "run_share": 1.0}, 1)
    host, n = case("memory_efficient", session)
    assert host["reference_share"] == 1.0 and n == 1            # the eager case's figure
    host, n = case("memory_efficient", Session(CPU))
    assert host["reference_share"] == 1.0 and n == 2            # counted once here


def test_the_planned_rungs_of_one_reference_are_timed_in_one_loop(monkeypatch):
    """With the session's cases planned (pytest's selection), the first case of a reference
    times every planned rung of it in one interleaved loop; each later case returns its own
    result, paired with the eager rounds it shared, and a rung that fails to set up fails in its
    own case, not in the one that timed the group. Another batch is another reference."""

    loops = []
    real = schedule.interleave
    monkeypatch.setattr(schedule, "interleave", lambda vs, *a: loops.append([v.name for v in vs]) or real(vs, *a))
    real_setup = schedule._setup

    def setup(runner, device):
        if runner.attn_implementation == "memory_efficient" and runner.batch.batch == 2:
            raise RuntimeError("setup failed")
        return real_setup(runner, device)

    monkeypatch.setattr(schedule, "_setup", setup)
    cases = [Case("hstu", "hstu-tiny", "H-A", lever, "tiny", bs) for bs in (1, 2) for lever in ("eager", "memory_efficient")]
    session = Session(CPU)
    session.plan(cases)
    eager = run_case(cases[0], session)
    assert loops == [["eager", "memory_efficient"]]
    lever = run_case(cases[1], session)
    assert loops == [["eager", "memory_efficient"]]                       # nothing timed again
    assert lever["case"] == cases[1].id and lever["speedup"] is not None
    n = lever["rounds"]
    assert lever["reference_latency_ms"]["samples"] == eager["latency_ms"]["samples"][:n]
    assert run_case(cases[2], session)["case"] == cases[2].id   # batch 2: its own loop
    assert loops[1:] == [["eager"]]
    with pytest.raises(RuntimeError, match="setup failed"):
        run_case(cases[3], session)


def test_rungs_that_run_out_of_memory_together_are_timed_one_by_one_beside_eager(monkeypatch):
    """At max batch a loop keeps every selected rung's graphs and caches alive at once: where
    that runs out of the device's memory, the case is timed again in a loop of its own beside
    eager, and so is every later rung of that input, each result saying so; the decoders the
    crowded loop built, and those each loop of one rung built, are released before the next.
    A rung that ran out of memory in its setup within someone else's loop gets its own loop
    too. One that runs out alone fails as it did."""

    loops = []
    real = schedule.interleave

    def crowded(vs, *a):   # the first loop, with every rung in it, does not fit
        loops.append([v.name for v in vs])
        if len(loops) == 1:
            session.decoders.get("built by the crowded loop", None, (), Plan(), (), object)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        assert not session.decoders   # released before each loop of one rung
        session.decoders.get(f"built by loop {len(loops)}", None, (), Plan(), (), object)
        return real(vs, *a)

    monkeypatch.setattr(schedule, "interleave", crowded)
    cases = [Case("hstu", "hstu-tiny", "H-A", lever, "tiny", 1) for lever in ("eager", "memory_efficient")]
    session = Session(CPU)
    session.plan(cases)
    with pytest.warns(UserWarning, match="ran out of the device's memory together"):
        eager = run_case(cases[0], session)
    assert loops == [["eager", "memory_efficient"], ["eager"]]
    lever = run_case(cases[1], session)
    assert loops[2:] == [["eager", "memory_efficient"]]
    assert [eager["case"], lever["case"]] == [c.id for c in cases]
    assert eager["timed_alone_after_oom"] and lever["timed_alone_after_oom"]
    assert lever["speedup"] is not None

    # Out of memory in a rung's own setup, inside a loop that otherwise fits.
    loops.clear()
    real_setup = schedule._setup
    failed = []

    def setup(runner, device):
        if runner.attn_implementation == "memory_efficient" and not failed:
            failed.append(runner)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_setup(runner, device)

    monkeypatch.setattr(schedule, "_setup", setup)
    monkeypatch.setattr(schedule, "interleave", lambda vs, *a: loops.append([v.name for v in vs]) or real(vs, *a))
    cases = [Case("hstu", "hstu-tiny", "H-A", lever, "tiny", 2) for lever in ("eager", "memory_efficient")]
    session.plan(cases)
    assert "timed_alone_after_oom" not in run_case(cases[0], session)
    assert loops == [["eager"]]
    with pytest.warns(UserWarning, match="ran out of the device's memory together"):
        assert run_case(cases[1], session)["timed_alone_after_oom"]
    assert loops == [["eager"], ["eager", "memory_efficient"]]

    # Alone, it is the case's own failure.
    def out_of_memory(vs, *a):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(schedule, "interleave", out_of_memory)
    case = Case("hstu", "hstu-tiny", "H-A", "eager", "tiny", 3)
    session.plan([case])
    with pytest.raises(torch.OutOfMemoryError):
        run_case(case, session)


def test_a_session_runs_the_eager_references_untimed_rounds_once_per_input(monkeypatch):
    """The eager reference's warm-up (its peak memory) and breakdown round run once per model,
    task, scale and batch in a session; each later rung of that key reuses them and still times
    eager beside itself. A different batch is a different reference."""

    calls = []
    real_modules = schedule.breakdown.modules
    monkeypatch.setattr(schedule.breakdown, "modules", lambda marks, **kw: calls.append("modules") or real_modules(marks, **kw))
    real_peak = schedule.peak_memory
    monkeypatch.setattr(schedule, "peak_memory", lambda fn, device: calls.append("peak") or real_peak(fn, device))
    session = Session(CPU)

    def case(lever, bs):
        calls.clear()
        r = run_case(Case("hstu", "hstu-tiny", "H-A", lever, "tiny", bs), session)
        return r, list(calls)

    eager, first = case("eager", 1)
    lever, again = case("memory_efficient", 1)
    other, new_batch = case("memory_efficient", 2)
    assert first == ["peak", "modules"] and again == ["peak", "modules"] and new_batch == ["peak"] * 2 + ["modules"] * 2
    assert lever["reference_peak_memory"] == eager["peak_memory"]
    assert lever["modules_ms"]["eager"] == eager["modules_ms"]["eager"]
    assert len(lever["reference_latency_ms"]["samples"]) == lever["rounds"] >= 3   # eager still timed beside it
