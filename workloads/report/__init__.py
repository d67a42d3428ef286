"""Human-readable summaries of case results."""
from __future__ import annotations


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def table(rows: list[dict]) -> str:
    """One line per case: latency, time to first token, time per output token, speedup over
    eager with its 95% interval, roofline fraction, compile time, peak memory, gate verdict."""
    head = ["case", "n", "e2e ms", "TTFT ms", "TPOT ms", "speedup [95% CI]", "roofline", "compile s", "peak MiB", "gate"]
    body = []
    for r in rows:
        sp = r.get("speedup")
        body.append([
            r["case"], str(r["rounds"]), _f(r["e2e"]), _f(r["ttft"]), _f(r["tpot"], "{:.3f}"),
            "-" if sp is None else f"{sp[0]:.2f}x [{sp[1]:.2f}, {sp[2]:.2f}]",
            _f(r.get("roofline"), "{:.0%}"), _f(r.get("compile_s"), "{:.1f}"), _f(r.get("peak_mb"), "{:.0f}"), r["gate"],
        ])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


# Pipeline order of the spans engines record; a span not listed here goes after these.
_MODULE_ORDER = ("encoder", "prefill", "decoder.prefill", "decode", "decoder.step", "kv_reorder", "decoder.rerun",
                 "t2u", "vocoder", "detokenize", "embedding", "dense", "attention", "heads", "forward")
# One module's share of its phase: the KV reorder's of decoding, the attention's of a forward.
_SHARES = {"kv_reorder_share": "reorder share", "attention_share": "attention share"}


def modules_table(rows: list[dict]) -> str:
    """Where the time goes: ms per module in one instrumented round of each case's lever side
    (eager's own rows for the eager case), and one module's share of its phase where a row has
    one. Columns are the modules the rows have."""
    rows = [r for r in rows if r.get("modules")]
    seen = list(dict.fromkeys(k for r in rows for k in r["modules"]
                              if k not in ("other", "total") and not k.endswith("_share")))
    columns = [c for c in _MODULE_ORDER if c in seen] + [c for c in seen if c not in _MODULE_ORDER] + ["other"]
    shares = [k for k in _SHARES if any(r["modules"].get(k) is not None for r in rows)]
    head = ["case", *columns, "total", *(_SHARES[k] for k in shares)]
    body = []
    for r in rows:
        m = r["modules"]
        body.append([r["case"], *(_f(m.get(c), "{:.1f}") for c in columns), _f(m.get("total"), "{:.1f}"),
                     *(_f(m.get(k), "{:.0%}") for k in shares)])
    if not body:
        return ""
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)
