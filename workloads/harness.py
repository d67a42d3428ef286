"""Run one case end to end: build, set up the lever, time it against eager, collect the figures.

It wires the floors below together and measures nothing itself: every clock, counter and
statistic comes from `measure`.
"""
from __future__ import annotations

import gc
import statistics
import warnings
from dataclasses import dataclass, field, replace

import torch

from .cases import Case
from .engine.plan import Plan
from .levers import Context, plan_for
from .measure import breakdown
from .measure import counters as mc
from .measure import device as md
from .measure.memory import peak_memory
from .measure.roofline import roofline
from .measure.stats import ratio_of_medians, summarize
from .measure.timing import (Schedule, Stopclock, Variant, interleave, release_compile_workers, synchronize,
                             wall_seconds)
from .registry import WORKLOADS, foreign_sources


class NotApplicable(Exception):
    """The case's lever stack does not apply here; the message says why."""


SCHEDULES = {
    # GPU rounds are seconds at paper scale: a few interleaved pairs, more when they are fast.
    "cuda": Schedule(warmup=1, min_rounds=3, max_rounds=15, budget_s=10.0),
    # CPU timings are informational only (never gated): keep CI short.
    "cpu": Schedule(warmup=1, min_rounds=3, max_rounds=5, budget_s=2.0),
}


@dataclass
class Session:
    """What cases share within one pytest session: models, compiled decoders, bandwidth."""

    device: torch.device
    checkpoints: dict[str, str] = field(default_factory=dict)
    _models: dict = field(default_factory=dict)
    _decoders: dict = field(default_factory=dict)
    _decoder_batch: tuple | None = None
    _bandwidth: float | None = None
    _matmul: float | None = None
    build_s: dict = field(default_factory=dict)   # seconds each model took to build, weights included
    # The eager reference's untimed runs (its warm-up, which measures its peak memory, and its
    # instrumented breakdown round), per (workload, model, task, scale, batch): the inputs are
    # seeded, so every later case of that key pairs its lever with the same reference, and a
    # long eager round (Chameleon T-I: 1024 steps of a tripled batch) is not paid twice more per rung.
    reference: dict = field(default_factory=dict)
    # The cases this session will run (pytest's selection), so that run_case can time the rungs
    # of one eager reference together; the ids already started, and results waiting for their
    # own case's call (or the exception it is to raise).
    planned: list = field(default_factory=list)
    started: set = field(default_factory=set)
    done: dict = field(default_factory=dict)
    # The references whose rungs did not fit in the device's memory together: each of their
    # cases is timed in a loop of its own beside eager (a rung's graphs and static caches at
    # max batch are tens of GB, and a loop keeps every rung of it alive).
    one_by_one: set = field(default_factory=set)
    # --latency-only: a rung is timed alone, with no eager reference beside it, unless the
    # eager case of its input is itself selected (then the group runs as usual).
    latency_only: bool = False

    def plan(self, cases) -> None:
        self.planned = list(cases)

    def model(self, workload, preset_name: str):
        if preset_name not in self._models:
            if self.device.type == "cuda":
                # One large model at a time: free the previous one and everything built on it.
                self._models.clear()
                self.reference.clear()   # a rebuilt model's eager path is cold again
                self.release_decoders()
            preset = workload.preset(preset_name)
            with Stopclock() as clock:
                self._models[preset_name] = workload.build(preset, self.device, self.checkpoints.get(preset_name))
                synchronize(self.device)
            self.build_s[preset_name] = clock.s
        return self._models[preset_name]

    def decoders_for(self, key: tuple) -> dict:
        # Keep one batch's static caches alive at a time (a max-batch cache is tens of GB).
        if self._decoder_batch != key:
            self.release_decoders()
            self._decoder_batch = key
        return self._decoders

    def release_decoders(self) -> None:
        """Free the shared decoders, their static caches and graphs; a rung that needs one again
        builds it again (from the compile cache)."""
        self._decoders.clear()
        self._decoder_batch = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def bandwidth(self) -> float | None:
        if self._bandwidth is None and self.device.type == "cuda":
            self._bandwidth = md.copy_bandwidth(self.device)
        return self._bandwidth

    def matmul_flops(self) -> float | None:
        if self._matmul is None and self.device.type == "cuda":
            self._matmul = md.matmul_flops(self.device)
        return self._matmul


