"""The summaries: per workload, within a terminal's width; rendering a run's case logs after the fact."""
import ast
import json
from pathlib import Path

import pytest

import workloads.report
from workloads import report
from workloads.case import Case
from workloads.report.__main__ import main

from .test_baselines import make_result


def record(case, median, speedup=None, gate="pass", workload=None):
    r = make_result(case, samples=(median,), speedup=speedup) | {"lever": Case.parse(case).lever, "rounds": 1}
    if workload:
        r["workload"] = workload
    return {"gate": gate, "failures": [], "result": r}


LOG = [
    record("hstu-paper/H-A/eager/paper/bs1", 25.3),
    record("hstu-paper/H-A/fused/paper/bs1", 6.7, (4.65, 4.5, 4.8)),
    record("hstu-paper/H-A/eager/paper/bs32", 354.4),
    record("hstu-paper/H-A/fused/paper/bs32", 37.3, (10.29, 10.1, 10.4), gate="FAIL"),
    record("hstu-paper/H-A/cuda_graph/paper/bs32", 31.0, (13.97, 13.9, 14.1)),
]


def _rung(workload, model, task, lever, bs, e2e, x, **extra):
    """A paper-scale result as the harness records it, every id field named."""
    r = make_result(f"{model}/{task}/{lever}/paper/bs{bs}", samples=(e2e,),
                    speedup=None if lever == "eager" else (x, x * 0.97, x * 1.03))
    r |= {"workload": workload, "model": model, "task": task, "lever": lever, "scale": "paper", "batch": bs,
          "rounds": 3, "peak_memory": {"kind": "cuda_allocated", "peak_mb": 38704.7 + bs},
          "compile_s": None if lever in ("eager", "sdpa") else 28.28,
          "host": {"share": 0.756, "on_cpu": 1.0, "gc_ms": 0.42, "launch_us": 12.34}}
    return r | extra


SEAMLESS_LEVERS = ("eager", "sdpa", "compile", "cuda_graph", "kv_reorder", "vocoder_compile", "vocoder_cuda_graph",
                   "vocoder_conv2d")


def seamless(lever, bs, gate="pass"):
    i = SEAMLESS_LEVERS.index(lever)
    x = 1 + 0.9 * i
    modules = {"encoder": 180.31, "decoder.prefill": 25.12, "decoder.step": 1423.64, "kv_reorder": 412.83,
               "decoder.rerun": 88.01, "t2u.subwords": 35.24, "t2u": 1190.42, "vocoder": 1012.33, "other": 53.12}
    modules = {k: v / x for k, v in modules.items()} | {"total": sum(modules.values()) / x, "kv_reorder_share": 0.225}
    r = _rung("seamless", "seamless-large", "S-S", lever, bs, (1382.9 if bs == 1 else 13757.0) / x, x,
              ttft_ms={"median": 1500.28}, tpot_ms={"median": 11.652}, roofline={"fraction": 0.165},
              modules_ms={"eager": modules, "lever": modules},
              counters={"kernels_per_step": 1781.0, "blas_helpers_per_step": 240.0, "launches_per_step": 1635.0,
                        "graphs": 12, "graph_breaks": 10, "recompiles": 10},
              compiler={"inductor.fxgraph_cache_hit": 1, "inductor.fxgraph_cache_miss": 1,
                        "inductor.fxgraph_cache_bypass": 1, "inductor.pad_mm_bench": 14},
              module_speedup={"encoder": 1.21, "text_decoder": 13.4, "t2u": 11.9, "vocoder": 17.4},
              span_tflops={"eager": {"vocoder": 14.0}, "lever": {"vocoder": 50.5}}, matmul_peak_tflops=750.0)
    return {"gate": gate, "failures": [], "result": r}


