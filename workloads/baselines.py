"""Baseline files: read (schema-checked), compare (the gate), update (atomic, safe under xdist).

`baselines/<device-class>/<scale>.json` holds, per case, what a real run measured: the
reference latency samples, the speedup over eager with its interval, the minimum speedup the
case must keep, the deterministic counters, and where the numbers came from. Only a run writes
it (`--update-baselines`); no number in it is typed by hand.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import caselog
from .measure.stats import ratio_of_medians, relative_spread, slow_mode, summarize

SCHEMA = 1
# A case fails on latency only when it is slower than the baseline by more than this, with
# 95% confidence (the lower end of the bootstrap interval of measured / baseline is above it).
LATENCY_THRESHOLD = 0.05
# Host-bound cases (eager generate) swing 20-40% between runs while graph replays hold within 1%:
# a case's threshold widens to this many times the robust spread (MAD / median) of its baseline.
NOISE_MULTIPLIER = 2.0
# The stored minimum speedup sits this far under the lower end of the measured interval. The
# eager reference is often host-bound, and it drifts between the cases of one run far more than
# within one: HSTU 2K at batch 32 on an H200 timed it at 142 ms alone and 197 ms beside the fused
# rung, so a floor 10% under one measurement failed the next run of an unchanged lever. A lever's
# own regressions are the latency gate's to catch, which compares it with itself.
SPEEDUP_MARGIN = 0.25
# A case's entry pools the rounds of its last runs of the same code (source fingerprint, torch,
# CUDA), so its spread, and the threshold drawn from it, is how far the case moves between runs
# and not only within one: HSTU's launch-bound compile rung at batch 1 timed 5.5, 10.7 and 7.6 ms
# in three runs of one commit on one H200 host, each run's own rounds within 10%.
MAX_RUNS = 5
# Declared targets written for an H100 hold on every Hopper part at least as fast (the H200 has
# the same SMs and more HBM bandwidth): ratios and roofline fractions carry over, and its TPOT
# floor is lower.
HOPPER = ("nvidia-h100", "nvidia-h200")


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file and the key."""


def path_for(root: str | Path, device_class: str, scale: str) -> Path:
    return Path(root) / device_class / f"{scale}.json"


# -- schema ---------------------------------------------------------------------------------
def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_interval(where: str, d, *, samples: bool) -> None:
    if not isinstance(d, dict):
        raise BaselineError(f"{where}: expected an object, got {type(d).__name__}")
    if not (_num(d.get("median")) and d["median"] > 0):
        raise BaselineError(f"{where}.median: expected a positive number, got {d.get('median')!r}")
    ci = d.get("ci")
    if not (isinstance(ci, list) and len(ci) == 2 and all(_num(v) for v in ci) and ci[0] <= ci[1]):
        raise BaselineError(f"{where}.ci: expected [low, high], got {ci!r}")
    if samples:
        s = d.get("samples")
        if not (isinstance(s, list) and s and all(_num(v) and v > 0 for v in s)):
            raise BaselineError(f"{where}.samples: expected a non-empty list of positive numbers, got {s!r}")


def _host_ok(host) -> bool:
    if not isinstance(host, dict):
        return False
    lu = host.get("launch_us")
    fractions = (host.get("share"), host.get("reference_share"), host.get("on_cpu"))
    counts = (host.get(k) for k in ("other_cores", "own_threads", "throttled_ms", "gc_ms", "gc_full"))
    rounds = host.get("launch_us_rounds")
    return ((lu is None or (_num(lu) and lu > 0))
            and (rounds is None or (isinstance(rounds, list) and all(_num(x) and x > 0 for x in rounds)))
            and all(x is None or (_num(x) and 0 <= x <= 1) for x in fractions)
            and all(x is None or (_num(x) and x >= 0) for x in counts))


