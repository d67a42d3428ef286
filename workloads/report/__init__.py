"""Human-readable summaries of case results."""
from __future__ import annotations

from ..baselines import timed_choices


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def row(result: dict, gate: str) -> dict:
    """A case's line in the summaries, from its result and its gate verdict."""
    sp = result.get("speedup")
    roof = result.get("roofline")
    modules = result.get("modules_ms") or {}
    return {
        "case": result["case"],
        "rounds": result["rounds"],
        "e2e": result["latency_ms"]["median"],
        "ttft": (result.get("ttft_ms") or {}).get("median"),
        "tpot": (result.get("tpot_ms") or {}).get("median"),
        "speedup": None if sp is None else (sp["median"], sp["ci"][0], sp["ci"][1]),
        "roofline": None if roof is None else roof["fraction"],
        "compile_s": result.get("compile_s"),
        "peak_mb": (result.get("peak_memory") or {}).get("peak_mb"),
        "gate": gate,
        # A lever's own side, or eager's in the eager case (a lever timed alone has only its own).
        "modules": modules.get("lever", modules.get("eager")),
        "counters": result.get("counters") or {},
        "host_share": (result.get("host") or {}).get("share"),
        "on_cpu": (result.get("host") or {}).get("on_cpu"),
        "gc_ms": (result.get("host") or {}).get("gc_ms"),
        "module_speedup": result.get("module_speedup") or {},
        "fx_cache": _fx_cache(result.get("compiler")),
        "pad_mm_timed": timed_choices(result.get("compiler")) or None,
        "span_tflops": result.get("span_tflops") or {},
        "matmul_peak_tflops": result.get("matmul_peak_tflops"),
    }


def _fx_cache(compiler: dict | None) -> str | None:
    """Where a compiled rung's graph came from: inductor's FX-graph cache (hit), a fresh compile
    (miss), or neither (bypass: the graph cannot be cached); several graphs list each outcome."""
    if not compiler:
        return None
    seen = [k for k in ("hit", "miss", "bypass") if compiler.get(f"inductor.fxgraph_cache_{k}")]
    return "+".join(seen) or None


