"""The characterization tables and figures of the report, from synthetic paper-scale results:
arithmetic intensity, the image-size sweep and the frame sweep (seed paper 2, Figs. 5, 10, 14)."""
import json

import pytest

from workloads import report
from workloads.report.__main__ import main

from .test_report import LOG, _rung, rows_of


def sd15_sweep(size, lever, steps=11, task=None):
    """A paper-scale image-size sweep point as the harness records it: attention grows with the
    fourth power of the latent side before flash attention, the convolutions with the pixels."""
    n = (size / 512) ** 2
    eager = {"convolution": 400.0 * n, "attention": 300.0 * n * n, "linear": 100.0 * n}
    ops = {"eager": eager} | ({} if lever == "eager" else {"lever": eager | {"attention": 60.0 * n}})
    L = size // 8
    scores = {"rows": 2, "heads": 8, "query": L * L, "key": L * L, "elements": 16 * L**4, "image": [size, size],
              "latent": [L, L], "dtype_bytes": 2, "formula_bytes": 32 * L**4}
    if lever == "sdpa":
        scores = scores | {"measured_bytes": 2 * 32 * L**4 + 2**20}
    intensity = {"flops_per_step": 1.6065e12 * n, "bytes_per_step": 1719041928.0,
                 "flops_per_byte": 1.6065e12 * n / 1719041928.0, "ridge_flops_per_byte": 295.3, "bound": "compute"}
    return _rung("sd15", "sd15", task or f"T-I-{size}px", lever, 1, 900.0 * n, 1.2, new_tokens=steps,
                 operators_ms=ops, attention_scores=scores, intensity=intensity,
                 attention_calls={"per_step": 32, "self_query": [L * L], "cross_key": [77]})


def video_sweep(frames, lever):
    calls = {"per_step": 66, "frames": frames, "self_query": [1024], "cross_key": [77],
             "flops": {"spatial": 1.4e11 * frames, "cross": 1e10 * frames, "temporal": 2.0e8 * frames**2}}
    eager = {"convolution": 50.0 * frames, "attention": 30.0 * frames, "temporal_attention": 0.5 * frames**2}
    ops = {"eager": eager} | ({} if lever == "eager" else {"lever": eager | {"attention": 10.0 * frames}})
    scores = {"rows": 2 * frames, "heads": 5, "query": 1024, "key": 1024, "elements": 10 * frames * 2**20,
              "image": [256, 256], "latent": [frames, 32, 32], "dtype_bytes": 2, "formula_bytes": 20 * frames * 2**20}
    return _rung("video", "video", f"T-V-{frames}frames", lever, 1, 100.0 * frames, 1.1, new_tokens=10,
                 operators_ms=ops, attention_calls=calls, attention_scores=scores)


SWEEPS = [*(sd15_sweep(n, lv) for n in (64, 128, 256, 512, 768, 1024) for lv in ("eager", "sdpa")),
          *(sd15_sweep(512, lv, steps=51, task="T-I") for lv in ("eager", "sdpa")),
          *(video_sweep(f, lv) for f in (8, 16, 32, 64) for lv in ("eager", "sdpa"))]


def test_the_image_size_sweep_table_shows_attention_and_convolution_before_and_after_flash_attention():
    rows = [report.row(r, "pass") for r in SWEEPS]
    (title, kind, pts), _ = report.sweeps(rows)
    assert (title, kind) == ("sd15/paper, 11 steps", "size") and [p["x"] for p in pts] == [64, 128, 256, 512, 768, 1024]
    lines = report.size_sweep_table(rows, markdown=True).splitlines()
    assert lines[0] == ("| task | image px | latent L | attention ms eager | attention ms sdpa | conv ms eager | "
                        "conv ms sdpa | scores MiB (formula) | eager - sdpa peak MiB |")
    assert len(lines) == 2 + 6   # T-I's 51 steps are not a point of the 11-step sweep
    assert lines[5] == "| T-I-512px | 512 | 64 | 300.0 | 60.0 | 400.0 | 400.0 | 512.0 | 1025.0 |"
    assert lines[7] == "| T-I-1024px | 1024 | 128 | 4800.0 | 240.0 | 1600.0 | 1600.0 | 8192.0 | 16385.0 |"
    assert report.size_sweep_table(rows_of(LOG)) == "" and report.frame_sweep_table(rows_of(LOG)) == ""


def test_the_frame_sweep_table_shows_spatial_and_temporal_time_and_flops():
    rows = [report.row(r, "pass") for r in SWEEPS]
    lines = report.frame_sweep_table(rows, markdown=True).splitlines()
    assert lines[0] == ("| task | frames | spatial ms eager | temporal ms eager | spatial ms sdpa | temporal ms sdpa | "
                        "spatial GFLOP a step | temporal GFLOP a step | temporal / spatial FLOPs |")
    assert lines[2] == "| T-V-8frames | 8 | 240.0 | 32.0 | 80.0 | 32.0 | 1120 | 12.8 | 0.011 |"
    assert lines[5] == "| T-V-64frames | 64 | 1920.0 | 2048.0 | 640.0 | 2048.0 | 8960 | 819.2 | 0.091 |"


def test_the_intensity_table_puts_each_input_beside_the_ridge_point():
    rows = [report.row(r, "pass") for r in SWEEPS if r["task"] == "T-I-512px"]
    lines = report.intensity_table(rows, markdown=True, shared=frozenset({"model", "scale"})).splitlines()
    assert lines == ["| input | GFLOP a step | MiB a step | FLOP/B | ridge FLOP/B | bound |", "| --- | --- | --- | --- | --- | --- |",
                     "| T-I-512px/bs1 | 1606 | 1639.4 | 934.5 | 295.3 | compute |"]
    titles = [t for t, _ in report.sections([report.row(r, "pass") for r in SWEEPS])]
    assert "sd15 (paper scale): image-size sweep: attention and convolution before and after flash attention, " \
           "score memory" in titles and "video (paper scale): frame sweep: spatial and temporal attention, time and FLOPs" \
           in titles


def test_the_html_page_draws_a_figure_per_sweep(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the HTML report's figures need matplotlib (the test extra has it)")
    from workloads.report.html import _needs_matplotlib, sweep_figure

    plt = _needs_matplotlib()
    rows = [report.row(r, "pass") for r in SWEEPS]
    (_, _, size_pts), (_, _, frame_pts) = report.sweeps(rows)
    fig = sweep_figure("sd15/paper, 11 steps", "size", size_pts, plt)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [
        "attention, eager", "attention, sdpa", "convolution, eager", "convolution, sdpa"]
    assert list(fig.axes[1].get_lines()[0].get_ydata()) == [p["scores"]["formula_bytes"] / 2**20 for p in size_pts]
    plt.close(fig)
    fig = sweep_figure("video/paper, 10 steps", "frames", frame_pts, plt)
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["spatial", "temporal"]
    plt.close(fig)
    log, page = tmp_path / "s.jsonl", tmp_path / "s.html"
    log.write_text("".join(json.dumps({"gate": "pass", "failures": [], "result": r}) + "\n" for r in SWEEPS))
    assert main([str(log), "--html", str(page)]) == 0
    text = page.read_text()
    assert "<h3>image-size sweep: sd15/paper, 11 steps</h3>" in text and "<h3>frame sweep: video/paper, 10 steps</h3>" in text
    assert text.count("<svg") == 2 + 7 + 4   # the sweeps, and a figure per input
