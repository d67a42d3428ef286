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


def pytest_run(*args, timeout=600, path=()):
    # Not a worker of the outer run's xdist (`pytest tests -n 2`): the run it starts is the user's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env.update(PYTHONPATH=os.pathsep.join([*map(str, path), str(ROOT)]))
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
    assert "updated" in r.stdout and "mmgen-perf llama (llama-tiny, tiny scale): cases" in r.stdout
    assert entry["build_s"] > 0 and entry["untimed_s"] > 0

    # How long the selection would take there, from that baseline; nothing runs.
    r = pytest_run("perf_tests", "-k", CASE, "--baselines", str(tmp_path), "--estimate", "cpu")
    assert r.returncode == 0, r.stdout[-2000:]
    assert "mmgen-perf estimate (nothing ran)" in r.stdout and "llama-tiny/T-T/tiny/bs1" in r.stdout
    assert f"min on cpu ({path})" in r.stdout and ": cases" not in r.stdout
    r = pytest_run("perf_tests", "-k", CASE, "--baselines", str(tmp_path), "--estimate", "nvidia-h100")
    assert r.returncode == 4
    assert f"no baselines at {tmp_path / 'nvidia-h100' / 'tiny.json'}; classes with baselines: ['cpu']" in r.stderr

    entry["counters"]["graphs"] = 2
    path.write_text(json.dumps(data))
    r = pytest_run("perf_tests", "-k", CASE, "--device", "cpu", "--baselines", str(tmp_path))
    assert r.returncode == 1
    assert f"{CASE}: counter graphs changed: measured 1, baseline 2 ({path})" in r.stdout
    assert "torch.__trace" not in r.stdout   # the failure is not buried under the compiler's trace records



@pytest.mark.parametrize("corrupt, key", [
    (lambda data, text: json.dumps(data).replace('"ci": [', '"ci": "wide", "was": [', 1), ".latency_ms.ci"),
    (lambda data, text: text[: len(text) // 2], "not valid JSON"),
])
def test_a_bad_baseline_file_stops_the_run_before_any_case_naming_file_and_key(tmp_path, corrupt, key):
    """A corrupt baseline file is found before anything is timed and reported once, with its
    path and the key, without a traceback; no case runs."""
    r = pytest_run("perf_tests", "-k", CASE, "--device", "cpu", "--baselines", str(tmp_path), "--update-baselines")
    assert r.returncode == 0, r.stdout[-2000:]
    path = tmp_path / "cpu" / "tiny.json"
    path.write_text(corrupt(json.loads(path.read_text()), path.read_text()))
    r = pytest_run("perf_tests", "-k", "llama-tiny", "--device", "cpu", "--baselines", str(tmp_path))
    assert r.returncode == 4
    (line,) = [x for x in (r.stdout + r.stderr).splitlines() if str(path) in x]
    assert key in line and line.startswith("ERROR: bad baseline file, nothing was run")
    assert "Traceback" not in r.stdout + r.stderr and "passed" not in r.stdout and "failed" not in r.stdout


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
                   "--latency-only", "--rounds", "4", "--case-log", str(log))
    assert r.returncode == 0, r.stdout[-2000:]
    results = {json.loads(x)["result"]["lever"]: json.loads(x)["result"] for x in log.read_text().splitlines()}
    assert results["memory_efficient"]["speedup"] is not None
    # --rounds (the comparison's processes) fixes every rung's round count, eager's included.
    assert [r["rounds"] for r in results.values()] == [4, 4]
    r = pytest_run("perf_tests", "-k", case, "--device", "cpu", "--rounds", "2")
    assert r.returncode == 4 and "--rounds 2: at least 3 rounds" in r.stderr

    r = pytest_run("perf_tests", "-k", case, "--device", "cpu", "--latency-only", "--update-baselines")
    assert r.returncode == 4 and "--latency-only with --update-baselines" in r.stderr


def _checkpoint(path: Path, weights: bytes | None = None) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    if weights is None:
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
    else:
        (path / "model.safetensors").write_bytes(weights)
    return path


def test_a_checkpoint_says_which_selected_cases_it_serves(tmp_path):
    """--checkpoint on a run that selects none of its model's cases says so, naming the models
    the run does select; a malformed weights file is a one-line usage error naming the file."""
    good = _checkpoint(tmp_path / "ok")
    r = pytest_run("perf_tests", "-k", CASE, "--device", "cpu", "--checkpoint", f"llama-7b={good}", "--collect-only")
    assert f"--checkpoint llama-7b={good}: serves none of the selected cases (their models: llama-tiny)" in r.stdout
    bad = _checkpoint(tmp_path / "bad", weights=b"\x08\x00\x00\x00\x00\x00\x00\x00{trunc")
    r = pytest_run("perf_tests", "-k", CASE, "--collect-only", "--checkpoint", f"llama-7b={bad}")
    assert r.returncode == 4 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "model.safetensors" in x]
    assert f"checkpoint file {bad / 'model.safetensors'} is not a readable safetensors file" in line