def validate(data, path: Path, *, device_class: str | None = None, scale: str | None = None) -> dict:
    """Check a parsed baseline file; raise BaselineError naming the file and the bad key."""
    if not isinstance(data, dict):
        raise BaselineError(f"{path}: top level must be an object")
    if data.get("schema") != SCHEMA:
        raise BaselineError(f"{path}: key 'schema' is {data.get('schema')!r}, this suite reads schema {SCHEMA}")
    for key, want in (("device_class", device_class), ("scale", scale)):
        if not isinstance(data.get(key), str):
            raise BaselineError(f"{path}: key {key!r} missing or not a string")
        if want is not None and data[key] != want:
            raise BaselineError(f"{path}: key {key!r} is {data[key]!r} but the file is used for {want!r}")
    cases = data.get("cases")
    if not isinstance(cases, dict):
        raise BaselineError(f"{path}: key 'cases' missing or not an object")
    for cid, entry in cases.items():
        where = f"{path}: cases[{cid!r}]"
        if not isinstance(entry, dict):
            raise BaselineError(f"{where}: expected an object")
        _check_interval(f"{where}.latency_ms", entry.get("latency_ms"), samples=True)
        if entry.get("speedup") is not None:
            _check_interval(f"{where}.speedup", entry["speedup"], samples=False)
        ms = entry.get("min_speedup")
        if ms is not None and not (_num(ms) and ms > 0):
            raise BaselineError(f"{where}.min_speedup: expected a positive number or null, got {ms!r}")
        counters = entry.get("counters")
        if not isinstance(counters, dict) or not all(_num(v) for v in counters.values()):
            raise BaselineError(f"{where}.counters: expected an object of numbers, got {counters!r}")
        host = entry.get("host")
        if host is not None and not _host_ok(host):
            raise BaselineError(f"{where}.host: expected {{launch_us: positive number, launch_us_rounds: list of them, share, reference_share and on_cpu: 0..1, "
                                f"other_cores, own_threads, throttled_ms, gc_ms and gc_full: >= 0}}, "
                               f"got {host!r}")
        runs = entry.get("runs")
        if runs is not None:
            if not (isinstance(runs, list) and runs and all(
                    isinstance(r, dict) and isinstance(r.get("rounds"), int) and r["rounds"] > 0 for r in runs)):
                raise BaselineError(f"{where}.runs: expected a non-empty list of {{rounds: positive integer, ...}}, got {runs!r}")
            if sum(r["rounds"] for r in runs) != len(entry["latency_ms"]["samples"]):
                raise BaselineError(f"{where}.runs: their rounds add up to {sum(r['rounds'] for r in runs)}, "
                                   f"but latency_ms.samples holds {len(entry['latency_ms']['samples'])}")
        prov = entry.get("provenance")
        if not isinstance(prov, dict) or not prov.get("commit") or not prov.get("torch"):
            raise BaselineError(f"{where}.provenance: needs at least 'commit' and 'torch'")
    return data


