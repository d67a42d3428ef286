"""What each process of a side left: its cases' results from its case log, and every test's
outcome from its junit xml (a case that errors or fails before its result is logged is only
there)."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ..caselog import CaseLogError, read
from .processes import Process

_CASE_ID = re.compile(r"\[(.+)\]$")


@dataclass
class Seen:
    """One case on one side: its result in each process that logged one, and its junit outcome
    in each process that reported it."""

    results: dict[int, dict] = field(default_factory=dict)
    outcomes: dict[int, tuple[str, str]] = field(default_factory=dict)   # index -> (outcome, first line)


def junit_outcomes(path: Path) -> dict[str, tuple[str, str]]:
    """Each case's outcome in one junit file: passed, failed, error or skipped, with the first
    line of its message. Tests that are not cases (no parametrized id) are left out."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return {}
    out = {}
    for tc in tree.iter("testcase"):
        m = _CASE_ID.search(tc.get("name", ""))
        if not m:
            continue
        outcome, message = "passed", ""
        for tag in ("error", "failure", "skipped"):
            el = tc.find(tag)
            if el is not None:
                text = el.get("message") or el.text or ""
                outcome, message = tag.replace("failure", "failed"), (text.strip().splitlines() or [""])[0]
                break
        out[m.group(1)] = (outcome, message)
    return out


def case_results(path: Path) -> tuple[dict[str, dict], str | None]:
    """A process's results by case id, and why none could be read where that is so."""
    if not path.exists():
        return {}, None
    try:
        return {rec["result"]["case"]: rec["result"] for _, rec in read([path])}, None
    except CaseLogError as e:
        return {}, str(e)


def collect(procs: list[Process]) -> tuple[dict[str, Seen], list[str]]:
    """A side's cases over its processes, and notes on logs that could not be read."""
    seen: dict[str, Seen] = {}
    notes = []
    for p in procs:
        results, problem = case_results(p.case_log)
        if problem:
            notes.append(f"{p.side} {p.index}: {problem}")
        for case, result in results.items():
            seen.setdefault(case, Seen()).results[p.index] = result
        for case, outcome in junit_outcomes(p.junit).items():
            seen.setdefault(case, Seen()).outcomes[p.index] = outcome
    return seen, notes