def _setup(runner, device) -> dict:
    """Do the runner's one-off setup (compile, graph capture), timing each step and counting
    what dynamo did. Shared decoders keep the figures, so every case that uses one reports them."""
    dec = getattr(runner, "decoder", None)
    metrics = dec.setup_metrics if dec is not None else {}
    steps = runner.setup_steps()
    for name, step in steps:
        with mc.dynamo_delta() as d:
            metrics[name] = wall_seconds(step, device)
        if name == "compile_s":
            metrics.update(graphs=d.graphs, graph_breaks=d.graph_breaks, compiler=d.compiler)
    if steps:
        release_compile_workers()
    return metrics


# A round this long is not run once more for its breakdown where its warm-up round, run with
# spans, took no longer than its slowest timed round (+5%): one round more of Chameleon's T-I
# eager reference (1024 guided steps) is over 30 s on an H200.
LONG_ROUND_MS = 10_000.0


def _warm_up(variant: Variant, plan: Plan, device) -> tuple[dict | None, dict | None]:
    """A side's warm-up round, after its setup: the peak memory it reached and, for a side that
    compiles nothing, its marks and spans (spans cost an event record each and never
    synchronize). A compiled side warms up exactly as it is timed, so that its guards never
    last saw the spans' code path."""
    if plan.compile or plan.vocoder != "eager":
        return peak_memory(lambda: variant.once(device, record=False), device), None
    marks: dict = {}
    memory = peak_memory(lambda: marks.update(variant.once(device, record=False, spans=True)), device)
    return memory, marks


# A phase of the warm-up round may exceed the slowest timed round's by 5% and this much: the
# few-millisecond phases (a prefill, a detokenizer) jitter by more than 5% of themselves.
PHASE_SLACK_MS = 1.0


def _phases(marks: dict) -> dict[str, float]:
    """A round's phases, each named by the mark that ends it (up to the first token, decoding up
    to `decode_end`, what follows to `end`), in ms."""
    out, last = {}, 0.0
    for t, name in sorted((t, k) for k, t in marks.items() if not k.startswith("span:")):
        out[name], last = t - last, t
    return out


def _breakdown_of_warm_up(marks: dict | None, variant: Variant, wl) -> dict | None:
    """Where a side's time went, from its warm-up round when that round was long and neither it
    nor any of its phases took longer than 1.05x the slowest timed round's (so first-call
    costs, a JIT compile or a cold cache did not weigh in it); None when an instrumented round
    must say it. Per phase, because a first call's cost can sit in a short phase and hardly move
    the whole: Chameleon's T-I eager warm-up once spent 466 ms on a prefill its timed rounds ran in
    under 50, within 5% of a 35-second round."""
    timed = variant.series("end")
    if not marks or not timed or marks["end"] < LONG_ROUND_MS or marks["end"] > 1.05 * max(timed):
        return None
    timed_phases = [_phases(s) for s in variant.samples]
    for name, ms in _phases(marks).items():
        seen = [p[name] for p in timed_phases if name in p]
        if len(seen) == len(timed_phases) and ms > 1.05 * max(seen) + PHASE_SLACK_MS:
            return None
    return breakdown.modules(marks, share=wl.share_spans)


def _summ(values, seed=0) -> dict:
    return summarize(values, seed=seed).as_dict() | {"samples": [float(v) for v in values]}


def _tpot(variant, n: int) -> list[float] | None:
    """Time per output token of each round; None for workloads that generate nothing (HSTU ranks
    in one forward and marks no first token). Decoding ends before the end where stages follow
    it (text-to-unit, vocoder)."""
    if "first_token" not in variant.samples[0]:
        return None
    end = variant.series("decode_end") if "decode_end" in variant.samples[0] else variant.series("end")
    return [(e - f) / max(n - 1, 1) for e, f in zip(end, variant.series("first_token"))]


def _kernels(runner, n: int, device, e2e_ms: float, tpot: dict | None) -> tuple[dict, float | None, dict | None]:
    """A runner's kernel and launch counters (per decode step where it decodes, else per run), its
    host-bound share (the GPU's idle fraction of the step's or the run's median wall time), and
    its kernels by name on the same footing, which say what changed when a count does."""
    if n > 0:
        count = getattr(runner, "count_steps", None) or (lambda k: (runner.prepare(), runner.run(None, k)))
        kernels = mc.per_step(count, device)
        if not kernels:
            return {}, None, None
        gpu_ms, wall_ms = kernels.pop("gpu_ms_per_step"), (tpot or {}).get("median")
        names = kernels.pop("names", None)
        counters = {k: round(v, 2) for k, v in kernels.items()}
    else:   # one forward, no steps: kernels and launches of a whole run
        kernels = mc.count_kernels(lambda: (runner.prepare(), runner.run(None)), device)
        if not kernels:
            return {}, None, None
        gpu_ms, wall_ms = kernels.pop("gpu_ms"), e2e_ms
        names = kernels.pop("names", None)
        counters = {f"{k}_per_run": v for k, v in kernels.items()}
    names = {k: round(v, 2) for k, v in sorted(names.items()) if v} if names else None
    return counters, (mc.host_share(gpu_ms, wall_ms) if wall_ms else None), names