def chameleon(task, lever, bs):
    x = 1 + ("eager", "sdpa", "compile", "cuda_graph").index(lever) * 1.5
    modules = {"prefill": 51.96, "decode": 32110.2 / x, "detokenize": 110.9, "other": 0.4}
    r = _rung("chameleon", "chameleon-7b", task, lever, bs, 32273.0 / x, x, ttft_ms={"median": 51.96},
              tpot_ms={"median": 31.44 / x}, roofline={"fraction": 0.541},
              modules_ms={"lever": modules | {"total": sum(modules.values())}},
              counters={"kernels_per_step": 1904.0, "launches_per_step": 1895.0, "graphs": 1, "graph_breaks": 0,
                        "recompiles": 0},
              module_speedup={"prefill": 1.02, "decode": 6.13, "detokenize": 1.1})
    return {"gate": "no baseline", "failures": [], "result": r}


def hstu(task, lever, bs):
    x = 1 + ("eager", "memory_efficient", "fused", "compile", "cuda_graph").index(lever) * 3.1
    modules = {"embedding": 1.21, "dense": 8.92, "attention": 342.11 / x, "heads": 0.83}
    r = _rung("hstu", "hstu-paper", task, lever, bs, 354.4 / x, x, tpot_ms=None,
              modules_ms={"lever": modules | {"total": sum(modules.values()), "attention_share": 0.9}},
              counters={"kernels_per_run": 893.0, "launches_per_run": 880.0, "recompiles": 0},
              span_tflops={"eager": {"attention": 121.0}, "lever": {"attention": 402.5}}, matmul_peak_tflops=750.0)
    return {"gate": "pass", "failures": [], "result": r}


PAPER = [*(seamless(lv, bs, gate="FAIL" if lv == "kv_reorder" else "pass") for bs in (1, 72) for lv in SEAMLESS_LEVERS),
         *(chameleon(t, lv, bs) for t in ("T-I", "I-T", "IT-T") for bs in (1, 16)
           for lv in ("eager", "sdpa", "compile", "cuda_graph")),
         *(hstu(t, lv, bs) for t in ("H-A", "H-A-8K") for bs in (1, 32)
           for lv in ("eager", "memory_efficient", "fused", "compile", "cuda_graph"))]


def rows_of(records):
    return [report.row(r["result"], r["gate"]) for r in records]


def test_the_ladder_has_a_line_per_input_and_a_column_per_lever():
    lines = report.ladder(rows_of(LOG), markdown=True).splitlines()
    assert lines[0] == "| model | task | scale | bs | eager ms | fused ms (x) | cuda_graph ms (x) |"
    assert lines[2] == "| hstu-paper | H-A | paper | 1 | 25.3 | 6.7 (4.65x) | - |"
    assert lines[3] == "| hstu-paper | H-A | paper | 32 | 354.4 | 37.3 (10.29x) FAIL | 31.0 (13.97x) |"


def test_a_row_carries_the_case_fields_of_its_result_and_falls_back_to_the_id():
    new = report.row(seamless("kv_reorder", 72)["result"], "pass")
    assert {k: new[k] for k in ("workload", "model", "task", "lever", "scale", "batch", "input")} == {
        "workload": "seamless", "model": "seamless-large", "task": "S-S", "lever": "kv_reorder", "scale": "paper",
        "batch": 72, "input": "seamless-large/S-S/paper/bs72"}
    old = report.row(make_result("hstu-paper/H-A/fused/paper/bs32") | {"rounds": 1}, "pass")
    assert (old["workload"], old["lever"], old["input"]) == ("hstu-paper", "fused", "hstu-paper/H-A/paper/bs32")


def test_the_summaries_come_one_group_per_workload_in_the_order_the_rows_name_them():
    titles = [t for t, _ in report.sections(rows_of(PAPER))]
    starts = [t for t in titles if t.endswith(": cases")]
    assert starts == ["seamless (seamless-large, paper scale): cases", "chameleon (chameleon-7b, paper scale): cases",
                      "hstu (hstu-paper, paper scale): cases"]
    assert titles[:5] == [f"seamless (seamless-large, paper scale): {t}" for t in (
        "cases", "the ladder per input (ms, and x over eager timed beside it)",
        "where the time goes (ms per module, one instrumented round)",
        "counters, host-bound share, module speedups over eager",
        "throughput of counted spans (one instrumented round)")]
    # Chameleon counts no span: no throughput table in its group.
    assert [t.split(": ")[1][:10] for t in titles if t.startswith("chameleon")] == [
        "cases", "the ladder", "where the ", "counters, "]
    text = dict(report.sections(rows_of(PAPER)))
    cases = text["hstu (hstu-paper, paper scale): cases"]
    assert "H-A-8K/cuda_graph/bs32" in cases and "S-S" not in cases and "T-I" not in cases
    # The model and scale the title names leave the case column; the batch stays.
    assert "hstu-paper/" not in cases and "/paper/" not in cases


