"""One self-contained HTML page from case logs: where each log's results came from, the run's
tables per workload, two figures per input (the ladder; where the time goes), and a figure per
characterization sweep (seed paper 2, Figs. 10 and 14), drawn with matplotlib as inline SVG.
"""
from __future__ import annotations

import datetime as dt
import html
import io
import math

from ..case import REFERENCE
from . import groups, module_columns
from .sweeps import sweeps

_OK, _FAIL, _EAGER = "#4878a8", "#c0392b", "#7f7f7f"


def _needs_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the HTML report draws its figures with matplotlib, which is not installed: "
                           "pip install matplotlib (or the project's `report` extra)") from None
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"   # text stays text: a smaller page, searchable
    import matplotlib.pyplot as plt
    return plt


def _md_table_to_html(text: str) -> str:
    """The Markdown tables `sections` renders, as HTML tables (the summaries are made once)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return f"<pre>{html.escape(text)}</pre>"

    def cells(ln):
        return [c.strip() for c in ln.strip().strip("|").split("|")]

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells(lines[0]))
    body = []
    for ln in lines[2:]:
        tds = []
        for c in cells(ln):
            cls = ' class="fail"' if "FAIL" in c else ""
            tds.append(f"<td{cls}>{html.escape(c)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _inputs(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["input"], []).append(r)
    return out


def _svg(fig, plt) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _ladder_axis(ax, name: str, rows: list[dict], y: list[int]) -> None:
    """Each rung's median end-to-end ms on a log axis labelled at a few round values, with its
    speedup over eager and its 95% interval, red where its gate failed."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colors = [_FAIL if r["gate"] == "FAIL" else (_EAGER if r["lever"] == REFERENCE else _OK) for r in rows]
    ax.barh(y, [r["e2e"] for r in rows], color=colors)
    ax.set_xscale("log")
    ax.set_yticks(y, [r["lever"] for r in rows])
    ax.set_xlabel("end to end, ms (median)")
    for yi, r in zip(y, rows):
        sp = r.get("speedup")
        label = f" {r['e2e']:.1f} ms" + ("" if sp is None else f"  {sp[0]:.2f}x [{sp[1]:.2f}, {sp[2]:.2f}]")
        ax.text(r["e2e"], yi, label, va="center", fontsize=8)
    ax.set_title(f"{name}: the ladder", fontsize=10)
    lo, hi = min(r["e2e"] for r in rows) / 2, max(r["e2e"] for r in rows) * 12
    ax.set_xlim(lo, hi)   # room for the labels right of the longest bar, on a log axis
    # Labels at 1-2-5 of each decade while they fit, else at the decades only; none at the minor ticks.
    subs = (1.0, 2.0, 5.0) if math.log10(hi / lo) <= 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _modules_axis(fig, ax, rows: list[dict], y: list[int], plt) -> None:
    """Each rung's ms per module in its instrumented round, stacked in pipeline order, with the
    legend right of the plot where it covers no bar."""
    order = module_columns([r for r in rows if r.get("modules")])
    # tab10's grey would read as `other`, drawn grey.
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    left = [0.0] * len(rows)
    for i, mod in enumerate(order):
        widths = [(r.get("modules") or {}).get(mod) or 0.0 for r in rows]
        if not any(widths):
            continue
        ax.barh(y, widths, left=left, color="#bbbbbb" if mod == "other" else palette[i % len(palette)], label=mod)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(y, [])
    ax.set_xlabel("ms per module, one instrumented round")
    ax.set_title("where the time goes", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=7, frameon=False)


def figure(name: str, rows: list[dict], plt):
    """Left: the ladder of one input. Right, where the rungs were instrumented: where the time goes."""
    y = list(range(len(rows)))[::-1]
    with_modules = any(r.get("modules") for r in rows)
    modules = len(module_columns([r for r in rows if r.get("modules")])) if with_modules else 0
    height = max(0.45 * len(rows) + 1.2, 0.18 * modules + 0.6)
    fig, axes = plt.subplots(1, 2 if with_modules else 1, figsize=(12 if with_modules else 6, height),
                             squeeze=False, layout="constrained")
    _ladder_axis(axes[0][0], name, rows, y)
    if with_modules:
        _modules_axis(fig, axes[0][1], rows, y, plt)
    return fig


def input_figure(name: str, rows: list[dict], plt) -> str:
    """The input's figure as inline SVG."""
    return _svg(figure(name, rows, plt), plt)


def _lines(ax, pts: list[dict], series: list[tuple[str, object, str, str]]) -> None:
    """One line per (label, y of a point or None, color, style), over the points' x."""
    for label, y, color, style in series:
        xy = [(p["x"], y(p)) for p in pts if y(p) is not None]
        if xy:
            ax.plot(*zip(*xy), style, color=color, label=label, marker="o", markersize=3)


