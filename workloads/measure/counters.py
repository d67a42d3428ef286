"""Deterministic counters: compiled graphs, graph breaks, recompiles, kernels per step.

They do not suffer timing noise, so they gate on every machine, the CPU included.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch._dynamo.utils import counters as _dynamo_counters
from torch.autograd import _KinetoEvent


def _snapshot() -> dict[str, int]:
    return {
        "graphs": compiled_graphs(),
        "graph_breaks": int(sum(_dynamo_counters["graph_break"].values())),
    }


# What inductor and AOTAutograd did while compiling: cache hits and misses, pattern rewrites,
# benchmark-decided passes. A record, not a gate: a warm cache is no change of code.
_COMPILER_GROUPS = ("inductor", "aot_autograd")


def _compiler_snapshot() -> Counter:
    return Counter({f"{g}.{k}": int(v) for g in _COMPILER_GROUPS for k, v in _dynamo_counters[g].items()})


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far."""
    return int(_dynamo_counters["stats"]["unique_graphs"])


class DynamoDelta:
    """What torch.compile did inside a `with` block."""

    def __init__(self) -> None:
        self.graphs = 0
        self.graph_breaks = 0
        self.compiler: dict[str, int] = {}   # inductor's and AOTAutograd's own counters that moved


@contextmanager
def dynamo_delta():
    d = DynamoDelta()
    before, compiler_before = _snapshot(), _compiler_snapshot()
    try:
        yield d
    finally:
        after = _snapshot()
        d.graphs = after["graphs"] - before["graphs"]
        d.graph_breaks = after["graph_breaks"] - before["graph_breaks"]
        moved = _compiler_snapshot()
        moved.subtract(compiler_before)
        d.compiler = {k: v for k, v in sorted(moved.items()) if v}


# cuBLAS's auxiliary kernels: the reduction of a split-K GEMM and the copy-out of its GEMV path.
# Counted apart because they show cuBLAS choosing another algorithm for the same GEMM: their
# count moves between processes of the same compiled step while the step's total holds
# (docs/measured.md, "Seamless batch 1 at 9bccd65: kernel counts that hold, and the whole
# batch-1 gate").
BLAS_HELPERS = ("splitKreduce", "memcpy32_post")

_LAUNCH_APIS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cuGraphLaunch", "cudaLaunchKernelExC", "cuLaunchKernelEx")


def count_kernels(fn: Callable[[], object], device: torch.device | str) -> dict | None:
    """Kernels executed on the GPU, launch calls and synchronizes made by the host while `fn` runs, how many of
    the kernels are cuBLAS's auxiliary ones (`blas_helpers`, BLAS_HELPERS), and the GPU's busy
    time (`gpu_ms`, the kernels' summed durations: a timing, not a counter); `names` counts the
    kernels by (shortened) name.

    A CUDA graph replay is one host launch and many device kernels, which is the point of it.
    None on the CPU, where there are no kernels to count.
    """
    if torch.device(device).type != "cuda":
        return None
    global _OWN_SYNCS
    if _OWN_SYNCS is None:
        _OWN_SYNCS = _profiled(lambda: None)["syncs"]
    out = _profiled(fn)
    out["syncs"] -= _OWN_SYNCS
    return out


# The synchronizes a profile of nothing records: the closing one below and the profiler's own
# (two with torch 2.11 on an H200), none of them the run's.
_OWN_SYNCS: int | None = None


def _profiled(fn: Callable[[], object]) -> dict:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return tally(profiled_events(prof))


