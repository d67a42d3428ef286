"""python -m workloads.report CASE_LOG...: the summaries a run printed, from its case logs."""
from __future__ import annotations

import argparse

from .. import caselog
from . import row, sections


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workloads.report",
                                 description="Render case logs (--case-log) as the run's tables: the cases, "
                                             "the ladder per input, where the time goes.")
    ap.add_argument("logs", nargs="+", metavar="CASE_LOG")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables, each under a heading")
    args = ap.parse_args(argv)
    try:
        records = caselog.read(args.logs)
    except caselog.CaseLogError as e:
        print(f"error: {e}")
        return 2
    # A case logged again (a rerun, a later log) shows its latest record.
    rows = list({r["result"]["case"]: row(r["result"], r.get("gate", "-")) for _, r in records}.values())
    for title, text in sections(rows, args.markdown):
        print(f"### {title}\n\n{text}\n" if args.markdown else f"== {title}\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
