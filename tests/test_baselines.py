"""Baseline files: round trip, schema errors that name file and key, atomic and concurrent writes."""
import json
import math
import multiprocessing as mp

import pytest

from workloads import gate as bl
from workloads.gate import store
from workloads.gate.__main__ import main


def make_result(case="m/T-T/compile/tiny/bs1", samples=(10.0, 10.2, 9.9, 10.1), speedup=(2.0, 1.9, 2.1), **counters):
    return {
        "case": case,
        "device_class": "cpu",
        "latency_ms": {"metric": "e2e", "median": sorted(samples)[len(samples) // 2], "ci": [min(samples), max(samples)],
                       "samples": list(samples)},
        "tpot_ms": {"median": 1.0, "ci": [0.9, 1.1], "samples": [1.0]},
        "speedup": None if speedup is None else {"median": speedup[0], "ci": [speedup[1], speedup[2]]},
        "counters": counters or {"graphs": 1, "graph_breaks": 0, "recompiles": 0},
        "provenance": {"commit": "abc123", "torch": "2.13.0"},
    }


def test_round_trip(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    result = make_result()
    entry = bl.entry_from_result(result)
    bl.update(path, device_class="cpu", scale="tiny", case_id=result["case"], entry=entry)
    data = bl.load(path, device_class="cpu", scale="tiny")
    assert data["cases"][result["case"]] == json.loads(json.dumps(entry))
    # The stored floor sits under the measured interval, so an unchanged rerun passes.
    assert entry["min_speedup"] == pytest.approx(1.42)
    assert bl.check(result, data["cases"][result["case"]], path=path, timing=True) == []


def test_update_keeps_other_cases(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    for cid in ("a/T/eager/tiny/bs1", "b/T/eager/tiny/bs1"):
        bl.update(path, device_class="cpu", scale="tiny", case_id=cid, entry=bl.entry_from_result(make_result(cid)))
    assert sorted(bl.load(path)["cases"]) == ["a/T/eager/tiny/bs1", "b/T/eager/tiny/bs1"]


def test_missing_file_is_no_baseline(tmp_path):
    assert bl.load(tmp_path / "cpu" / "tiny.json") is None


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text('{"schema": 1,\n "cases": {')
    with pytest.raises(bl.BaselineError, match=r"tiny\.json: not valid JSON \(line 2"):
        bl.load(path)


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.update(schema=7), "'schema'"),
    (lambda d: d.update(device_class="nvidia-h100"), "'device_class'"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"]["latency_ms"].update(median=-1), "latency_ms.median"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"]["latency_ms"].update(samples=[]), "latency_ms.samples"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(min_speedup="fast"), "min_speedup"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "share": 1.5}), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "reference_share": -0.1}), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host=[5.0]), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "other_cores": -1}), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "on_cpu": 1.2}), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "throttled_ms": -3}), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "gc_ms": -1.0}), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "launch_us_rounds": [5.0, 0]}), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "launch_us_rounds": 5.0}), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"]["counters"].update(graphs="one"), "counters"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"]["provenance"].pop("commit"), "provenance"),
])
def test_bad_key_names_file_and_key(tmp_path, mutate, key):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    bl.update(path, device_class="cpu", scale="tiny", case_id="m/T-T/compile/tiny/bs1",
              entry=bl.entry_from_result(make_result()))
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(bl.BaselineError) as e:
        bl.load(path, device_class="cpu", scale="tiny")
    assert str(path) in str(e.value) and key in str(e.value)


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    bl.update(path, device_class="cpu", scale="tiny", case_id="a/T/eager/tiny/bs1",
              entry=bl.entry_from_result(make_result("a/T/eager/tiny/bs1")))
    before = path.read_bytes()

    def dump_half_then_die(obj, f, **kw):
        f.write('{"schema": 1, "cas')
        raise KeyboardInterrupt

    monkeypatch.setattr(store.json, "dump", dump_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        bl.update(path, device_class="cpu", scale="tiny", case_id="b/T/eager/tiny/bs1",
                  entry=bl.entry_from_result(make_result("b/T/eager/tiny/bs1")))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_update_refuses_to_overwrite_a_corrupt_file(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    path.parent.mkdir(parents=True)
    path.write_text("{ corrupt")
    with pytest.raises(bl.BaselineError, match="not valid JSON"):
        bl.update(path, device_class="cpu", scale="tiny", case_id="a/T/eager/tiny/bs1",
                  entry=bl.entry_from_result(make_result("a/T/eager/tiny/bs1")))
    assert path.read_text() == "{ corrupt"


def _writer(args):
    root, i = args
    cid = f"m{i}/T/eager/tiny/bs1"
    bl.update(bl.path_for(root, "cpu", "tiny"), device_class="cpu", scale="tiny", case_id=cid,
              entry=bl.entry_from_result(make_result(cid)))


def test_concurrent_writers_lose_nothing(tmp_path):
    """pytest-xdist workers update one file at once: every case's entry survives."""
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), i) for i in range(16)])
    assert len(bl.load(bl.path_for(tmp_path, "cpu", "tiny"))["cases"]) == 16


