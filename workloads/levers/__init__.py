"""Levers by name, and the stacks a case names.

A case names either one rung of the paper's cumulative ladder (`cuda_graph` means
eager -> sdpa -> compile -> cuda_graph) or an explicit stack joined by '+' (`sdpa+compile`).
"""
from __future__ import annotations

from ..engine.plan import Plan
from . import compile as _compile
from . import cuda_graph, eager, sdpa
from .base import Context, Lever

LEVERS: dict[str, Lever] = {m.LEVER.name: m.LEVER for m in (eager, sdpa, _compile, cuda_graph)}

# Seed paper 1, Section IV-A: SDPA, then torch.compile, then CUDA graphs, each on top of the last.
LADDER = ("eager", "sdpa", "compile", "cuda_graph")


class UnknownLever(ValueError):
    pass


def stack(name: str) -> tuple[str, ...]:
    """The levers a case name stands for, in the order they apply."""
    if "+" in name:
        parts = tuple(name.split("+"))
    elif name in LADDER:
        parts = LADDER[: LADDER.index(name) + 1]
    else:
        parts = (name,)
    unknown = [p for p in parts if p not in LEVERS]
    if unknown:
        raise UnknownLever(f"unknown lever(s) {unknown} in {name!r}; known: {sorted(LEVERS)}")
    if parts[0] != "eager":
        parts = ("eager",) + parts   # every stack starts from the reference as users run it
    return parts


def plan_for(name: str, ctx: Context) -> tuple[Plan | None, str | None]:
    """The plan a case's lever stack yields, or (None, reason) when some lever does not apply."""
    plan = Plan()
    for lever_name in stack(name):
        lever = LEVERS[lever_name]
        reason = lever.why_not(ctx)
        if reason:
            return None, f"{lever_name}: {reason}"
        plan = lever.apply(plan, ctx)
    return plan.with_(levers=stack(name)), None


__all__ = ["LEVERS", "LADDER", "Context", "Lever", "Plan", "UnknownLever", "plan_for", "stack"]
