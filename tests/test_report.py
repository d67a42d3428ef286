"""The summaries: the ladder per input, and rendering a run's case logs after the fact."""
import json

import pytest

from workloads import report
from workloads.report.__main__ import main

from .test_baselines import make_result


def record(case, median, speedup=None, gate="pass"):
    r = make_result(case, samples=(median,), speedup=speedup) | {"lever": case.split("/")[2], "rounds": 1}
    return {"gate": gate, "failures": [], "result": r}


LOG = [
    record("hstu-paper/H-A/eager/paper/bs1", 25.3),
    record("hstu-paper/H-A/fused/paper/bs1", 6.7, (4.65, 4.5, 4.8)),
    record("hstu-paper/H-A/eager/paper/bs32", 354.4),
    record("hstu-paper/H-A/fused/paper/bs32", 37.3, (10.29, 10.1, 10.4), gate="FAIL"),
    record("hstu-paper/H-A/cuda_graph/paper/bs32", 31.0, (13.97, 13.9, 14.1)),
]


def test_the_ladder_has_a_line_per_input_and_a_column_per_lever():
    rows = [report.row(r["result"], r["gate"]) for r in LOG]
    lines = report.ladder(rows, markdown=True).splitlines()
    assert lines[0] == "| model | task | scale | bs | eager ms | fused ms (x) | cuda_graph ms (x) |"
    assert lines[2] == "| hstu-paper | H-A | paper | 1 | 25.3 | 6.7 (4.65x) | - |"
    assert lines[3] == "| hstu-paper | H-A | paper | 32 | 354.4 | 37.3 (10.29x) FAIL | 31.0 (13.97x) |"


