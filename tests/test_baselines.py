"""Baseline files: round trip, schema errors that name file and key, atomic and concurrent writes."""
import json
import multiprocessing as mp

import pytest

from workloads import baselines as bl


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
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host=[5.0]), "host"),
    (lambda d: d["cases"]["m/T-T/compile/tiny/bs1"].update(host={"launch_us": 5.0, "other_cores": -1}), "host"),
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

    monkeypatch.setattr(bl.json, "dump", dump_half_then_die)
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
