"""python -m workloads.report CASE_LOG...: the summaries a run printed, from its case logs."""
from __future__ import annotations

import argparse

from .. import caselog
from . import ladder, modules_table, row, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workloads.report",
                                 description="Render case logs (--case-log) as the run's tables: the cases, "
                                             "the ladder per input, where the time goes.")
    ap.add_argument("logs", nargs="+", metavar="CASE_LOG")
    ap.add_argument("--markdown", action="store_true", help="the ladder as a Markdown table")
    args = ap.parse_args(argv)
    try:
        records = caselog.read(args.logs)
    except caselog.CaseLogError as e:
        print(f"error: {e}")
        return 2
    # A case logged again (a rerun, a later log) shows its latest record.
    rows = list({r["result"]["case"]: row(r["result"], r.get("gate", "-")) for _, r in records}.values())
    if args.markdown:
        print(ladder(rows, markdown=True))
        return 0
    for title, text in (("cases", table(rows)), ("the ladder per input (ms, and x over eager timed beside it)", ladder(rows)),
                        ("where the time goes (ms per module, one instrumented round)", modules_table(rows))):
        if text:
            print(f"== {title}\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
