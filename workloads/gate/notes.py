"""What a failure message adds to its numbers: the kernels that moved, a compile's timed
choices, and what else the host did during the rounds (docs/gate.md)."""
from __future__ import annotations

from collections.abc import Mapping


def timed_choices(compiler: Mapping | None) -> int:
    """GEMM padding choices a compile decided by timing them (inductor's pad_mm), from a compiled
    rung's `compiler` record: where a kernel count can move with no change of code."""
    return (compiler or {}).get("inductor.pad_mm_bench", 0)


def timed_choices_note(compiler: Mapping | None) -> str:
    """Where the compile decided something by timing it, a kernel count may be that timing's
    answer rather than the code's: say so beside a changed count."""
    n = timed_choices(compiler)
    if not n:
        return ""
    return (f"; this compile timed {n} GEMM padding choice{'s' * (n != 1)} (inductor's pad_mm), whose answers "
            f"can differ between processes of the same code (inductor option shape_padding=False removes them)")


def kernel_name_changes(now: Mapping | None, then: Mapping | None, top: int = 6) -> str:
    """'; by kernel: +48 memcpy32_post, -24 ...': the names whose counts moved most."""
    if not now or not then:
        return ""
    moved = {k: now.get(k, 0) - then.get(k, 0) for k in set(now) | set(then)}
    moved = sorted(((d, k) for k, d in moved.items() if d), key=lambda dk: (-abs(dk[0]), dk[1]))
    if not moved:
        return ""
    more = f" and {len(moved) - top} more" if len(moved) > top else ""
    return "; by kernel: " + ", ".join(f"{d:+g} {k}" for d, k in moved[:top]) + more


def host_notes(result: Mapping, entry: Mapping) -> str:
    """What else the host did to this case's rounds, where it was enough to matter: a CPU model
    other than the baseline's, other processes' load, the suite's own other threads, the timing
    thread's time off the CPU, the host's speed moving between rounds, the CPU quota's
    throttling, Python's garbage collector."""
    now, then = result.get("host") or {}, entry.get("host") or {}
    cpus = ((result.get("provenance") or {}).get("cpu"), (entry.get("provenance") or {}).get("cpu"))
    found = [_cpu(*cpus), *_load(now, then), _probes(now, result["latency_ms"]["samples"]), _throttled(now),
             _collector(now, then, result["latency_ms"]["median"])]
    return "".join(f"; {n}" for n in found if n)


def _before(then: Mapping, key: str, fmt: str, unit: str = "") -> str:
    return "" if then.get(key) is None else f" (the baseline's: {format(then[key], fmt)}{unit})"


def _cpu(now: str | None, then: str | None) -> str:
    return f"this host's CPU is {now!r}, the baseline's {then!r}" if now and then and now != then else ""


def _load(now: Mapping, then: Mapping) -> list[str]:
    out = []
    if (now.get("other_cores") or 0) >= 0.5:
        out.append(f"other processes kept {now['other_cores']:.1f} of this host's cores busy during its rounds"
                   + _before(then, "other_cores", ".1f"))
    if (now.get("own_threads") or 0) >= 0.5:
        out.append(f"the suite's own other threads kept {now['own_threads']:.1f} cores busy during its rounds"
                   + _before(then, "own_threads", ".1f"))
    on_cpu = now.get("on_cpu")
    if on_cpu is not None and on_cpu < 0.9 and (now.get("share") or 0) >= 0.5:
        out.append(f"its timing thread was on a CPU for {on_cpu:.0%} of its rounds' wall time"
                   + _before(then, "on_cpu", ".0%"))
    return out


def _probes(now: Mapping, rounds: list[float]) -> str:
    """A host-bound case whose host probes moved by a fifth or more between its rounds, with the
    probes before its slowest and its fastest round where each round was probed."""
    probes = now.get("launch_us_rounds") or []
    if len(probes) < 2 or max(probes) < 1.2 * min(probes) or (now.get("share") or 0) < 0.3:
        return ""
    paired = ""
    if len(rounds) == len(probes):
        (slow, slow_probe), (fast, fast_probe) = max(zip(rounds, probes)), min(zip(rounds, probes))
        paired = (f"; its slowest round, {slow:.2f} ms, came after a probe of {slow_probe:.1f}, "
                  f"its fastest, {fast:.2f} ms, after {fast_probe:.1f}")
    return (f"the host's speed moved during its rounds (probed before each: {min(probes):.1f} to "
            f"{max(probes):.1f} us per op{paired})")


def _throttled(now: Mapping) -> str:
    ms = now.get("throttled_ms")
    return f"the CPU quota of its control group held it off the CPU for {ms:.0f} ms of its input's rounds" if ms else ""


def _collector(now: Mapping, then: Mapping, latency_ms: float | None) -> str:
    gc_ms = now.get("gc_ms")
    if not (gc_ms and latency_ms and gc_ms >= 0.02 * latency_ms):
        return ""
    return (f"Python's garbage collector took {gc_ms:.1f} ms of its median round ({gc_ms / latency_ms:.0%}, "
            f"{now.get('gc_full') or 0:g} full collections)" + _before(then, "gc_ms", ".1f", " ms"))
