"""A case's result from what its loop measured: timings, memory, setup, where the time went,
counters, the host, the device and provenance. It measures nothing itself beyond the
deterministic kernel count of `measure.counters`; every figure comes from `measure`."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..case import Case
from ..engine.plan import Plan
from ..measure import breakdown
from ..measure import counters as mc
from ..measure import device as md
from ..measure.roofline import roofline
from ..measure.stats import ratio_of_medians, summarize
from ..measure.timing import Variant
from ..result import SETUP_METRICS, Result
from ..suites import Batch, Runner, Workload, foreign_sources
from .session import Reference, Session


@dataclass
class Rung:
    case: Case
    plan: Plan
    runner: Runner
    setup: dict
    variant: Variant | None = None   # None: the eager case, whose variant is the reference's
    memory: dict | None = None       # the peak of its warm-up round
    modules: dict | None = None      # where its time went in its instrumented round
    operators: dict | None = None    # ms per kind of operator in one profiled round
    warm: dict | None = None         # its warm-up round's marks and spans, where it ran with them
    untimed_s: float = 0.0           # its seconds outside the timed rounds and its setup, so far


@dataclass
class Loop:
    """One input's loop: the eager reference and what every rung of it shares."""

    session: Session
    workload: Workload
    model: object
    batch: Batch
    ref: Runner                      # the eager runner
    eager: Variant | None            # None where the rungs ran alone (--latency-only)
    reference: Reference
    cached: bool                     # the reference's untimed figures come from an earlier loop of the session
    others: md.OtherLoad | None = None
    intensity: dict | None = None    # the input's arithmetic intensity, once counted (every rung shares it)


def summary(values, seed: int = 0) -> dict:
    return summarize(values, seed=seed).as_dict() | {"samples": [float(v) for v in values]}


def tpot(variant: Variant, n: int) -> list[float] | None:
    """Time per output token of each round; None where nothing is generated (no first token is
    marked). Decoding ends before the end where stages follow it."""
    if "first_token" not in variant.samples[0]:
        return None
    end = variant.series("decode_end") if "decode_end" in variant.samples[0] else variant.series("end")
    return [(e - f) / max(n - 1, 1) for e, f in zip(end, variant.series("first_token"))]


def result(rung: Rung, loop: Loop) -> Result:
    device = loop.session.device
    out = Result(rung.case, md.device_class(device))
    out.update(_timings(rung, loop))
    out.update(_memory_and_setup(rung, loop))
    out.update(_where_the_time_went(rung, loop))
    if device.type == "cuda" and out.get("operators_ms"):
        _idle(out, lever=rung.variant is not None)
    out.update(rung.runner.recorded())
    if out.get("attention_scores"):
        out["attention_scores"] = _score_memory(out["attention_scores"], rung, out)
    out.update(_counters_and_host(rung, loop, out))
    if loop.intensity is None:
        loop.intensity = _intensity(loop) or {}
    if loop.intensity:
        out["intensity"] = dict(loop.intensity)
    if device.type == "cuda":
        if out["tpot_ms"] is not None:
            out["roofline"] = roofline(loop.workload.decode_bytes(loop.model, loop.batch),
                                       out["tpot_ms"]["median"] / 1e3, loop.session.bandwidth())
        out["gpu_state"] = md.gpu_state(device)
    out["provenance"] = md.provenance(device, exclude=foreign_sources(rung.case.workload))
    return out


def _score_memory(scores: dict, rung: Rung, done: Result) -> dict:
    """The score tensor's formula beside what not materializing it saved: eager's peak less this
    rung's, on a rung that differs from eager by its attention alone (sdpa), where both peaks
    are the GPU allocator's. A process's resident-set high-water mark (the CPU's peak) keeps
    what the allocator freed, so a difference of two would not be the scores'."""
    out = dict(scores)
    ours, ref = done.get("peak_memory") or {}, done.get("reference_peak_memory") or {}
    attention_only = (rung.variant is not None and rung.plan.attn_implementation != "eager"
                      and rung.plan.with_(attn_implementation="eager", levers=()) == Plan())
    if attention_only and ours.get("kind") == ref.get("kind") == "cuda_allocated":
        out["measured_bytes"] = round((ref["peak_mb"] - ours["peak_mb"]) * 2**20)
    return out