def _ref_key(case: Case) -> tuple:
    return (case.workload, case.model, case.task, case.scale, case.batch)


@dataclass
class _Rung:
    case: Case
    plan: Plan
    runner: object
    setup: dict
    variant: Variant | None = None   # None: the eager case, whose variant is the reference's
    memory: dict | None = None       # the peak of its warm-up round
    modules: dict | None = None      # where its time went in its instrumented round
    warm: dict | None = None         # its warm-up round's marks and spans, where it ran with them
    untimed_s: float = 0.0           # its seconds outside the timed rounds and its setup, so far


def runs_alone(latency_only: bool, group) -> bool:
    """Whether an input's selected rungs are timed without eager rounds (--latency-only): the
    pull-request subset asks whether a change made a rung slower than its baseline, and
    Chameleon T-I's eager reference alone (a warm-up and three rounds of 27-60 s) would take
    most of a 5-minute budget. Where the eager case is itself selected it runs as usual."""
    return latency_only and all(c.lever != "eager" for c in group)


def run_case(case: Case, session: Session) -> dict:
    """The case's result. The first case of an eager reference that the session has planned
    (see Session.plan) times every planned rung of that reference in one interleaved loop, and
    the others' results wait for their own calls: eager is timed once a round for all of them,
    not once per rung, and each rung still gets the rounds it would get alone beside it. Where
    the rungs run out of the device's memory together, the case runs again in a loop of its own,
    and so does every later case of that reference."""
    if case.id in session.done:
        done = session.done.pop(case.id)
        if not isinstance(done, Exception):
            return done
        if not isinstance(done, torch.OutOfMemoryError):
            raise done
        del done   # its traceback holds the group's rungs
        return _alone_after_oom(case, session)
    key = _ref_key(case)
    if key in session.one_by_one:
        # Alone in memory too: the shared decoders hold the previous rung's graphs and static
        # caches (Seamless T-S at batch 88 on an H200: with the vocoder graphs of the rung before
        # still held, 63 GiB sat in graph pools and eager ran out of memory beside the next
        # rung). A rung rebuilds what it needs from the compile cache.
        session.release_decoders()
    group = [case] + ([] if key in session.one_by_one else
                      [c for c in session.planned if c.id != case.id and _ref_key(c) == key
                       and c.id not in session.started])
    session.started.update(c.id for c in group)
    try:
        results = _run_group(group, session)
    except Exception as e:
        # This case's own failure: the others of its group form the next group.
        session.started.difference_update(c.id for c in group[1:])
        if not (isinstance(e, torch.OutOfMemoryError) and len(group) > 1):
            raise
    else:
        for c in group[1:]:
            session.done[c.id] = results[c.id]
        if key in session.one_by_one:
            results[case.id]["timed_alone_after_oom"] = True
        return results[case.id]
    # Here, out of the except block, the failed group's rungs and their memory are released.
    return _alone_after_oom(case, session)


def _alone_after_oom(case: Case, session: Session) -> dict:
    session.one_by_one.add(_ref_key(case))   # run_case then frees the decoders the crowded loop built
    warnings.warn(f"{case.id}: the selected rungs of its input ran out of the device's memory together; "
                  "it and the later rungs of that input are timed each in a loop of its own beside eager",
                  stacklevel=3)
    return run_case(case, session)