def test_every_line_of_every_table_fits_a_terminal_on_paper_scale_rows():
    rows = rows_of(PAPER)
    rerun = seamless("kv_reorder", 72)
    every = [(r["result"], r["gate"]) for r in [*PAPER, rerun, rerun]]
    for markdown in (False, True):
        secs = report.sections(rows, markdown=markdown, records=every)
        assert any("cases run more than once" in t for t, _ in secs)
        for title, text in secs:
            wide = [ln for ln in text.splitlines() if len(ln) > report.WIDTH]
            assert not wide and len(title) <= report.WIDTH, (title, wide[:1])
    # Split, not dropped: every module, counter and group of the Seamless rows is still shown.
    text = "\n".join(t for title, t in report.sections(rows) if title.startswith("seamless"))
    for header in ("encoder", "decoder.prefill", "decoder.step", "kv_reorder", "decoder.rerun", "t2u.subwords",
                   "vocoder", "other", "total", "reorder share", "kernels/step", "cuBLAS aux/step", "launches/step",
                   "graphs", "graph breaks", "recompiles", "FX cache", "pad_mm timed", "host-bound", "on CPU",
                   "GC ms", "encoder x", "text_decoder x", "t2u x", "vocoder x", "TTFT ms", "TPOT ms", "roofline",
                   "compile s", "peak MiB", "vocoder_conv2d ms (x)", "of matmul peak"):
        assert header in text, header
    assert "hit+miss+bypass" in text and "7.30x [7.08, 7.52]" in text and "S-S/vocoder_cuda_graph/bs72" in text
    # Without a width (the HTML page) nothing splits: one table under each title.
    for _, t in report.sections(rows, markdown=True, width=None):
        assert sum(ln.startswith("| ---") for ln in t.splitlines()) == 1


def test_a_column_no_row_has_a_figure_in_is_left_out():
    hstu_rows = [r for r in rows_of(PAPER) if r["workload"] == "hstu"]
    head = report.table(hstu_rows).splitlines()[0].split()
    assert "TTFT" not in head and "roofline" not in head and "TPOT" not in head   # HSTU does not decode
    counters = report.counters_table(hstu_rows, markdown=True).splitlines()[0]
    assert counters == "| case | kernels/run | launches/run | recompiles | host-bound | on CPU | GC ms |"
    seamless_head = report.table([r for r in rows_of(PAPER) if r["workload"] == "seamless"], markdown=True)
    assert "| TTFT ms | TPOT ms | speedup [95% CI] | roofline | compile s | peak MiB | gate |" in seamless_head
    assert report.fit(["case", "a", "b"], [["x", "-", "1"], ["y", "-", "-"]], markdown=True) == (
        "| case | b |\n| --- | --- |\n| x | 1 |\n| y | - |")
    assert report.fit(["case", "a"], [["x", "-"]]) == ""   # no figure at all: no table


