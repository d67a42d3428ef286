"""python -m workloads.gate fold CASE_LOG...: pool gate runs into the baselines of the same code."""
from __future__ import annotations

import argparse

from .fold import fold
from .schema import BaselineError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workloads.gate",
                                 description="Baseline files: pool gate runs' case logs into their entries.")
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fold", help="pool the runs in case logs (--case-log) into the baselines of the same code, "
                                    "and the eager rounds timed beside each lever into its input's eager entry")
    f.add_argument("logs", nargs="+", metavar="CASE_LOG")
    f.add_argument("--baselines", default="baselines", help="the baselines directory (default: baselines)")
    args = ap.parse_args(argv)
    try:
        for line in fold(args.baselines, args.logs):
            print(line)
    except BaselineError as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
