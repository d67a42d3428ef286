"""The pull-request gate as a comparison on one machine (python -m workloads.compare): the verdict
per case on synthetic case logs, the command's usage errors, and one comparison end to end on
the CPU with a regression injected into a clone's working tree."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workloads.compare import __main__ as cli
from workloads.compare.collect import Seen, collect, junit_outcomes
from workloads.compare.judge import judge
from workloads.compare.processes import Process, processes, schedule
from workloads.compare.sides import Side, side_env
from workloads.compare.stats import min_effect, ratio

ROOT = Path(__file__).resolve().parents[1]
GPU, CPU = "nvidia-h200", "cpu"
CASE = "llama-tiny/T-T/compile/tiny/bs1"
# Beside the regressed compile rung, a case the injected edit does not touch: it must stay silent.
UNTOUCHED = "llama-tiny/T-T/eager/tiny/bs1"


def procs(side, n=3):
    return [Process(side, i, exit_code=0, log=Path(f"{side}-{i}.log")) for i in range(1, n + 1)]


def result(ms, *, device=GPU, spread=0.002, counters=None, gpu=None, names=None):
    """A case's result in one process: five rounds around `ms`."""
    r = {"case": CASE, "device_class": device,
         "latency_ms": {"median": ms, "samples": [ms * (1 + spread * k) for k in (-2, -1, 0, 1, 2)]},
         "counters": {"graphs": 1, "graph_breaks": 0, "recompiles": 0} if counters is None else counters,
         "provenance": {"commit": "c0ffee", "source": "s"}}
    if gpu is not None:
        r["gpu_ms"] = {"run": gpu, "per_step": gpu / 10, "once": None}
    if names is not None:
        r["kernel_names"] = names
    return r


def seen(*results):
    return Seen(results={i: r for i, r in enumerate(results, 1)})


def verdict(base, head, **kw):
    return judge(CASE, base, head, procs("base", len(base.results) or 3), procs("head", len(head.results) or 3), **kw)


def test_the_sides_alternate_b_h_h_b_b_h():
    assert schedule(3) == [("base", 1), ("head", 1), ("head", 2), ("base", 2), ("base", 3), ("head", 3)]
    assert [p.case_log.name for p in processes(3, Path("w"))][:2] == ["base-1.jsonl", "head-1.jsonl"]


def test_silent_when_head_equals_base():
    same = seen(*(result(100.0 + k, gpu=50.0 + k / 10) for k in (0, 1, -1)))
    j = verdict(same, same)
    assert j.verdict == "ok" and not j.failures and not j.notes
    assert j.timings["wall"]["median"] == pytest.approx(1.0) and j.timings["gpu"]["median"] == pytest.approx(1.0)


def test_ten_percent_slower_wall_time_fails_on_a_gpu_and_is_named():
    base = seen(*(result(100.0 + k) for k in (0, 0.5, -0.5)))
    head = seen(*(result(110.0 + k) for k in (0, 0.5, -0.5)))
    j = verdict(base, head)
    assert j.verdict == "FAIL" and j.timings["wall"]["ci"][0] > 1.02
    assert len(j.failures) == 1 and j.failures[0].startswith("wall time head/base 1.100")
    assert "minimum effect 2.0%" in j.failures[0]


def test_a_five_percent_gpu_time_change_with_tight_spread_fails():
    base = seen(*(result(100.0 + k, gpu=50.0 + k / 100) for k in (0, 1, -1)))
    head = seen(*(result(100.0 + k, gpu=52.5 + k / 100) for k in (1, 0, -1)))
    j = verdict(base, head)
    assert j.verdict == "FAIL" and len(j.failures) == 1 and j.failures[0].startswith("GPU time head/base 1.050")
    assert j.timings["gpu_per_step"]["judged"] is False     # reported beside it, not judged


