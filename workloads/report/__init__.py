"""Human-readable summaries of case results, one group of tables per workload."""
from __future__ import annotations

from ..gate.notes import timed_choices
from ..case import REFERENCE, Case

# A terminal's width: the tables a run prints split their columns to fit it.
WIDTH = 120


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def row(result: dict, gate: str) -> dict:
    """A case's line in the summaries, from its result and its gate verdict."""
    case = Case.of(result)
    sp = result.get("speedup")
    roof = result.get("roofline")
    modules = result.get("modules_ms") or {}
    host = result.get("host") or {}
    return {
        "case": result["case"],
        # Older logs do not name the workload: their model stands in for it.
        "workload": case.workload or case.model,
        "model": case.model, "task": case.task, "lever": case.lever, "scale": case.scale, "batch": case.batch,
        "input": str(case.input),
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
        "host_share": host.get("share"),
        "run_share": host.get("run_share"),
        "gpu_ms": (result.get("gpu_ms") or {}).get("run"),
        "on_cpu": host.get("on_cpu"),
        "gc_ms": host.get("gc_ms"),
        "launch_us": host.get("launch_us"),
        "module_speedup": result.get("module_speedup") or {},
        "fx_cache": _fx_cache(result.get("compiler")),
        "pad_mm_timed": timed_choices(result.get("compiler")) or None,
        "span_tflops": result.get("span_tflops") or {},
        "matmul_peak_tflops": result.get("matmul_peak_tflops"),
        "attention_calls": result.get("attention_calls"),
        # The lever's side, or eager's in the eager case, as for `modules`.
        "operators": (result.get("operators_ms") or {}).get("lever", (result.get("operators_ms") or {}).get("eager")),
        "operators_sides": result.get("operators_ms") or {},
        "new_tokens": result.get("new_tokens"),
        "attention_scores": result.get("attention_scores"),
        "intensity": result.get("intensity"),
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
    return "\n".join(ln.rstrip() for ln in lines)


def _parts(widths: list[int], keys: int, markdown: bool, width: int) -> list[list[int]]:
    """The columns of each piece of a table too wide for `width`, each piece led by the key
    columns: as few pieces as fit, as even in width as they can be."""
    sep, ends = (3, 4) if markdown else (2, 0)
    base = ends + sum(widths[:keys]) + sep * (keys - 1)

    def pack(limit: int) -> list[list[int]]:
        parts, used = [[]], base
        for i in range(keys, len(widths)):
            if parts[-1] and used + sep + widths[i] > limit:
                parts.append([])
                used = base
            parts[-1].append(i)
            used += sep + widths[i]
        return parts

    fewest = len(pack(width))
    limit = next(n for n in range(base, width + 1) if len(pack(n)) <= fewest) if fewest > 1 else width
    return [list(range(keys)) + p for p in pack(limit)]


def fit(head: list[str], body: list[list[str]], markdown: bool = False, width: int | None = None,
        keys: int = 1) -> str:
    """A table of the columns some row has a figure in (the first `keys` name the row), split
    into pieces that fit `width` characters where it is given; "" where no row has a figure."""
    keep = list(range(keys)) + [i for i in range(keys, len(head)) if any(r[i] != "-" for r in body)]
    if not body or len(keep) == keys:
        return ""
    head, body = [head[i] for i in keep], [[r[i] for i in keep] for r in body]
    if width is None:
        return grid(head, body, markdown)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n\n".join(grid([head[i] for i in p], [[r[i] for i in p] for r in body], markdown)
                       for p in _parts(widths, keys, markdown, width))


def _label(r: dict, shared: frozenset = frozenset()) -> str:
    """A case as `model/task/lever/scale/bs<batch>`, less the fields its table's title names."""
    parts = [("model", r["model"]), ("task", r["task"]), ("lever", r["lever"]), ("scale", r["scale"]),
             ("batch", f"bs{r['batch']}")]
    return "/".join(v for k, v in parts if k not in shared)