def _intensity(loop: Loop) -> dict | None:
    """A decode step's FLOPs over the bytes it must move (seed paper 2, Fig. 5: FLOPs over the
    model's weights), and, on a GPU, the ridge point where a kernel stops being memory-bound:
    the measured matmul peak over the measured copy bandwidth."""
    flops = loop.workload.step_flops(loop.model, loop.batch)
    nbytes = loop.workload.decode_bytes(loop.model, loop.batch)
    if not flops or not nbytes:
        return None
    out = {"flops_per_step": flops, "bytes_per_step": nbytes, "flops_per_byte": flops / nbytes}
    peak, bandwidth = loop.session.matmul_flops(), loop.session.bandwidth()
    if peak and bandwidth:
        out["ridge_flops_per_byte"] = peak / bandwidth
        out["bound"] = "compute" if out["flops_per_byte"] >= out["ridge_flops_per_byte"] else "memory"
    return out


def _ours(rung: Rung, loop: Loop) -> Variant:
    return loop.eager if rung.variant is None else rung.variant


def _timings(rung: Rung, loop: Loop) -> dict:
    """Latency, first token and per token over the timed rounds; the eager rounds that shared
    them (the i-th sample of each side comes from one round) and the paired speedup."""
    ours, eager, n = _ours(rung, loop), loop.eager, rung.runner.decode_steps
    e2e = ours.series("end")
    ref_e2e = None if eager is None else eager.series("end")[:len(e2e)]
    per_token = tpot(ours, n)
    lever = rung.variant is not None and eager is not None
    return {
        "levers": list(rung.plan.levers), "prompt_lengths": loop.batch.prompt_lengths, "new_tokens": n,
        "rounds": len(e2e),
        "latency_ms": {"metric": "e2e"} | summary(e2e),
        "ttft_ms": None if per_token is None else summary(ours.series("first_token"), 1),
        "tpot_ms": None if per_token is None else summary(per_token, 2),
        "reference_latency_ms": None if ref_e2e is None else summary(ref_e2e, 3),
        "speedup": ratio_of_medians(ref_e2e, e2e, paired=True).as_dict() if lever else None,
        "agreement": _agreement(eager, ours) if lever else None,
    }


def _memory_and_setup(rung: Rung, loop: Loop) -> dict:
    memory = loop.reference.memory if rung.variant is None else rung.memory
    return {"peak_memory": memory, "reference_peak_memory": loop.reference.memory,
            "build_s": loop.session.build_s.get(rung.case.model)} | {k: rung.setup.get(k) for k in SETUP_METRICS}


def _where_the_time_went(rung: Rung, loop: Loop) -> dict:
    """Each side's ms per module, eager over lever per module group, and the TFLOP/s of the
    spans whose work the run's output fixes."""
    sides = {"eager": loop.reference.modules} | ({} if rung.variant is None else {"lever": rung.modules})
    sides = {side: m for side, m in sides.items() if m is not None}
    if not sides:
        return {}
    out = {"modules_ms": sides}
    kinds = {"eager": loop.reference.operators} | ({} if rung.variant is None else {"lever": rung.operators})
    kinds = {side: k for side, k in kinds.items() if k}
    if kinds:
        out["operators_ms"] = kinds
    if "eager" in sides and "lever" in sides:
        out["module_speedup"] = breakdown.group_speedup(sides["eager"], sides["lever"], loop.workload.module_groups)
    flops = rung.runner.work()
    if flops:
        out["span_tflops"] = {side: breakdown.throughput(m, flops) for side, m in sides.items()}
        peak = loop.session.matmul_flops()
        if peak:
            out["matmul_peak_tflops"] = peak / 1e12
    return out


def _idle(out: Result, lever: bool) -> None:
    """Each side's GPU idle ms: its timed rounds' median less its profiled round's kernels."""
    own = out["latency_ms"]["median"]
    medians = {"lever": own, "eager": (out.get("reference_latency_ms") or {}).get("median")} if lever else {"eager": own}
    for side, kinds in out["operators_ms"].items():
        if medians.get(side) is not None:
            kinds["idle"] = round(max(0.0, medians[side] - sum(v for k, v in kinds.items() if k != "idle")), 3)


