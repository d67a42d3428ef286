"""The processes of a comparison: each side's selection run N times in fresh processes, the sides
alternating, and the estimate of how long that takes."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .sides import Side, side_env


@dataclass
class Process:
    side: str
    index: int           # 1-based, per side
    seconds: float = 0.0
    exit_code: int | None = None
    log: Path | None = None
    case_log: Path | None = None
    junit: Path | None = None


def schedule(repeats: int) -> list[tuple[str, int]]:
    """B H H B B H ...: whatever drifts over the run (the host's clocks and load, the page and
    compile caches filling) falls on both sides alike rather than on whichever ran later."""
    order = []
    for i in range(1, repeats + 1):
        order += [("base", i), ("head", i)] if i % 2 else [("head", i), ("base", i)]
    return order


def command(tests: list[str], pytest_args: list[str], proc: Process, workdir: Path) -> list[str]:
    # No baselines: the comparison is head against base, not either against stored entries;
    # the case logs and junit xml are its only inputs, never pytest's exit code.
    return [sys.executable, "-m", "pytest", *tests, *pytest_args, "--case-log", str(proc.case_log),
            "--junitxml", str(proc.junit), "--baselines", str(workdir / "no-baselines"), "-p", "no:cacheprovider", "-q"]


def processes(repeats: int, workdir: Path) -> list[Process]:
    procs = []
    for side, i in schedule(repeats):
        stem = workdir / f"{side}-{i}"
        procs.append(Process(side, i, log=stem.with_suffix(".log"), case_log=stem.with_suffix(".jsonl"),
                             junit=stem.with_suffix(".xml")))
    return procs


def run_all(sides: dict[str, Side], tests: list[str], pytest_args: list[str], repeats: int, workdir: Path,
            say: Callable[..., None] = print) -> list[Process]:
    """Every process in turn, one line each as it ends; its whole output goes to its log. On an
    interruption (Ctrl-C, a job's time limit) the running process is killed and the finished
    ones are returned: what they measured is still worth a look."""
    procs = processes(repeats, workdir)
    for p in procs:   # a case log is appended to: one left from an earlier comparison would join this one
        for f in (p.log, p.case_log, p.junit):
            f.unlink(missing_ok=True)
    for p in procs:
        side = sides[p.side]
        say(f"{p.side} {p.index}/{repeats} ...", end=" ", flush=True)
        start = time.perf_counter()
        try:
            with open(p.log, "w") as log:
                done = subprocess.run(command(tests, pytest_args, p, workdir), cwd=side.root,
                                      env=side_env(side, workdir), stdout=log, stderr=subprocess.STDOUT)
        except KeyboardInterrupt:   # subprocess.run has killed the child
            say("interrupted", flush=True)
            return [q for q in procs if q.exit_code is not None]
        p.seconds, p.exit_code = time.perf_counter() - start, done.returncode
        say(f"{p.seconds:.1f} s, pytest exit {p.exit_code} ({p.log.name})", flush=True)
    return procs


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_ESTIMATE_TITLE = "mmgen-perf estimate (nothing ran)"
_ABOUT = re.compile(r"^about ([0-9.]+) min on ", re.M)
_PYTEST_SUMMARY = re.compile(r"^=*\s*\d+ \w+.* in [0-9.]+s")


def estimate(head: Side, tests: list[str], pytest_args: list[str], device_class: str, repeats: int,
             say: Callable[..., None] = print) -> int:
    """The suite's own estimate of the selection, run in the head, and what a comparison of
    `repeats` processes a side would take: the estimate's own process stands for a process's
    start (it imports and collects what each of them will)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *tests, *pytest_args, "--estimate", device_class, "-q",
                           "-p", "no:cacheprovider"], cwd=head.root, env=side_env(head, None),
                          capture_output=True, text=True)
    started_s = time.perf_counter() - start
    out = done.stdout
    if done.returncode != 0 or _ESTIMATE_TITLE not in out:
        say(f"error: the estimate failed (pytest exit {done.returncode}):")
        say("\n".join((out + done.stderr).strip().splitlines()[-15:]))
        return 2
    table = "\n".join(ln for ln in out[out.index(_ESTIMATE_TITLE):].splitlines()[1:] if not _PYTEST_SUMMARY.match(ln))
    say(table)
    one = sum(float(m) for m in _ABOUT.findall(table)) * 60
    total = 2 * repeats * (one + started_s)
    say(f"the comparison would take about {total / 60:.1f} min (approximate): {2 * repeats} processes "
        f"({repeats} a side), each about {one / 60:.1f} min of cases plus about {started_s:.0f} s to start "
        f"(this estimate's own process); a cold compile cache adds the first process's compiles")
    return 0
