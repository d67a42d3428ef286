"""Where the time goes: module times from one instrumented round's spans, and their ratios."""
from __future__ import annotations


def modules(marks: dict[str, float], *, share: tuple[str, tuple[str, ...]] | None = None) -> dict[str, float]:
    """Time per span name (summed over calls), the rest of the round as `other` (host work
    between modules), the round's `total`, and optionally one span's share of a phase:
    `share=(part, phase_spans)` adds `<part>_share` = part / sum(phase_spans)."""
    spans = {k.split(":", 1)[1]: v for k, v in marks.items() if k.startswith("span:")}
    if not spans:
        return {}
    out = dict(spans)
    out["other"] = max(marks["end"] - sum(spans.values()), 0.0)
    out["total"] = marks["end"]
    if share is not None:
        part, phase = share
        whole = sum(spans.get(n, 0.0) for n in phase)
        out[f"{part}_share"] = spans.get(part, 0.0) / whole if whole else None
    return out


def throughput(module_ms: dict, flops: dict[str, float]) -> dict[str, float]:
    """TFLOP/s of each span with a known FLOP count, from its time in the breakdown round."""
    return {name: f / (module_ms[name] * 1e-3) / 1e12 for name, f in flops.items() if module_ms.get(name)}


def group_speedup(reference: dict, lever: dict, groups: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """Reference time over lever time per group of spans, where both sides ran the group."""
    out = {}
    for group, names in groups.items():
        r = sum(reference.get(n, 0.0) for n in names)
        v = sum(lever.get(n, 0.0) for n in names)
        if r > 0 and v > 0:
            out[group] = r / v
    return out
