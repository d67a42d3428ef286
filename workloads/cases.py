"""Cases: one (model, task, lever stack, scale, batch), and the matrix a workload expands into."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .levers import LEVERS, stack
from .registry import WORKLOADS


@dataclass(frozen=True)
class Case:
    workload: str
    model: str
    task: str
    lever: str
    scale: str
    batch: int
    marks: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.model}/{self.task}/{self.lever}/{self.scale}/bs{self.batch}"

    def __str__(self) -> str:
        return self.id


class UnknownCase(ValueError):
    pass


def resolve_scale(scale: str, device: torch.device) -> str:
    """`auto` is tiny on the CPU (seconds, same code paths) and the published configs on a GPU."""
    if scale == "auto":
        return "paper" if device.type == "cuda" else "tiny"
    return scale


def matrix(workload: str, levers: tuple[str, ...], scale: str) -> list[Case]:
    """Every case of a workload at one scale: presets x tasks x batch (1 and max) x levers.

    Ordered model, task group, batch, task, lever, so a session builds each model once and
    keeps one batch's caches alive at a time.
    """
    if workload not in WORKLOADS:
        raise UnknownCase(f"unknown workload {workload!r}; known: {sorted(WORKLOADS)}")
    wl = WORKLOADS[workload]
    for lever in levers:
        stack(lever, wl.ladder)   # an unknown lever name fails at collection, not in the middle of a run
    cases = []
    for preset in wl.presets(scale):
        for task in wl.tasks:
            batches = sorted({1, wl.max_batch(preset, task)})
            for batch in batches:
                for lever in levers:
                    marks = []
                    levers_of = stack(lever, wl.ladder)
                    if scale != "tiny" or any(LEVERS[lv].needs_cuda for lv in levers_of):
                        marks.append("gpu")
                    if preset.large:
                        marks.append("large")
                    # The pull-request gate keeps to the models an 80 GB GPU holds: a 34B case
                    # takes minutes to build and runs nightly, and where a larger GPU would run
                    # it, `-m pr` would cost those minutes on every pull request.
                    if batch == 1 and lever in wl.pr_levers and not preset.large:
                        marks.append("pr")
                    if batch > 1 and scale != "tiny":
                        marks.append("slow")
                    cases.append(Case(workload, preset.name, task, lever, scale, batch, tuple(marks)))
    # Tasks of one cache group (same input shapes) run next to each other at each batch, so
    # they share compiled decoders instead of compiling them again.
    presets = [p.name for p in wl.presets(scale)]
    tasks = list(wl.tasks)
    groups = list(dict.fromkeys(wl.cache_group(t) for t in tasks))
    cases.sort(key=lambda c: (presets.index(c.model), groups.index(wl.cache_group(c.task)), c.batch != 1,
                              c.batch, tasks.index(c.task), levers.index(c.lever)))
    return cases
