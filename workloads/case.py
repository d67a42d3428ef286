"""A case: one (model, task, lever stack, scale, batch), its id, and the input its rungs share.

This is the only module that reads or writes a case id: `model/task/lever/scale/bs<batch>`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch

# The lever every other rung of an input is timed against: the model as users run it.
REFERENCE = "eager"
SCALES = ("tiny", "small", "paper")

_ID = re.compile(r"(?P<model>[^/\s]+)/(?P<task>[^/\s]+)/(?P<lever>[^/\s]+)/(?P<scale>[^/\s]+)/bs(?P<batch>[1-9][0-9]*)")


class CaseIdError(ValueError):
    """A string that is not a case id; the message names it and the shape expected."""


@dataclass(frozen=True)
class InputKey:
    """What the rungs of one input share: the model, the task's seeded inputs, the batch. The
    session times them in one loop against one eager reference."""

    workload: str
    model: str
    task: str
    scale: str
    batch: int

    def __str__(self) -> str:
        return f"{self.model}/{self.task}/{self.scale}/bs{self.batch}"


@dataclass(frozen=True)
class Case:
    workload: str
    model: str
    task: str
    lever: str
    scale: str
    batch: int
    marks: tuple[str, ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        return f"{self.model}/{self.task}/{self.lever}/{self.scale}/bs{self.batch}"

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, text: str, workload: str = "") -> "Case":
        """The case an id names. The id does not name its workload: pass it where it is known."""
        m = _ID.fullmatch(str(text))
        if m is None:
            raise CaseIdError(f"{text!r} is not a case id: expected model/task/lever/scale/bs<batch>, "
                              "e.g. llama-7b/T-T/cuda_graph/paper/bs1")
        return cls(workload, m["model"], m["task"], m["lever"], m["scale"], int(m["batch"]))

    @classmethod
    def of(cls, result: Mapping) -> "Case":
        """The case of a result or a case-log record's result: from its fields where it has them
        (every result since they were recorded), else from its id."""
        case = cls.parse(result["case"], workload=str(result.get("workload") or ""))
        fields = {k: result[k] for k in ("model", "task", "lever", "scale") if result.get(k) is not None}
        return replace(case, **fields) if fields else case

    @property
    def input(self) -> InputKey:
        return InputKey(self.workload, self.model, self.task, self.scale, self.batch)

    @property
    def is_reference(self) -> bool:
        return self.lever == REFERENCE

    def with_lever(self, lever: str) -> "Case":
        return replace(self, lever=lever, marks=())

    def reference(self) -> "Case":
        """The eager case of this case's input."""
        return self.with_lever(REFERENCE)


def resolve_scale(scale: str, device: torch.device) -> str:
    """`auto` is tiny on the CPU (seconds, same code paths) and the published configs on a GPU."""
    if scale == "auto":
        return "paper" if device.type == "cuda" else "tiny"
    return scale
