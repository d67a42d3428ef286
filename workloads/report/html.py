"""One self-contained HTML page from case logs: where each result came from, the run's tables,
and two figures per input (the ladder; where the time goes), drawn with matplotlib as inline SVG.
"""
from __future__ import annotations

import html
import io

from . import module_columns, sections

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
        model, task, _lever, scale, bs = r["case"].split("/")
        out.setdefault(f"{model}/{task}/{scale}/{bs}", []).append(r)
    return out


def _svg(fig, plt) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def input_figure(name: str, rows: list[dict], plt) -> str:
    """Left: each rung's median end-to-end ms (log scale), labelled with its speedup over eager
    and its 95% interval, red where its gate failed. Right: each rung's ms per module in its
    instrumented round, stacked in pipeline order."""
    levers = [r["case"].split("/")[2] for r in rows]
    y = list(range(len(rows)))[::-1]
    with_modules = [r for r in rows if r.get("modules")]
    fig, axes = plt.subplots(1, 2 if with_modules else 1, figsize=(11 if with_modules else 6, 0.45 * len(rows) + 1.2),
                             squeeze=False)
    ax = axes[0][0]
    colors = [_FAIL if r["gate"] == "FAIL" else (_EAGER if lv == "eager" else _OK) for r, lv in zip(rows, levers)]
    ax.barh(y, [r["e2e"] for r in rows], color=colors)
    ax.set_xscale("log")
    ax.set_yticks(y, levers)
    ax.set_xlabel("end to end, ms (median)")
    for yi, r in zip(y, rows):
        sp = r.get("speedup")
        label = f" {r['e2e']:.1f} ms" + ("" if sp is None else f"  {sp[0]:.2f}x [{sp[1]:.2f}, {sp[2]:.2f}]")
        ax.text(r["e2e"], yi, label, va="center", fontsize=8)
    ax.set_title(f"{name}: the ladder", fontsize=10)
    lo, hi = min(r["e2e"] for r in rows), max(r["e2e"] for r in rows)
    ax.set_xlim(lo / 2, hi * 12)   # room for the labels right of the longest bar, on a log axis
    if with_modules:
        ax = axes[0][1]
        order = module_columns(with_modules)
        palette = plt.get_cmap("tab10")
        left = [0.0] * len(rows)
        for i, mod in enumerate(order):
            widths = [(r.get("modules") or {}).get(mod) or 0.0 for r in rows]
            ax.barh(y, widths, left=left, color="#bbbbbb" if mod == "other" else palette(i % 10), label=mod)
            left = [a + b for a, b in zip(left, widths)]
        ax.set_yticks(y, [])
        ax.set_xlabel("ms per module, one instrumented round")
        ax.legend(fontsize=7, loc="lower right", frameon=False)
        ax.set_title("where the time goes", fontsize=10)
    return _svg(fig, plt)


def _provenance(results: list[dict]) -> str:
    keys = ("gpu", "driver", "device_class", "torch", "cuda", "transformers", "commit", "date")
    seen = {k: sorted({str((r.get("provenance") or {}).get(k)) for r in results} - {"None"}) for k in keys}
    items = "".join(f"<li><b>{k}</b>: {html.escape(', '.join(v))}</li>" for k, v in seen.items() if v)
    return f"<ul>{items}</ul>"


def render(rows: list[dict], results: list[dict], records: list[tuple[dict, str]] | None = None,
           title: str = "mmgen-perf report") -> str:
    """The page: provenance of the results, the run's tables, a figure per input."""
    plt = _needs_matplotlib()
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>where these figures came from</h2>", _provenance(results)]
    for heading, text in sections(rows, markdown=True, records=records):
        parts += [f"<h2>{html.escape(heading)}</h2>", _md_table_to_html(text)]
    parts.append("<h2>per input</h2>")
    for name, group in _inputs(rows).items():
        parts += [f"<h3>{html.escape(name)}</h3>", input_figure(name, group, plt)]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child{text-align:left}"
             "td.fail{color:#c0392b;font-weight:bold}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
