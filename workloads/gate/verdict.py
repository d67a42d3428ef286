"""The decision: a result against its baseline entry and its declared targets (docs/gate.md)."""
from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..measure.stats import ratio_of_medians
from . import notes
from .pooling import gated_counters, runs_of
from .targets import judge_requirements

# A case fails on latency only when it is slower than the baseline by more than this, with 95%
# confidence (the lower end of the bootstrap interval of measured / baseline is above it). The
# threshold is never widened: a figure that moves further than this with nothing changed is not
# gated on (docs/gate.md, "What moves with the host").
LATENCY_THRESHOLD = 0.05
# A run whose GPU sits idle for more of its wall time than this follows its host's speed: a host
# twice as slow moves it by up to that share (docs/measured.md, "The gate across hosts"). Its wall
# latency is tracked, not gated, across machines; its GPU time and counters gate, and the
# pull-request gate compares its wall time with the base's on one machine.
HOST_BOUND = 0.05
# GPU time (the kernels' summed durations) does not follow the host. A run is held to its entry's
# within this; a uniform 5% slowdown of a case's kernels fails it.
GPU_TIME_THRESHOLD = 0.03


@dataclass
class Verdict:
    gate: str                                   # pass | pass (counters) | FAIL | no baseline | updated
    failures: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)   # declared targets not met yet, each with its gap
    tracked: list[str] = field(default_factory=list)   # figures that follow the host: reported, not judged

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def verdict(result: Mapping, entry: Mapping | None, requirements: list[dict], *, path, timing: bool,
            latency_threshold: float = LATENCY_THRESHOLD) -> Verdict:
    """How `result` stands against its case's `entry` (None: there is none) and the targets
    declared for it. Timings are judged only where `timing` (the run is on the device class the
    baseline was measured on); counters everywhere."""
    tracked: list[str] = []
    if entry is None:
        gate, failures = "no baseline", []
    else:
        failures = check(result, entry, path=path, timing=timing, latency_threshold=latency_threshold,
                         tracked=tracked)
        gate = "pass" if timing else "pass (counters)"
    unmet, open_targets = judge_requirements(result, entry, requirements)
    failures += unmet
    return Verdict("FAIL" if failures else gate, failures, open_targets, tracked)


def check(result: Mapping, entry: Mapping, *, path, timing: bool, latency_threshold: float = LATENCY_THRESHOLD,
          tracked: list[str] | None = None) -> list[str]:
    """Every way `result` regresses against `entry`; empty when it holds. Wall latencies that
    follow the host are appended to `tracked` instead, where given."""
    failures = _counter_changes(result, entry, path)
    if timing:
        failures += _speedup_floor(result, entry, path) + _gpu_time(result, entry, path)
        latency, host_bound = _latency(result, entry, path, latency_threshold)
        if not host_bound:
            failures += latency
        elif tracked is not None:
            tracked += latency
    return failures


def _counter_changes(result: Mapping, entry: Mapping, path) -> list[str]:
    """Counters that differ from the entry's; a changed kernel count names the kernels that
    changed where both sides recorded them by name."""
    measured, out = result.get("counters") or {}, []
    for key, then in sorted(gated_counters(entry.get("counters")).items()):
        if key in measured and measured[key] != then:
            why = (notes.kernel_name_changes(result.get("kernel_names"), entry.get("kernel_names"))
                   + notes.timed_choices_note(result.get("compiler")) if key.startswith("kernels") else "")
            out.append(f"{result['case']}: counter {key} changed: measured {measured[key]}, baseline {then} ({path}){why}")
    return out


def _speedup_floor(result: Mapping, entry: Mapping, path) -> list[str]:
    sp, floor = result.get("speedup"), entry.get("min_speedup")
    if sp is None or floor is None:
        return []
    factor, why = speedup_allowance(result.get("host"), entry.get("host"))
    if sp["ci"][1] >= floor * factor:
        return []
    return [f"{result['case']}: speedup over eager {sp['median']:.2f}x (95% CI {sp['ci'][0]:.2f}-{sp['ci'][1]:.2f}) "
            f"is below the minimum {floor * factor:.2f}x: {floor:.2f}x stored in {path}{why}"]


def entry_gpu_ms(entry: Mapping) -> float | None:
    """The entry's GPU time of a whole run: the median over its pooled runs that recorded one."""
    runs = [r["gpu_ms"] for r in runs_of(entry) if r.get("gpu_ms")]
    if runs:
        return float(statistics.median(runs))
    return (entry.get("gpu_ms") or {}).get("run")


def _gpu_time(result: Mapping, entry: Mapping, path) -> list[str]:
    """The run's GPU time against the entry's, a whole run and (for a decoding workload) a step."""
    now, then = result.get("gpu_ms") or {}, entry.get("gpu_ms") or {}
    pairs = [("GPU time of a run", now.get("run"), entry_gpu_ms(entry)),
             ("GPU time a decode step", now.get("per_step"), then.get("per_step"))]
    out = []
    for what, a, b in pairs:
        if a and b and a / b > 1 + GPU_TIME_THRESHOLD:
            out.append(f"{result['case']}: {what} {a:.3f} ms vs baseline {b:.3f} ms: {(a / b - 1) * 100:+.1f}%, "
                       f"over the {GPU_TIME_THRESHOLD:.0%} threshold ({path})")
    return out


def run_share(result: Mapping, entry: Mapping) -> float | None:
    """How host-bound the case is over a whole run: the larger of the run's and the entry's
    measured shares (a share of the decode step alone where an entry predates the whole-run
    figure, which misses a host-bound prefill); None where neither measured one."""
    def share(host):
        host = host or {}
        return host.get("run_share") if host.get("run_share") is not None else host.get("share")

    known = [x for x in (share(result.get("host")), share(entry.get("host"))) if x is not None]
    return max(known) if known else None


def _latency(result: Mapping, entry: Mapping, path, threshold: float) -> tuple[list[str], bool]:
    """The latency regression, if any, and whether the case follows its host (then it is tracked)."""
    lat, base = result["latency_ms"], entry["latency_ms"]
    r = ratio_of_medians(lat["samples"], base["samples"], paired=False)
    share = run_share(result, entry)
    host_bound = share is not None and share > HOST_BOUND
    if r.lo <= 1 + threshold:
        return [], host_bound
    change = (f"{result['case']}: latency {lat['median']:.2f} ms vs baseline {base['median']:.2f} ms: "
              f"{(r.median - 1) * 100:+.1f}% (95% CI {(r.lo - 1) * 100:+.1f}% to {(r.hi - 1) * 100:+.1f}%)")
    if host_bound:
        return [f"{change}; tracked, not gated: the GPU idles {share:.0%} of its run, so its wall time follows "
                f"the host{notes.host_notes(result, entry)}"], True
    return [f"{change}, slower than the {threshold:.1%} threshold allows"
            f"{notes.host_notes(result, entry)} ({path})"], False


def speedup_allowance(now: Mapping | None, then: Mapping | None) -> tuple[float, str]:
    """The factor a change of host speed sets on the stored minimum speedup, and the words that say so.

    A speedup is the eager reference's time over the lever's, timed side by side, and each moves
    with the host by its own host-bound share (a linear model of wall time in the host's speed): on a
    faster host a host-bound reference shrinks under a GPU-bound lever, with nothing of the
    lever changed (docs/gate.md, "Speedup"). A lever that itself got slower still fails the
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
