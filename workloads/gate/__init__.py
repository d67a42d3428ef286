"""The gate: a case's result against its stored baseline and its declared targets.

    schema    baseline files: layout, validation, reading
    store     writing them: atomic, locked, pooled with earlier runs of the same code
    pooling   an entry from a run; which runs pool
    verdict   the decision: verdict(result, entry, requirements) -> Verdict
    notes     what a failure message adds (host, kernels, compiler)
    targets   declared requirements (REQUIREMENTS in perf_tests)
    fold      gate runs pooled after the fact from their case logs (python -m workloads.gate fold)

How it decides, in full: docs/gate.md.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .fold import fold
from .notes import kernel_name_changes, timed_choices
from .pooling import MAX_RUNS, entry_from_result, same_code
from .schema import BaselineError, load, path_for
from .store import record, update
from .targets import H100, H200, check_requirements, judge_requirements
from .verdict import GPU_TIME_THRESHOLD, HOST_BOUND, LATENCY_THRESHOLD, Verdict, check, speedup_allowance, verdict


def judge(result: Mapping, *, root: str | Path, update_baselines: bool, requirements: list[dict],
          latency_threshold: float | None = None) -> Verdict:
    """A finished case's verdict against the baseline file of its device class and scale, or,
    with `update_baselines`, its entry rewritten from this run. A run of the entry's own code
    that fails its gate against the entry is not pooled into it: a regression folded in would
    become the figure the next run is held to (docs/gate.md, "Updating baselines")."""
    path = path_for(root, result["device_class"], result["scale"])
    data = load(path, device_class=result["device_class"], scale=result["scale"])
    entry = (data or {}).get("cases", {}).get(result["case"])
    timing = result["device_class"] != "cpu"
    if not update_baselines:
        return verdict(result, entry, requirements, path=path, timing=timing,
                       latency_threshold=latency_threshold or LATENCY_THRESHOLD)
    if entry is not None and same_code(entry, result):
        failures = check(result, entry, path=path, timing=timing)
        if failures:
            return Verdict("FAIL", failures + [f"{result['case']}: not pooled into its entry: this run of the "
                                               f"entry's own code failed its gate against it"])
    record(path, scale=result["scale"], result=result)
    return Verdict("updated", [], judge_requirements(result, None, requirements)[1])


__all__ = ["GPU_TIME_THRESHOLD", "H100", "H200", "HOST_BOUND", "LATENCY_THRESHOLD", "MAX_RUNS", "BaselineError",
           "Verdict", "check", "check_requirements", "entry_from_result", "fold", "judge", "judge_requirements",
           "kernel_name_changes", "load", "path_for", "same_code",
           "record", "speedup_allowance", "timed_choices", "update", "verdict"]
