"""Declared targets: a specification a case must meet on a device class (`REQUIREMENTS` in a
perf_tests file), not a measurement. A target not met yet fails its case and says by how much."""
from __future__ import annotations

from collections.abc import Mapping

# Declared targets written for an H100 hold on every Hopper part at least as fast (the H200 has
# the same SMs and more HBM bandwidth): ratios and roofline fractions carry over, and its TPOT
# floor is lower.
HOPPER = ("nvidia-h100", "nvidia-h200")


def timed_alone(result: Mapping) -> bool:
    """Whether a result's rung ran with no eager rounds beside it (--latency-only): it says so
    with a null reference latency."""
    return "reference_latency_ms" in result and result["reference_latency_ms"] is None


def _applies(req: dict, result: Mapping) -> bool:
    return req["case"] == result["case"] and result["device_class"].startswith(req["device_class"])


def check_requirements(result: Mapping, requirements: list[dict]) -> list[str]:
    """The declared targets this case misses on this device class: `max_tpot_ms`, `min_roofline`,
    `min_speedup` (judged on the median), `min_module_speedup` ({module group: bar}, judged on
    the breakdown round). A requirement's `device_class` is a prefix of the classes it applies
    to, or a tuple of such prefixes. A result with no eager reference (--latency-only) is not
    judged on speedups."""
    failures = []
    for req in (r for r in requirements if _applies(r, result)):
        cid, why = result["case"], req.get("why", "declared requirement")
        tpot = (result.get("tpot_ms") or {}).get("median")
        if "max_tpot_ms" in req and (tpot is None or tpot > req["max_tpot_ms"]):
            failures.append(f"{cid}: time per output token {_f(tpot, '.2f')} ms exceeds {req['max_tpot_ms']} ms ({why})")
        roof = (result.get("roofline") or {}).get("fraction")
        if "min_roofline" in req and (roof is None or roof < req["min_roofline"]):
            failures.append(f"{cid}: roofline {_f(roof, '.1%')} is under {req['min_roofline']:.0%} ({why})")
        if timed_alone(result):
            continue
        sp = (result.get("speedup") or {}).get("median")
        if "min_speedup" in req and (sp is None or sp < req["min_speedup"]):
            failures.append(f"{cid}: speedup {_f(sp, '.2f', 'x')} is under {req['min_speedup']}x ({why})")
        for module, bar in req.get("min_module_speedup", {}).items():
            got = (result.get("module_speedup") or {}).get(module)
            if got is None or got < bar:
                failures.append(f"{cid}: {module} speedup {_f(got, '.2f', 'x')} is under {bar}x ({why})")
    return failures


def _f(x, fmt: str, unit: str = "") -> str:
    return str(x) if x is None else f"{format(x, fmt)}{unit}"
