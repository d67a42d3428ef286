"""The pull-request gate as a comparison on one machine: the base build and the head build (this
working tree, edits included) each run the selected cases in N fresh processes, alternating,
and every case is judged head against base, as asv's `continuous` and Chromium's Pinpoint do.
Stored baselines are not read: both sides are measured here and now, on the same host.

    python -m workloads.compare --base REF [--repeats N] [--workdir DIR] [--json FILE]
        [--markdown FILE] [--min-effect F] [--estimate DEVICE_CLASS] [--tests PATH] -- PYTEST_ARGS...
    python -m workloads.compare --base-dir DIR ...

    sides      the head, the base (a git worktree of REF, or a directory), each side's environment
    processes  the alternating processes, their commands and logs; the estimate
    collect    each process's case log and junit xml, by case
    stats      head over base with a hierarchical bootstrap interval; the minimum effect
    judge      a case's verdict: timings (on a GPU), counters (everywhere), whether it ran
    render     the table, the failures, the JSON

Exit status: 0 nothing failed, 1 a case failed, 2 a usage error or no case ran on either side.
"""
