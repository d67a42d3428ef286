"""python -m workloads.report CASE_LOG...: the summaries a run printed, from its case logs."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import caselog
from ..case import CaseIdError
from . import row, sections


def _rows(records: list[tuple[str, dict]]) -> list[dict]:
    """Each record's row; a record the row cannot read is an error naming its file and line."""
    rows = []
    for where, record in records:
        log, _, line = where.rpartition(":")
        try:
            rows.append(row(record["result"], record.get("gate", "-")))
        except CaseIdError as e:
            raise caselog.CaseLogError(f"case log {log}, line {line}: {e}") from None
        except KeyError as e:
            raise caselog.CaseLogError(f"case log {log}, line {line}: its result has no {e.args[0]!r}") from None
    return rows


def _open(records: list[tuple[str, dict]]) -> list[tuple[str, list[str]]]:
    """What the gate reported without failing on it, each case's latest record: its open
    targets and its tracked figures (docs/gate.md)."""
    latest = {r["result"]["case"]: r for _, r in records}
    found = [("failures", [x for r in latest.values() for x in r.get("failures") or []]),
             ("targets not met yet", [x for r in latest.values() for x in r.get("targets") or []]),
             ("tracked, not gated", [x for r in latest.values() for x in r.get("tracked") or []])]
    return [(title, lines) for title, lines in found if lines]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workloads.report",
                                 description="Render case logs (--case-log) as the run's tables, per workload: "
                                             "the cases, the ladder per input, where the time goes.")
    ap.add_argument("logs", nargs="+", metavar="CASE_LOG")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables, each under a heading")
    ap.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page: where each log's "
                                                   "results came from, the tables, and per input the ladder and "
                                                   "where the time goes")
    args = ap.parse_args(argv)
    try:
        records = caselog.read(args.logs)
        rows = _rows(records)
    except caselog.CaseLogError as e:
        print(f"error: {e}")
        return 2
    # A case logged again (a rerun, a later log) shows its latest record.
    latest = list({r["case"]: r for r in rows}.values())
    every = [(r["result"], r.get("gate", "-")) for _, r in records]
    for title, text in sections(latest, args.markdown, every):
        print(f"### {title}\n\n{text}\n" if args.markdown else f"== {title}\n{text}\n")
    for title, lines in _open(records):
        text = "\n".join(f"- {x}" if args.markdown else x for x in lines)
        print(f"### {title}\n\n{text}\n" if args.markdown else f"== {title}\n{text}\n")
    if args.html:
        from .html import render
        try:
            page = render(latest, records, title=f"mmgen-perf: {', '.join(args.logs)}")
        except RuntimeError as e:
            print(f"error: {e}")
            return 2
        out = Path(args.html)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(page)
        tmp.replace(out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
