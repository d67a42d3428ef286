"""Scheduling: the rungs of one input timed in one interleaved loop against one eager
reference, their setup and warm-up, their breakdown rounds, and the retry one by one when they
run out of memory together. It wires the floors below and measures nothing itself: every
clock, counter and statistic comes from `measure`, every figure of a result from `assemble`."""
from __future__ import annotations

import warnings
from dataclasses import replace

import torch

from ..case import Case, InputKey
from ..engine.plan import Plan
from ..levers import Context, plan_for
from ..measure import breakdown
from ..measure import counters as mc
from ..measure import device as md
from ..measure import operators as ops
from ..measure.memory import peak_memory
from ..measure.timing import Schedule, Stopclock, Variant, interleave, release_compile_workers, wall_seconds
from ..result import Result
from ..suites import workload as workload_named
from .assemble import Loop, Rung, result
from .session import Reference, Session


class NotApplicable(Exception):
    """The case's lever stack does not apply here; the message says why."""


SCHEDULES = {
    # GPU rounds are seconds at paper scale: a few interleaved pairs, more when they are fast.
    "cuda": Schedule(warmup=1, min_rounds=3, max_rounds=15, budget_s=10.0),
    # CPU timings are informational only (never gated): keep CI short.
    "cpu": Schedule(warmup=1, min_rounds=3, max_rounds=5, budget_s=2.0),
}

# A round this long is not run once more for its breakdown where its warm-up round, run with
# spans, took no longer than its slowest timed round (+5%): a long eager reference's extra
# round would cost as much as a rung's timed rounds (docs/measured.md, the gate at 7b822b1).
LONG_ROUND_MS = 10_000.0
# A phase of that warm-up may exceed the slowest timed round's by 5% and this much: phases of a
# few milliseconds (a prefill, a detokenizer) jitter by more than 5% of themselves.
PHASE_SLACK_MS = 1.0


def runs_alone(latency_only: bool, group) -> bool:
    """Whether an input's selected rungs are timed without eager rounds (--latency-only): the
    pull-request subset asks whether a change made a rung slower than its baseline, and a long
    eager reference would take most of its budget. Where the eager case is itself selected it
    runs as usual."""
    return latency_only and not any(c.is_reference for c in group)


def run_case(case: Case, session: Session) -> Result:
    """The case's result. The first case of an input that the session has planned (see
    Session.plan) times every planned rung of that input in one interleaved loop, and the
    others' results wait for their own calls: eager is timed once a round for all of them, and
    each rung still gets the rounds it would get alone beside it. Where the rungs run out of
    the device's memory together, the case runs again in a loop of its own, and so does every
    later case of that input."""
    if case.id in session.done:
        done = session.done.pop(case.id)
        if not isinstance(done, Exception):
            return done
        if not isinstance(done, torch.OutOfMemoryError):
            raise done
        del done   # its traceback holds the group's rungs
        return _alone_after_oom(case, session)
    key = case.input
    if key in session.one_by_one:
        # Alone in memory too: the shared decoders still hold the previous rung's graphs and
        # static caches (docs/measured.md, the out-of-memory retry at 61d2cf8).
        session.decoders.clear()
    group = [case] + ([] if key in session.one_by_one else
                      [c for c in session.planned if c.id != case.id and c.input == key and c.id not in session.started])
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


def _alone_after_oom(case: Case, session: Session) -> Result:
    session.one_by_one.add(case.input)   # run_case then frees the decoders the crowded loop built
    warnings.warn(f"{case.id}: the selected rungs of its input ran out of the device's memory together; "
                  "it and the later rungs of that input are timed each in a loop of its own beside eager",
                  stacklevel=3)
    return run_case(case, session)


def _run_group(group: list[Case], session: Session) -> dict:
    """Every case of `group` (one input) timed in one loop: each one's Result, or the exception
    its own call is to raise. The first case's own failure is raised at once."""
    first = group[0]
    wl = workload_named(first.workload)
    ctx = Context(session.device, wl.supports_for(first.task), tuning=wl.compile_tuning)
    plans = {c.id: plan_for(c.lever, ctx, wl.ladder) for c in group}
    if plans[first.id][0] is None:
        raise NotApplicable(plans[first.id][1])
    loop = _open(first, session, wl, alone=runs_alone(session.latency_only, group))
    with Stopclock() as eager_untimed:
        eager_warm = _warm_up_reference(loop)
    results: dict = {}
    rungs = _set_up(group, plans, loop, results)
    variants = [r.variant for r in rungs if r.variant is not None]
    schedule = replace(SCHEDULES[session.device.type], warmup=0)   # warmed up above
    if session.rounds:
        schedule = replace(schedule, min_rounds=session.rounds, max_rounds=session.rounds)
    with md.OtherLoad() as loop.others:
        for timed in ([[v] for v in variants] if loop.eager is None else [[loop.eager] + variants]):
            interleave(timed, session.device, schedule)   # alone: each on the schedule it would get beside eager
    _breakdowns(first.input, rungs, loop, eager_warm, eager_untimed.s)
    # The eager case's figures first: its host share is every lever's reference share.
    for r in sorted(rungs, key=lambda r: r.variant is not None):
        try:
            with Stopclock() as clock:
                results[r.case.id] = out = result(r, loop)
            # Seconds this case cost outside its timed rounds and its setup: warm-up, breakdown,
            # kernel counting, probes.
            own = loop.reference.untimed_s if r.variant is None else r.untimed_s
            out["untimed_s"] = round(own + clock.s, 2)
        except Exception as e:
            if r.case is first:
                raise
            results[r.case.id] = e
    return results


