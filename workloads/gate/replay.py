"""What the nightly gate would make of a known change, replayed from a baseline file.

Each entry's own figures become a run that is slower by a given fraction of its GPU time, and
that run goes through the gate's own `check`: the slowdown every stored case should fail (the
gate is loud), and with no slowdown none should (it is silent). No device runs: the answer
depends on the stored entries and the gate's rules alone, so it is the same on every machine and
a change to either shows in it.

A uniform slowdown `s` of a case's kernels moves its GPU time by `s` and its wall time by
`s x (1 - host-bound share)`: the host's part of the wall time does not move with the kernels.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

from .verdict import HOST_BOUND, check, run_share


@dataclass(frozen=True)
class Replayed:
    case: str
    failures: tuple[str, ...]
    tracked: tuple[str, ...]
    gated_by: str   # what could catch the slowdown: "GPU time", "latency", or "" (nothing stored gates it)

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def slowed(case: str, entry: Mapping, slowdown: float) -> dict:
    """The run the entry's own figures make when its kernels take `slowdown` longer."""
    share = run_share({}, entry) or 0.0
    wall = 1 + slowdown * (1 - share)
    result = {"case": case, "counters": copy.deepcopy(entry.get("counters") or {}),
              "kernel_names": copy.deepcopy(entry.get("kernel_names")), "host": copy.deepcopy(entry.get("host"))}
    lat = entry["latency_ms"]
    result["latency_ms"] = {"samples": [x * wall for x in lat["samples"]], "median": lat["median"] * wall}
    if entry.get("gpu_ms"):
        result["gpu_ms"] = {k: v * (1 + slowdown) for k, v in entry["gpu_ms"].items() if v is not None}
    if entry.get("speedup"):   # the eager reference beside it did not change
        sp = entry["speedup"]
        result["speedup"] = {"median": sp["median"] / wall, "ci": [x / wall for x in sp["ci"]]}
    return result


def gated_by(entry: Mapping) -> str:
    """What in the entry can catch a uniform slowdown of its kernels on another machine."""
    if (entry.get("gpu_ms") or {}).get("run") or any(r.get("gpu_ms") for r in entry.get("runs") or []):
        return "GPU time"
    share = run_share({}, entry)
    if share is None or share <= HOST_BOUND:
        return "latency"
    return ""


def replay(entries: Mapping[str, Mapping], slowdown: float, *, path) -> list[Replayed]:
    """Every entry's case run `slowdown` slower (0: unchanged) through the gate, in case order."""
    if not -1 < slowdown < 10:
        raise ValueError(f"slowdown {slowdown}: expected a fraction such as 0.05 (5% more GPU time)")
    out = []
    for case in sorted(entries):
        tracked: list[str] = []
        failures = check(slowed(case, entries[case], slowdown), entries[case], path=path, timing=True,
                         tracked=tracked)
        out.append(Replayed(case, tuple(failures), tuple(tracked), gated_by(entries[case])))
    return out


def summary(rows: list[Replayed], slowdown: float) -> list[str]:
    """Lines for a reader: how many cases failed, and by what the ones that did not could be caught."""
    failed = [r for r in rows if r.failed]
    lines = [f"{len(failed)} of {len(rows)} cases fail {slowdown:+.1%} GPU time"]
    by = {}
    for r in rows:
        if not r.failed:
            by.setdefault(r.gated_by or "nothing stored (host-bound, no GPU time in its entry)", []).append(r.case)
    for what, cases in sorted(by.items()):
        lines.append(f"pass, gated by {what}: {len(cases)}")
        lines += [f"  {c}" for c in cases]
    return lines
