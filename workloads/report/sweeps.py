"""The characterization tables of diffusion (seed paper 2): a decode step's arithmetic intensity
(Fig. 5), and the sweeps over image size (Figs. 9-10) and frame count (Figs. 12 and 14)."""
from __future__ import annotations

from . import _f, fit


def intensity_table(rows: list[dict], markdown: bool = False, width: int | None = None,
                    shared: frozenset = frozenset()) -> str:
    """Seed paper 2, Fig. 5: per input (every rung of an input does the same work), a decode
    step's FLOPs over the bytes it must move, beside the device's ridge point (its measured
    matmul peak over its measured copy bandwidth, on a GPU): right of the ridge, compute-bound."""
    body, seen = [], set()
    for r in rows:
        i = r.get("intensity")
        if not i or r["input"] in seen:
            continue
        seen.add(r["input"])
        label = "/".join(str(r[k]) for k in ("model", "task", "scale") if k not in shared) + f"/bs{r['batch']}"
        body.append([label, _f(i["flops_per_step"] / 1e9, "{:.4g}"), _f(i["bytes_per_step"] / 2**20, "{:.1f}"),
                     _f(i["flops_per_byte"], "{:.1f}"), _f(i.get("ridge_flops_per_byte"), "{:.1f}"),
                     i.get("bound") or "-"])
    head = ["input", "GFLOP a step", "MiB a step", "FLOP/B", "ridge FLOP/B", "bound"]
    return fit(head, body, markdown, width)


def sweeps(rows: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """The characterization sweeps among the rows: inputs of one model and scale at batch 1 and
    one step count that differ by image size (kind "size", seed paper 2, Figs. 9-10) or by frame
    count (kind "frames", Figs. 12 and 14), two or more of them. Each is (title, kind, points),
    a point per input in order of its x: {"x", "task", "eager", "sdpa" (each side's ms per
    operator kind), "scores", "flops"}. A task's own step count sets it apart from the sweep
    (its other operators' share differs), so T-I's 50 steps never join the 10-step sweep."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        scores, calls = r.get("attention_scores"), r.get("attention_calls") or {}
        if not scores or r["batch"] != 1:
            continue
        kind = "frames" if "frames" in calls else "size"
        x = calls["frames"] if kind == "frames" else scores["image"][0]
        point = groups.setdefault((r["model"], r["scale"], r.get("new_tokens"), kind), {}).setdefault(
            r["input"], {"x": x, "task": r["task"], "scores": scores, "flops": calls.get("flops")})
        sides = r.get("operators_sides") or {}
        if "eager" in sides:
            point.setdefault("eager", sides["eager"])
        if "lever" in sides and r["lever"] == "sdpa":
            point["sdpa"] = sides["lever"]
        if r["lever"] == "sdpa" and "measured_bytes" in scores:
            point["scores"] = scores
    out = []
    for (model, scale, steps, kind), points in groups.items():
        pts = sorted(points.values(), key=lambda p: p["x"])
        if len({p["x"] for p in pts}) >= 2:
            out.append((f"{model}/{scale}, {steps} steps", kind, pts))
    return out


def _ms(ops: dict | None, kind: str) -> str:
    return _f((ops or {}).get(kind), "{:.1f}")


def size_sweep_table(rows: list[dict], markdown: bool = False, width: int | None = None,
                     shared: frozenset = frozenset()) -> str:
    """Seed paper 2, Figs. 9-10 and the O(L^4) claim: per image size, attention's and
    convolution's ms before (eager) and after flash attention (sdpa), in one profiled round of
    each, and the largest score tensor's bytes by the paper's formula beside what eager's peak
    measured above sdpa's (on a GPU)."""
    body = []
    for title, kind, pts in sweeps(rows):
        if kind != "size":
            continue
        for p in pts:
            sc = p["scores"]
            body.append([p["task"], f"{p['x']}", f"{sc['latent'][0]}", _ms(p.get("eager"), "attention"),
                         _ms(p.get("sdpa"), "attention"), _ms(p.get("eager"), "convolution"),
                         _ms(p.get("sdpa"), "convolution"), _f(sc["formula_bytes"] / 2**20, "{:.1f}"),
                         _f(None if sc.get("measured_bytes") is None else sc["measured_bytes"] / 2**20, "{:.1f}")])
    head = ["task", "image px", "latent L", "attention ms eager", "attention ms sdpa", "conv ms eager",
            "conv ms sdpa", "scores MiB (formula)", "eager - sdpa peak MiB"]
    return fit(head, body, markdown, width)


def frame_sweep_table(rows: list[dict], markdown: bool = False, width: int | None = None,
                      shared: frozenset = frozenset()) -> str:
    """Seed paper 2, Figs. 12 and 14: per frame count, spatial and temporal attention's ms
    (spatial: every attention outside the temporal blocks) in one profiled round of eager and
    of sdpa, and their FLOPs a step by the two matmuls, as the paper counts them: temporal
    FLOPs grow with the square of the frames, spatial ones linearly."""
    body = []
    for title, kind, pts in sweeps(rows):
        if kind != "frames":
            continue
        for p in pts:
            fl = p.get("flops") or {}
            ratio = None if not fl.get("spatial") else fl.get("temporal", 0) / fl["spatial"]
            body.append([p["task"], f"{p['x']}", _ms(p.get("eager"), "attention"),
                         _ms(p.get("eager"), "temporal_attention"), _ms(p.get("sdpa"), "attention"),
                         _ms(p.get("sdpa"), "temporal_attention"), _f(fl.get("spatial", 0) / 1e9, "{:.4g}"),
                         _f(fl.get("temporal", 0) / 1e9, "{:.4g}"), _f(ratio, "{:.3f}")])
    head = ["task", "frames", "spatial ms eager", "temporal ms eager", "spatial ms sdpa", "temporal ms sdpa",
            "spatial GFLOP a step", "temporal GFLOP a step", "temporal / spatial FLOPs"]
    return fit(head, body, markdown, width)
