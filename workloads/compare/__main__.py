"""python -m workloads.compare --base REF [options] -- PYTEST_ARGS...: head against base on this
machine (see workloads/compare/__init__.py)."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
from pathlib import Path

from .collect import collect
from .judge import MIN_EFFECT, judge_all
from .processes import estimate, run_all, tail
from .render import as_json, markdown, text, write_json
from .sides import UsageError, base_from_dir, base_worktree, head_side, project_root, resolve

MIN_REPEATS = 3


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m workloads.compare",
        usage="python -m workloads.compare (--base REF | --base-dir DIR) [options] -- PYTEST_ARGS...",
        description="Run the selected cases of the base and of this working tree (edits included) in alternating "
                    "fresh processes, and judge head against base per case.")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--base", metavar="REF", help="the commit to compare against (checked out as a git worktree)")
    where.add_argument("--base-dir", metavar="DIR", type=Path, help="an existing checkout of the base, e.g. without .git")
    ap.add_argument("--repeats", type=int, default=MIN_REPEATS, metavar="N",
                    help=f"processes a side, at least {MIN_REPEATS} (default {MIN_REPEATS})")
    ap.add_argument("--workdir", type=Path, metavar="DIR",
                    help="where the base worktree, the logs and the shared compile cache go (default: a new temporary "
                         "directory, kept)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write everything measured and judged to FILE")
    ap.add_argument("--markdown", type=Path, metavar="FILE", help="write the table as markdown to FILE "
                                                                  "(e.g. $GITHUB_STEP_SUMMARY)")
    ap.add_argument("--min-effect", type=float, default=MIN_EFFECT, metavar="F",
                    help=f"the smallest relative change judged, before base's own spread widens it (default {MIN_EFFECT})")
    ap.add_argument("--estimate", metavar="DEVICE_CLASS",
                    help="run nothing: the suite's estimate of the selection on DEVICE_CLASS, and the comparison's")
    ap.add_argument("--tests", action="append", metavar="PATH",
                    help="test path relative to the repository's root, in each side's own checkout "
                         "(default perf_tests; repeatable)")
    return ap


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    # Everything after the first `--` is pytest's, options that look like ours included.
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _check(args, head_root: Path) -> list[str]:
    """The usage errors argparse cannot see; the tests to run."""
    if args.repeats < MIN_REPEATS:
        raise UsageError(f"--repeats {args.repeats}: at least {MIN_REPEATS} processes a side are needed; the minimum "
                         "effect is learned from how far base's own processes lie apart, and fewer cannot show it")
    if not 0 <= args.min_effect < 1:
        raise UsageError(f"--min-effect {args.min_effect}: expected a fraction from 0 up to 1, e.g. 0.02")
    tests = args.tests or ["perf_tests"]
    for t in tests:
        if Path(t).is_absolute() or not (head_root / t).exists():
            raise UsageError(f"--tests {t}: expected a path inside the repository, relative to its root "
                             "(each side runs its own copy of it)")
    if args.estimate is None and args.base is None and args.base_dir is None:
        raise UsageError("name the base: --base REF (a commit git knows) or --base-dir DIR (a checkout of it)")
    if args.estimate is None and args.base is not None:
        resolve(head_root, args.base)
    return tests


def _interrupt(signum, frame):
    # A cancelled CI job sends SIGTERM: unwind as Ctrl-C does, so the base worktree is removed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ours, pytest_args = _split(sys.argv[1:] if argv is None else list(argv))
    args = parser().parse_args(ours)
    try:
        head = head_side(project_root(Path.cwd()))
        tests = _check(args, head.root)
        if args.estimate:
            return estimate(head, tests, pytest_args, args.estimate, args.repeats)
        workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="mmgen-compare-"))).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            with _base(args, head, workdir) as base:
                return _compare(args, base, head, tests, pytest_args, workdir)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: nothing judged", file=sys.stderr)
        return 130


def _base(args, head, workdir: Path):
    if args.base_dir is not None:
        return contextlib.nullcontext(base_from_dir(args.base_dir))
    return base_worktree(head.root, args.base, workdir / "base")


def _compare(args, base, head, tests: list[str], pytest_args: list[str], workdir: Path) -> int:
    print(f"base {base.label} at {base.root}; head {head.label} at {head.root}; logs in {workdir}", flush=True)
    procs = run_all({"base": base, "head": head}, tests, pytest_args, args.repeats, workdir)
    sides_done = {p.side for p in procs}
    if sides_done != {"base", "head"}:
        print("interrupted before each side finished a process: nothing judged", file=sys.stderr)
        return 130
    interrupted = len(procs) < 2 * args.repeats
    (b_seen, b_notes), (h_seen, h_notes) = (collect([p for p in procs if p.side == s]) for s in ("base", "head"))
    for note in b_notes + h_notes:
        print(f"note: {note}")
    if not any(s.results for s in [*b_seen.values(), *h_seen.values()]):
        first = next((p for p in procs if p.exit_code), procs[0])
        print(f"error: no case ran on either side; the end of {first.log}:\n{tail(first.log)}", file=sys.stderr)
        return 2
    judged = judge_all(b_seen, h_seen, [p for p in procs if p.side == "base"],
                       [p for p in procs if p.side == "head"], args.min_effect)
    # An interrupted comparison judged on fewer processes is never a pass.
    code = 1 if any(j.failed for j in judged) else 130 if interrupted else 0
    if interrupted:
        print(f"interrupted after {len(procs)} of {2 * args.repeats} processes: judged on those alone, with base's "
              f"spread from {sum(p.side == 'base' for p in procs)} of its processes; not a pass")
    print(text(base, head, args.repeats, judged, procs))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(base, head, args.repeats, judged, procs))
    if args.json:
        write_json(args.json, as_json(base, head, args.repeats, args.min_effect, judged, procs, code))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
