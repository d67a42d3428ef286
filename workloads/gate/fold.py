"""Pooling gate runs into their baselines after the fact, from their case logs (`--case-log`)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .. import caselog
from ..case import Case, CaseIdError
from .pooling import CODE, gated_counters, runs_of, same_code, with_rounds
from .schema import BaselineError, load, path_for
from .store import record, update
from .targets import timed_alone


def fold(root: str | Path, logs: list[str | Path]) -> list[str]:
    """Pool the runs that case logs hold into the baselines they were gated against: only runs
    that passed their gate, of the code that measured the entry (others are skipped, and said
    so), once each. A case with no entry, or whose counters differ from its entry's at the same
    code, is an error that names it; nothing is written then. The eager rounds a lever was timed
    beside pool into the eager case's entry too (`_fold_eager_beside`). Returns one line per run."""
    try:
        records = caselog.read(logs)
    except caselog.CaseLogError as e:
        raise BaselineError(str(e)) from None
    plan, skipped = [], []
    for where, rec in records:
        result = rec["result"]
        # A run that failed its gate is never pooled: folded in, a regression would become the
        # figure the next run is held to, and the same regression would pass.
        why = (f"{result.get('case')}: skipped, it failed its gate ({where})" if rec.get("gate") == "FAIL"
               else _why_not_pooled(root, where, result))
        if why:
            skipped.append(why)
        else:
            plan.append(result)
    done = [_pool(root, result) for result in plan]
    passed = [rec["result"] for _, rec in records if rec.get("gate") != "FAIL"]
    return done + _fold_eager_beside(root, passed) + skipped


def _why_not_pooled(root, where: str, result: Mapping) -> str:
    """Why a logged run is skipped (empty: it pools); raises where it must not pool at all."""
    cid = str(result.get("case"))
    try:
        case = Case.of(result)
    except CaseIdError as e:
        raise BaselineError(f"{where}: {e}") from None
    path, entry = _entry_of(root, result, case)
    if entry is None:
        raise BaselineError(f"{where}: case {cid} has no entry in {path} to pool with; "
                            f"measure it with --update-baselines first")
    if timed_alone(result):   # no speedup: pooled, it would erase the entry's floor
        return (f"{cid}: skipped, timed without eager beside it (--latency-only), so it has no speedup "
                f"to pool; its latency is gated, not stored")
    if not same_code(entry, result):
        return (f"{cid}: skipped, run by other code than its entry ({', '.join(CODE)}: run "
                f"{[result['provenance'].get(k) for k in CODE]}, entry {[entry['provenance'].get(k) for k in CODE]}); "
                f"re-measure it with --update-baselines")
    if gated_counters(result.get("counters")) != gated_counters(entry.get("counters")):
        raise BaselineError(f"{where}: case {cid} counted {result.get('counters')}, its entry in {path} "
                            f"{entry.get('counters')}: the same code ran differently, so the runs do not pool")
    return ""


def _pool(root, result: Mapping) -> str:
    case = Case.of(result)
    path, entry = _entry_of(root, result, case)
    stamp = (result["provenance"].get("commit"), result["provenance"].get("date"))
    if any((r.get("commit"), r.get("date")) == stamp for r in runs_of(entry)):
        return f"{case.id}: already pooled ({stamp[1]})"
    entry = record(path, scale=case.scale, result=result)
    return f"{case.id}: {len(entry['runs'])} runs, median {entry['latency_ms']['median']:.2f} ms"


def _entry_of(root, result: Mapping, case: Case) -> tuple[Path, Mapping | None]:
    """The baseline file of a logged result's device and scale, and `case`'s entry there (None
    if it has none)."""
    path = path_for(root, str(result.get("device_class")), case.scale)
    data = load(path, device_class=result.get("device_class"), scale=case.scale)
    return path, (data or {}).get("cases", {}).get(case.id)


def _within(part: list, whole: list) -> bool:
    return any(whole[i:i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def _fold_eager_beside(root, results: list[Mapping]) -> list[str]:
    """Pool the eager rounds each lever was timed beside (its reference samples) into the eager
    case's entry of that input, where that entry is of the same code. They are the eager case's
    rounds in that process: a host-bound eager case moves between processes more than within one,
    and a run of one lever per process still times eager in each. Rounds already in the logs'
    eager results or in the entry, or a prefix of other levers' rounds of the same process, are
    not pooled twice."""
    seen = [list(r["latency_ms"]["samples"]) for r in results if Case.of(r).is_reference]
    beside = [(r, list(r["reference_latency_ms"]["samples"])) for r in results
              if not Case.of(r).is_reference and (r.get("reference_latency_ms") or {}).get("samples")]
    lines = []
    # Longest first: another lever of the same process timed a prefix of the same eager rounds.
    for result, rounds in sorted(beside, key=lambda b: -len(b[1])):
        if any(o[:len(rounds)] == rounds for o in seen):
            continue   # the same process's eager rounds, pooled with its eager case or another lever
        seen.append(rounds)
        case = Case.of(result)
        eager = case.reference()
        path, entry = _entry_of(root, result, eager)
        if entry is None or not same_code(entry, result):
            lines.append(f"{eager.id}: the eager rounds timed beside {case.id} skipped: "
                         + ("no entry to pool them into" if entry is None else "its entry is of other code"))
            continue
        if _within(rounds, entry["latency_ms"]["samples"]):
            lines.append(f"{eager.id}: the eager rounds timed beside {case.id} already pooled")
            continue
        pooled = update(path, device_class=result["device_class"], scale=eager.scale, case_id=eager.id,
                        entry=lambda previous: with_rounds(previous, rounds, result["provenance"]))
        lines.append(f"{eager.id}: {len(pooled['runs'])} runs with the eager rounds timed beside {case.id}, "
                     f"median {pooled['latency_ms']['median']:.2f} ms")
    return lines
