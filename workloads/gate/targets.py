"""Declared targets: a specification a case must meet on a device class (`REQUIREMENTS` in a
perf_tests file), not a measurement. A target not met yet is reported with its gap; once the
case's baseline entry meets it, it gates like any other figure (docs/gate.md, "Declared
targets")."""
from __future__ import annotations

from collections.abc import Mapping

# Device classes targets are declared for. Each class has its own: a figure reached on one says
# little of what another can reach (the H200 moves a 7B model's weights in 3.14 ms a token where
# the H100 needs 4.0).
H100 = "nvidia-h100"
H200 = "nvidia-h200"


def timed_alone(result: Mapping) -> bool:
    """Whether a result's rung ran with no eager rounds beside it (--latency-only): it says so
    with a null reference latency."""
    return "reference_latency_ms" in result and result["reference_latency_ms"] is None


def _applies(req: dict, result: Mapping) -> bool:
    return req["case"] == result["case"] and result["device_class"].startswith(req["device_class"])


def judge_requirements(result: Mapping, entry: Mapping | None, requirements: list[dict]
                       ) -> tuple[list[str], list[str]]:
    """The declared targets `result` misses, as (failures, open targets): a target its case's
    entry met gates, so missing it now is a failure; one the entry has not met yet (or with no
    entry) is an open target, reported with its gap, so a bar the code has never reached does
    not keep every run red and hide the next real failure behind it."""
    failures, open_targets = [], []
    for req in requirements:
        unmet = check_requirements(result, [req])
        if not unmet:
            continue
        met_before = entry is not None and not check_requirements(
            dict(entry) | {"case": result["case"], "device_class": result["device_class"]}, [req])
        if met_before:
            failures += [f"{m}; its baseline entry met this target, so it gates" for m in unmet]
        else:
            open_targets += [f"{m}; a target not met yet" for m in unmet]
    return failures, open_targets


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
            failures.append(f"{cid}: time per output token {_f(tpot, '.2f')} ms exceeds {req['max_tpot_ms']} ms"
                            f"{_gap(tpot, req['max_tpot_ms'], ' ms')} ({why})")
        roof = (result.get("roofline") or {}).get("fraction")
        if "min_roofline" in req and (roof is None or roof < req["min_roofline"]):
            failures.append(f"{cid}: roofline {_f(roof, '.1%')} is under {req['min_roofline']:.0%}"
                            f"{_gap(roof and roof * 100, req['min_roofline'] * 100, ' points')} ({why})")
        if timed_alone(result):
            continue
        sp = (result.get("speedup") or {}).get("median")
        if "min_speedup" in req and (sp is None or sp < req["min_speedup"]):
            failures.append(f"{cid}: speedup {_f(sp, '.2f', 'x')} is under {req['min_speedup']}x"
                            f"{_gap(sp, req['min_speedup'], 'x')} ({why})")
        for module, bar in req.get("min_module_speedup", {}).items():
            got = (result.get("module_speedup") or {}).get(module)
            if got is None or got < bar:
                failures.append(f"{cid}: {module} speedup {_f(got, '.2f', 'x')} is under {bar}x"
                                f"{_gap(got, bar, 'x')} ({why})")
    return failures


def _gap(got, bar, unit: str) -> str:
    return "" if got is None else f", {abs(bar - got):.2f}{unit} short"


def _f(x, fmt: str, unit: str = "") -> str:
    return str(x) if x is None else f"{format(x, fmt)}{unit}"
