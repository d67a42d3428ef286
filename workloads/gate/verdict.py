"""The decision: a result against its baseline entry and its declared targets (docs/gate.md)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..measure.stats import ratio_of_medians, relative_spread, slow_mode
from . import notes
from .pooling import gated_counters
from .targets import check_requirements

# A case fails on latency only when it is slower than the baseline by more than this, with 95%
# confidence (the lower end of the bootstrap interval of measured / baseline is above it).
LATENCY_THRESHOLD = 0.05
# Host-bound cases swing between runs far more than graph replays do: a case's threshold widens
# to this many times the robust spread (MAD / median) of its baseline's rounds.
NOISE_MULTIPLIER = 2.0


@dataclass
class Verdict:
    gate: str                                   # pass | pass (counters) | FAIL | no baseline | updated
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def verdict(result: Mapping, entry: Mapping | None, requirements: list[dict], *, path, timing: bool,
            latency_threshold: float = LATENCY_THRESHOLD) -> Verdict:
    """How `result` stands against its case's `entry` (None: there is none) and the targets
    declared for it. Timings are judged only where `timing` (the run is on the device class the
    baseline was measured on); counters everywhere."""
    if entry is None:
        gate, failures = "no baseline", []
    else:
        failures = check(result, entry, path=path, timing=timing, latency_threshold=latency_threshold)
        gate = "pass" if timing else "pass (counters)"
    failures += check_requirements(result, requirements)
    return Verdict("FAIL" if failures else gate, failures)


def latency_threshold_for(baseline_samples, floor: float = LATENCY_THRESHOLD) -> float:
    """The slowdown a case may show: `floor`, widened for cases whose own baseline rounds spread."""
    return max(floor, NOISE_MULTIPLIER * relative_spread(baseline_samples))


def check(result: Mapping, entry: Mapping, *, path, timing: bool, latency_threshold: float = LATENCY_THRESHOLD
          ) -> list[str]:
    """Every way `result` regresses against `entry`; empty when it holds."""
    failures = _counter_changes(result, entry, path)
    if timing:
        failures += _speedup_floor(result, entry, path) + _latency(result, entry, path, latency_threshold)
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


def _latency(result: Mapping, entry: Mapping, path, floor: float) -> list[str]:
    lat, base = result["latency_ms"], entry["latency_ms"]
    r = ratio_of_medians(lat["samples"], base["samples"], paired=False)
    threshold = latency_threshold_for(base["samples"], floor)
    # Where the baseline's own rounds ran in two modes, a run in the slower one is no regression:
    # the threshold reaches that mode, and the message says why.
    mode, why_mode = slow_mode(base["samples"], threshold), ""
    if mode is not None:
        count, slow_ms = mode
        threshold = max(threshold, slow_ms / base["median"] - 1)
        why_mode = (f" (widened to the baseline's slower mode: {count} of its {len(base['samples'])} rounds "
                    f"near {slow_ms:.2f} ms against its median {base['median']:.2f})")
    now, then = result.get("host"), entry.get("host")
    allowance, why_host = host_allowance(now, then)
    if r.lo <= 1 + threshold + allowance:
        return []
    return [f"{result['case']}: latency {lat['median']:.2f} ms vs baseline {base['median']:.2f} ms: "
            f"{(r.median - 1) * 100:+.1f}% (95% CI {(r.lo - 1) * 100:+.1f}% to {(r.hi - 1) * 100:+.1f}%), "
            f"slower than the {threshold + allowance:.1%} threshold{why_mode} allows{why_host}"
            f"{notes.host_notes(result, entry)}{notes.one_process_note(result, entry)} ({path})"]


def host_allowance(now: Mapping | None, then: Mapping | None) -> tuple[float, str]:
    """The extra slowdown a slower host explains, and the words that say so.

    A host-bound rung runs at the speed of the host that launches its kernels, and hosts are
    not all alike (docs/gate.md, "A slower host"). The case is allowed its host-bound share of
    the host's measured slowdown (the launch probe against the baseline's); a faster host allows
    nothing, and a GPU-bound case next to nothing.
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


def speedup_allowance(now: Mapping | None, then: Mapping | None) -> tuple[float, str]:
    """The factor a change of host speed sets on the stored minimum speedup, and the words that say so.

    A speedup is the eager reference's time over the lever's, timed side by side, and each moves
    with the host by its own host-bound share (the linear model of `host_allowance`): on a
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