def sweep_figure(title: str, kind: str, pts: list[dict], plt):
    """Fig. 10's reading for an image-size sweep: attention's and convolution's ms over the
    image size, before (eager) and after flash attention (sdpa), with the score tensor's bytes
    by the paper's formula. Fig. 14's for a frame sweep: spatial and temporal attention's ms,
    and their FLOPs a step, over the frame count. Log axes: the growths are powers."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    attn, conv, temporal = "#c0392b", "#4878a8", "#27ae60"

    def ms(side, what):
        return lambda p: (p.get(side) or {}).get(what)

    if kind == "size":
        _lines(axes[0], pts, [("attention, eager", ms("eager", "attention"), attn, "-"),
                              ("attention, sdpa", ms("sdpa", "attention"), attn, "--"),
                              ("convolution, eager", ms("eager", "convolution"), conv, "-"),
                              ("convolution, sdpa", ms("sdpa", "convolution"), conv, "--")])
        axes[0].set_xlabel("image size, px")
        axes[0].set_title(f"{title}: attention vs convolution", fontsize=10)
        _lines(axes[1], pts, [("formula (largest scores)", lambda p: p["scores"]["formula_bytes"] / 2**20, attn, "-"),
                              ("eager - sdpa peak", lambda p: None if p["scores"].get("measured_bytes") is None
                               else p["scores"]["measured_bytes"] / 2**20, _EAGER, "--")])
        axes[1].set_xlabel("image size, px")
        axes[1].set_ylabel("MiB")
        axes[1].set_title("attention-score memory", fontsize=10)
    else:
        _lines(axes[0], pts, [("spatial, eager", ms("eager", "attention"), attn, "-"),
                              ("spatial, sdpa", ms("sdpa", "attention"), attn, "--"),
                              ("temporal, eager", ms("eager", "temporal_attention"), temporal, "-"),
                              ("temporal, sdpa", ms("sdpa", "temporal_attention"), temporal, "--")])
        axes[0].set_xlabel("frames")
        axes[0].set_title(f"{title}: spatial vs temporal attention", fontsize=10)
        _lines(axes[1], pts, [("spatial", lambda p: (p.get("flops") or {}).get("spatial"), attn, "-"),
                              ("temporal", lambda p: (p.get("flops") or {}).get("temporal"), temporal, "-")])
        axes[1].set_xlabel("frames")
        axes[1].set_ylabel("FLOPs a step")
        axes[1].set_title("attention FLOPs (the two matmuls)", fontsize=10)
    axes[0].set_ylabel("ms, one profiled round")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([p["x"] for p in pts], [str(p["x"]) for p in pts])
        ax.minorticks_off()
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    return fig


def _dates(stamps: list[str]) -> str | None:
    """The first and last of the records' times, in UTC, the day written once where it is one."""
    times = []
    for s in stamps:
        try:
            t = dt.datetime.fromisoformat(s)
        except (TypeError, ValueError):
            continue
        times.append(t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc))
    if not times:
        return None
    a, b = min(times), max(times)
    if a.date() != b.date():
        return f"{a:%Y-%m-%d %H:%M} - {b:%Y-%m-%d %H:%M} UTC"
    return f"{a:%Y-%m-%d %H:%M}" + ("" if f"{a:%H:%M}" == f"{b:%H:%M}" else f"-{b:%H:%M}") + " UTC"


# What a provenance line says, in order: the key, and the words before its value.
_PROVENANCE = (("commit", "commit"), ("gpu", ""), ("driver", "driver"), ("cpu", "host CPU"), ("torch", "torch"),
               ("cuda", "CUDA"), ("transformers", "transformers"))


def _held(provs: list[dict], key: str, words: str) -> str | None:
    """One key of a run's records: each distinct value, in log order; None where none holds it."""
    seen = list(dict.fromkeys(str(p[key])[:7] if key == "commit" else str(p[key])
                              for p in provs if p.get(key) is not None))
    if not seen:
        return None
    dirty = key == "commit" and any(p.get("dirty") for p in provs)
    return (f"{words} " if words else "") + " then ".join(seen) + (" (uncommitted changes)" if dirty else "")


def provenance(logged: list[tuple[str, dict]]) -> list[str]:
    """One line per case log (a run): what its records hold of the code, machine and libraries,
    when they were recorded, and how many cases."""
    runs: dict[str, list[dict]] = {}
    for where, record in logged:
        runs.setdefault(where.rpartition(":")[0], []).append(record["result"])
    lines = []
    for log, results in runs.items():
        provs = [r.get("provenance") or {} for r in results]
        # A CPU run has no GPU name: its device class says where it ran.
        machine = "gpu" if any(p.get("gpu") for p in provs) else "device_class"
        items = [_held(provs, machine if key == "gpu" else key, words) for key, words in _PROVENANCE]
        items.append(_dates([p.get("date") for p in provs]))
        cases = len({r["case"] for r in results})
        items.append(f"{cases} case{'s' * (cases != 1)}")
        items.append(None if cases == len(results) else f"{len(results)} records")
        lines.append(f"{log}: {', '.join(i for i in items if i)}")
    return lines


def render(rows: list[dict], logged: list[tuple[str, dict]], title: str = "mmgen-perf report") -> str:
    """The page: a provenance line per case log, then per workload its tables and a figure per
    input. `rows` are the latest of each case; `logged` every record with its `file:line`."""
    plt = _needs_matplotlib()
    every = [(record["result"], record.get("gate", "-")) for _, record in logged]
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in provenance(logged))
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>where these figures came from</h2>", f"<ul>{lines}</ul>"]
    for workload, name, tables in groups(rows, markdown=True, records=every, width=None):
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for what, text in tables:
            parts += [f"<h3>{html.escape(what)}</h3>", _md_table_to_html(text)]
        own = [r for r in rows if r["workload"] == workload]
        for title, kind, pts in sweeps(own):
            what = "image-size sweep" if kind == "size" else "frame sweep"
            parts += [f"<h3>{html.escape(f'{what}: {title}')}</h3>", _svg(sweep_figure(title, kind, pts, plt), plt)]
        for key, group in _inputs(own).items():
            parts += [f"<h3>{html.escape(key)}</h3>", input_figure(key, group, plt)]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child{text-align:left}"
             "td.fail{color:#c0392b;font-weight:bold}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