def test_a_checkpoint_that_does_not_load_fails_its_cases_in_one_line(tmp_path):
    from workloads.models.common import CheckpointError
    from workloads.suites import WORKLOADS

    path = _checkpoint(tmp_path / "ckpt")
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 30, "num_attention_heads": 7}))
    wl = WORKLOADS["llama"]
    with pytest.raises(CheckpointError) as e:
        wl.build(wl.preset("llama-tiny"), torch.device("cpu"), checkpoint=str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value) and "did not load" in str(e.value)


def test_the_suites_summaries_end_the_run_and_fit_a_terminal(tmp_path):
    """pytest-benchmark's wide tables come before the suite's own summaries, one group per
    workload, every line of which fits in 120 columns; the library deprecations the suite
    cannot act on are filtered, so the warnings pytest shows are ones to read."""
    r = pytest_run("perf_tests", "-k", "bs1 and tiny and (llama or hstu-tiny/H-A/) and (eager or compile)",
                   "--device", "cpu", "--baselines", str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:]
    lines = r.stdout.splitlines()
    ours = [i for i, x in enumerate(lines) if x.startswith("=") and ": cases" in x]
    assert sorted(lines[i].split()[2] for i in ours) == ["hstu", "llama"]
    benchmark = max(i for i, x in enumerate(lines) if "benchmark" in x and x.startswith("-"))
    assert benchmark < ours[0]
    end = next(i for i in range(ours[0], len(lines)) if "passed" in lines[i] or "short test summary" in lines[i])
    assert all(len(x) <= 120 for x in lines[ours[0]:end]), max(lines[ours[0]:end], key=len)
    assert "is deprecated and will be removed" not in r.stdout and "torch.jit.script" not in r.stdout


def test_without_diffusers_every_case_is_listed_and_diffusions_skip_saying_why(tmp_path):
    """GPU runners install the project without its dependencies: a missing diffusers must not
    stop the other workloads' cases, nor change any case id."""
    (tmp_path / "diffusers").mkdir()
    (tmp_path / "diffusers" / "__init__.py").write_text(
        "raise ModuleNotFoundError('No module named diffusers', name='diffusers')\n")
    r = pytest_run("perf_tests", "--collect-only", "-q", "--scale", "paper", path=[tmp_path])
    assert r.returncode == 0, r.stdout[-2000:]
    assert "sd15/T-I/sdpa/paper/bs1" in r.stdout and "llama-7b/T-T/eager/paper/bs1" in r.stdout
    r = pytest_run("perf_tests", "-k", "sd15-tiny/T-I/eager/tiny/bs1", "--device", "cpu", "-rs", path=[tmp_path])
    assert r.returncode == 0 and "1 skipped" in r.stdout and "install diffusers" in r.stdout, r.stdout[-2000:]