def _counters_and_host(rung: Rung, loop: Loop, done: Result) -> dict:
    ours, device = _ours(rung, loop), loop.session.device
    counters = {"recompiles": ours.recompiles}
    out = {}
    if rung.plan.compiles:
        counters.update(graphs=rung.setup["graphs"], graph_breaks=rung.setup["graph_breaks"])
        # Beside the counters, not among them: whether the compile came from a cache is the
        # process's history, and it is what to compare first where a kernel count moved.
        out["compiler"] = rung.setup.get("compiler")
    # Diffusion's attention calls a step depend on the shapes alone: a change is the code's.
    calls = (done.get("attention_calls") or {}).get("per_step")
    if calls is not None:
        counters["attention_calls_per_step"] = calls
    seen = kernels_of(rung.runner, device, done["latency_ms"]["median"], done["tpot_ms"])
    out["counters"] = counters | seen.counters
    if seen.names:
        out["kernel_names"] = seen.names
    if seen.gpu_ms:
        out["gpu_ms"] = seen.gpu_ms
    out["host"] = _host(ours, loop.others, seen.share) | {"run_share": seen.run_share}
    if rung.variant is None:
        loop.reference.share = seen.share
    elif seen.share is not None and loop.eager is not None:
        # The reference's own host-bound share sets how far a faster host lowers the speedup
        # (docs/gate.md); measured once per reference and session.
        if loop.reference.share is None:
            ref_tpot = tpot(loop.eager, loop.ref.decode_steps)
            loop.reference.share = kernels_of(loop.ref, device, done["reference_latency_ms"]["median"],
                                              None if ref_tpot is None else summary(ref_tpot, 2)).share
        out["host"]["reference_share"] = loop.reference.share
    return out


def _host(ours: Variant, others, share: float | None) -> dict:
    """The host during this side's rounds, each probed right before it (a host's speed is not a
    constant of a session: docs/gate.md)."""
    def median(xs, digits=None):
        return None if not xs else (statistics.median(xs) if digits is None else round(statistics.median(xs), digits))

    return {"launch_us": statistics.median(ours.launch_us), "launch_us_rounds": [round(x, 2) for x in ours.launch_us],
            "share": share, "other_cores": others.cores, "on_cpu": median(ours.on_cpu, 3),
            "throttled_ms": others.throttled_ms, "own_threads": median(ours.own_threads, 2),
            "gc_ms": median(ours.gc_ms, 2), "gc_full": median(ours.gc_full)}


@dataclass
class Kernels:
    """What the profiler saw of a runner: counters, kernels by name, GPU time and shares."""

    counters: dict
    names: dict | None = None
    gpu_ms: dict | None = None       # summed kernel durations: per step, once a run, a whole run
    share: float | None = None       # the GPU's idle fraction of a decode step (or of a run)
    run_share: float | None = None   # the same over the whole run, prefill and encoders included


def kernels_of(runner: Runner, device, e2e_ms: float, tpot_ms: dict | None) -> Kernels:
    """A runner's kernel and launch counters (per decode step where it decodes, else per run),
    its kernels by name on the same footing (they say what changed when a count does), its GPU
    time, and its host-bound shares. A decoding runner's whole-run GPU time is what runs once
    plus its steps' (docs/gate.md, "GPU time"): its prefill can be host-bound where its steps
    are not."""
    if runner.decode_steps > 0:
        kernels = mc.per_step(runner.count_steps, device)
        if not kernels:
            return Kernels({})
        step, once = kernels.pop("gpu_ms_per_step"), kernels.pop("gpu_ms_once")
        gpu = {"per_step": round(step, 4), "once": round(once, 4), "run": round(once + step * runner.decode_steps, 4)}
        wall_ms = (tpot_ms or {}).get("median")
        share = mc.host_share(step, wall_ms) if wall_ms else None
        names = kernels.pop("names", None)
        counters = {k: round(v, 2) for k, v in kernels.items()}
    else:   # one forward, no steps: kernels and launches of a whole run
        kernels = mc.count_kernels(lambda: (runner.prepare(), runner.run(None)), device)
        if not kernels:
            return Kernels({})
        gpu = {"run": round(kernels.pop("gpu_ms"), 4)}
        share = mc.host_share(gpu["run"], e2e_ms)
        names = kernels.pop("names", None)
        counters = {f"{k}_per_run": v for k, v in kernels.items()}
    names = {k: round(v, 2) for k, v in sorted(names.items()) if v} if names else None
    return Kernels(counters, names, gpu, share, mc.host_share(gpu["run"], e2e_ms))


def _agreement(eager: Variant, ours: Variant) -> float | None:
    """Fraction of generated tokens the lever shares with eager (informational: bf16 paths may
    legitimately diverge; exactness is asserted in tests/ on fp32 models)."""
    a, b = eager.output, ours.output
    if a is None or b is None or a.shape != b.shape:
        return None
    return float((a == b).float().mean())
