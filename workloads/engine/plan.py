"""A generation plan: how to run a model, as the levers leave it. Levers write it, engines read it.

A plan is hashable and compares by value, inductor options included, so that what the
session's decoder cache shares between rungs is decided from the plan alone (`key`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


def _frozen(value) -> Any:
    """Dicts as sorted (name, value) pairs, recursively: hashable, and equal when equal."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def _thawed(value) -> Any:
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value):
        return {k: _thawed(v) for k, v in value}
    return value


@dataclass(frozen=True)
class Plan:
    attn_implementation: str = "eager"   # transformers' attention implementation
    engine: str = "library"              # "library": the model library's own generate; "static": our lean loop
    compile: bool = False                # torch.compile the decode step (or the whole forward)
    compile_options: tuple = ()          # inductor options for it, as sorted (name, value) pairs
    cuda_graph: bool = False             # replay the decode step as one CUDA graph
    # Linear layers' weights and activations quantized (levers/quant.py): "" (not) or "dynamic";
    # the engine picks the scheme from its device (engine/quantize.py).
    quant: str = ""
    # Something in the run is compiled (the step, or a stage a workload's own lever compiles):
    # its warm-up runs exactly as it is timed, so its guards never last saw another path.
    compiles: bool = False
    # A workload's own switches, set by its own levers and read by its own engine only, as
    # sorted (name, value) pairs: the harness and the other workloads never look inside.
    extras: tuple = ()
    levers: tuple[str, ...] = ()         # the stack that produced this plan, in order

    def __post_init__(self):
        for name in ("compile_options", "extras"):
            object.__setattr__(self, name, _frozen(dict(getattr(self, name))))

    def with_(self, **changes) -> "Plan":
        return replace(self, **changes)

    def with_extras(self, **changes) -> "Plan":
        return replace(self, extras={**dict(self.extras), **changes})

    def extra(self, name: str, default=None):
        return _thawed(dict(self.extras).get(name, default))

    @property
    def inductor_options(self) -> dict:
        return _thawed(self.compile_options) or {}

    def key(self, *names: str) -> tuple:
        """The named fields and extras, as a hashable key: what an object built from this plan
        depends on. Rungs whose plans agree on them share the object (a compiled decoder serves
        both the compile and the cuda_graph rung)."""
        own = {f.name for f in fields(self)}
        return tuple((n, getattr(self, n) if n in own else dict(self.extras).get(n)) for n in names)