def test_no_function_of_the_report_reads_a_case_id_by_splitting_it():
    # The case module reads ids; the report takes the fields a row carries.
    for path in Path(workloads.report.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                args = [a.value for a in node.args if isinstance(a, ast.Constant)]
                assert not (node.func.attr in ("split", "rsplit", "partition", "rpartition") and "/" in args), \
                    f"{path.name}:{node.lineno} splits a case id"


def test_case_logs_render_after_the_run_with_the_latest_record_of_a_case(tmp_path, capsys):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in LOG))
    second.write_text(json.dumps(record("hstu-paper/H-A/fused/paper/bs1", 5.9, (5.0, 4.9, 5.1))) + "\n")
    assert main([str(first), str(second), "--markdown"]) == 0
    out = capsys.readouterr().out
    # An older log names no workload: its model names the group.
    assert "| task | bs | eager ms | fused ms (x) | cuda_graph ms (x) |" in out
    assert "| H-A | 1 | 25.3 | 5.9 (5.00x) | - |" in out
    assert "### hstu-paper (paper scale): cases" in out and "| H-A/fused/bs32 | 1 | 37.30 |" in out   # Markdown
    assert main([str(first)]) == 0
    out = capsys.readouterr().out
    assert "== hstu-paper (paper scale): cases" in out and "== hstu-paper (paper scale): the ladder per input" in out
    assert "H-A/cuda_graph/bs32" in out