def load(path: str | Path, *, device_class: str | None = None, scale: str | None = None) -> dict | None:
    """The file's contents, or None when there is no file. Corrupt files are errors, never ignored."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BaselineError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return validate(data, path, device_class=device_class, scale=scale)


# -- the gate -------------------------------------------------------------------------------
def latency_threshold_for(baseline_samples, floor: float = LATENCY_THRESHOLD) -> float:
    """The slowdown a case may show: `floor`, widened for cases whose own baseline rounds spread."""
    return max(floor, NOISE_MULTIPLIER * relative_spread(baseline_samples))


# Counters recorded and reported but not held to their entry: cuBLAS picks among GEMV and
# split-K variants at run time, for the same GEMMs of the same compiled step. Seamless's step ran
# 24 or 72 of these auxiliary kernels a step in two processes of one commit on one H200 (48
# `memcpy32_post` kernels in one, 48 DtoD copies in the other), the step's total unchanged.
UNGATED_COUNTERS = ("blas_helpers",)


def gated_counters(counters: dict | None) -> dict:
    """The counters a run is held to (and pooled by): all but UNGATED_COUNTERS."""
    return {k: v for k, v in (counters or {}).items() if not k.startswith(UNGATED_COUNTERS)}


def _counter_changes(cid: str, result: dict, entry: dict, path) -> list[str]:
    """Counters that differ from the entry's; a changed kernel count names the kernels that
    changed where both sides recorded them by name."""
    measured, out = result.get("counters") or {}, []
    for key, then in sorted(gated_counters(entry.get("counters")).items()):
        if key in measured and measured[key] != then:
            out.append(f"{cid}: counter {key} changed: measured {measured[key]}, baseline {then} ({path})"
                       + (kernel_name_changes(result.get("kernel_names"), entry.get("kernel_names"))
                          + timed_choices_note(result.get("compiler")) if key.startswith("kernels") else ""))
    return out


def timed_choices(compiler: dict | None) -> int:
    """GEMM padding choices a compile decided by timing them (inductor's pad_mm), from a compiled
    rung's `compiler` record: where a kernel count can move with no change of code."""
    return (compiler or {}).get("inductor.pad_mm_bench", 0)


def timed_choices_note(compiler: dict | None) -> str:
    """Where the compile decided something by timing it, a kernel count may be that timing's
    answer rather than the code's: say so beside a changed count."""
    n = timed_choices(compiler)
    if not n:
        return ""
    return (f"; this compile timed {n} GEMM padding choice{'s' * (n != 1)} (inductor's pad_mm), whose answers "
            f"can differ between processes of the same code (inductor option shape_padding=False removes them)")


def kernel_name_changes(now: dict | None, then: dict | None, top: int = 6) -> str:
    """'; by kernel: +48 memcpy32_post, -24 ...': the names whose counts moved most."""
    if not now or not then:
        return ""
    moved = {k: now.get(k, 0) - then.get(k, 0) for k in set(now) | set(then)}
    moved = sorted(((d, k) for k, d in moved.items() if d), key=lambda dk: (-abs(dk[0]), dk[1]))
    if not moved:
        return ""
    more = f" and {len(moved) - top} more" if len(moved) > top else ""
    return "; by kernel: " + ", ".join(f"{d:+g} {k}" for d, k in moved[:top]) + more


def check(result: dict, entry: dict, *, path: str | Path, timing: bool,
          latency_threshold: float = LATENCY_THRESHOLD) -> list[str]:
    """Every way `result` regresses against `entry`; empty when it holds.

    Deterministic counters are compared everywhere; timings only when `timing` (the run is on
    the device class the baseline was measured on).
    """
    cid = result["case"]
    failures = []
    failures += _counter_changes(cid, result, entry, path)
    if not timing:
        return failures
    now, then = result.get("host"), entry.get("host")
    sp = result.get("speedup")
    floor = entry.get("min_speedup")
    if sp is not None and floor is not None:
        factor, why_floor = speedup_allowance(now, then)
        if sp["ci"][1] < floor * factor:
            failures.append(
                f"{cid}: speedup over eager {sp['median']:.2f}x (95% CI {sp['ci'][0]:.2f}-{sp['ci'][1]:.2f}) "
                f"is below the minimum {floor * factor:.2f}x: {floor:.2f}x stored in {path}{why_floor}"
            )
    lat = result["latency_ms"]
    base = entry["latency_ms"]
    r = ratio_of_medians(lat["samples"], base["samples"], paired=False)
    threshold = latency_threshold_for(base["samples"], latency_threshold)
    # Where the baseline's own rounds ran in two modes, a run in the slower one is no regression:
    # the threshold reaches that mode, and the message says why.
    mode, why_mode = slow_mode(base["samples"], threshold), ""
    if mode is not None:
        count, slow_ms = mode
        threshold = max(threshold, slow_ms / base["median"] - 1)
        why_mode = (f" (widened to the baseline's slower mode: {count} of its {len(base['samples'])} rounds "
                    f"near {slow_ms:.2f} ms against its median {base['median']:.2f})")
    allowance, why_host = host_allowance(now, then)
    if r.lo > 1 + threshold + allowance:
        failures.append(
            f"{cid}: latency {lat['median']:.2f} ms vs baseline {base['median']:.2f} ms: "
            f"{(r.median - 1) * 100:+.1f}% (95% CI {(r.lo - 1) * 100:+.1f}% to {(r.hi - 1) * 100:+.1f}%), "
            f"slower than the {threshold + allowance:.1%} threshold{why_mode} allows{why_host}"
            f"{_busy_note(now, then, lat['median'], _cpus(result, entry), lat['samples'])}"
            f"{_one_process_note(result, entry)} ({path})"
        )
    return failures


def _one_process_note(result: dict, entry: dict) -> str:
    """For a host-bound case whose entry holds one process's rounds: that its threshold cannot
    know how far the case moves between processes, and how to pool more. Chameleon's T-I eager
    at batch 16 (70% host-bound) timed 28.3 s in the process that wrote its entry and 31.8-36.4 s
    in four later ones, with the host probe reading no slower (docs/measured.md)."""
    runs = _runs_of(entry)
    shares = [x for x in ((result.get("host") or {}).get("share"), (entry.get("host") or {}).get("share")) if x is not None]
    if len(runs) != 1 or not shares or max(shares) < 0.5:
        return ""
    how = ("pool this run into it (python -m workloads.baselines fold, on this run's --case-log)"
           if same_code(entry, result) else
           "re-measure it with --update-baselines in two or more processes of this code")
    return (f"; its entry holds one process's rounds (commit {str(runs[0].get('commit'))[:7]}), and this case, "
            f"{max(shares):.0%} host-bound, moves more between processes than within one: {how}")


def _cpus(result: dict, entry: dict) -> tuple[str | None, str | None]:
    return ((result.get("provenance") or {}).get("cpu"), (entry.get("provenance") or {}).get("cpu"))


def _busy_note(now: dict | None, then: dict | None, latency_ms: float | None = None,
               cpus: tuple[str | None, str | None] = (None, None), rounds: list[float] | None = None) -> str:
    """What else the host did to this case's rounds, where it was enough to matter: other
    processes' load (a host-bound case sharing the host with another job ran 40-94% slower,
    docs/measured.md, HSTU), the process's own other threads' load, the timing thread's time off the CPU,
    the host's speed moving between its rounds (a host-bound case only), the CPU quota's
    throttling, Python's garbage collector (2% of a round or more), and a CPU
    model other than the baseline's (`cpus`: this run's and the baseline's, from their
    provenance). `rounds` are the run's round times, in the order of their probes."""
    now, then = now or {}, then or {}
    notes = []
    if cpus[0] and cpus[1] and cpus[0] != cpus[1]:
        notes.append(f"this host's CPU is {cpus[0]!r}, the baseline's {cpus[1]!r}")
    other = now.get("other_cores")
    if other is not None and other >= 0.5:
        before = then.get("other_cores")
        notes.append(f"other processes kept {other:.1f} of this host's cores busy during its rounds"
                     + (f" (the baseline's: {before:.1f})" if before is not None else ""))
    own = now.get("own_threads")
    if own is not None and own >= 0.5:
        before = then.get("own_threads")
        notes.append(f"the suite's own other threads kept {own:.1f} cores busy during its rounds"
                     + (f" (the baseline's: {before:.1f})" if before is not None else ""))
    on_cpu = now.get("on_cpu")
    if on_cpu is not None and on_cpu < 0.9 and (now.get("share") or 0) >= 0.5:
        before = then.get("on_cpu")
        notes.append(f"its timing thread was on a CPU for {on_cpu:.0%} of its rounds' wall time"
                     + (f" (the baseline's: {before:.0%})" if before is not None else ""))
    probes = now.get("launch_us_rounds") or []
    if len(probes) >= 2 and max(probes) >= 1.2 * min(probes) and (now.get("share") or 0) >= 0.3:
        # Which rounds the slow probes preceded: on Chameleon's launch-bound compiled step each
        # run's slowest round followed its highest probe (1.06-1.20x the run's median).
        paired = ""
        if rounds is not None and len(rounds) == len(probes):
            (slow, slow_probe), (fast, fast_probe) = max(zip(rounds, probes)), min(zip(rounds, probes))
            paired = (f"; its slowest round, {slow:.2f} ms, came after a probe of {slow_probe:.1f}, "
                      f"its fastest, {fast:.2f} ms, after {fast_probe:.1f}")
        notes.append(f"the host's speed moved during its rounds (probed before each: {min(probes):.1f} to "
                     f"{max(probes):.1f} us per op{paired})")
    throttled = now.get("throttled_ms")
    if throttled:
        notes.append(f"the CPU quota of its control group held it off the CPU for {throttled:.0f} ms of its input's rounds")
    gc_ms = now.get("gc_ms")
    if gc_ms and latency_ms and gc_ms >= 0.02 * latency_ms:
        before = then.get("gc_ms")
        notes.append(f"Python's garbage collector took {gc_ms:.1f} ms of its median round ({gc_ms / latency_ms:.0%}, "
                     f"{now.get('gc_full') or 0:g} full collections)"
                     + (f" (the baseline's: {before:.1f} ms)" if before is not None else ""))
    return "".join(f"; {n}" for n in notes)


def host_allowance(now: dict | None, then: dict | None) -> tuple[float, str]:
    """The extra slowdown a slower host explains, and the words that say so.

    A host-bound rung (eager generate, a blockwise loop of small kernels) runs at the speed of
    the host that launches its kernels, and runners are not all alike: HSTU's blockwise rung at
    batch 32 (78k launches a run) took 1.50 s on one H200 machine and 2.55 s on another, while
    the fused and graph rungs of the same run held within 1%. The case is allowed its host-bound
    share of the host's measured slowdown (both measured: the launch probe and the GPU's idle
    share); a faster host allows nothing, and a GPU-bound case next to nothing.
    """
    if not now or not then or not now.get("launch_us") or not then.get("launch_us"):
        return 0.0, ""
    slower = now["launch_us"] / then["launch_us"] - 1
    shares = [x for x in (now.get("share"), then.get("share")) if x is not None]
    if slower <= 0 or not shares:
        return 0.0, ""
    share = max(shares)
    allowance = share * slower
    return allowance, (f", of which {allowance:.1%} is this host launching {slower:.0%} slower than the baseline's "
                       f"({now['launch_us']:.1f} vs {then['launch_us']:.1f} us per op) times the case's "
                       f"{share:.0%} host-bound share")


def timed_alone(result: dict) -> bool:
    """Whether a result's rung ran with no eager rounds beside it (--latency-only): it says so
    with a null reference latency."""
    return "reference_latency_ms" in result and result["reference_latency_ms"] is None


def check_requirements(result: dict, requirements: list[dict]) -> list[str]:
    """Declared performance targets (specifications, not measurements) that apply to this case
    on this device class: `max_tpot_ms`, `min_roofline`, `min_speedup` (judged on the median),
    `min_module_speedup` ({module group: bar}, judged on the breakdown round). A requirement's
    `device_class` is a prefix of the classes it applies to, or a tuple of such prefixes.
    A result with no eager reference (--latency-only) is not judged on speedups."""
    failures = []
    for req in requirements:
        if req["case"] != result["case"] or not result["device_class"].startswith(req["device_class"]):
            continue
        why = req.get("why", "declared requirement")
        tpot = (result.get("tpot_ms") or {}).get("median")
        if "max_tpot_ms" in req and (tpot is None or tpot > req["max_tpot_ms"]):
            failures.append(f"{result['case']}: time per output token {tpot if tpot is None else f'{tpot:.2f}'} ms "
                            f"exceeds {req['max_tpot_ms']} ms ({why})")
        roof = (result.get("roofline") or {}).get("fraction")
        if "min_roofline" in req and (roof is None or roof < req["min_roofline"]):
            failures.append(f"{result['case']}: roofline {roof if roof is None else f'{roof:.1%}'} is under {req['min_roofline']:.0%} ({why})")
        if timed_alone(result):
            continue
        sp = (result.get("speedup") or {}).get("median")
        if "min_speedup" in req and (sp is None or sp < req["min_speedup"]):
            failures.append(f"{result['case']}: speedup {sp if sp is None else f'{sp:.2f}x'} is under {req['min_speedup']}x ({why})")
        for module, bar in req.get("min_module_speedup", {}).items():
            got = (result.get("module_speedup") or {}).get(module)
            if got is None or got < bar:
                failures.append(f"{result['case']}: {module} speedup {got if got is None else f'{got:.2f}x'} "
                                f"is under {bar}x ({why})")
    return failures


def speedup_allowance(now: dict | None, then: dict | None) -> tuple[float, str]:
    """The factor a change of host speed sets on the stored minimum speedup, and the words that say so.

    A speedup is the eager reference's time over the lever's, timed side by side, and each moves
    with the host by its own host-bound share (the linear model of `host_allowance`). On a faster
    host a host-bound reference shrinks under a GPU-bound lever: HSTU's eager reference at batch
    32 and 1K took 224 ms on an H200 host launching at 15.0 us per op and 121 ms on one at 8.2,
    while the compiled rung beside it held at 10.8 and 10.3 ms, so its speedup fell from 20.8x to
    11.8x with nothing of the lever changed. A lever that itself got slower still fails the
    latency gate. The shares are this run's where measured, else the baseline's; a baseline
    without a host figure keeps its floor.
    """
    if not now or not then or not now.get("launch_us") or not then.get("launch_us"):
        return 1.0, ""

    def share(key):
        x = now.get(key)
        return x if x is not None else then.get(key)

    ref, rung = share("reference_share"), share("share")
    if ref is None:
        return 1.0, ""
    d = now["launch_us"] / then["launch_us"] - 1
    factor = min(1.0, (1 + ref * d) / (1 + (rung or 0.0) * d))
    if factor >= 1.0:
        return 1.0, ""
    return factor, (f", times {factor:.2f} as this host launches {abs(d):.0%} {'faster' if d < 0 else 'slower'} than "
                    f"the baseline's ({now['launch_us']:.1f} vs {then['launch_us']:.1f} us per op) with the eager "
                    f"reference {ref:.0%} and the lever {(rung or 0.0):.0%} host-bound")


def entry_from_result(result: dict, *, previous: dict | None = None, speedup_margin: float = SPEEDUP_MARGIN) -> dict:
    """The baseline entry a run's result becomes; with `previous` (the case's entry so far) of the
    same code and counters, the entry pools both: the last MAX_RUNS runs' rounds, the lowest of
    their speedup floors, the newest run's provenance, speedup, host and GPU state."""
    sp = result.get("speedup")
    min_sp = None
    if sp is not None:
        min_sp = math.floor(sp["ci"][0] * (1 - speedup_margin) * 100) / 100
        min_sp = min_sp if min_sp > 0 else None
    lat = result["latency_ms"]
    prov = result["provenance"]
    entry = {
        "latency_ms": {k: lat[k] for k in ("metric", "median", "ci", "samples") if k in lat},
        "speedup": {k: sp[k] for k in ("median", "ci")} if sp is not None else None,
        "min_speedup": min_sp,
        "counters": dict(result.get("counters") or {}),
        "provenance": dict(prov),
        "runs": [{"rounds": len(lat["samples"]), "median": lat["median"], "min_speedup": min_sp,
                  "commit": prov.get("commit"), "date": prov.get("date")}],
    }
    for key in ("ttft_ms", "tpot_ms", "peak_memory", "roofline", "build_s", "compile_s", "capture_s", "vocoder_setup_s", "untimed_s", "gpu_state", "host",
                "kernel_names"):
        if result.get(key) is not None:
            entry[key] = result[key]
    if (previous is None or not same_code(previous, entry)
            or gated_counters(previous.get("counters")) != gated_counters(entry["counters"])):
        return entry
    entry["runs"], entry["latency_ms"] = _with_run(previous, entry["runs"][0], lat["samples"])
    floors = [r.get("min_speedup") for r in entry["runs"]]
    entry["min_speedup"] = None if any(f is None for f in floors) else min(floors)
    return entry


def _with_run(previous: dict, run: dict, rounds: list[float]) -> tuple[list[dict], dict]:
    """`previous`'s runs and latency with one more run of `rounds`: the last MAX_RUNS runs' rounds."""
    runs = (_runs_of(previous) + [run])[-MAX_RUNS:]
    kept = sum(r["rounds"] for r in runs[:-1])
    old = previous["latency_ms"]["samples"]
    samples = old[len(old) - kept:] + list(rounds)
    return runs, {"metric": previous["latency_ms"].get("metric", "e2e"), **summarize(samples).as_dict(), "samples": samples}


def same_code(entry: dict, other: dict) -> bool:
    """Whether two entries (or an entry and a result) were measured by the same code and stack."""
    a, b = entry.get("provenance") or {}, other.get("provenance") or {}
    return all(a.get(k) is not None and a.get(k) == b.get(k) for k in _CODE)


_CODE = ("source", "torch", "cuda", "device_class")


def _runs_of(entry: dict) -> list[dict]:
    # Entries written before runs were pooled hold exactly one run.
    if entry.get("runs"):
        return list(entry["runs"])
    prov = entry.get("provenance") or {}
    return [{"rounds": len(entry["latency_ms"]["samples"]), "median": entry["latency_ms"]["median"],
             "min_speedup": entry.get("min_speedup"), "commit": prov.get("commit"), "date": prov.get("date")}]


# -- writing --------------------------------------------------------------------------------
def write_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file beside `path`, then rename over it: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(path: Path):
    # One writer at a time across pytest-xdist workers: each read-modify-write holds the lock.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def update(path: str | Path, *, device_class: str, scale: str, case_id: str, entry) -> dict:
    """Set one case's entry, keeping every other case; refuses to overwrite a corrupt file.
    `entry` is the entry, or a function of the case's entry so far (None if none) that makes it,
    called under the file's lock. Returns the entry written."""
    path = Path(path)
    with _locked(path):
        data = load(path, device_class=device_class, scale=scale) or {
            "schema": SCHEMA, "device_class": device_class, "scale": scale, "cases": {},
        }
        if callable(entry):
            entry = entry(data["cases"].get(case_id))
        data["cases"][case_id] = entry
        validate(data, path)
        write_atomic(path, data)
    return entry


def record(path: str | Path, *, scale: str, result: dict) -> dict:
    """Write a run's result into its case's entry (pooled with earlier runs of the same code);
    returns the entry written."""
    return update(path, device_class=result["device_class"], scale=scale, case_id=result["case"],
                  entry=lambda previous: entry_from_result(result, previous=previous))


def fold(root: str | Path, logs: list[str | Path]) -> list[str]:
    """Pool the runs that case logs (`--case-log`) hold into the baselines they were gated
    against: only runs of the code that measured the entry (others are skipped, and said so),
    once each. A case with no entry, or whose counters differ from its entry's at the same code,
    is an error that names it; nothing is written then. The eager rounds a lever was timed
    beside pool into the eager case's entry too (`_fold_eager_beside`). Returns one line per run."""
    try:
        results = [(where, record["result"]) for where, record in caselog.read(logs)]
    except caselog.CaseLogError as e:
        raise BaselineError(str(e)) from None
    plan, skipped = [], []
    for where, result in results:
        cid = str(result.get("case"))
        path, scale, entry = _entry_of(root, result, cid)
        if entry is None:
            raise BaselineError(f"{where}: case {cid} has no entry in {path} to pool with; "
                                f"measure it with --update-baselines first")
        if timed_alone(result):
            # No speedup: pooled, it would erase the entry's floor.
            skipped.append(f"{cid}: skipped, timed without eager beside it (--latency-only), so it has no speedup "
                           f"to pool; its latency is gated, not stored")
            continue
        if not same_code(entry, result):
            skipped.append(f"{cid}: skipped, run by other code than its entry ({', '.join(_CODE)}: run "
                           f"{[result['provenance'].get(k) for k in _CODE]}, entry {[entry['provenance'].get(k) for k in _CODE]}); "
                           f"re-measure it with --update-baselines")
            continue
        if gated_counters(result.get("counters")) != gated_counters(entry.get("counters")):
            raise BaselineError(f"{where}: case {cid} counted {result.get('counters')}, its entry in {path} "
                                f"{entry.get('counters')}: the same code ran differently, so the runs do not pool")
        plan.append((path, scale, result))
    done = []
    for path, scale, result in plan:
        data = load(path)
        entry = data["cases"][result["case"]]
        stamp = (result["provenance"].get("commit"), result["provenance"].get("date"))
        if any((r.get("commit"), r.get("date")) == stamp for r in _runs_of(entry)):
            done.append(f"{result['case']}: already pooled ({stamp[1]})")
            continue
        entry = record(path, scale=scale, result=result)
        done.append(f"{result['case']}: {len(entry['runs'])} runs, median {entry['latency_ms']['median']:.2f} ms")
    return done + _fold_eager_beside(root, [r for _, r in results]) + skipped


def _entry_of(root: str | Path, result: dict, case_id: str) -> tuple[Path, str, dict | None]:
    """The baseline file of a logged result's device and scale, that scale, and `case_id`'s entry
    there (None if it has none)."""
    scale = case_id.split("/")[-2] if case_id.count("/") >= 2 else "?"   # ids end .../<scale>/bs<batch>
    path = path_for(root, str(result.get("device_class")), scale)
    data = load(path, device_class=result.get("device_class"), scale=scale)
    return path, scale, (data or {}).get("cases", {}).get(case_id)


def _eager_id(case_id: str) -> str:
    parts = case_id.split("/")   # model/task/lever/scale/bs<batch>
    return "/".join(parts[:2] + ["eager"] + parts[3:])


def _within(part: list, whole: list) -> bool:
    return any(whole[i:i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def _fold_eager_beside(root: str | Path, results: list[dict]) -> list[str]:
    """Pool the eager rounds each lever was timed beside (its reference samples) into the eager
    case's entry of that input, where that entry is of the same code. They are the eager case's
    rounds in that process: where the eager case is selected too, its samples are those very
    rounds. A host-bound eager case moves between processes more than within one (Chameleon's
    T-I eager at batch 16: 28.3 s in one process, 31.8-36.4 s in four others, docs/measured.md),
    and a run of one lever per process still times eager in each. Rounds already in the logs'
    eager results or in the entry, or a prefix of other levers' rounds of the same process, are
    not pooled twice."""
    seen = [list(r["latency_ms"]["samples"]) for r in results if _eager_id(r["case"]) == r["case"]]
    beside = [(r, list(r["reference_latency_ms"]["samples"])) for r in results
              if _eager_id(r["case"]) != r["case"] and (r.get("reference_latency_ms") or {}).get("samples")]
    lines = []
    # Longest first: another lever of the same process timed a prefix of the same eager rounds.
    for result, rounds in sorted(beside, key=lambda b: -len(b[1])):
        if any(o[:len(rounds)] == rounds for o in seen):
            continue   # the same process's eager rounds, pooled with its eager case or another lever
        seen.append(rounds)
        cid, eid = result["case"], _eager_id(result["case"])
        path, scale, entry = _entry_of(root, result, eid)
        if entry is None or not same_code(entry, result):
            lines.append(f"{eid}: the eager rounds timed beside {cid} skipped: "
                         + ("no entry to pool them into" if entry is None else "its entry is of other code"))
            continue
        if _within(rounds, entry["latency_ms"]["samples"]):
            lines.append(f"{eid}: the eager rounds timed beside {cid} already pooled")
            continue
        pooled = update(path, device_class=result["device_class"], scale=scale, case_id=eid,
                        entry=lambda previous: _with_rounds(previous, rounds, result["provenance"]))
        lines.append(f"{eid}: {len(pooled['runs'])} runs with the eager rounds timed beside {cid}, "
                     f"median {pooled['latency_ms']['median']:.2f} ms")
    return lines


def _with_rounds(entry: dict, rounds: list[float], provenance: dict) -> dict:
    """`entry` with one more run of `rounds`; the rest of the entry, counters and host included,
    stays that of the eager case's own last run."""
    run = {"rounds": len(rounds), "median": summarize(rounds).as_dict()["median"], "min_speedup": None,
           "commit": provenance.get("commit"), "date": provenance.get("date")}
    runs, latency = _with_run(entry, run, rounds)
    return entry | {"runs": runs, "latency_ms": latency}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m workloads.baselines",
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