def test_the_minimum_effect_is_base_spread_between_processes_with_a_floor():
    assert min_effect([[100.0], [110.0], [104.0]], 0.02) == pytest.approx(0.10)
    assert min_effect([[100.0], [100.5]], 0.02) == 0.02
    # The same +5% is within a base that moves by 10% between its own processes.
    base = seen(*(result(100.0, gpu=g) for g in (50.0, 55.0, 52.0)))
    head = seen(*(result(100.0, gpu=g * 1.05) for g in (50.0, 55.0, 52.0)))
    assert verdict(base, head).verdict == "ok"


def test_the_interval_is_hierarchical_and_holds_the_ratio():
    base = [[100.0, 101.0, 99.0], [103.0, 104.0, 102.0], [98.0, 97.0, 99.0]]
    head = [[x * 1.2 for x in p] for p in base]
    r = ratio(base, head)
    assert r.median == pytest.approx(1.2) and r.lo <= r.median <= r.hi
    assert ratio(base, head) == r     # seeded: the same answer every time


def test_a_counter_change_fails_naming_the_kernels_that_moved():
    names = {"triton_poi_fused_add_0": 10.0, "triton_red_fused_mean_1": 4.0}
    base = seen(*(result(100.0, counters={"kernels_per_step": 14.0, "graph_breaks": 0}, names=names)
                  for _ in range(3)))
    moved = dict(names, triton_poi_fused_mul_2=2.0)
    head = seen(*(result(100.0, counters={"kernels_per_step": 16.0, "graph_breaks": 0}, names=moved)
                  for _ in range(3)))
    j = verdict(base, head)
    assert j.verdict == "FAIL"
    assert j.failures == ["counter kernels_per_step: base 14, head 16; by kernel: +2 triton_poi_fused_mul_2"]


def test_a_counter_that_moves_between_base_processes_is_not_gated():
    base = seen(*(result(100.0, counters={"kernels_per_step": k}) for k in (14.0, 15.0, 14.0)))
    head = seen(*(result(100.0, counters={"kernels_per_step": 15.0}) for _ in range(3)))
    j = verdict(base, head)
    assert j.verdict == "ok" and not j.failures
    assert j.notes == ["counter kernels_per_step moved between base runs (14, 15, 14): not gated"]
    assert j.counters["moving"] == {"kernels_per_step": [14.0, 15.0, 14.0]}


def test_cpu_timings_are_reported_never_judged():
    base = seen(*(result(100.0 + k, device=CPU) for k in (0, 1, -1)))
    head = seen(*(result(150.0 + k, device=CPU) for k in (0, 1, -1)))
    j = verdict(base, head)
    assert j.verdict == "ok (counters)" and not j.failures
    assert j.timings["wall"]["median"] == pytest.approx(1.5) and j.timings["wall"]["judged"] is False
    faster = verdict(head, base)
    assert faster.verdict == "ok (counters)"


def test_a_case_base_ran_and_head_errored_fails_with_heads_message(tmp_path):
    for i in (1, 2, 3):
        (tmp_path / f"head-{i}.xml").write_text(
            '<testsuites><testsuite><testcase classname="perf_tests.test_llama" name="test_llama[%s]">'
            '<failure message="Failed: %s: setup broke&#10;the traceback">...</failure></testcase>'
            '<testcase name="test_llama[other/case]"><skipped message="needs a GPU"/></testcase>'
            '<testcase name="test_not_a_case"/></testsuite></testsuites>' % (CASE, CASE))
    assert junit_outcomes(tmp_path / "head-1.xml") == {CASE: ("failed", f"Failed: {CASE}: setup broke"),
                                                       "other/case": ("skipped", "needs a GPU")}
    head_procs = [p for p in processes(3, tmp_path) if p.side == "head"]
    head, notes = collect(head_procs)
    assert not notes
    base = seen(*(result(100.0) for _ in range(3)))
    j = judge(CASE, base, head.get(CASE), procs("base"), head_procs)
    assert j.verdict == "FAIL"
    assert j.failures == [f"base ran it, head did not: Failed: {CASE}: setup broke (head 1)"]
    # Head-only cases are new; a case neither side ran is left out.
    assert judge(CASE, None, base, procs("base"), procs("head")).verdict == "new"
    assert judge("other/case", head.get("other/case"), head.get("other/case"), head_procs, head_procs) is None