def _run_group(group: list[Case], session: Session) -> dict:
    device = session.device
    first = group[0]
    wl = WORKLOADS[first.workload]
    ctx = Context(device, wl.supports_for(first.task), tuning=wl.compile_tuning)
    plan, reason = plan_for(first.lever, ctx, wl.ladder)
    if plan is None:
        raise NotApplicable(reason)

    model = session.model(wl, first.model)
    batch = wl.inputs(first.task, first.scale, first.batch, model, device)
    decoders = session.decoders_for((first.model, wl.cache_group(first.task), first.batch))
    ref = wl.runner(model, batch, Plan(), decoders)
    alone = runs_alone(session.latency_only, group)
    eager = None if alone else Variant("eager", ref.run, ref.prepare)
    ref_key = _ref_key(first)
    cached = session.reference.get(ref_key)
    # Warm-up rounds double as the peak-memory measurement of each side, a rung's right after its
    # own setup; an eager reference this session already ran is warm, and its peak is the one
    # measured then.
    with Stopclock() as eager_untimed:
        if alone:
            eager_memory, eager_warm = None, None
        else:
            eager_memory, eager_warm = (cached["memory"], None) if cached else _warm_up(eager, Plan(), device)
    results: dict = {}
    rungs: list[_Rung] = []
    for c in group:
        try:
            p, why = (plan, reason) if c is first else plan_for(c.lever, ctx, wl.ladder)
            if p is None:
                raise NotApplicable(why)
            if p.levers == ("eager",):
                rungs.append(_Rung(c, p, ref, _setup(ref, device)))
                continue
            runner = wl.runner(model, batch, p, decoders)
            rung = _Rung(c, p, runner, _setup(runner, device), Variant(c.lever, runner.run, runner.prepare))
            with Stopclock() as clock:
                rung.memory, rung.warm = _warm_up(rung.variant, p, device)
            rung.untimed_s = clock.s
            rungs.append(rung)
        except Exception as e:   # the case's own test reports it; the group goes on without it
            if c is first:
                raise
            results[c.id] = e
    # A rung that fails in the timed rounds (after a good warm-up) fails the group's first case.
    variants = [r.variant for r in rungs if r.variant is not None]
    schedule = replace(SCHEDULES[device.type], warmup=0)   # warmed up above
    with md.OtherLoad() as others:
        if alone:
            for v in variants:   # each on its own schedule, as it would run beside eager
                interleave([v], device, schedule)
        else:
            interleave([eager] + variants, device, schedule)

    def instrumented(v):
        return breakdown.modules(v.once(device, record=False, spans=True), share=wl.share_spans)

    def modules(v, warm):
        found = _breakdown_of_warm_up(warm, v, wl)
        return found if found is not None else instrumented(v)

    if alone:
        reference = {"memory": None, "modules": None, "share": None, "untimed_s": 0.0}
    else:
        with Stopclock() as clock:
            eager_modules = cached["modules"] if cached else modules(eager, eager_warm)
        reference = session.reference[ref_key] = {
            "memory": eager_memory, "modules": eager_modules, "share": (cached or {}).get("share"),
            "untimed_s": (cached or {}).get("untimed_s", 0.0) + eager_untimed.s + clock.s}
    for r in rungs:
        if r.variant is not None:
            with Stopclock() as clock:
                r.modules = modules(r.variant, r.warm)
            r.untimed_s += clock.s
    # The eager case's figures first: its host share is every lever's reference share.
    for r in sorted(rungs, key=lambda r: r.variant is not None):
        try:
            with Stopclock() as clock:
                results[r.case.id] = result = _result(r, ref, eager, reference, others, model, batch, wl, session)
            # Seconds this case cost outside its timed rounds and its setup (compile_s, capture_s):
            # warm-up, breakdown, kernel counting, probes.
            own = reference["untimed_s"] if r.variant is None else r.untimed_s
            result["untimed_s"] = round(own + clock.s, 2)
        except Exception as e:
            if r.case is first:
                raise
            results[r.case.id] = e
    return results