def ladder(rows: list[dict], markdown: bool = False, width: int | None = None, shared: frozenset = frozenset()) -> str:
    """One line per input (model, task, scale, batch), one column per lever: its end-to-end ms
    and its speedup over the eager rounds timed beside it, marked where its gate failed."""
    inputs: dict[str, dict] = {}
    levers = list(dict.fromkeys(r["lever"] for r in rows))
    for r in rows:
        inputs.setdefault(r["input"], {})[r["lever"]] = r
    names = [k for k in ("model", "task", "scale", "batch") if k not in shared]
    head = [*("bs" if k == "batch" else k for k in names),
            *(f"{lv} ms" + ("" if lv == REFERENCE else " (x)") for lv in levers)]
    body = []
    for by_lever in inputs.values():
        cells = []
        for lv in levers:
            r = by_lever.get(lv)
            if r is None:
                cells.append("-")
                continue
            sp = r.get("speedup")
            cell = f"{r['e2e']:.1f}" + ("" if sp is None else f" ({sp[0]:.2f}x)")
            cells.append(cell + (" FAIL" if r["gate"] == "FAIL" else ""))
        first = next(iter(by_lever.values()))
        body.append([*(str(first[k]) for k in names), *cells])
    return fit(head, body, markdown, width, keys=len(names))


def table(rows: list[dict], markdown: bool = False, width: int | None = None, shared: frozenset = frozenset()) -> str:
    """One line per case: latency, GPU time of a run, time to first token, time per output token,
    speedup over eager with its 95% interval, roofline fraction, compile time, peak memory, gate
    verdict."""
    head = ["case", "n", "e2e ms", "GPU ms", "TTFT ms", "TPOT ms", "speedup [95% CI]", "roofline", "compile s",
            "peak MiB", "gate"]
    body = []
    for r in rows:
        sp = r.get("speedup")
        body.append([
            _label(r, shared), str(r["rounds"]), _f(r["e2e"]), _f(r.get("gpu_ms")), _f(r["ttft"]), _f(r["tpot"], "{:.3f}"),
            "-" if sp is None else f"{sp[0]:.2f}x [{sp[1]:.2f}, {sp[2]:.2f}]",
            _f(r.get("roofline"), "{:.0%}"), _f(r.get("compile_s"), "{:.1f}"), _f(r.get("peak_mb"), "{:.0f}"),
            r["gate"],
        ])
    return fit(head, body, markdown, width)


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


def modules_table(rows: list[dict], markdown: bool = False, width: int | None = None,
                  shared: frozenset = frozenset()) -> str:
    """Where the time goes: ms per module in one instrumented round of each case's lever side
    (eager's own rows for the eager case), and one module's share of its phase where a row has
    one. Columns are the modules the rows have."""
    rows = [r for r in rows if r.get("modules")]
    columns = module_columns(rows)
    head = ["case", *columns, "total", *_SHARES.values()]
    body = []
    for r in rows:
        m = r["modules"]
        body.append([_label(r, shared), *(_f(m.get(c), "{:.1f}") for c in columns), _f(m.get("total"), "{:.1f}"),
                     *(_f(m.get(k), "{:.0%}") for k in _SHARES)])
    return fit(head, body, markdown, width)


# Counters as the harness names them: per decode step where the case decodes, else per run.
_COUNTS = (("kernels_per_step", "kernels/step"), ("blas_helpers_per_step", "cuBLAS aux/step"),
           ("launches_per_step", "launches/step"), ("syncs_per_step", "syncs/step"), ("kernels_per_run", "kernels/run"),
           ("blas_helpers_per_run", "cuBLAS aux/run"), ("launches_per_run", "launches/run"), ("syncs_per_run", "syncs/run"),
           ("graphs", "graphs"), ("graph_breaks", "graph breaks"), ("recompiles", "recompiles"))


