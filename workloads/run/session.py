"""What the cases of one pytest session share: built models, the decoder cache, the eager
references' untimed figures, and the cases pytest selected."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..case import Case, InputKey
from ..engine.cache import DecoderCache
from ..measure import device as md
from ..measure.timing import Stopclock, synchronize
from ..suites import Workload


@dataclass
class Reference:
    """The eager side of an input, measured once a session: its warm-up's peak memory, its
    breakdown round, its host-bound share, and the seconds its untimed work took."""

    memory: dict | None = None
    modules: dict | None = None
    operators: dict | None = None
    share: float | None = None
    untimed_s: float = 0.0


@dataclass
class Session:
    device: torch.device
    checkpoints: dict[str, str] = field(default_factory=dict)
    # --latency-only: a rung is timed alone, with no eager reference beside it, unless the eager
    # case of its input is itself selected (then the input's rungs run as usual).
    latency_only: bool = False
    rounds: int | None = None   # --rounds: exactly this many timed rounds a rung, budget aside
    decoders: DecoderCache = field(default_factory=DecoderCache)
    build_s: dict = field(default_factory=dict)   # seconds each model took to build, weights included
    # The inputs are seeded, so every later case of an input pairs its lever with the same
    # reference: a long eager warm-up or breakdown round is not paid again per rung.
    references: dict[InputKey, Reference] = field(default_factory=dict)
    # pytest's selection, in run order, so that the first case of an input times every selected
    # rung of it in one loop; the ids already started; results waiting for their own case's call
    # (or the exception it is to raise); the inputs whose rungs did not fit in memory together.
    planned: list[Case] = field(default_factory=list)
    started: set = field(default_factory=set)
    done: dict = field(default_factory=dict)
    one_by_one: set = field(default_factory=set)
    _models: dict = field(default_factory=dict)
    _bandwidth: float | None = None
    _matmul: float | None = None

    def plan(self, cases) -> None:
        self.planned = list(cases)

    def model(self, workload: Workload, preset_name: str):
        if preset_name not in self._models:
            if self.device.type == "cuda":
                # One large model at a time: free the previous one and everything built on it.
                self._models.clear()
                self.references.clear()   # a rebuilt model's eager path is cold again
                self.decoders.clear()
            preset = workload.preset(preset_name)
            with Stopclock() as clock:
                self._models[preset_name] = workload.build(preset, self.device, self.checkpoints.get(preset_name))
                synchronize(self.device)
            self.build_s[preset_name] = clock.s
        return self._models[preset_name]

    def bandwidth(self) -> float | None:
        if self._bandwidth is None and self.device.type == "cuda":
            self._bandwidth = md.copy_bandwidth(self.device)
        return self._bandwidth

    def matmul_flops(self) -> float | None:
        if self._matmul is None and self.device.type == "cuda":
            self._matmul = md.matmul_flops(self.device)
        return self._matmul
