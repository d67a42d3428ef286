"""What every lean engine does to a step: compile it as a graph of its own, capture it as a CUDA graph."""
from __future__ import annotations

import contextlib
import types
from collections.abc import Callable

import torch


# Inductor's pad_mm pass decides whether to pad a GEMM by timing both forms while it compiles,
# and keeps the answer in its on-disk cache. A decode step's GEMMs have M = the rows decoded
# (a few beams or guided rows) and are memory-bound, so the two timings are close and the answer
# is the process's, not the code's: with it on, the same code compiled to different kernel
# counts in different processes (docs/measured.md, "Seamless T-T and T-S re-measured at
# ef012bf, ..." and "Chameleon T-I gated at 7b822b1: ..."). A kernel-count gate needs the count
# to be the code's, so decode steps compile without it.
def decode_step_options(inductor_options: dict) -> dict:
    """Inductor options for a compiled decode step: the caller's, over shape padding off."""
    return {"shape_padding": False, **inductor_options}


def compile_own(fn: Callable, obj, **compile_kwargs):
    """torch.compile `fn` bound to `obj`, under a code object of its own.

    Dynamo keeps compiled entries per code object: objects sharing a method would count as
    recompiles of one function and hit its limit (an error under fullgraph). Each object is a
    graph of its own over its own buffers, so each gets its own code object.
    """
    own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__)
    return torch.compile(types.MethodType(own, obj), **compile_kwargs)


def warm_on_side_stream(fn: Callable[[], object], rounds: int = 2) -> None:
    """Run `fn` before a capture: first calls allocate workspaces and must not be captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(rounds):
            fn()
    torch.cuda.current_stream().wait_stream(side)


def capture_graph(fn: Callable[[], object], pool=None) -> tuple[torch.cuda.CUDAGraph, object]:
    """`fn` recorded as a CUDA graph, and what it returned (its static output)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn()
    return graph, out


@contextlib.contextmanager
def null_span(name):
    """A span that records nothing: runs without a stopwatch."""
    yield
