"""python -m workloads.gate fold CASE_LOG...: pool gate runs into the baselines of the same code.
python -m workloads.gate replay FILE --slowdown F: what the gate makes of every entry run F slower."""
from __future__ import annotations

import argparse

from .fold import fold
from .replay import replay, summary
from .schema import BaselineError, load


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workloads.gate",
                                 description="Baseline files: pool gate runs' case logs into their entries.")
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fold", help="pool the runs in case logs (--case-log) into the baselines of the same code, "
                                    "and the eager rounds timed beside each lever into its input's eager entry")
    f.add_argument("logs", nargs="+", metavar="CASE_LOG")
    f.add_argument("--baselines", default="baselines", help="the baselines directory (default: baselines)")
    r = sub.add_parser("replay", help="run every entry of a baseline file through the gate as if its kernels took "
                                      "F longer (0: unchanged), and say which cases fail")
    r.add_argument("file", metavar="FILE", help="a baseline file, e.g. baselines/nvidia-h200/paper.json")
    r.add_argument("--slowdown", type=float, default=0.05, metavar="F",
                   help="the fraction of GPU time added to every case (default 0.05)")
    r.add_argument("-v", "--verbose", action="store_true", help="also print each failure's message")
    args = ap.parse_args(argv)
    try:
        if args.command == "replay":
            return _replay(args)
        for line in fold(args.baselines, args.logs):
            print(line)
    except (BaselineError, ValueError) as e:
        print(f"error: {e}")
        return 2
    return 0


def _replay(args) -> int:
    data = load(args.file)
    if data is None:
        raise BaselineError(f"{args.file}: no such baseline file")
    rows = replay(data["cases"], args.slowdown, path=args.file)
    if args.verbose:
        for r in rows:
            for line in r.failures:
                print(line)
    for line in summary(rows, args.slowdown):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