def _result(rung: _Rung, ref, eager: Variant | None, reference: dict, others, model, batch, wl,
            session: Session) -> dict:
    """`eager` is None where the rung ran alone (--latency-only): no speedup, no reference
    figures. `reference` holds the eager side's memory, modules and host share."""
    device, case, plan, lever, setup = session.device, rung.case, rung.plan, rung.runner, rung.setup
    is_reference = rung.variant is None
    ours = eager if is_reference else rung.variant
    n = batch.new_tokens
    e2e = ours.series("end")
    # The reference's rounds that this rung shared: its i-th sample pairs with eager's i-th.
    ref_e2e = None if eager is None else eager.series("end")[:len(e2e)]
    tpot = _tpot(ours, n)
    autoregressive = tpot is not None
    ttft = ours.series("first_token") if autoregressive else None
    result = {
        "case": case.id,
        "workload": case.workload,
        "lever": case.lever,
        "levers": list(plan.levers),
        "device_class": md.device_class(device),
        "batch": batch.batch,
        "prompt_lengths": batch.prompt_lengths,
        "new_tokens": n,
        "rounds": len(e2e),
        "latency_ms": {"metric": "e2e"} | _summ(e2e),
        "ttft_ms": _summ(ttft, 1) if autoregressive else None,
        "tpot_ms": _summ(tpot, 2) if autoregressive else None,
        "reference_latency_ms": None if ref_e2e is None else _summ(ref_e2e, 3),
        "speedup": None if is_reference or ref_e2e is None else ratio_of_medians(ref_e2e, e2e, paired=True).as_dict(),
        "peak_memory": reference["memory"] if is_reference else rung.memory,
        "reference_peak_memory": reference["memory"],
        "build_s": session.build_s.get(case.model),
        "compile_s": setup.get("compile_s"),
        "capture_s": setup.get("capture_s"),
        "vocoder_setup_s": setup.get("vocoder_setup_s"),
        "agreement": None if is_reference or eager is None else _agreement([eager, ours]),
    }
    sides = {"eager": reference["modules"]} | ({} if is_reference else {"lever": rung.modules})
    sides = {side: m for side, m in sides.items() if m is not None}
    if sides:
        result["modules_ms"] = sides
        if "eager" in sides and "lever" in sides:
            result["module_speedup"] = breakdown.group_speedup(sides["eager"], sides["lever"], wl.module_groups)
        span_flops = getattr(wl, "span_flops", None)
        flops = span_flops(model, batch, lever) if span_flops is not None else None
        if flops:
            result["span_tflops"] = {side: breakdown.throughput(m, flops) for side, m in sides.items()}
            peak = session.matmul_flops()
            if peak:
                result["matmul_peak_tflops"] = peak / 1e12
    waveform_lengths = getattr(lever, "waveform_lengths", None)
    if waveform_lengths is not None:
        result["audio_samples"] = [int(x) for x in waveform_lengths.reshape(-1).tolist()]
    counters = {"recompiles": ours.recompiles}
    if plan.compile:
        counters.update(graphs=setup["graphs"], graph_breaks=setup["graph_breaks"])
        # Kept beside the counters, not among them: whether the compile came from a cache is
        # the process's history, and it is what to compare first where a kernel count moved.
        result["compiler"] = setup.get("compiler")
    kernels, share, names = _kernels(lever, n, device, result["latency_ms"]["median"], result["tpot_ms"])
    counters.update(kernels)
    result["counters"] = counters
    if names:
        result["kernel_names"] = names
    # Probed before each of the case's timed rounds (Variant.once), not once a session nor once
    # after the rounds: a host's speed is not a constant of a session. With another job on the
    # same host, host-bound cases ran 40-94% slower while a probe taken at the session's start had
    # seen the host 17% slower. Every recorded round is probed, so there is always a probe here.
    probes = ours.launch_us
    result["host"] = {"launch_us": statistics.median(probes),
                      "launch_us_rounds": [round(x, 2) for x in probes],
                      "share": share, "other_cores": others.cores,
                      "on_cpu": round(statistics.median(ours.on_cpu), 3) if ours.on_cpu else None,
                      "throttled_ms": others.throttled_ms,
                      "own_threads": round(statistics.median(ours.own_threads), 2) if ours.own_threads else None,
                      "gc_ms": round(statistics.median(ours.gc_ms), 2) if ours.gc_ms else None,
                      "gc_full": statistics.median(ours.gc_full) if ours.gc_full else None}
    if is_reference:
        reference["share"] = share
    elif share is not None and eager is not None:
        # The reference's own host-bound share sets how far a faster host lowers the speedup
        # (baselines.speedup_allowance); measured once per reference and session.
        if reference.get("share") is None:
            reference["share"] = _kernels(ref, n, device, result["reference_latency_ms"]["median"],
                                          _summ(_tpot(eager, n), 2) if autoregressive else None)[1]
        result["host"]["reference_share"] = reference["share"]
    if device.type == "cuda":
        if autoregressive:
            med_tpot_s = result["tpot_ms"]["median"] / 1e3
            result["roofline"] = roofline(wl.decode_bytes(model, batch), med_tpot_s, session.bandwidth())
        result["gpu_state"] = md.gpu_state(device)
    result["provenance"] = md.provenance(device, exclude=foreign_sources(case.workload))
    return result


def _agreement(variants) -> float | None:
    """Fraction of generated tokens the lever shares with eager (informational: bf16 paths may
    legitimately diverge; exactness is asserted in tests/ on fp32 models)."""
    if len(variants) < 2:
        return None
    a, b = variants[0].output, variants[1].output
    if a is None or b is None or a.shape != b.shape:
        return None
    return float((a == b).float().mean())