def tally(events) -> dict:
    """Kernels, host launch calls, host waits on the GPU (`syncs`: device, stream and event
    synchronizes, the implicit one of a copy to the host included), cuBLAS helpers, GPU busy time
    and kernels by name, from profiled (name, device type, duration in us) events."""
    kernels = launches = helpers = syncs = 0
    busy_us = 0.0
    names: Counter[str] = Counter()
    for name, device_type, us in events:
        if device_type == torch.autograd.DeviceType.CUDA:
            kernels += 1
            busy_us += us
            helpers += any(h in name for h in BLAS_HELPERS)
            names[kernel_name(name)] += 1
        elif name.startswith(_LAUNCH_APIS):
            launches += 1
        elif name.startswith("cu") and name.endswith("Synchronize"):
            # A host that waits on the GPU each step loses the overlap that hides its own work
            # behind the kernels: a regression no kernel count shows.
            syncs += 1
    return {"kernels": kernels, "launches": launches, "syncs": syncs, "blas_helpers": helpers,
            "gpu_ms": busy_us / 1e3, "names": names}


def kernel_name(name: str, width: int = 100) -> str:
    """A kernel's name short enough to store: C++ template arguments make some thousands of
    characters long; the head tells the kernel apart."""
    return name if len(name) <= width else name[: width - 3] + "..."


# Names `prof.events()` leaves out (torch.autograd.profiler._filter_name): profiler bookkeeping.
_NOT_EVENTS = frozenset({"[memory]", "[OutOfMemory]", "profiler::_record_function_enter",
                         "profiler::_record_function_enter_new", "profiler::_record_function_exit",
                         "aten::is_leaf", "aten::output_nr", "aten::_version"})


def profiled_events(prof):
    """(name, device type, duration in us) of each event `prof.events()` would list, read from
    the profiler's raw results. `prof.events()` builds a Python object and parent links per
    event: 45 us an event against under 2 us for these reads, measured on a CPU profile of 200k
    events. HSTU's blockwise rung, as a loop over sequences, made tens of thousands of kernels a
    run on a GPU, with several host events each (docs/measured.md, "The whole HSTU gate in one
    process at 64ad460")."""
    raw = getattr(prof.profiler, "kineto_results", None)
    if raw is None or not hasattr(_KinetoEvent, "end_ns"):   # a torch without them: the slow list
        yield from ((e.name, e.device_type, e.time_range.elapsed_us()) for e in prof.events())
        return
    for ev in raw.events():
        if ev.name() in _NOT_EVENTS or getattr(ev, "is_hidden_event", lambda: False)():
            continue
        yield ev.name(), ev.device_type(), (ev.end_ns() - ev.start_ns()) / 1e3


def host_share(gpu_ms: float, wall_ms: float) -> float:
    """The fraction of a run's (or a decode step's) wall time in which the GPU is idle: time the
    host spends between kernels, which grows on a slower host while the kernels stay the same."""
    if wall_ms <= 0:
        return 0.0
    return round(min(1.0, max(0.0, 1.0 - gpu_ms / wall_ms)), 3)


def per_step(run_with_steps: Callable[[int], object], device, steps: tuple[int, int] = (4, 12)) -> dict[str, float] | None:
    """Kernels and launches per decode step, from two runs that differ only in step count.

    The difference cancels everything done once per run (prefill, setup), leaving the step.
    """
    lo, hi = steps
    a = count_kernels(lambda: run_with_steps(lo), device)
    b = count_kernels(lambda: run_with_steps(hi), device)
    if a is None or b is None:
        return None
    out = {f"{k}_per_step": (b[k] - a[k]) / (hi - lo) for k in a if k != "names"}
    # What runs once a run (encoders, prefill, a vocoder): the shorter run less its steps.
    out["gpu_ms_once"] = a["gpu_ms"] - lo * out["gpu_ms_per_step"]
    if "names" in a and "names" in b:
        out["names"] = names_per_step(a["names"], b["names"], hi - lo)
    return out


def names_per_step(lo: Counter, hi: Counter, steps: int) -> dict[str, float]:
    """Kernels per step by name: the longer run's count less the shorter's, over the steps between."""
    per = {k: (hi[k] - lo[k]) / steps for k in set(lo) | set(hi)}
    return {k: v for k, v in sorted(per.items()) if v}