def test_a_rendered_case_log_ends_with_its_failures_open_targets_and_tracked_figures(tmp_path, capsys):
    """The nightly job's summary is rendered from its case log: what the gate reported without
    failing (open targets, host-bound latencies tracked) shows there too, from each case's
    latest record."""
    rec = hstu("H-A", "fused", 1) | {"targets": ["hstu-paper/H-A/fused/paper/bs1: attention speedup 1.50x is under "
                                                 "2.0x, 0.50x short (bar); a target not met yet"],
                                     "tracked": ["hstu-paper/H-A/fused/paper/bs1: latency ...; tracked, not gated"]}
    log = tmp_path / "n.jsonl"
    log.write_text(json.dumps(rec) + "\n")
    assert main([str(log), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "### targets not met yet\n\n- hstu-paper/H-A/fused/paper/bs1: attention speedup 1.50x" in out
    assert "### tracked, not gated\n\n- hstu-paper/H-A/fused/paper/bs1: latency" in out
    assert "### failures" not in out


def test_a_case_run_in_several_logs_keeps_every_run_and_its_verdict(tmp_path, capsys):
    # A failed run followed by a passing rerun of the same code: the tables show the latest, and
    # the runs table keeps the failure and how far the two processes were apart.
    case = "chameleon-7b/T-I/compile/paper/bs1"
    fail = record(case, 13757.0, (2.83, 2.7, 2.9), gate="FAIL", workload="chameleon")
    rerun = record(case, 10651.7, (2.82, 2.6, 3.1), workload="chameleon")
    fail["result"]["host"] = {"share": 0.59, "launch_us": 9.2}
    rerun["result"]["host"] = {"share": 0.48, "launch_us": 8.0}
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in [*LOG, fail]))
    second.write_text(json.dumps(rerun) + "\n")
    assert main([str(first), str(second), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "### chameleon (chameleon-7b, paper scale): cases\n" in out and "| T-I/compile/bs1 | 1 | 10651.70 |" in out
    assert "### chameleon (chameleon-7b, paper scale): cases run more than once" in out
    assert "| T-I/compile/bs1 | 2 | 13757.0 (FAIL), 10651.7 (pass) | 1.29 | 59%, 48% | 9.2, 8.0 |" in out
    # Cases logged once are not in it, and a single log of distinct cases has no such section.
    assert "H-A/fused/bs32 | 2" not in out and "hstu-paper (paper scale): cases run" not in out
    assert main([str(second)]) == 0
    assert "more than once" not in capsys.readouterr().out


def test_a_bad_case_log_is_an_error_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(LOG[0]) + "\nnot json\n")
    assert main([str(bad)]) == 2
    assert f"error: case log {bad}, line 2: not a case-log record" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: cannot read it" in capsys.readouterr().out
    odd = record("hstu-paper/H-A/fused/paper/bs1", 6.7)
    odd["result"]["case"] = "not-a-case"
    bad.write_text(json.dumps(LOG[0]) + "\n" + json.dumps(odd) + "\n")
    assert main([str(bad)]) == 2
    assert f"error: case log {bad}, line 2: 'not-a-case' is not a case id" in capsys.readouterr().out


def test_the_counters_table_shows_what_the_host_and_compiler_did():
    eager = record("chameleon-7b/T-I/eager/paper/bs1", 32273.0)
    eager["result"] |= {"counters": {"kernels_per_step": 1904.0, "launches_per_step": 1895.0, "recompiles": 0},
                        "host": {"share": 0.775}}
    graph = record("chameleon-7b/T-I/cuda_graph/paper/bs1", 5796.2, (5.57, 4.92, 5.68))
    graph["result"] |= {"counters": {"kernels_per_step": 697.0, "launches_per_step": 1.0, "graphs": 1,
                                     "graph_breaks": 0, "recompiles": 0},
                        "host": {"share": 0.057}, "module_speedup": {"decode": 6.132, "detokenize": 1.098}}
    lines = report.counters_table(rows_of((eager, graph)), markdown=True).splitlines()
    assert lines[0] == ("| case | kernels/step | launches/step | graphs | graph breaks | recompiles | host-bound "
                        "| decode x | detokenize x |")
    assert lines[2] == "| chameleon-7b/T-I/eager/paper/bs1 | 1904 | 1895 | - | - | 0 | 78% | - | - |"
    assert lines[3] == "| chameleon-7b/T-I/cuda_graph/paper/bs1 | 697 | 1 | 1 | 0 | 0 | 6% | 6.1 | 1.1 |"
    # Where the compiled graph came from, once a result records it: a column of its own.
    graph["result"]["compiler"] = {"inductor.fxgraph_cache_miss": 1, "aot_autograd.total": 1}
    lines = report.counters_table(rows_of((eager, graph)), markdown=True).splitlines()
    assert "| recompiles | FX cache | host-bound |" in lines[0]
    assert lines[2].startswith("| chameleon-7b/T-I/eager/paper/bs1 | 1904 | 1895 | - | - | 0 | - | 78% |")
    assert lines[3].startswith("| chameleon-7b/T-I/cuda_graph/paper/bs1 | 697 | 1 | 1 | 0 | 0 | miss | 6% |")
    # GEMM padding choices the compile decided by timing them: where a kernel count can move.
    graph["result"]["compiler"]["inductor.pad_mm_bench"] = 4
    lines = report.counters_table(rows_of((eager, graph)), markdown=True).splitlines()
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
    rows = rows_of((eager, graph, text))
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
    lines = report.counters_table(rows_of((eager, older)), markdown=True).splitlines()
    assert lines[0] == "| case | kernels/run | recompiles | host-bound | on CPU | GC ms |"
    assert lines[2] == "| hstu-paper/H-A/eager/paper/bs1 | 893 | 0 | 76% | 100% | 0.4 |"
    assert lines[3] == "| hstu-paper/H-A/fused/paper/bs1 | 148 | 0 | 72% | - | - |"   # an entry older than the figures


def _stamped(rec, date, **prov):
    rec = json.loads(json.dumps(rec))
    rec["result"]["provenance"] = {"commit": "1a2b3c4d5e6f", "gpu": "NVIDIA H200", "driver": "580.159.04",
                                   "torch": "2.11.0+cu130", "cuda": "13.0", "transformers": "5.17.0",
                                   "date": date} | prov
    return rec


def test_a_provenance_line_per_case_log_with_the_dates_it_spans():
    from workloads.report.html import provenance

    gate = [(f"gate.jsonl:{n}", _stamped(r, f"2026-12-01T10:{n:02d}:00+00:00")) for n, r in enumerate(PAPER[:26], 2)]
    night = [("night.jsonl:1", _stamped(PAPER[0], "2026-11-30T23:50:12+00:00", gpu=None, driver=None,
                                        device_class="cpu", cuda=None)),
             ("night.jsonl:2", _stamped(PAPER[0], "2026-12-01T01:10:00+01:00", commit="9f8e7d6c5b", dirty=True,
                                        device_class="cpu", gpu=None, driver=None, cuda=None))]
    assert provenance(gate + night) == [
        "gate.jsonl: commit 1a2b3c4, NVIDIA H200, driver 580.159.04, torch 2.11.0+cu130, CUDA 13.0, "
        "transformers 5.17.0, 2026-12-01 10:02-10:27 UTC, 26 cases",
        "night.jsonl: commit 1a2b3c4 then 9f8e7d6 (uncommitted changes), cpu, torch 2.11.0+cu130, "
        "transformers 5.17.0, 2026-11-30 23:50 - 2026-12-01 00:10 UTC, 1 case, 2 records",
    ]


def test_the_html_page_has_tables_per_workload_a_provenance_line_per_log_and_a_figure_per_input(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the HTML report's figures need matplotlib (the test extra has it)")
    log, other, page = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "report.html"
    log.write_text("".join(json.dumps(_stamped(r, "2026-12-01T10:02:00+00:00")) + "\n" for r in LOG))
    other.write_text(json.dumps(_stamped(seamless("eager", 1), "2026-12-02T09:00:00+00:00")) + "\n")
    assert main([str(log), str(other), "--html", str(page)]) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 3   # hstu bs1 and bs32, seamless bs1
    assert text.count("<li>") == 2 and f"<li>{log}: commit 1a2b3c4, NVIDIA H200" in text
    assert "2026-12-01 10:02 UTC, 5 cases</li>" in text
    assert "<h2>hstu-paper (paper scale)</h2>" in text and "<h2>seamless (seamless-large, paper scale)</h2>" in text
    assert "<h3>hstu-paper/H-A/paper/bs32</h3>" in text
    assert '<td class="fail">FAIL</td>' in text   # the failed gate stands out in the cases table
    assert "10.29x [10.10, 10.40]" in text         # the ladder figure labels each rung's speedup
    assert "<th>TTFT ms</th>" not in text.split("<h2>seamless")[0]   # no empty column
    assert not list(tmp_path.glob("*.tmp"))


def test_the_figures_legend_covers_no_plot_and_the_log_axis_labels_do_not_overlap():
    pytest.importorskip("matplotlib", reason="the HTML report's figures need matplotlib (the test extra has it)")
    from workloads.report.html import _needs_matplotlib, figure

    plt = _needs_matplotlib()
    rows = rows_of(seamless(lv, 72) for lv in SEAMLESS_LEVERS)
    fig = figure("seamless-large/S-S/paper/bs72", rows, plt)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    ladder = fig.axes[0]
    labels = [t for t in ladder.get_xticklabels(which="both") if t.get_visible() and t.get_text()]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert len(boxes) >= 2 and all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))
    plt.close(fig)


