"""The suite as a user drives it: options, bad input, and the gate end to end (subprocesses)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CASE = "llama-tiny/T-T/compile/tiny/bs1"


def pytest_run(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("option, value, valid", [("--scale", "huge", "tiny"), ("--device", "tpu", "cuda")])
def test_an_invalid_choice_is_a_usage_error_listing_the_valid_ones(option, value, valid):
    r = pytest_run("perf_tests", "--collect-only", "-q", option, value)
    assert r.returncode == 4
    assert f"invalid choice: '{value}'" in r.stderr and valid in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_says_so():
    r = pytest_run("perf_tests", "--collect-only", "-q", "--device", "cuda")
    assert r.returncode == 4 and "no CUDA GPU is available" in r.stderr


def test_a_bad_checkpoint_is_a_usage_error_naming_the_path(tmp_path):
    r = pytest_run("perf_tests", "--collect-only", "-q", "--checkpoint", f"llama-7b={tmp_path}/missing")
    assert r.returncode == 4 and "missing is not a directory" in r.stderr


def test_collect_lists_every_lever_at_bs1_and_max_batch():
    r = pytest_run("perf_tests", "--collect-only", "-q", "-k", "llama", "--scale", "paper")
    for lever in ("eager", "sdpa", "compile", "cuda_graph"):
        assert f"llama-7b/T-T/{lever}/paper/bs1]" in r.stdout
        assert len([line for line in r.stdout.splitlines() if f"llama-7b/T-T/{lever}/paper/bs" in line]) == 2


def test_update_then_gate_end_to_end(tmp_path):
    """--update-baselines writes a schema-valid file; a changed counter then fails naming the
    case and the file; a corrupt file fails naming file and key."""
    r = pytest_run("perf_tests", "-k", CASE, "--device", "cpu", "--baselines", str(tmp_path), "--update-baselines")
    assert r.returncode == 0, r.stdout[-2000:]
    path = tmp_path / "cpu" / "tiny.json"
    data = json.loads(path.read_text())
    entry = data["cases"][CASE]
    assert entry["counters"]["graph_breaks"] == 0 and entry["provenance"]["torch"] == torch.__version__
    assert "launch_us" in entry["host"]
    assert "updated" in r.stdout and "mmgen-perf cases" in r.stdout
    assert entry["build_s"] > 0 and entry["untimed_s"] > 0

    # How long the selection would take there, from that baseline; nothing runs.
    r = pytest_run("perf_tests", "-k", CASE, "--baselines", str(tmp_path), "--estimate", "cpu")
    assert r.returncode == 0, r.stdout[-2000:]
    assert "mmgen-perf estimate (nothing ran)" in r.stdout and "llama-tiny/T-T/tiny/bs1" in r.stdout
    assert f"min on cpu ({path})" in r.stdout and "mmgen-perf cases" not in r.stdout
    r = pytest_run("perf_tests", "-k", CASE, "--baselines", str(tmp_path), "--estimate", "nvidia-h100")
    assert r.returncode == 4
    assert f"no baselines at {tmp_path / 'nvidia-h100' / 'tiny.json'}; classes with baselines: ['cpu']" in r.stderr

    entry["counters"]["graphs"] = 2
    path.write_text(json.dumps(data))
    r = pytest_run("perf_tests", "-k", CASE, "--device", "cpu", "--baselines", str(tmp_path))
    assert r.returncode == 1
    assert f"{CASE}: counter graphs changed: measured 1, baseline 2 ({path})" in r.stdout
    assert "torch.__trace" not in r.stdout   # the failure is not buried under the compiler's trace records

    entry["latency_ms"]["ci"] = "wide"
    path.write_text(json.dumps(data))
    r = pytest_run("perf_tests", "-k", CASE, "--device", "cpu", "--baselines", str(tmp_path))
    assert r.returncode == 1
    assert str(path) in r.stdout and "latency_ms.ci" in r.stdout


def test_case_log_and_module_table(tmp_path):
    """--case-log keeps one JSON line per case as it ends; a pipeline workload also prints
    where its time goes, module by module."""
    log = tmp_path / "cases.jsonl"
    r = pytest_run("perf_tests", "-k", "seamless-tiny/T-T/compile/tiny/bs1", "--device", "cpu", "--case-log", str(log))
    assert r.returncode == 0, r.stdout[-2000:]
    (line,) = log.read_text().splitlines()
    record = json.loads(line)
    assert record["gate"] == "pass (counters)" and record["failures"] == []
    result = record["result"]
    assert result["case"] == "seamless-tiny/T-T/compile/tiny/bs1"
    assert {"encoder", "decoder.prefill", "decoder.step", "kv_reorder"} <= set(result["modules_ms"]["lever"])
    assert "where the time goes" in r.stdout


def test_the_selected_rungs_of_one_input_share_the_eager_rounds(tmp_path):
    """`pytest perf_tests -k ...` times the selected rungs of one model, task and batch in one
    loop: each lever's reference samples are the eager case's own rounds, not a second timing
    of eager. A workload of another input is timed on its own."""
    log = tmp_path / "cases.jsonl"
    r = pytest_run("perf_tests", "-k", "hstu-tiny/H-A/ and bs1 and (eager or memory_efficient)", "--device", "cpu",
                   "--case-log", str(log))
    assert r.returncode == 0, r.stdout[-2000:]
    results = {json.loads(x)["result"]["lever"]: json.loads(x)["result"] for x in log.read_text().splitlines()}
    eager, lever = results["eager"], results["memory_efficient"]
    assert lever["reference_latency_ms"]["samples"] == eager["latency_ms"]["samples"][:lever["rounds"]]


def test_latency_only_times_a_rung_without_eager_and_gates_its_latency(tmp_path):
    """--latency-only (the pull-request gate's mode) times the selected rungs alone: no eager
    rounds, no speedup, no reference figures; the latency and counters still gate against the
    baseline, and a declared speedup requirement is not judged. Where the eager case is itself
    selected, the rungs pair with it as usual. Writing baselines from such a run is refused."""
    case = "hstu-tiny/H-A/memory_efficient/tiny/bs1"
    r = pytest_run("perf_tests", "-k", case, "--device", "cpu", "--baselines", str(tmp_path), "--update-baselines")
    assert r.returncode == 0, r.stdout[-2000:]
    log = tmp_path / "alone.jsonl"
    r = pytest_run("perf_tests", "-k", case, "--device", "cpu", "--baselines", str(tmp_path), "--latency-only",
                   "--case-log", str(log))
    assert r.returncode == 0, r.stdout[-2000:]
    (record,) = [json.loads(x) for x in log.read_text().splitlines()]
    result = record["result"]
    assert record["gate"] == "pass (counters)"
    assert result["speedup"] is None and result["reference_latency_ms"] is None and result["agreement"] is None
    assert set(result["modules_ms"]) == {"lever"} and "reference_share" not in result["host"]

    log = tmp_path / "beside.jsonl"
    r = pytest_run("perf_tests", "-k", "hstu-tiny/H-A/ and bs1 and (eager or memory_efficient)", "--device", "cpu",
                   "--latency-only", "--case-log", str(log))
    assert r.returncode == 0, r.stdout[-2000:]
    results = {json.loads(x)["result"]["lever"]: json.loads(x)["result"] for x in log.read_text().splitlines()}
    assert results["memory_efficient"]["speedup"] is not None

    r = pytest_run("perf_tests", "-k", case, "--device", "cpu", "--latency-only", "--update-baselines")
    assert r.returncode == 4 and "--latency-only with --update-baselines" in r.stderr