def counters_table(rows: list[dict], markdown: bool = False, width: int | None = None,
                   shared: frozenset = frozenset()) -> str:
    """What the host and the compiler did: kernels, host launches and host waits (per decode step, or per
    run), compiled graphs, graph breaks, where a compiled graph came from (inductor's FX-graph
    cache or a fresh compile) and how many GEMM padding choices its compile timed, recompiles in
    the timed rounds, the share of the wall time the GPU sat idle (host-bound: of a decode step, or
    of a run; over a whole run, prefill and encoders included: run host-bound), the share the
    timing thread was on a CPU and the ms of a median round Python's garbage collector took
    (where measured), and each module group's speedup over eager in the breakdown rounds.
    Columns are the counters and groups the rows have."""
    groups = list(dict.fromkeys(g for r in rows for g in r.get("module_speedup", {})))
    head = ["case", *(h for _, h in _COUNTS), "FX cache", "pad_mm timed", "host-bound", "run host-bound", "on CPU",
            "GC ms", *(f"{g} x" for g in groups)]
    body = []
    for r in rows:
        c, ms = r.get("counters", {}), r.get("module_speedup", {})
        body.append([_label(r, shared), *(_f(c.get(k), "{:g}") for k, _ in _COUNTS), r.get("fx_cache") or "-",
                     _f(r.get("pad_mm_timed"), "{:g}"), _f(r.get("host_share"), "{:.0%}"),
                     _f(r.get("run_share"), "{:.0%}"), _f(r.get("on_cpu"), "{:.0%}"), _f(r.get("gc_ms"), "{:.1f}"),
                     *(_f(ms.get(g), "{:.1f}") for g in groups)])
    return fit(head, body, markdown, width)


def throughput_table(rows: list[dict], markdown: bool = False, width: int | None = None,
                     shared: frozenset = frozenset()) -> str:
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
            body.append([_label(r, shared), span, _f(eager, "{:.3g}"), _f(lever, "{:.3g}"),
                         _f(None if own is None or not peak else own / peak, "{:.1%}")])
    head = ["case", "span", "eager TFLOP/s", "lever TFLOP/s", "of matmul peak"]
    return fit(head, body, markdown, width, keys=2)


# Seed paper 2, Fig. 7's order; a workload's own kinds follow.
_KINDS = ("convolution", "attention", "linear", "norm", "elementwise", "other", "unattributed", "idle")


def operators_table(rows: list[dict], markdown: bool = False, width: int | None = None,
                    shared: frozenset = frozenset()) -> str:
    """Where each case's time goes by kind of operator (seed paper 2, Fig. 7): ms of kernels in
    one profiled round and their share of the whole, idle being the timed median less them."""
    kinds = list(dict.fromkeys([*(k for k in _KINDS if any(k in (r.get("operators") or {}) for r in rows)),
                                *(k for r in rows for k in (r.get("operators") or {}))]))
    body = []
    for r in rows:
        ops = r.get("operators")
        if not ops:
            continue
        total = sum(ops.values()) or 1.0
        body.append([_label(r, shared), *(f"{ops[k]:.1f} ({ops[k] / total:.0%})" if k in ops else "-" for k in kinds)])
    return fit(["case", *(f"{k} ms" for k in kinds)], body, markdown, width)


def _runs(lengths: list[int]) -> str:
    """Lengths in call order, a repeat written once with its count: 4096x2 1024x2 ... 64 ..."""
    out: list[list[int]] = []
    for n in lengths:
        if out and out[-1][0] == n:
            out[-1][1] += 1
        else:
            out.append([n, 1])
    return " ".join(f"{n}x{k}" if k > 1 else str(n) for n, k in out)


def attention_table(rows: list[dict], markdown: bool = False, width: int | None = None,
                    shared: frozenset = frozenset()) -> str:
    """Diffusion: the attention calls of one denoising step per input (every rung of an input
    makes the same ones), self-attention's query lengths in call order and the text keys of
    cross-attention (seed paper 2, Fig. 8: the length falls by 4x a level and rises back)."""
    body, seen = [], set()
    for r in rows:
        a = r.get("attention_calls")
        if not a or r["input"] in seen:
            continue
        seen.add(r["input"])
        label = "/".join(str(r[k]) for k in ("model", "task", "scale") if k not in shared) + f"/bs{r['batch']}"
        body.append([label, str(a["per_step"]), _runs(a["self_query"]), ", ".join(map(str, a["cross_key"]))])
    head = ["input", "calls a step", "self-attention lengths, in call order", "cross-attention keys"]
    return fit(head, body, markdown, width)


def _each(cells) -> str:
    """One figure per run, or "-" where no run has one (so `fit` drops the column)."""
    cells = list(cells)
    return "-" if all(c == "-" for c in cells) else ", ".join(cells)


