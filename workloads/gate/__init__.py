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
from .pooling import MAX_RUNS, entry_from_result
from .schema import BaselineError, load, path_for
from .store import record, update
from .targets import HOPPER, check_requirements
from .verdict import LATENCY_THRESHOLD, Verdict, check, latency_threshold_for, speedup_allowance, verdict


def judge(result: Mapping, *, root: str | Path, update_baselines: bool, requirements: list[dict],
          latency_threshold: float | None = None) -> Verdict:
    """A finished case's verdict against the baseline file of its device class and scale, or,
    with `update_baselines`, its entry rewritten from this run (declared targets are judged
    either way)."""
    path = path_for(root, result["device_class"], result["scale"])
    if update_baselines:
        record(path, scale=result["scale"], result=result)
        unmet = check_requirements(result, requirements)
        return Verdict("FAIL" if unmet else "updated", unmet)
    data = load(path, device_class=result["device_class"], scale=result["scale"])
    entry = (data or {}).get("cases", {}).get(result["case"])
    return verdict(result, entry, requirements, path=path, timing=result["device_class"] != "cpu",
                   latency_threshold=latency_threshold or LATENCY_THRESHOLD)


__all__ = ["HOPPER", "LATENCY_THRESHOLD", "MAX_RUNS", "BaselineError", "Verdict", "check", "check_requirements",
           "entry_from_result", "fold", "judge", "kernel_name_changes", "latency_threshold_for", "load", "path_for",
           "record", "speedup_allowance", "timed_choices", "update", "verdict"]
