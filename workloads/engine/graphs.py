"""What every lean engine does to a step: compile it as a graph of its own, capture it as a CUDA graph."""
from __future__ import annotations

import contextlib
import types
from collections.abc import Callable

import torch


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