def grid(head: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def ladder(rows: list[dict], markdown: bool = False) -> str:
    """One line per input (model, task, scale, batch), one column per lever: its end-to-end ms
    and its speedup over the eager rounds timed beside it, marked where its gate failed."""
    inputs: dict[tuple, dict] = {}
    levers: list[str] = []
    for r in rows:
        model, task, lever, scale, bs = r["case"].split("/")
        key = (model, task, scale, bs.removeprefix("bs"))
        inputs.setdefault(key, {})[lever] = r
        if lever not in levers:
            levers.append(lever)
    head = ["model", "task", "scale", "bs", *(f"{lv} ms" + ("" if lv == "eager" else " (x)") for lv in levers)]
    body = []
    for key, by_lever in inputs.items():
        cells = []
        for lv in levers:
            r = by_lever.get(lv)
            if r is None:
                cells.append("-")
                continue
            sp = r.get("speedup")
            cell = f"{r['e2e']:.1f}" + ("" if sp is None else f" ({sp[0]:.2f}x)")
            cells.append(cell + (" FAIL" if r["gate"] == "FAIL" else ""))
        body.append([*key, *cells])
    return grid(head, body, markdown) if body else ""


def table(rows: list[dict], markdown: bool = False) -> str:
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
    return grid(head, body, markdown)


# Pipeline order of the spans engines record; a span not listed here goes after these.
_MODULE_ORDER = ("encoder", "prefill", "decoder.prefill", "decode", "decoder.step", "kv_reorder", "decoder.rerun",
                 "t2u.subwords", "t2u", "vocoder", "detokenize", "embedding", "dense", "attention", "heads", "forward")
# One module's share of its phase: the KV reorder's of decoding, the attention's of a forward.
_SHARES = {"kv_reorder_share": "reorder share", "attention_share": "attention share"}


def module_columns(rows: list[dict]) -> list[str]:
    """The modules the rows timed, in pipeline order, then any others, then `other`."""
    seen = list(dict.fromkeys(k for r in rows for k in (r.get("modules") or {})
                              if k not in ("other", "total") and not k.endswith("_share")))
    return [c for c in _MODULE_ORDER if c in seen] + [c for c in seen if c not in _MODULE_ORDER] + ["other"]


def modules_table(rows: list[dict], markdown: bool = False) -> str:
    """Where the time goes: ms per module in one instrumented round of each case's lever side
    (eager's own rows for the eager case), and one module's share of its phase where a row has
    one. Columns are the modules the rows have."""
    rows = [r for r in rows if r.get("modules")]
    columns = module_columns(rows)
    shares = [k for k in _SHARES if any(r["modules"].get(k) is not None for r in rows)]
    head = ["case", *columns, "total", *(_SHARES[k] for k in shares)]
    body = []
    for r in rows:
        m = r["modules"]
        body.append([r["case"], *(_f(m.get(c), "{:.1f}") for c in columns), _f(m.get("total"), "{:.1f}"),
                     *(_f(m.get(k), "{:.0%}") for k in shares)])
    return grid(head, body, markdown) if body else ""


# Counters as the harness names them: per decode step where the case decodes, else per run.
_COUNTS = (("kernels_per_step", "kernels/step"), ("blas_helpers_per_step", "cuBLAS aux/step"),
           ("launches_per_step", "launches/step"), ("kernels_per_run", "kernels/run"),
           ("blas_helpers_per_run", "cuBLAS aux/run"), ("launches_per_run", "launches/run"),
           ("graphs", "graphs"), ("graph_breaks", "graph breaks"), ("recompiles", "recompiles"))


def counters_table(rows: list[dict], markdown: bool = False) -> str:
    """What the host and the compiler did: kernels and host launches (per decode step, or per
    run), compiled graphs, graph breaks, where a compiled graph came from (inductor's FX-graph
    cache or a fresh compile) and how many GEMM padding choices its compile timed, recompiles in
    the timed rounds, the share of the wall
    time the GPU sat idle (host-bound), the share the timing thread was on a CPU and the ms of
    a median round Python's garbage collector took (where measured), and each module group's
    speedup over eager in the breakdown rounds. Columns are the counters and groups the rows
    have."""
    counts = [(k, h) for k, h in _COUNTS if any(k in r.get("counters", {}) for r in rows)]
    groups = list(dict.fromkeys(g for r in rows for g in r.get("module_speedup", {})))
    if not counts and not groups and all(r.get("host_share") is None for r in rows):
        return ""
    on_cpu = any(r.get("on_cpu") is not None for r in rows)
    gc_ms = any(r.get("gc_ms") is not None for r in rows)
    fx = any(r.get("fx_cache") for r in rows)
    padded = any(r.get("pad_mm_timed") for r in rows)
    head = ["case", *(h for _, h in counts), *(["FX cache"] if fx else []), *(["pad_mm timed"] if padded else []),
            "host-bound", *(["on CPU"] if on_cpu else []),
            *(["GC ms"] if gc_ms else []), *(f"{g} x" for g in groups)]
    body = []
    for r in rows:
        c, ms = r.get("counters", {}), r.get("module_speedup", {})
        body.append([r["case"], *(_f(c.get(k), "{:g}") for k, _ in counts), *([r.get("fx_cache") or "-"] if fx else []),
                     *([_f(r.get("pad_mm_timed"), "{:g}")] if padded else []),
                     _f(r.get("host_share"), "{:.0%}"),
                     *([_f(r.get("on_cpu"), "{:.0%}")] if on_cpu else []), *([_f(r.get("gc_ms"), "{:.1f}")] if gc_ms else []),
                     *(_f(ms.get(g), "{:.1f}") for g in groups)])
    return grid(head, body, markdown)


def throughput_table(rows: list[dict], markdown: bool = False) -> str:
    """Spans whose work the workload counts (HSTU's attention, Seamless's vocoder): TFLOP/s in
    the breakdown round, eager's and the lever's, and the lever's share of the bf16 matmul
    throughput measured on the same GPU (how far a faster kernel could still take it)."""
    body = []
    for r in rows:
        sides = r.get("span_tflops") or {}
        peak = r.get("matmul_peak_tflops")
        for span in dict.fromkeys(k for side in sides.values() for k in side):
            eager, lever = sides.get("eager", {}).get(span), sides.get("lever", {}).get(span)
            own = lever if lever is not None else eager
            body.append([r["case"], span, _f(eager, "{:.3g}"), _f(lever, "{:.3g}"),
                         _f(None if own is None or not peak else own / peak, "{:.1%}")])
    head = ["case", "span", "eager TFLOP/s", "lever TFLOP/s", "of matmul peak"]
    return grid(head, body, markdown) if body else ""


def runs_table(records: list[tuple[dict, str]], markdown: bool = False) -> str:
    """Cases logged more than once (reruns, several processes), one line each: every run's
    median and verdict in log order, and the slowest run's median over the fastest's. The other
    tables show a case's latest run only; this one keeps a failed run beside the pass after it,
    and shows how far a case moves between processes, which no one run's interval does."""
    runs: dict[str, list[tuple[dict, str]]] = {}
    for result, gate in records:
        runs.setdefault(result["case"], []).append((result, gate))
    body = []
    for case, seen in runs.items():
        if len(seen) < 2:
            continue
        medians = [r["latency_ms"]["median"] for r, _ in seen]
        host = [(r.get("host") or {}) for r, _ in seen]
        body.append([case, str(len(seen)),
                     ", ".join(f"{m:.1f} ({g})" for m, (_, g) in zip(medians, seen)),
                     f"{max(medians) / min(medians):.2f}",
                     ", ".join(_f(h.get("share"), "{:.0%}") for h in host),
                     ", ".join(_f(h.get("launch_us"), "{:.1f}") for h in host)])
    head = ["case", "runs", "median ms (gate), each run", "slowest / fastest", "host-bound, each run",
            "host us per op, each run"]
    return grid(head, body, markdown) if body else ""


def sections(rows: list[dict], markdown: bool = False, records: list[tuple[dict, str]] | None = None
             ) -> list[tuple[str, str]]:
    """A run's summaries, titled, in order; the ones the rows have nothing for are left out."""
    return [(title, text) for title, text in (
        ("cases", table(rows, markdown)),
        ("the ladder per input (ms, and x over eager timed beside it)", ladder(rows, markdown)),
        ("where the time goes (ms per module, one instrumented round)", modules_table(rows, markdown)),
        ("counters, host-bound share, module speedups over eager", counters_table(rows, markdown)),
        ("throughput of counted spans (one instrumented round)", throughput_table(rows, markdown)),
        ("cases run more than once (the tables above show each one's latest run)",
         runs_table(records or [], markdown)),
    ) if text]
