"""Each case, head against base: its timings with their intervals, its counters, and whether it
ran on each side. What moves beyond base's own spread fails, on a GPU; counters fail anywhere."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..gate.notes import kernel_name_changes
from ..gate.pooling import gated_counters
from .collect import Seen
from .processes import Process
from ..measure.stats import Estimate
from .stats import center, min_effect, ratio

MIN_EFFECT = 0.02


@dataclass
class Judged:
    case: str
    verdict: str                     # ok, ok (counters), faster, FAIL, new, failed on both, not compared
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    device_class: str | None = None
    base: dict | None = None         # per side: processes, their medians and GPU times, counters
    head: dict | None = None
    timings: dict = field(default_factory=dict)   # wall, gpu, gpu_per_step: head/base (median, ci), min effect
    counters: dict = field(default_factory=dict)  # changed and moving, by key

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def state(seen: Seen | None, procs: list[Process]) -> tuple[str, str]:
    """Whether a side ran a case in every process (`ran`), skipped it everywhere, never saw it,
    or failed it somewhere (`failed`, with the first line of what junit said, or which process
    left nothing)."""
    if seen is None:
        exits = ", ".join(str(p.exit_code) for p in procs)
        return "absent", f"in none of its processes' case logs or junit xml (pytest exits {exits}; see {procs[0].log})"
    missing = [p for p in procs if p.index not in seen.results]
    if not missing:
        return "ran", ""
    outcomes = [seen.outcomes.get(p.index) for p in missing]
    if not seen.results and all(o and o[0] == "skipped" for o in outcomes):
        return "skipped", outcomes[0][1]
    for p, o in zip(missing, outcomes):
        if o and o[0] in ("failed", "error"):
            return "failed", f"{o[1] or o[0]} ({p.side} {p.index})"
    p, o = missing[0], outcomes[0]
    if o:
        return "failed", f"{o[0]} without a result ({p.side} {p.index}){': ' + o[1] if o[1] else ''}"
    return "failed", f"no result: {p.side} {p.index} ended with pytest exit {p.exit_code} (see {p.log})"


def judge(case: str, base: Seen | None, head: Seen | None, base_procs: list[Process], head_procs: list[Process],
          floor: float = MIN_EFFECT) -> Judged | None:
    """One case's verdict; None for a case neither side ran nor failed (skipped on both)."""
    (b, b_why), (h, h_why) = state(base, base_procs), state(head, head_procs)
    if b == "ran" and h == "ran":
        return _compare(case, base, head, floor)
    sides = {"base": {"status": b, "message": b_why}, "head": {"status": h, "message": h_why}}
    if b == "ran":
        why = h_why or "skipped"
        j = Judged(case, "FAIL", [f"base ran it, head did not: {why}"], **sides)
    elif h == "ran":
        j = Judged(case, "new", notes=[f"base: {b}{': ' + b_why if b_why else ''}"], **sides)
    elif b in ("skipped", "absent") and h in ("skipped", "absent"):
        return None
    elif b == h == "failed":
        j = Judged(case, "failed on both", notes=[f"base: {b_why}", f"head: {h_why}"], **sides)
    else:
        j = Judged(case, "not compared", notes=[f"base {b}{': ' + b_why if b_why else ''}",
                                                f"head {h}{': ' + h_why if h_why else ''}"], **sides)
    return j


def _rounds(seen: Seen) -> list[list[float]]:
    return [seen.results[i]["latency_ms"]["samples"] for i in sorted(seen.results)]


def _gpu(seen: Seen, key: str) -> list[list[float]] | None:
    """One GPU time a process, where every process measured it (older code records none)."""
    vals = [(seen.results[i].get("gpu_ms") or {}).get(key) for i in sorted(seen.results)]
    return None if any(v is None for v in vals) else [[float(v)] for v in vals]


def _side(seen: Seen) -> dict:
    rounds = _rounds(seen)
    return {"status": "ran", "processes": sorted(seen.results),
            "medians_ms": [center([r]) for r in rounds], "median_ms": center(rounds),
            "gpu_ms_run": [v[0] for v in _gpu(seen, "run") or []] or None,
            "gpu_ms_per_step": [v[0] for v in _gpu(seen, "per_step") or []] or None,
            "counters": [gated_counters(seen.results[i].get("counters")) for i in sorted(seen.results)],
            # Which code each side's processes ran: the commit they were told and the source they imported.
            "provenance": {k: sorted({str((r.get("provenance") or {}).get(k)) for r in seen.results.values()})
                           for k in ("commit", "source")}}