def test_case_logs_render_after_the_run_with_the_latest_record_of_a_case(tmp_path, capsys):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in LOG))
    second.write_text(json.dumps(record("hstu-paper/H-A/fused/paper/bs1", 5.9, (5.0, 4.9, 5.1))) + "\n")
    assert main([str(first), str(second), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| hstu-paper | H-A | paper | 1 | 25.3 | 5.9 (5.00x) | - |" in out
    assert "### cases" in out and "| hstu-paper/H-A/fused/paper/bs32 | 1 | 37.30 |" in out   # every table, Markdown
    assert main([str(first)]) == 0
    out = capsys.readouterr().out
    assert "== cases" in out and "== the ladder per input" in out and "hstu-paper/H-A/cuda_graph/paper/bs32" in out


def test_a_case_run_in_several_logs_keeps_every_run_and_its_verdict(tmp_path, capsys):
    # A failed run followed by a passing rerun of the same code: the tables show the latest, and
    # the runs table keeps the failure and how far the two processes were apart.
    case = "chameleon-7b/T-I/compile/paper/bs1"
    fail, rerun = record(case, 13757.0, (2.83, 2.7, 2.9), gate="FAIL"), record(case, 10651.7, (2.82, 2.6, 3.1))
    fail["result"]["host"] = {"share": 0.59, "launch_us": 9.2}
    rerun["result"]["host"] = {"share": 0.48, "launch_us": 8.0}
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in [*LOG, fail]))
    second.write_text(json.dumps(rerun) + "\n")
    assert main([str(first), str(second), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert f"| {case} | 1 | 10651.70 |" in out
    assert "### cases run more than once" in out
    assert f"| {case} | 2 | 13757.0 (FAIL), 10651.7 (pass) | 1.29 | 59%, 48% | 9.2, 8.0 |" in out
    # Cases logged once are not in it, and a single log of distinct cases has no such section.
    assert "hstu-paper/H-A/fused/paper/bs32 | 2" not in out
    assert main([str(second)]) == 0
    assert "more than once" not in capsys.readouterr().out


def test_a_bad_case_log_is_an_error_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(LOG[0]) + "\nnot json\n")
    assert main([str(bad)]) == 2
    assert f"error: case log {bad}, line 2: not a case-log record" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: cannot read it" in capsys.readouterr().out


def test_the_counters_table_shows_what_the_host_and_compiler_did():
    eager = record("chameleon-7b/T-I/eager/paper/bs1", 32273.0)
    eager["result"] |= {"counters": {"kernels_per_step": 1904.0, "launches_per_step": 1895.0, "recompiles": 0},
                        "host": {"share": 0.775}}
    graph = record("chameleon-7b/T-I/cuda_graph/paper/bs1", 5796.2, (5.57, 4.92, 5.68))
    graph["result"] |= {"counters": {"kernels_per_step": 697.0, "launches_per_step": 1.0, "graphs": 1,
                                     "graph_breaks": 0, "recompiles": 0},
                        "host": {"share": 0.057}, "module_speedup": {"decode": 6.132, "detokenize": 1.098}}
    rows = [report.row(r["result"], r["gate"]) for r in (eager, graph)]
    lines = report.counters_table(rows, markdown=True).splitlines()
    assert lines[0] == ("| case | kernels/step | launches/step | graphs | graph breaks | recompiles | host-bound "
                        "| decode x | detokenize x |")
    assert lines[2] == "| chameleon-7b/T-I/eager/paper/bs1 | 1904 | 1895 | - | - | 0 | 78% | - | - |"
    assert lines[3] == "| chameleon-7b/T-I/cuda_graph/paper/bs1 | 697 | 1 | 1 | 0 | 0 | 6% | 6.1 | 1.1 |"
    # Where the compiled graph came from, once a result records it: a column of its own.
    graph["result"]["compiler"] = {"inductor.fxgraph_cache_miss": 1, "aot_autograd.total": 1}
    rows = [report.row(r["result"], r["gate"]) for r in (eager, graph)]
    lines = report.counters_table(rows, markdown=True).splitlines()
    assert "| recompiles | FX cache | host-bound |" in lines[0]
    assert lines[2].startswith("| chameleon-7b/T-I/eager/paper/bs1 | 1904 | 1895 | - | - | 0 | - | 78% |")
    assert lines[3].startswith("| chameleon-7b/T-I/cuda_graph/paper/bs1 | 697 | 1 | 1 | 0 | 0 | miss | 6% |")
    # GEMM padding choices the compile decided by timing them: where a kernel count can move.
    graph["result"]["compiler"]["inductor.pad_mm_bench"] = 4
    lines = report.counters_table([report.row(r["result"], r["gate"]) for r in (eager, graph)], markdown=True).splitlines()
    assert "| FX cache | pad_mm timed | host-bound |" in lines[0]
    assert lines[3].startswith("| chameleon-7b/T-I/cuda_graph/paper/bs1 | 697 | 1 | 1 | 0 | 0 | miss | 4 | 6% |")
    bare = record("x/T/eager/tiny/bs1", 1.0)["result"] | {"counters": {}}
    assert report.counters_table([report.row(bare, "pass")]) == ""   # nothing counted: no table


def test_the_throughput_table_has_a_line_per_counted_span_with_its_share_of_the_matmul_peak():
    graph = record("seamless-large/S-S/vocoder_cuda_graph/paper/bs1", 187.4, (7.38, 7.0, 7.6))
    graph["result"] |= {"span_tflops": {"eager": {"vocoder": 14.0}, "lever": {"vocoder": 50.5}},
                        "matmul_peak_tflops": 750.0}
    eager = record("seamless-large/S-S/eager/paper/bs1", 1382.9)
    eager["result"] |= {"span_tflops": {"eager": {"vocoder": 14.0}}}   # no peak measured: no share
    text = record("seamless-large/T-T/eager/paper/bs1", 1071.5)
    rows = [report.row(r["result"], r["gate"]) for r in (eager, graph, text)]
    lines = report.throughput_table(rows, markdown=True).splitlines()
    assert lines[0] == "| case | span | eager TFLOP/s | lever TFLOP/s | of matmul peak |"
    assert lines[2:] == ["| seamless-large/S-S/eager/paper/bs1 | vocoder | 14 | - | - |",
                         "| seamless-large/S-S/vocoder_cuda_graph/paper/bs1 | vocoder | 14 | 50.5 | 6.7% |"]
    assert report.throughput_table([rows[2]]) == ""   # nothing counted: no table


def test_the_counters_table_shows_the_threads_time_on_a_cpu_and_the_collectors_where_measured():
    eager = record("hstu-paper/H-A/eager/paper/bs1", 30.4)
    eager["result"] |= {"counters": {"kernels_per_run": 893.0, "recompiles": 0},
                        "host": {"share": 0.755, "on_cpu": 1.0, "gc_ms": 0.42}}
    older = record("hstu-paper/H-A/fused/paper/bs1", 7.7, (3.98, 3.82, 4.02))
    older["result"] |= {"counters": {"kernels_per_run": 148.0, "recompiles": 0}, "host": {"share": 0.72}}
    lines = report.counters_table([report.row(r["result"], r["gate"]) for r in (eager, older)], markdown=True).splitlines()
    assert lines[0] == "| case | kernels/run | recompiles | host-bound | on CPU | GC ms |"
    assert lines[2] == "| hstu-paper/H-A/eager/paper/bs1 | 893 | 0 | 76% | 100% | 0.4 |"
    assert lines[3] == "| hstu-paper/H-A/fused/paper/bs1 | 148 | 0 | 72% | - | - |"   # an entry older than the figures


def test_the_html_page_has_the_tables_and_a_figure_per_input(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the HTML report's figures need matplotlib (the test extra has it)")
    log, page = tmp_path / "a.jsonl", tmp_path / "report.html"
    log.write_text("".join(json.dumps(r) + "\n" for r in LOG))
    assert main([str(log), "--html", str(page)]) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 2   # inputs bs1 and bs32
    assert "<h3>hstu-paper/H-A/paper/bs32</h3>" in text
    assert '<td class="fail">FAIL</td>' in text   # the failed gate stands out in the cases table
    assert "10.29x [10.10, 10.40]" in text         # the ladder figure labels each rung's speedup
    assert not list(tmp_path.glob("*.tmp"))
