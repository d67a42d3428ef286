"""Levers by name, and the stacks a case names.

A case names either one rung of its workload's cumulative ladder (for Code Llama `cuda_graph`
means eager -> sdpa -> compile -> cuda_graph) or an explicit stack joined by '+'
(`compile+kv_reorder`). A lever that is not on the ladder stands alone on top of eager.
"""
from __future__ import annotations

from ..engine.plan import Plan
from . import compile as _compile
from . import cuda_graph, eager, hstu_attention, kv_reorder, quant, sdpa, vocoder
from .base import Context, Lever

LEVERS: dict[str, Lever] = {
    lv.name: lv
    for lv in (eager.LEVER, sdpa.LEVER, _compile.LEVER, cuda_graph.LEVER, kv_reorder.LEVER,
               vocoder.COMPILE, vocoder.CUDA_GRAPH, vocoder.CONV2D, hstu_attention.MEMORY_EFFICIENT,
               hstu_attention.FUSED, quant.LEVER)
}

# Seed paper 1, Section IV-A: SDPA, then torch.compile, then CUDA graphs, each on top of the last.
LADDER = ("eager", "sdpa", "compile", "cuda_graph")


class UnknownLever(ValueError):
    pass


def stack(name: str, ladder: tuple[str, ...] = LADDER) -> tuple[str, ...]:
    """The levers a case name stands for, in the order they apply."""
    if "+" in name:
        parts = tuple(name.split("+"))
    elif name in ladder:
        parts = ladder[: ladder.index(name) + 1]
    else:
        parts = (name,)
    unknown = [p for p in parts if p not in LEVERS]
    if unknown:
        raise UnknownLever(f"unknown lever(s) {unknown} in {name!r}; known: {sorted(LEVERS)}")
    if parts[0] != "eager":
        parts = ("eager",) + parts   # every stack starts from the reference as users run it
    return parts


def plan_for(name: str, ctx: Context, ladder: tuple[str, ...] = LADDER) -> tuple[Plan | None, str | None]:
    """The plan a case's lever stack yields, or (None, reason) when some lever does not apply."""
    plan = Plan()
    levers = stack(name, ladder)
    for lever_name in levers:
        lever = LEVERS[lever_name]
        reason = lever.why_not(ctx)
        if reason:
            return None, f"{lever_name}: {reason}"
        plan = lever.apply(plan, ctx)
    return plan.with_(levers=levers), None


__all__ = ["LEVERS", "LADDER", "Context", "Lever", "Plan", "UnknownLever", "plan_for", "stack"]