# -- runs of the same code pool ------------------------------------------------------------
CODE = {"source": "f00d", "torch": "2.11.0+cu130", "cuda": "13.0", "device_class": "cpu"}


def run_of(samples, date, speedup=(2.0, 1.9, 2.1), source="f00d", **counters):
    r = make_result(samples=samples, speedup=speedup, **counters)
    r["provenance"] = {"commit": "abc123", "date": date, **CODE, "source": source}
    return r


def test_runs_of_the_same_code_pool_their_rounds_and_widen_the_gate(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    fast, slow = (5.5, 5.4, 5.6, 5.5), (10.7, 10.6, 10.8, 10.7)
    bl.record(path, scale="tiny", result=run_of(fast, "d1", speedup=(2.0, 1.9, 2.1)))
    entry = bl.record(path, scale="tiny", result=run_of(slow, "d2", speedup=(1.5, 1.4, 1.6)))
    assert entry["latency_ms"]["samples"] == list(fast + slow)
    assert [r["date"] for r in entry["runs"]] == ["d1", "d2"] and [r["rounds"] for r in entry["runs"]] == [4, 4]
    assert entry["min_speedup"] == pytest.approx(math.floor(1.4 * 0.75 * 100) / 100)   # the lower floor
    # One run alone would hold the rung to a 5% threshold around 5.5 ms; pooled, a third run
    # between the two passes, and a run far above both still fails.
    assert bl.check(run_of((7.6, 7.5, 7.7, 7.6), "d3"), entry, path=path, timing=True) == []
    (msg,) = bl.check(run_of((30.0, 30.2, 29.9, 30.1), "d3"), entry, path=path, timing=True)
    assert "latency" in msg


def test_other_code_or_other_counters_start_the_entry_afresh(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    bl.record(path, scale="tiny", result=run_of((5.0, 5.1), "d1"))
    fresh = bl.record(path, scale="tiny", result=run_of((9.0, 9.1), "d2", source="beef"))
    assert fresh["latency_ms"]["samples"] == [9.0, 9.1] and len(fresh["runs"]) == 1
    other = bl.record(path, scale="tiny", result=run_of((8.0, 8.1), "d3", source="beef", graphs=2))
    assert other["latency_ms"]["samples"] == [8.0, 8.1] and len(other["runs"]) == 1
    # cuBLAS's auxiliary kernel count is not the code's to decide (see UNGATED_COUNTERS): it pools.
    pooled = bl.record(path, scale="tiny", result=run_of((8.2, 8.3), "d4", source="beef", graphs=2,
                                                          blas_helpers_per_step=24.0))
    assert pooled["latency_ms"]["samples"] == [8.0, 8.1, 8.2, 8.3] and len(pooled["runs"]) == 2


def test_an_entry_keeps_the_kernels_by_name():
    result = make_result(graphs=1, kernels_per_step=3.0)
    result["kernel_names"] = {"gemm": 2.0, "softmax": 1.0}
    assert bl.entry_from_result(result)["kernel_names"] == {"gemm": 2.0, "softmax": 1.0}


def test_only_the_last_runs_are_kept(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    for i in range(bl.MAX_RUNS + 2):
        entry = bl.record(path, scale="tiny", result=run_of((10.0 + i, 10.0 + i, 10.0 + i), f"d{i}"))
    assert len(entry["runs"]) == bl.MAX_RUNS
    assert entry["latency_ms"]["samples"] == [10.0 + i for i in range(2, bl.MAX_RUNS + 2) for _ in range(3)]
    assert bl.load(path, device_class="cpu", scale="tiny")["cases"]["m/T-T/compile/tiny/bs1"] == entry


def test_an_entry_written_before_runs_pooled_counts_as_one_run(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    old = bl.entry_from_result(run_of((5.0, 5.2), "d0"))
    del old["runs"]
    bl.update(path, device_class="cpu", scale="tiny", case_id="m/T-T/compile/tiny/bs1", entry=old)
    entry = bl.record(path, scale="tiny", result=run_of((6.0, 6.2), "d1"))
    assert [r["date"] for r in entry["runs"]] == ["d0", "d1"] and entry["latency_ms"]["samples"] == [5.0, 5.2, 6.0, 6.2]


def test_runs_that_disagree_with_the_samples_are_named(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    bl.record(path, scale="tiny", result=run_of((5.0, 5.2), "d0"))
    data = json.loads(path.read_text())
    data["cases"]["m/T-T/compile/tiny/bs1"]["runs"][0]["rounds"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(bl.BaselineError, match=r"runs: their rounds add up to 3, but latency_ms.samples holds 2"):
        bl.load(path)


def _log(tmp_path, name, *results, gate="pass"):
    log = tmp_path / name
    log.write_text("".join(json.dumps({"gate": gate, "failures": [], "result": r}) + "\n" for r in results))
    return log


def test_fold_pools_a_gate_runs_case_log_once(tmp_path):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    first = run_of((5.0, 5.2), "d0")
    bl.record(path, scale="tiny", result=first)
    log = _log(tmp_path, "gate.jsonl", first, run_of((9.0, 9.4), "d1"))
    lines = bl.fold(tmp_path, [log])
    assert lines[0].endswith("already pooled (d0)") and "2 runs" in lines[1]
    assert bl.fold(tmp_path, [log])[1].endswith("already pooled (d1)")
    other = bl.fold(tmp_path, [_log(tmp_path, "other.jsonl", run_of((20.0, 20.1), "d2", source="beef"))])
    assert other[0].startswith("m/T-T/compile/tiny/bs1: skipped, run by other code") and "'beef'" in other[0]
    assert bl.load(path)["cases"]["m/T-T/compile/tiny/bs1"]["latency_ms"]["samples"] == [5.0, 5.2, 9.0, 9.4]
    # A pull-request gate's run (--latency-only) measured no speedup: it is not pooled.
    alone = run_of((7.0, 7.1), "d3") | {"speedup": None, "reference_latency_ms": None}
    (line,) = bl.fold(tmp_path, [_log(tmp_path, "pr.jsonl", alone)])
    assert "skipped, timed without eager beside it (--latency-only)" in line
    assert bl.load(path)["cases"]["m/T-T/compile/tiny/bs1"]["min_speedup"] is not None


def test_fold_pools_the_eager_rounds_timed_beside_a_lever_into_the_eager_entry(tmp_path):
    """A process that ran levers without the eager case still timed eager beside them: those
    rounds pool into the eager entry (same code only), once per process: not again for a second
    lever of that process (its rounds a prefix of the first's), nor where the eager case's own
    result of that process is in the logs, nor on a second fold."""
    path = bl.path_for(tmp_path, "cpu", "tiny")
    eager_id, lever_id = "m/T-T/eager/tiny/bs1", "m/T-T/compile/tiny/bs1"

    def run(case, samples, date, reference=None, source="f00d"):
        # The eager case's reference is its own rounds, and it has no speedup.
        r = run_of(samples, date, speedup=None if reference is None else (2.0, 1.9, 2.1), source=source) | {"case": case}
        return r | {"reference_latency_ms": {"samples": list(samples if reference is None else reference)}}

    bl.record(path, scale="tiny", result=run(eager_id, (10.0, 10.2), "d0"))
    bl.record(path, scale="tiny", result=run(lever_id, (5.0, 5.1), "d0", reference=(10.0, 10.2)))
    p1 = [run(lever_id, (5.2, 5.3, 5.1), "d1", reference=(12.0, 12.4, 12.2))]
    p2 = [run(eager_id, (11.0, 11.1), "d2"), run(lever_id, (5.0, 5.2), "d2", reference=(11.0, 11.1))]
    p3 = [run("m/T-T/sdpa/tiny/bs1", (9.0, 9.1), "d3", reference=(13.0, 13.3)),
          run(lever_id, (5.4, 5.5), "d3", reference=(13.0, 13.3, 13.1))]
    other = [run(lever_id, (5.0, 5.0), "d4", reference=(20.0, 20.0), source="beef")]
    log = _log(tmp_path, "gate.jsonl", *p1, *p2, *p3)
    with pytest.raises(bl.BaselineError, match="m/T-T/sdpa/tiny/bs1 has no entry"):
        bl.fold(tmp_path, [log])   # a lever without an entry is refused as before: nothing written
    log = _log(tmp_path, "gate.jsonl", *p1, *p2, p3[1])
    lines = bl.fold(tmp_path, [log])
    eager = bl.load(path)["cases"][eager_id]
    assert eager["latency_ms"]["samples"] == [10.0, 10.2, 11.0, 11.1, 12.0, 12.4, 12.2, 13.0, 13.3, 13.1]
    assert [r["date"] for r in eager["runs"]] == ["d0", "d2", "d1", "d3"]
    assert f"{eager_id}: 4 runs with the eager rounds timed beside {lever_id}, median" in lines[-1]
    assert all(f"{eager_id}: the eager rounds timed beside {lever_id} already pooled" in line
               for line in bl.fold(tmp_path, [log]) if "eager rounds" in line)
    (line,) = [x for x in bl.fold(tmp_path, [_log(tmp_path, "other.jsonl", *other)]) if eager_id in x]
    assert line == f"{eager_id}: the eager rounds timed beside {lever_id} skipped: its entry is of other code"
    assert bl.load(path)["cases"][eager_id] == eager
    assert bl.load(path)["cases"][lever_id]["runs"][-1]["date"] == "d3"


@pytest.mark.parametrize("bad, match", [
    (lambda t: _log(t, "count.jsonl", run_of((9.0,), "d1", graphs=3)), r"count\.jsonl:1: .* the same code ran differently"),
    (lambda t: _log(t, "new.jsonl", run_of((9.0,), "d1") | {"case": "m/T-T/eager/tiny/bs1"}), r"new\.jsonl:1: case m/T-T/eager/tiny/bs1 has no entry"),
    (lambda t: (t / "junk.jsonl").write_text('{"gate": "pass"}\n') and t / "junk.jsonl", r"junk\.jsonl, line 1: not a case-log record"),
    (lambda t: (t / "bare.jsonl").write_text('{"result": {"case": "m/T-T/compile/tiny/bs1"}}\n') and t / "bare.jsonl",
     r"bare\.jsonl, line 1: not a case-log record"),
    (lambda t: t / "missing.jsonl", r"case log .*missing\.jsonl: cannot read it"),
])
def test_fold_refuses_what_does_not_pool_and_writes_nothing(tmp_path, bad, match):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    bl.record(path, scale="tiny", result=run_of((5.0, 5.2), "d0"))
    before = path.read_bytes()
    good = _log(tmp_path, "good.jsonl", run_of((6.0, 6.1), "d9"))
    with pytest.raises(bl.BaselineError, match=match):
        bl.fold(tmp_path, [good, bad(tmp_path)])
    assert path.read_bytes() == before


def test_fold_on_the_command_line(tmp_path, capsys):
    path = bl.path_for(tmp_path, "cpu", "tiny")
    bl.record(path, scale="tiny", result=run_of((5.0, 5.2), "d0"))
    assert main(["fold", "--baselines", str(tmp_path), str(_log(tmp_path, "g.jsonl", run_of((6.0, 6.2), "d1")))]) == 0
    assert "2 runs" in capsys.readouterr().out
    assert main(["fold", "--baselines", str(tmp_path), str(tmp_path / "nope.jsonl")]) == 2
    assert "error: case log" in capsys.readouterr().out


def test_every_committed_baseline_file_reads():
    """The files the gate reads on GPU runners pass the schema here, where no GPU is: a bad
    entry (a hand edit, a merge gone wrong, runs that disagree with their samples) fails CI."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "baselines"
    files = sorted(root.glob("*/*.json"))
    assert files, f"no baseline files under {root}"
    for f in files:
        data = bl.load(f, device_class=f.parent.name, scale=f.stem)
        assert data["cases"], f"{f} holds no cases"


def test_fold_never_pools_a_run_that_failed_its_gate(tmp_path):
    """Folding one failing 1.25x run into an entry widened its threshold until the same
    regression passed: a run whose gate said FAIL is skipped, and said so."""
    path = bl.path_for(tmp_path, "cpu", "tiny")
    bl.record(path, scale="tiny", result=run_of((5.0, 5.2), "d0"))
    (line,) = bl.fold(tmp_path, [_log(tmp_path, "gate.jsonl", run_of((6.3, 6.5), "d1"), gate="FAIL")])
    assert line.startswith("m/T-T/compile/tiny/bs1: skipped, it failed its gate (")
    assert bl.load(path)["cases"]["m/T-T/compile/tiny/bs1"]["latency_ms"]["samples"] == [5.0, 5.2]


def test_update_baselines_does_not_pool_a_run_that_fails_against_its_own_codes_entry(tmp_path):
    """--update-baselines on the code that measured an entry pools the run only where it passes
    the gate against it; other code replaces the entry (a new measurement of new code)."""
    path = bl.path_for(tmp_path, "nvidia-h200", "tiny")

    def gpu_run(samples, date, source="f00d", kernels=100.0):
        r = run_of(samples, date, source=source, kernels_per_step=kernels)
        return r | {"device_class": "nvidia-h200", "scale": "tiny",
                    "provenance": r["provenance"] | {"device_class": "nvidia-h200"}}

    bl.record(path, scale="tiny", result=gpu_run((5.0, 5.1, 5.0, 5.05), "d0"))
    v = bl.judge(gpu_run((5.0, 5.1, 5.0, 5.05), "d1", kernels=120.0), root=tmp_path, update_baselines=True,
                 requirements=[])
    assert v.gate == "FAIL" and "not pooled into its entry" in v.failures[-1]
    assert "counter kernels_per_step changed" in v.failures[0]
    assert len(bl.load(path)["cases"]["m/T-T/compile/tiny/bs1"]["runs"]) == 1
    assert bl.judge(gpu_run((5.0, 5.1, 5.0, 5.05), "d2"), root=tmp_path, update_baselines=True,
                    requirements=[]).gate == "updated"
    assert len(bl.load(path)["cases"]["m/T-T/compile/tiny/bs1"]["runs"]) == 2
    v = bl.judge(gpu_run((5.0, 5.1), "d3", source="beef", kernels=120.0), root=tmp_path, update_baselines=True,
                 requirements=[])
    assert v.gate == "updated" and bl.load(path)["cases"]["m/T-T/compile/tiny/bs1"]["counters"]["kernels_per_step"] == 120.0


def test_same_code_includes_the_libraries_and_the_driver():
    a = {"provenance": {**CODE, "source": "f00d", "transformers": "5.17.0", "triton": "3.6.0", "driver": "580.1"}}
    assert bl.same_code(a, a)
    for key, other in (("transformers", "5.18.0"), ("triton", "3.7.0"), ("driver", "590.2")):
        assert not bl.same_code(a, {"provenance": a["provenance"] | {key: other}}), key
