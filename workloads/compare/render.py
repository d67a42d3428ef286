"""The comparison as a table (plain text, or markdown for a job summary), a line per failure, a
count, and all of it as JSON."""
from __future__ import annotations

import json
from pathlib import Path

from ..report import grid
from .judge import Judged
from .processes import Process
from .sides import Side

HEAD = ["case", "base ms", "head ms", "head/base (95% CI)", "min effect", "GPU ms base -> head", "counters", "verdict"]


def _timing_cells(j: Judged) -> list[str]:
    wall, gpu = j.timings.get("wall"), j.timings.get("gpu")
    if wall is None:
        return [(j.base or {}).get("status", "-"), (j.head or {}).get("status", "-"), "-", "-", "-"]
    lo, hi = wall["ci"]
    shown = f"{wall['median']:.3f} ({lo:.3f}-{hi:.3f})" + ("" if wall["judged"] else " info")
    gpu_cell = "-"
    if gpu is not None:
        gpu_cell = f"{gpu['base']:.3f} -> {gpu['head']:.3f} ({gpu['median'] - 1:+.1%}, min {gpu['min_effect']:.1%})"
        step = j.timings.get("gpu_per_step")
        if step is not None:
            gpu_cell += f"; per step {step['base']:.3f} -> {step['head']:.3f}"
    return [f"{wall['base']:.2f}", f"{wall['head']:.2f}", shown, f"{wall['min_effect']:.1%}", gpu_cell]


def _counter_cell(j: Judged) -> str:
    if not j.counters:
        return "-"
    cells = [f"{k} {v['base']:g}->{'/'.join(format(x, 'g') for x in dict.fromkeys(h for h in v['head'] if h is not None))}"
             for k, v in j.counters["changed"].items()]
    cells += [f"{k} moves in base" for k in j.counters["moving"]]
    return ", ".join(cells) or "same"


def table(judged: list[Judged], markdown: bool = False) -> str:
    body = [[j.case, *_timing_cells(j), _counter_cell(j), j.verdict] for j in judged]
    return grid(HEAD, body, markdown)


def failure_lines(judged: list[Judged]) -> list[str]:
    return [f"{j.case}: {f}" for j in judged for f in j.failures]


def note_lines(judged: list[Judged]) -> list[str]:
    return [f"{j.case}: {n}" for j in judged for n in j.notes]


def summary(judged: list[Judged], procs: list[Process]) -> dict:
    counts = {v: sum(j.verdict == v for j in judged) for v in dict.fromkeys(j.verdict for j in judged)}
    compared = sum(j.timings.get("wall") is not None for j in judged)
    return {"compared": compared, "failed": counts.get("FAIL", 0), "faster": counts.get("faster", 0),
            "verdicts": counts, "processes": len(procs), "seconds": round(sum(p.seconds for p in procs), 1)}


def last_line(s: dict) -> str:
    others = {v: n for v, n in s["verdicts"].items() if v not in ("ok", "ok (counters)", "FAIL", "faster")}
    extra = f" ({', '.join(f'{n} {v}' for v, n in others.items())})" if others else ""
    return (f"{s['compared']} cases compared{extra}, {s['failed']} failed, {s['faster']} faster; "
            f"{s['processes']} processes took {s['seconds']:.0f} s in all")


def _lead(base: Side, head: Side, repeats: int, judged: list[Judged]) -> list[str]:
    lines = [f"head ({head.label}) against base ({base.label}), {repeats} processes a side"]
    if any(j.device_class == "cpu" for j in judged):
        lines.append("on the CPU timings are reported, not judged ('info'): counters and whether each case ran gate")
    return lines


def text(base: Side, head: Side, repeats: int, judged: list[Judged], procs: list[Process]) -> str:
    fails, notes = failure_lines(judged), note_lines(judged)
    parts = [*_lead(base, head, repeats, judged), "", table(judged)]
    if fails:
        parts += ["", *(f"FAIL {f}" for f in fails)]
    if notes:
        parts += ["", *(f"note {n}" for n in notes)]
    return "\n".join([*parts, "", last_line(summary(judged, procs))])


def markdown(base: Side, head: Side, repeats: int, judged: list[Judged], procs: list[Process]) -> str:
    fails, notes = failure_lines(judged), note_lines(judged)
    parts = [f"### {_lead(base, head, repeats, judged)[0]}", *_lead(base, head, repeats, judged)[1:], "",
             table(judged, markdown=True)]
    if fails:
        parts += ["", *(f"- **FAIL** {f}" for f in fails)]
    if notes:
        parts += ["", *(f"- {n}" for n in notes)]
    return "\n".join([*parts, "", last_line(summary(judged, procs)), ""])


def _side(side: Side) -> dict:
    return {"label": side.label, "root": str(side.root), "commit": side.commit}


def as_json(base: Side, head: Side, repeats: int, floor: float, judged: list[Judged], procs: list[Process],
            exit_code: int) -> dict:
    return {"base": _side(base), "head": _side(head), "repeats": repeats, "min_effect_floor": floor,
            "processes": [{"side": p.side, "index": p.index, "seconds": round(p.seconds, 2), "exit_code": p.exit_code,
                           "log": str(p.log)} for p in procs],
            "cases": [j.as_dict() for j in judged], "summary": summary(judged, procs), "exit_code": exit_code}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