def test_each_side_imports_its_own_checkout_and_names_its_own_commit(tmp_path):
    inherited = {"PYTHONPATH": "/elsewhere", "MMGEN_COMMIT": "headcommit", "PATH": "/bin"}
    base = side_env(Side("base", tmp_path / "b", None, "dir"), tmp_path, inherited)
    assert base["PYTHONPATH"] == f"{tmp_path / 'b'}:/elsewhere" and "MMGEN_COMMIT" not in base
    assert base["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor-cache")
    head = side_env(Side("head", tmp_path / "h", "abc123", "tree"), tmp_path,
                    inherited | {"TORCHINDUCTOR_CACHE_DIR": "/cache"})
    assert head["PYTHONPATH"] == f"{tmp_path / 'h'}:/elsewhere" and head["MMGEN_COMMIT"] == "headcommit"
    named_by_git = side_env(Side("head", tmp_path / "h", "abc123", "tree"), tmp_path, {"PATH": "/bin"})
    assert "MMGEN_COMMIT" not in named_by_git   # the process asks git, which also says whether there were edits
    assert head["TORCHINDUCTOR_CACHE_DIR"] == "/cache"


def test_fewer_than_three_repeats_are_refused(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert cli.main(["--base", "HEAD", "--repeats", "2", "--", "-k", CASE]) == 2
    assert "--repeats 2: at least 3 processes a side" in capsys.readouterr().err


def test_a_bad_base_ref_is_a_usage_error_naming_it():
    r = subprocess.run([sys.executable, "-m", "workloads.compare", "--base", "no-such-ref-x1", "--", "-k", CASE],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: --base no-such-ref-x1: not a commit in ")


def _fake_runs(records):
    """run_all's stand-in: writes each process's case log from `records(side, index)`."""
    def run_all(sides, tests, pytest_args, repeats, workdir, say=print):
        made = processes(repeats, workdir)
        for p in made:
            p.exit_code, p.seconds = 0, 1.0
            p.case_log.write_text("".join(json.dumps({"gate": "no baseline", "failures": [], "result": r}) + "\n"
                                          for r in records(p.side, p.index)))
        return made
    return run_all


def test_the_command_writes_its_table_json_and_markdown(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(cli, "run_all", _fake_runs(lambda side, i: [result(100.0 + i, gpu=50.0)]))
    argv = ["--base-dir", str(ROOT), "--workdir", str(tmp_path), "--json", str(tmp_path / "c.json"),
            "--markdown", str(tmp_path / "c.md"), "--", "-k", CASE]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "head/base (95% CI)" in out and f"{CASE}  " in out
    assert out.rstrip().endswith("1 cases compared, 0 failed, 0 faster; 6 processes took 6 s in all")
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["exit_code"] == 0 and data["cases"][0]["base"]["medians_ms"] == [101.0, 102.0, 103.0]
    assert (tmp_path / "c.md").read_text().splitlines()[2].startswith("| case | base ms | head ms |")

    gone = _fake_runs(lambda side, i: [result(100.0)] if side == "base" else [])
    monkeypatch.setattr(cli, "run_all", gone)
    assert cli.main(argv) == 1
    assert (f"FAIL {CASE}: base ran it, head did not: in none of its processes' case logs or junit xml "
            f"(pytest exits 0, 0, 0; see {tmp_path / 'head-1.log'})") in capsys.readouterr().out
    monkeypatch.setattr(cli, "run_all", _fake_runs(lambda side, i: []))
    assert cli.main(argv) == 2 and "no case ran on either side" in capsys.readouterr().err


def test_an_interrupted_comparison_judges_what_finished_and_is_never_a_pass(tmp_path, monkeypatch, capsys):
    """A job's time limit stopped a comparison in its last process: the five that finished are
    judged, the table printed, and the exit status says it was not a pass."""
    monkeypatch.chdir(ROOT)
    five = _fake_runs(lambda side, i: [result(100.0 + i, gpu=50.0)])
    monkeypatch.setattr(cli, "run_all", lambda *a, **k: five(*a, **k)[:5])
    argv = ["--base-dir", str(ROOT), "--workdir", str(tmp_path), "--", "-k", CASE]
    assert cli.main(argv) == 130
    out = capsys.readouterr().out
    assert "interrupted after 5 of 6 processes: judged on those alone" in out and f"{CASE}  " in out
    monkeypatch.setattr(cli, "run_all", lambda *a, **k: five(*a, **k)[:1])
    assert cli.main(argv) == 130 and "nothing judged" in capsys.readouterr().err


def _clone_of_the_working_tree(dst: Path) -> None:
    """A clone whose HEAD is this working tree as it is, uncommitted edits and new files
    included: the comparison's base is then the code under test (in CI's fresh clone, HEAD)."""
    git = ["git", "-c", "user.name=compare-test", "-c", "user.email=compare-test@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True)
    listed = subprocess.run(["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
        else:
            (dst / rel).unlink(missing_ok=True)
    subprocess.run([*git, "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "the working tree under test"], cwd=dst, check=True)


def _inject_a_graph_break(root: Path) -> None:
    """The compiled decode step breaks its graph once: a compile case then counts a graph break
    and two graphs (fullgraph off, or the break would be an error)."""
    path = root / "workloads" / "engine" / "static_decode.py"
    src = path.read_text()
    step = "        nxt = self.choose(logits, self.t)\n"
    assert step in src and "fullgraph=True" in src, "the decode step moved: update this test's edit"
    path.write_text(src.replace(step, "        torch._dynamo.graph_break()\n" + step, 1)
                    .replace("fullgraph=True", "fullgraph=False", 1))


def test_end_to_end_a_graph_break_in_the_head_fails_naming_the_counter(tmp_path):
    repo = tmp_path / "repo"
    _clone_of_the_working_tree(repo)
    _inject_a_graph_break(repo)
    env = {k: v for k, v in os.environ.items() if k != "MMGEN_COMMIT"} | {"PYTHONPATH": str(repo)}
    try:   # the compile cache the rest of the tests fill: the base's compile is warm where they ran it
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir()
    except ImportError:   # another torch keeps it elsewhere: the comparison's own cache, cold
        pass
    r = subprocess.run([sys.executable, "-m", "workloads.compare", "--base", "HEAD", "--repeats", "3",
                        "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "c.json"), "--",
                        "-k", f"{CASE} or {UNTOUCHED}", "--device", "cpu", "--latency-only"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"FAIL {CASE}: counter graph_breaks: base 0, head 1" in r.stdout
    assert f"FAIL {CASE}: counter graphs: base 1, head 2" in r.stdout
    assert "2 cases compared, 1 failed, 0 faster; 6 processes took" in r.stdout
    assert r.stdout.count("pytest exit") == 6 and not (tmp_path / "work" / "base").exists()
    cases = {c["case"]: c for c in json.loads((tmp_path / "c.json").read_text())["cases"]}
    assert cases[UNTOUCHED]["verdict"] == "ok (counters)"
    # Each side imported its own checkout: the base measured the code without the edit.
    base, head = cases[CASE]["base"], cases[CASE]["head"]
    assert [c["graph_breaks"] for c in base["counters"]] == [0, 0, 0]
    assert [c["graph_breaks"] for c in head["counters"]] == [1, 1, 1]
    assert len(base["provenance"]["source"]) == 1 and base["provenance"]["source"] != head["provenance"]["source"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert base["provenance"]["commit"] == [commit]