def _compare(case: str, base: Seen, head: Seen, floor: float) -> Judged:
    classes = {r.get("device_class") for s in (base, head) for r in s.results.values()}
    device = sorted(c for c in classes if c)[0] if any(classes) else None
    j = Judged(case, "ok", device_class=device, base=_side(base), head=_side(head))
    if len(classes) > 1:
        j.notes.append(f"measured on more than one device class: {sorted(map(str, classes))}")
    _timings(j, base, head, floor)
    _counters(j, base, head)
    if j.failures:
        j.verdict = "FAIL"
    elif device == "cpu":
        j.verdict = "ok (counters)"
    return j


def _timings(j: Judged, base: Seen, head: Seen, floor: float) -> None:
    """Wall time, and GPU time where both sides measured it, each against base's own spread. On
    the CPU they are reported only: two shared cores move them more than any change would."""
    judged = j.device_class not in (None, "cpu")
    pairs = [("wall", "wall time", _rounds(base), _rounds(head))]
    for key, name in (("run", "GPU time"), ("per_step", "GPU time per step")):
        b, h = _gpu(base, key), _gpu(head, key)
        if b and h:
            pairs.append((f"gpu_{key}" if key != "run" else "gpu", name, b, h))
    faster = False
    for key, name, b, h in pairs:
        r, eff = ratio(b, h), min_effect(b, floor)
        gates = judged and key in ("wall", "gpu")
        j.timings[key] = r.as_dict() | {"min_effect": eff, "judged": gates, "base": center(b), "head": center(h)}
        if not gates:
            continue
        if r.lo > 1 + eff:
            j.failures.append(f"{name} head/base {_ratio(r)} is above 1 + its minimum effect {eff:.1%}: "
                              f"base {center(b):.3f} ms, head {center(h):.3f} ms")
        faster |= r.hi < 1 - eff
    if faster and not j.failures:
        j.verdict = "faster"


def _ratio(r: Estimate) -> str:
    return f"{r.median:.3f} (95% CI {r.lo:.3f}-{r.hi:.3f})"


def _counters(j: Judged, base: Seen, head: Seen) -> None:
    """A gated counter that every base process agrees on and a head process does not fails, with
    the kernels that moved where it is a kernel count. One that base's own processes disagree on
    is the build's to settle, not the change's: reported, not gated."""
    b_runs = [base.results[i] for i in sorted(base.results)]
    h_runs = [head.results[i] for i in sorted(head.results)]
    b_counts = [gated_counters(r.get("counters")) for r in b_runs]
    h_counts = [gated_counters(r.get("counters")) for r in h_runs]
    keys = sorted(set.intersection(*(set(c) for c in b_counts))) if b_counts else []
    changed, moving = {}, {}
    for key in keys:
        b_vals = [c[key] for c in b_counts]
        if len(set(b_vals)) > 1:
            moving[key] = b_vals
            j.notes.append(f"counter {key} moved between base runs ({_values(b_vals)}): not gated")
            continue
        h_vals = [c.get(key) for c in h_counts]
        if all(v is None or v == b_vals[0] for v in h_vals):
            continue
        changed[key] = {"base": b_vals[0], "head": h_vals}
        msg = f"counter {key}: base {b_vals[0]:g}, head {_values([v for v in h_vals if v is not None])}"
        if key.startswith("kernels"):
            moved = next(r for r, v in zip(h_runs, h_vals) if v is not None and v != b_vals[0])
            msg += kernel_name_changes(moved.get("kernel_names"), b_runs[0].get("kernel_names"))
        j.failures.append(msg)
    j.counters = {"changed": changed, "moving": moving}


def _values(vals: list) -> str:
    """One value where all agree, else each process's."""
    return f"{vals[0]:g}" if len(set(vals)) == 1 else ", ".join(f"{v:g}" for v in vals)


def judge_all(base: dict[str, Seen], head: dict[str, Seen], base_procs: list[Process], head_procs: list[Process],
              floor: float = MIN_EFFECT) -> list[Judged]:
    """Every case either side saw, in the order they ran (base's first, then head's new ones)."""
    out = []
    for case in dict.fromkeys([*base, *head]):
        j = judge(case, base.get(case), head.get(case), base_procs, head_procs, floor)
        if j is not None:
            out.append(j)
    return out
