"""How long a selection of cases will take on a device class, from its stored baselines.

The harness times the selected rungs of one input (model, task, scale, batch) in one loop with
eager once a round (see run.schedule.run_case), so a run's time is, per input: eager's rounds, each
rung's rounds, the untimed rounds (a warm-up per side, an instrumented round unless a long
warm-up stood for it) and the one-off setup (compile, graph capture) of each shared decoder.
Each entry holds what that needs: its round time, its last run's round count, its model's
build seconds, its setup seconds and its seconds outside the timed rounds (warm-up, breakdown,
kernel count). The process's start is not in it.
"""
from __future__ import annotations

from ..result import SETUP_METRICS
from ..suites import workload
from .schedule import LONG_ROUND_MS, runs_alone


def _rounds(entry: dict, fixed: int | None = None) -> int:
    if fixed:
        return fixed
    runs = entry.get("runs") or []
    return int(runs[-1]["rounds"]) if runs else len(entry["latency_ms"]["samples"])


def estimate(cases, entries: dict[str, dict], latency_only: bool = False, rounds: int | None = None) -> list[dict]:
    """One row per input, in run order: its cases, the seconds of its timed rounds, untimed
    rounds, model build (the first input of a model) and setup, and the cases without a
    baseline entry (their time is not counted). With `latency_only` (--latency-only) an input
    whose eager case is not selected runs no eager rounds; with `rounds` (--rounds) every rung
    runs that many."""
    groups: dict = {}
    for c in cases:
        groups.setdefault(c.input, []).append(c)
    built: set[tuple] = set()   # a later input of the same decoders finds them compiled and captured
    models: set[str] = set()    # and a later input of the same model finds it built
    rows = []
    for key, group in groups.items():
        found = {c: entries[c.id] for c in group if c.id in entries}
        builds = [e["build_s"] for e in found.values() if e.get("build_s") is not None]
        build = None if key.model in models else (max(builds) if builds else None)
        models.add(key.model)
        row = {"input": str(key), "cases": len(group), "missing": [c.id for c in group if c.id not in entries]}
        eager = next((e for c, e in found.items() if c.is_reference), None)
        # Without its own entry, the reference's round comes from a rung and its speedup over it.
        eager_ms = eager["latency_ms"]["median"] if eager is not None else next(
            (e["latency_ms"]["median"] * e["speedup"]["median"] for e in found.values() if e.get("speedup")), None)
        if eager_ms is None or not found:
            rows.append(row | {"timed_s": 0.0, "untimed_s": 0.0, "setup_s": 0.0, "unbuilt": True, "modelled": False})
            continue
        rungs = [e for c, e in found.items() if not c.is_reference]
        alone = runs_alone(latency_only, group)
        n = max(_rounds(e, rounds) for e in found.values())
        timed = (0.0 if alone else eager_ms * n) + sum(e["latency_ms"]["median"] * _rounds(e, rounds) for e in rungs)
        sides = ([] if alone else [(eager, eager_ms, False)]) + [
            (e, e["latency_ms"]["median"], "graphs" in (e.get("counters") or {})) for e in rungs]
        untimed, modelled = _untimed(sides, decodes=any(e.get("tpot_ms") for e in found.values()))
        setup = _setup(rungs, (key.model, workload(key.workload).cache_group(key.task), key.batch), built)
        rows.append(row | {"timed_s": timed / 1e3, "untimed_s": untimed, "setup_s": setup + (build or 0.0),
                           "unbuilt": build is None and not builds, "modelled": modelled})
    return rows


def _untimed(sides: list[tuple], decodes: bool) -> tuple[float, bool]:
    """Each side's seconds outside its timed rounds and setup, as its entry measured them; an
    entry older than that figure counts its round times the rounds it runs untimed: a warm-up,
    an instrumented round unless a long warm-up stood for it, and for a workload that decodes
    nothing a whole run under the profiler to count its kernels. Also whether any was so counted."""
    whole = 0 if decodes else 1
    modelled = any(e is None or e.get("untimed_s") is None for e, _, _ in sides)
    return sum(e["untimed_s"] if e is not None and e.get("untimed_s") is not None
               else ms / 1e3 * (1 + (compiled or ms < LONG_ROUND_MS) + whole) for e, ms, compiled in sides), modelled


def _setup(rungs: list[dict], decoders: tuple, built: set) -> float:
    """Each shared decoder's setup once: a later input of the same decoders finds them ready."""
    setup = 0.0
    for key in SETUP_METRICS:
        seconds = [e[key] for e in rungs if e.get(key)]
        if seconds and (decoders, key) not in built:
            setup += max(seconds)
            built.add((decoders, key))
    return setup


def render(rows: list[dict], where: str) -> str:
    from ..report import grid

    head = ["input", "cases", "timed s", "untimed s", "build and setup s", "total s", "without a baseline"]
    body = [[r["input"], str(r["cases"]), f"{r['timed_s']:.0f}", f"{r['untimed_s']:.0f}", f"{r['setup_s']:.0f}",
             f"{r['timed_s'] + r['untimed_s'] + r['setup_s']:.0f}", str(len(r["missing"])) if r["missing"] else "-"]
            for r in rows]
    total = sum(r["timed_s"] + r["untimed_s"] + r["setup_s"] for r in rows)
    missing = sum(len(r["missing"]) for r in rows)
    unbuilt = any(r["unbuilt"] for r in rows)
    modelled = [r["input"] for r in rows if r["modelled"]]
    lines = [grid(head, body, markdown=False),
             f"about {total / 60:.1f} min on {where}, plus the process's start"
             + (" and the builds of models whose baselines predate build times" if unbuilt else "")
             + (f"; {missing} selected cases have no baseline there and are not counted" if missing else "")]
    if modelled:
        lines.append(f"{len(modelled)} inputs have entries older than their untimed seconds: those are counted as "
                     "rounds (warm-up, breakdown, kernel count), which leaves out the profiler's own time and "
                     "can fall well short for runs of many small kernels")
    return "\n".join(lines)
