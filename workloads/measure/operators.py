"""Where a run's time goes by kind of operator (seed paper 2, Fig. 7): convolution, attention,
linear, normalization, elementwise and other.

Kernels are attributed to the innermost module of a named group that launched them (a
workload names its groups by module class: `operator_groups`), so an attention block's
projections count as linear and the rest of it as attention. A kernel outside every group is
`elementwise` where its name says so, else `other`. The profiler links each kernel to the op
that launched it, and a `record_function` range around each grouped module is that op's
ancestor. Kernels that no op launched, a CUDA graph's replay or a compiled step's Triton
launches, are `unattributed`: the breakdown is for rungs that run modules eagerly (seed paper
2's baseline and flash attention), and a compiled rung's kinds would need its kernels' names.
On the CPU, where there are no kernels, each op's own CPU time stands for them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

_PREFIX = "mmgen.op::"
ELEMENTWISE = ("elementwise", "vectorized", "unrolled_elementwise")


@contextlib.contextmanager
def annotated(roots: Iterable[nn.Module], groups: Mapping[str, tuple[str, ...]]):
    """A profiler range named after its group around every forward of a module whose class is
    in `groups` (group -> class names, or "Outer>Inner" for an Inner inside an Outer), while the
    block runs."""
    by_class = {cls: group for group, classes in groups.items() for cls in classes if ">" not in cls}
    # "Outer>Inner": an Inner module inside an Outer one, a group of its own (temporal attention
    # is diffusers' Attention inside a TransformerTemporalModel).
    inside = {tuple(cls.split(">")): group for group, classes in groups.items() for cls in classes if ">" in cls}
    open_: list = []

    def enter(group):
        def pre(module, args):
            rf = torch.autograd.profiler.record_function(_PREFIX + group)
            rf.__enter__()
            open_.append(rf)
        return pre

    def leave(module, args, out):
        open_.pop().__exit__(None, None, None)

    handles = []
    for root in roots:
        kinds = {name: type(m).__name__ for name, m in root.named_modules()}
        for name, m in root.named_modules():
            parts = name.split(".") if name else []
            holders = {kinds[".".join(parts[:i])] for i in range(len(parts))}
            group = next((g for (o, i), g in inside.items() if i == kinds[name] and o in holders), None)
            group = group or by_class.get(kinds[name])
            if group is not None:
                handles.append(m.register_forward_pre_hook(enter(group)))
                handles.append(m.register_forward_hook(leave))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _group_of(event) -> str | None:
    p = event
    while p is not None:
        if p.name.startswith(_PREFIX):
            return p.name[len(_PREFIX):]
        p = p.cpu_parent
    return None


def attribute(events, gpu: bool) -> dict[str, float]:
    """ms per group from profiled FunctionEvents: each op's kernels on a GPU (each op's own CPU
    time on the CPU) to its innermost group, the rest to elementwise or other."""
    out: dict[str, float] = {}
    device_ms = 0.0
    for ev in events:
        if gpu and ev.device_type != torch.autograd.DeviceType.CPU:
            # A record_function range shows on the GPU's timeline too (a user annotation spanning
            # its module's kernels): a span, not a kernel, and counting it counts them twice.
            if not (getattr(ev, "is_user_annotation", False) or ev.name.startswith(_PREFIX)):
                device_ms += ev.time_range.elapsed_us() / 1e3
            continue
        if ev.name.startswith(_PREFIX):
            continue
        group = _group_of(ev)
        if gpu:
            for k in ev.kernels:
                g = group or ("elementwise" if any(w in k.name for w in ELEMENTWISE) else "other")
                out[g] = out.get(g, 0.0) + k.duration / 1e3
        elif ev.self_cpu_time_total > 0:
            g = group or ("elementwise" if ev.name in _CPU_ELEMENTWISE else "other")
            out[g] = out.get(g, 0.0) + ev.self_cpu_time_total / 1e3
    # Kernels no op launched (a CUDA graph's replay, a compiled step's Triton launches) are
    # counted, not lost.
    rest = device_ms - sum(out.values())
    if gpu and rest > 1e-3:
        out["unattributed"] = rest
    return out


# aten ops a CPU run counts as elementwise (a GPU run reads it off the kernel's name).
_CPU_ELEMENTWISE = frozenset({"aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::sub", "aten::div",
                              "aten::silu", "aten::gelu", "aten::sigmoid", "aten::exp", "aten::cos", "aten::sin",
                              "aten::copy_", "aten::clone", "aten::cat", "aten::where", "aten::pow", "aten::rsqrt"})


def roots_of(model) -> list[nn.Module]:
    """The networks of a model: itself, or a pipeline's modules (diffusers' `components`)."""
    if isinstance(model, nn.Module):
        return [model]
    return [m for m in getattr(model, "components", {}).values() if isinstance(m, nn.Module)]


def operator_ms(fn: Callable[[], object], model, groups: Mapping[str, tuple[str, ...]], device) -> dict[str, float]:
    """ms per operator group over one call of `fn`, profiled, outside the timed rounds. The GPU's
    idle time is the timed rounds' median less these kernels' sum (see run.assemble): under the
    profiler the host is slower, and the idle time it would show, longer."""
    from torch.profiler import ProfilerActivity, profile

    gpu = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    if gpu:
        torch.cuda.synchronize()
    with annotated(roots_of(model), groups), profile(activities=activities) as prof:
        fn()
        if gpu:
            torch.cuda.synchronize()
    return {k: round(v, 3) for k, v in sorted(attribute(prof.events(), gpu).items())}
