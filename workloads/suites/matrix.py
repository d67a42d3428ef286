"""The cases a workload expands into at one scale, in the order a session runs them."""
from __future__ import annotations

from ..case import Case
from ..levers import LEVERS, stack
from . import workload as _workload


def marks(wl, preset, task: str, lever: str, batch: int, scale: str) -> tuple[str, ...]:
    out = []
    if scale != "tiny" or any(LEVERS[lv].needs_cuda for lv in stack(lever, wl.ladder)):
        out.append("gpu")
    if preset.large:
        out.append("large")
    # The pull-request gate keeps to the models an 80 GB GPU holds: a 34B case takes minutes to
    # build, and `-m pr` would pay them on every pull request where a larger GPU runs it.
    # and to one input per code path: a pull request's head and base run it three times each.
    if batch == 1 and lever in wl.pr_levers and task in (wl.pr_tasks or (task,)) and not preset.large:
        out.append("pr")
    if batch > 1 and scale != "tiny":
        out.append("slow")
    return tuple(out)


def matrix(workload: str, levers: tuple[str, ...], scale: str) -> list[Case]:
    """Every case of a workload at one scale: presets x tasks x batch (1 and max) x levers, less
    the levers a task does not run (`levers_for`) and the tasks without cases at that scale.

    Ordered model, task group, batch, task, lever, so a session builds each model once, keeps
    one batch's caches alive at a time, and runs the tasks of one cache group (same input
    shapes) next to each other so they share compiled decoders.
    """
    wl = _workload(workload)
    for lever in levers:
        stack(lever, wl.ladder)   # an unknown lever name fails at collection, not in the middle of a run
    def runs(task, lever):
        only = wl.levers_for(task)
        return only is None or lever in only

    at = wl.tasks_at(scale)
    cases = [Case(workload, preset.name, task, lever, scale, batch, marks(wl, preset, task, lever, batch, scale))
             for preset in wl.presets(scale) for task in wl.tasks if task in at
             for batch in sorted({1, wl.max_batch(preset, task)}) for lever in levers if runs(task, lever)]
    presets = [p.name for p in wl.presets(scale)]
    tasks = list(wl.tasks)
    groups = list(dict.fromkeys(wl.cache_group(t) for t in tasks))
    cases.sort(key=lambda c: (presets.index(c.model), groups.index(wl.cache_group(c.task)), c.batch != 1,
                              c.batch, tasks.index(c.task), levers.index(c.lever)))
    return cases