def runs_table(runs: list[dict], markdown: bool = False, width: int | None = None,
               shared: frozenset = frozenset()) -> str:
    """Cases logged more than once (reruns, several processes), one line each, from the rows of
    every record in log order: every run's median and verdict, and the slowest run's median
    over the fastest's. The other tables show a case's latest run only; this one keeps a failed
    run beside the pass after it, and shows how far a case moves between processes, which no
    one run's interval does."""
    by_case: dict[str, list[dict]] = {}
    for r in runs:
        by_case.setdefault(r["case"], []).append(r)
    body = []
    for seen in by_case.values():
        if len(seen) < 2:
            continue
        medians = [r["e2e"] for r in seen]
        body.append([_label(seen[0], shared), str(len(seen)),
                     ", ".join(f"{r['e2e']:.1f} ({r['gate']})" for r in seen),
                     f"{max(medians) / min(medians):.2f}",
                     _each(_f(r.get("host_share"), "{:.0%}") for r in seen),
                     _each(_f(r.get("launch_us"), "{:.1f}") for r in seen)])
    head = ["case", "runs", "median ms (gate)", "slowest / fastest", "host-bound", "host us/op"]
    return fit(head, body, markdown, width)


def _shared(workload: str, rows: list[dict]) -> tuple[frozenset, str]:
    """The model and scale every row of a group shares, left out of its tables' case column,
    and the group's name with them."""
    same = {k: rows[0][k] for k in ("model", "scale") if len({r[k] for r in rows}) == 1}
    # An older log's group is named after its model already.
    note = [f"{v} scale" if k == "scale" else v for k, v in same.items() if v != workload]
    return frozenset(same), f"{workload} ({', '.join(note)})" if note else workload


def groups(rows: list[dict], markdown: bool = False, records: list[tuple[dict, str]] | None = None,
           width: int | None = WIDTH) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Per workload, in the order the rows first name it: the workload, the group's name (with
    the model and scale its case column leaves out) and its summaries, titled, in order; empty
    ones left out."""
    runs = [row(result, gate) for result, gate in records or []]
    out = []
    for workload in dict.fromkeys(r["workload"] for r in rows):
        own = [r for r in rows if r["workload"] == workload]
        own_runs = [r for r in runs if r["workload"] == workload]
        shared, name = _shared(workload, own + own_runs)
        kw = {"markdown": markdown, "width": width, "shared": shared}
        tables = [(what, text) for what, text in (
            ("cases", table(own, **kw)),
            ("the ladder per input (ms, and x over eager timed beside it)", ladder(own, **kw)),
            ("where the time goes (ms per module, one instrumented round)", modules_table(own, **kw)),
            ("counters, host-bound share, module speedups over eager", counters_table(own, **kw)),
            ("throughput of counted spans (one instrumented round)", throughput_table(own, **kw)),
            ("by kind of operator (ms of kernels in one profiled round; idle: the timed median less them)",
             operators_table(own, **kw)),
            ("attention lengths over a denoising step", attention_table(own, **kw)),
            ("arithmetic intensity of a decode step (FLOPs over the bytes it moves)", intensity_table(own, **kw)),
            ("image-size sweep: attention and convolution before and after flash attention, score memory",
             size_sweep_table(own, **kw)),
            ("frame sweep: spatial and temporal attention, time and FLOPs", frame_sweep_table(own, **kw)),
            ("cases run more than once (all runs; the tables above show the latest)", runs_table(own_runs, **kw)),
        ) if text]
        out.append((workload, name, tables))
    return out


def sections(rows: list[dict], markdown: bool = False, records: list[tuple[dict, str]] | None = None,
             width: int | None = WIDTH) -> list[tuple[str, str]]:
    """A run's summaries, titled `<group>: <table>`, workload by workload; each workload's
    group starts with its `<group>: cases` table. Tables split to fit `width` (None: never)."""
    return [(f"{name}: {what}", text) for _, name, tables in groups(rows, markdown, records, width)
            for what, text in tables]


# The characterization tables read the helpers above; imported last, so that they are defined.
from .sweeps import frame_sweep_table, intensity_table, size_sweep_table, sweeps  # noqa: E402
