"""The lever protocol: a named, composable change to a generation plan, with its applicability."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..engine.plan import Plan


@dataclass(frozen=True)
class Context:
    """What a lever may know of where it is applied: the device and what the workload's engine supports."""

    device: torch.device
    supports: frozenset[str]   # e.g. {"static_decode"}
    # Whether compile-time autotuning pays for itself: yes where one compiled step is most of
    # the run (a 7B decode), no where it is a small share and compile time gates pull requests.
    tuning: bool = True


@dataclass(frozen=True)
class Lever:
    name: str
    summary: str
    apply: Callable[[Plan, Context], Plan]
    # None when the lever applies, else the reason it does not (the case is skipped with it).
    why_not: Callable[[Context], str | None] = lambda ctx: None
    # Whether the lever can only ever run on a CUDA device: its cases are marked `gpu`.
    needs_cuda: bool = False