def _open(first: Case, session: Session, wl, *, alone: bool) -> Loop:
    """The input's model, batch and eager runner; its reference figures where this session
    measured them already."""
    model = session.model(wl, first.model)
    batch = wl.inputs(first.task, first.scale, first.batch, model, session.device)
    decoders = session.decoders.scope((first.model, wl.cache_group(first.task), first.batch))
    ref = wl.runner(model, batch, Plan(), decoders)
    if alone:
        return Loop(session, wl, model, batch, ref, None, Reference(), cached=False)
    cached = session.references.get(first.input)
    return Loop(session, wl, model, batch, ref, Variant("eager", ref.run, ref.prepare), cached or Reference(),
                cached=cached is not None)


def _warm_up_reference(loop: Loop) -> dict | None:
    """Eager's warm-up round, which measures its peak memory, unless this session ran it for
    this input already; its marks and spans where it ran with them."""
    if loop.eager is None or loop.cached:
        return None
    loop.reference.memory, warm = _warm_up(loop.eager, Plan(), loop.session.device)
    return warm


def _set_up(group: list[Case], plans: dict, loop: Loop, results: dict) -> list[Rung]:
    """Each case's runner, set up (compile, capture) and warmed up right after its own setup. A
    rung that fails here fails its own case; the others are timed without it."""
    device, rungs = loop.session.device, []
    for c in group:
        try:
            plan, why = plans[c.id]
            if plan is None:
                raise NotApplicable(why)
            if c.is_reference:
                rungs.append(Rung(c, plan, loop.ref, _setup(loop.ref, device)))
                continue
            runner = loop.workload.runner(loop.model, loop.batch, plan, loop.session.decoders)
            rung = Rung(c, plan, runner, _setup(runner, device), Variant(c.lever, runner.run, runner.prepare))
            with Stopclock() as clock:
                rung.memory, rung.warm = _warm_up(rung.variant, plan, device)
            rung.untimed_s = clock.s
            rungs.append(rung)
        except Exception as e:
            if c is group[0]:
                raise
            results[c.id] = e
    return rungs


def _setup(runner, device) -> dict:
    """The runner's one-off setup (compile, graph capture), each step timed and what dynamo did
    counted. Shared decoders keep the figures, so every case that uses one reports them."""
    metrics = runner.setup_metrics
    steps = runner.setup_steps()
    for name, step in steps:
        with mc.dynamo_delta() as d:
            metrics[name] = wall_seconds(step, device)
        if name == "compile_s":
            metrics.update(graphs=d.graphs, graph_breaks=d.graph_breaks, compiler=d.compiler)
    if steps:
        release_compile_workers()
    return metrics


def _warm_up(variant: Variant, plan: Plan, device) -> tuple[dict | None, dict | None]:
    """A side's warm-up round, after its setup: the peak memory it reached and, for a side that
    compiles nothing, its marks and spans (spans cost an event record each and never
    synchronize). A compiled side warms up exactly as it is timed, so that its guards never
    last saw the spans' code path."""
    if plan.compiles:
        return peak_memory(lambda: variant.once(device, record=False), device), None
    marks: dict = {}
    memory = peak_memory(lambda: marks.update(variant.once(device, record=False, spans=True)), device)
    return memory, marks


def _breakdowns(key: InputKey, rungs: list[Rung], loop: Loop, eager_warm: dict | None, eager_untimed_s: float) -> None:
    """Where each side's time went (an instrumented round, or a long warm-up standing for it),
    and the eager reference's untimed seconds, kept for the input's later rungs."""
    device, wl = loop.session.device, loop.workload

    def modules(v: Variant, warm: dict | None) -> dict:
        found = _breakdown_of_warm_up(warm, v, wl)
        if found is not None:
            return found
        return breakdown.modules(v.once(device, record=False, spans=True), share=wl.share_spans)

    def operators(v: Variant) -> dict | None:
        if not wl.operator_groups:
            return None
        return ops.operator_ms(lambda: v.once(device, record=False), loop.model, wl.operator_groups, device)

    if loop.eager is not None:
        ref = loop.reference
        with Stopclock() as clock:
            if not loop.cached:
                ref.modules = modules(loop.eager, eager_warm)
                ref.operators = operators(loop.eager)
        ref.untimed_s += eager_untimed_s + clock.s
        loop.session.references[key] = ref
    for r in rungs:
        if r.variant is not None:
            with Stopclock() as clock:
                r.modules = modules(r.variant, r.warm)
                r.operators = operators(r.variant)
            r.untimed_s += clock.s


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
    must say it. Per phase, because a first call's cost can sit in a short phase and hardly
    move the whole (docs/measured.md, the gate at 7b822b1)."""
    timed = variant.series("end")
    if not marks or not timed or marks["end"] < LONG_ROUND_MS or marks["end"] > 1.05 * max(timed):
        return None
    timed_phases = [_phases(s) for s in variant.samples]
    for name, ms in _phases(marks).items():
        seen = [p[name] for p in timed_phases if name in p]
        if len(seen) == len(timed_phases) and ms > 1.05 * max(seen) + PHASE_SLACK_MS:
            return None
    return breakdown.modules(marks, share=wl.share_spans)
