"""What the harness may call of a workload and of the runners it makes: the whole interface
between the suite's scheduling and measurement and any one model family."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from ..engine.cache import DecoderCache
from ..engine.plan import Plan
from ..models.common import Preset


@runtime_checkable
class Batch(Protocol):
    """One seeded input of a task."""

    @property
    def batch(self) -> int: ...                 # rows (prompts, utterances, histories)

    new_tokens: int                              # decode steps a run makes; 0 for one forward pass
    prompt_lengths: list[int]                    # each row's input length, as the task draws it


@runtime_checkable
class Runner(Protocol):
    """One batch through a model as one plan says (workloads.engine.runner.RunnerBase has the
    defaults)."""

    def prepare(self) -> None: ...               # untimed work before each round

    def run(self, stopwatch=None, new_tokens: int | None = None) -> object: ...   # one timed round

    def setup_steps(self) -> list[tuple[str, Callable[[], object]]]: ...   # (metric name, one-off step)

    @property
    def setup_metrics(self) -> dict: ...         # where setup figures are kept (a shared decoder's)

    @property
    def decode_steps(self) -> int: ...           # decode steps of a run; 0 where nothing is generated

    def count_steps(self, new_tokens: int) -> object: ...   # a shortened run, to count kernels per step

    def outputs(self) -> dict: ...               # the last run's products, for the equality tests

    def work(self) -> dict[str, float]: ...      # FLOPs of spans the last run's output fixes

    def recorded(self) -> dict: ...              # facts of the last run's output a result keeps


@runtime_checkable
class Workload(Protocol):
    """A model family, its tasks, and the runners that run a plan on them."""

    name: str
    tasks: Mapping[str, object]
    ladder: tuple[str, ...]                      # the levers, cumulative, in the order users apply them
    pr_levers: tuple[str, ...]                   # the rungs that gate pull requests, at batch 1
    pr_tasks: tuple[str, ...]                    # the tasks they gate on (empty: every task)
    sources: tuple[str, ...]                     # files only this workload runs (see suites.foreign_sources)
    compile_tuning: bool                         # whether autotuning a compiled step pays for itself
    module_groups: Mapping[str, tuple[str, ...]]   # spans per module group of the breakdown
    operator_groups: Mapping[str, tuple[str, ...]]  # module class names per operator kind (empty: none)
    share_spans: tuple | None                    # (span, spans of its phase): one span's share

    def models(self) -> tuple[str, ...]: ...     # every preset name, of every scale

    def tasks_at(self, scale: str) -> tuple[str, ...]: ...   # the tasks with cases at a scale

    def levers_for(self, task: str) -> tuple[str, ...] | None: ...   # the only levers a task runs (None: all)

    def presets(self, scale: str) -> list[Preset]: ...

    def preset(self, name: str) -> Preset: ...

    def build(self, preset: Preset, device, checkpoint: str | None = None): ...

    def check_checkpoint(self, path: str) -> None: ...   # raises CheckpointError naming what is wrong

    def supports_for(self, task: str) -> frozenset[str]: ...   # what its engine offers the levers

    def cache_group(self, task: str) -> str: ...  # tasks of one group share compiled decoders

    def inputs(self, task: str, scale: str, batch: int, model, device) -> Batch: ...

    def max_batch(self, preset: Preset, task: str) -> int: ...

    def runner(self, model, batch: Batch, plan: Plan, decoders: DecoderCache) -> Runner: ...

    def decode_bytes(self, model, batch: Batch) -> float | None: ...   # fewest bytes a decode step moves

    def step_flops(self, model, batch: Batch) -> float | None: ...   # FLOPs of a decode step (None: not counted)
