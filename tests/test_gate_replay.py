"""Replaying a known slowdown through the gate: silent with none, loud at 5% where GPU time is stored."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workloads import gate as bl
from workloads.gate.replay import replay, slowed, summary

from .test_baselines import make_result

ROOT = Path(__file__).resolve().parents[1]
CASE = "llama-7b/T-T/cuda_graph/paper/bs1"


def noisy(median, n=10, sigma=0.005, seed=0):
    return list(np.random.default_rng(seed).lognormal(np.log(median), sigma, n))


def entry(median, *, share=None, gpu_ms=None, seed=0):
    r = make_result(CASE, samples=noisy(median, seed=seed))
    if share is not None:
        r["host"] = {"launch_us": 9.0, "share": share, "run_share": share}
    if gpu_ms is not None:
        r["gpu_ms"] = gpu_ms
    return bl.entry_from_result(r)


def test_a_slowdown_moves_gpu_time_fully_and_wall_time_by_the_gpus_share():
    e = entry(100.0, share=0.6, gpu_ms={"run": 40.0, "per_step": 1.0, "once": 2.0})
    r = slowed(CASE, e, 0.05)
    assert r["gpu_ms"] == pytest.approx({"run": 42.0, "per_step": 1.05, "once": 2.1})
    assert r["latency_ms"]["median"] == pytest.approx(e["latency_ms"]["median"] * 1.02)   # 5% of the 40% on the GPU
    assert r["speedup"]["median"] == pytest.approx(e["speedup"]["median"] / 1.02)
    assert r["counters"] == e["counters"]


def test_unchanged_passes_and_five_percent_fails_where_gpu_time_is_stored():
    entries = {"a/T/eager/paper/bs1": entry(100.0, share=0.7, gpu_ms={"run": 30.0}),
               "b/T/cuda_graph/paper/bs1": entry(50.0, share=0.01, seed=1)}
    assert not any(r.failed for r in replay(entries, 0.0, path="f.json"))
    a, b = replay(entries, 0.05, path="f.json")
    assert a.failed and a.gated_by == "GPU time" and "GPU time of a run 31.500 ms vs baseline 30.000 ms" in a.failures[0]
    # Without GPU time, the latency gate needs the interval's lower end past 5%: a 5% move is missed,
    # a 10% one caught.
    assert not b.failed and b.gated_by == "latency"
    assert replay(entries, 0.10, path="f.json")[1].failed


def test_a_host_bound_entry_without_gpu_time_is_named_as_a_blind_spot():
    entries = {CASE: entry(100.0, share=0.7)}
    (r,) = replay(entries, 0.5, path="f.json")
    assert not r.failed and r.gated_by == "" and r.tracked   # its wall time is tracked, not gated
    lines = summary([r], 0.5)
    assert lines[0] == "0 of 1 cases fail +50.0% GPU time"
    assert lines[1].startswith("pass, gated by nothing stored") and lines[2] == f"  {CASE}"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "baselines").glob("*/*.json")))
def test_every_committed_file_is_silent_unchanged_and_loud_where_it_stores_gpu_time(path):
    cases = bl.load(ROOT / path)["cases"]
    assert not [r.case for r in replay(cases, 0.0, path=path) if r.failed]
    missed = [r.case for r in replay(cases, 0.05, path=path) if r.gated_by == "GPU time" and not r.failed]
    assert not missed, f"{path}: a 5% slowdown of these cases' kernels passes the gate: {missed}"


def test_the_command_prints_the_count_and_names_a_missing_file(tmp_path):
    run = [sys.executable, "-m", "workloads.gate", "replay"]
    ok = subprocess.run(run + ["baselines/cpu/tiny.json", "--slowdown", "0.05"], cwd=ROOT, capture_output=True,
                        text=True)
    assert ok.returncode == 0 and " cases fail +5.0% GPU time" in ok.stdout.splitlines()[0]
    bad = subprocess.run(run + [str(tmp_path / "nope.json")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.json: no such baseline file" in bad.stdout
    neg = subprocess.run(run + ["baselines/cpu/tiny.json", "--slowdown", "-2"], cwd=ROOT, capture_output=True, text=True)
    assert neg.returncode == 2 and "slowdown -2.0" in neg.stdout