def test_diffusion_attention_lengths_come_once_an_input_as_runs_in_call_order():
    calls = {"per_step": 32, "self_query": [4096] * 2 + [1024] * 2 + [256] * 2 + [64] + [256] * 3 + [1024] * 3
             + [4096] * 3, "cross_key": [77]}
    calls["cross_query"] = calls["self_query"]
    rows = [report.row(_rung("sd15", "sd15", "T-I", lever, 1, 1600.0, 1.05, attention_calls=calls), "pass")
            for lever in ("eager", "sdpa")]
    lines = report.attention_table(rows, markdown=True, shared=frozenset({"model", "scale"})).splitlines()
    assert lines[2] == "| T-I/bs1 | 32 | 4096x2 1024x2 256x2 64 256x3 1024x3 4096x3 | 77 |" and len(lines) == 3
    assert report.attention_table(rows_of(LOG)) == ""   # workloads that record none have no table


def test_the_operator_table_shows_each_kind_and_its_share_in_the_papers_order():
    ops = {"other": 10.0, "attention": 30.0, "convolution": 40.0, "idle": 20.0}
    rows = [report.row(_rung("sd15", "sd15", "T-I", "sdpa", 1, 100.0, 1.05,
                             operators_ms={"eager": {"attention": 90.0}, "lever": ops}), "pass")]
    lines = report.operators_table(rows, markdown=True, shared=frozenset({"model", "scale"})).splitlines()
    assert lines[0] == "| case | convolution ms | attention ms | other ms | idle ms |"
    assert lines[2] == "| T-I/sdpa/bs1 | 40.0 (40%) | 30.0 (30%) | 10.0 (10%) | 20.0 (20%) |"
    assert report.operators_table(rows_of(LOG)) == ""

