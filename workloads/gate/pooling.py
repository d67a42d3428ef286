"""A baseline entry from a run, and the runs of the same code an entry pools (docs/gate.md,
"Updating baselines")."""
from __future__ import annotations

import math
from collections.abc import Mapping

from ..measure.stats import summarize
from ..result import METRICS

# The stored minimum speedup sits this far under the lower end of the measured interval: the
# eager reference is often host-bound and drifts between the cases of one run far more than
# within one. A lever's own regressions are the latency gate's to catch.
SPEEDUP_MARGIN = 0.25
# An entry pools the rounds of its last runs of the same code, so the latency interval it gives
# covers how far the case moves between runs and not only within one.
MAX_RUNS = 5
# What names the code and stack that measured a figure: runs agreeing on all of them pool. The
# libraries that generate or pick kernels, and the driver, are part of the code that ran.
CODE = ("source", "torch", "cuda", "device_class", "transformers", "triton", "driver")
# Of CODE, what every provenance names (the rest is absent where it does not apply: no driver on
# the CPU).
_REQUIRED = ("source", "torch", "device_class")
# Counters recorded and reported but not held to their entry, nor telling runs apart: cuBLAS
# picks among its GEMV and split-K variants at run time for the same GEMMs of the same compiled
# step (docs/gate.md, "Counters").
UNGATED_COUNTERS = ("blas_helpers",)
# Stored as they are; latency, speedup, counters and provenance are shaped by entry_from_result.
_AS_MEASURED = tuple(n for n, m in METRICS.items() if m.stored and n not in ("latency_ms", "speedup", "counters",
                                                                                "provenance"))


def entry_from_result(result: Mapping, *, previous: Mapping | None = None, speedup_margin: float = SPEEDUP_MARGIN
                      ) -> dict:
    """The baseline entry a run's result becomes; with `previous` (the case's entry so far) of the
    same code and counters, the entry pools both: the last MAX_RUNS runs' rounds, the lowest of
    their speedup floors, the newest run's provenance, speedup, host and GPU state."""
    sp = result.get("speedup")
    min_sp = None
    if sp is not None:
        min_sp = math.floor(sp["ci"][0] * (1 - speedup_margin) * 100) / 100
        min_sp = min_sp if min_sp > 0 else None
    lat, prov = result["latency_ms"], result["provenance"]
    entry = {
        "latency_ms": {k: lat[k] for k in ("metric", "median", "ci", "samples") if k in lat},
        "speedup": {k: sp[k] for k in ("median", "ci")} if sp is not None else None,
        "min_speedup": min_sp,
        "counters": dict(result.get("counters") or {}),
        "provenance": dict(prov),
        "runs": [{"rounds": len(lat["samples"]), "median": lat["median"], "min_speedup": min_sp,
                  "gpu_ms": (result.get("gpu_ms") or {}).get("run"), "commit": prov.get("commit"),
                  "date": prov.get("date")}],
    }
    entry |= {k: result[k] for k in _AS_MEASURED if result.get(k) is not None}
    if (previous is None or not same_code(previous, entry)
            or gated_counters(previous.get("counters")) != gated_counters(entry["counters"])):
        return entry
    entry["runs"], entry["latency_ms"] = with_run(previous, entry["runs"][0], lat["samples"])
    floors = [r.get("min_speedup") for r in entry["runs"]]
    entry["min_speedup"] = None if any(f is None for f in floors) else min(floors)
    return entry


def gated_counters(counters: Mapping | None) -> dict:
    """The counters a run is held to (and pooled by): all but UNGATED_COUNTERS."""
    return {k: v for k, v in (counters or {}).items() if not k.startswith(UNGATED_COUNTERS)}


def with_run(previous: Mapping, run: dict, rounds: list[float]) -> tuple[list[dict], dict]:
    """`previous`'s runs and latency with one more run of `rounds`: the last MAX_RUNS runs' rounds."""
    runs = (runs_of(previous) + [run])[-MAX_RUNS:]
    kept = sum(r["rounds"] for r in runs[:-1])
    old = previous["latency_ms"]["samples"]
    samples = old[len(old) - kept:] + list(rounds)
    return runs, {"metric": previous["latency_ms"].get("metric", "e2e"), **summarize(samples).as_dict(), "samples": samples}


def with_rounds(entry: Mapping, rounds: list[float], provenance: Mapping) -> dict:
    """`entry` with one more run of `rounds`; the rest of the entry, counters and host included,
    stays that of the case's own last run."""
    run = {"rounds": len(rounds), "median": summarize(rounds).as_dict()["median"], "min_speedup": None,
           "commit": provenance.get("commit"), "date": provenance.get("date")}
    runs, latency = with_run(entry, run, rounds)
    return dict(entry) | {"runs": runs, "latency_ms": latency}


def same_code(entry: Mapping, other: Mapping) -> bool:
    """Whether two entries (or an entry and a result) were measured by the same code and stack."""
    a, b = entry.get("provenance") or {}, other.get("provenance") or {}
    return all(a.get(k) is not None for k in _REQUIRED) and all(a.get(k) == b.get(k) for k in CODE)


def runs_of(entry: Mapping) -> list[dict]:
    # Entries written before runs were pooled hold exactly one run.
    if entry.get("runs"):
        return list(entry["runs"])
    prov = entry.get("provenance") or {}
    return [{"rounds": len(entry["latency_ms"]["samples"]), "median": entry["latency_ms"]["median"],
             "min_speedup": entry.get("min_speedup"), "commit": prov.get("commit"), "date": prov.get("date")}]
