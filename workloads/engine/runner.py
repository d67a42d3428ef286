"""What the harness may call of a runner (workloads.suites.protocol.Runner), with the defaults
that a runner doing nothing special keeps."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable


class RunnerBase:
    """One batch through a model as one plan says. Subclasses set `batch` and implement `run`."""

    batch: object

    def prepare(self) -> None:
        """Untimed work before each round (a seed, the model's attention implementation)."""

    def run(self, stopwatch=None, new_tokens: int | None = None):
        raise NotImplementedError

    def setup_steps(self) -> list[tuple[str, Callable[[], object]]]:
        """One-off work still due before timing (compile, graph capture), each named by the
        metric its seconds are recorded as."""
        return []

    @property
    def setup_metrics(self) -> dict:
        """Where one-off figures are kept: on the shared decoder where there is one, so that
        every rung using it reports them."""
        return self.__dict__.setdefault("_setup_metrics", {})

    @property
    def decode_steps(self) -> int:
        """Decode steps a run makes; 0 where nothing is generated (one forward pass)."""
        return self.batch.new_tokens

    def count_steps(self, new_tokens: int):
        """A run shortened to `new_tokens` steps, for counting kernels per decode step."""
        self.prepare()
        return self.run(None, new_tokens)

    def outputs(self) -> dict:
        """What the last run produced besides its return value (logits, an image, waveforms),
        for the equality tests."""
        return {}

    def work(self) -> dict[str, float]:
        """FLOPs of the timed spans whose work the last run's output fixes, for TFLOP/s."""
        return {}

    def recorded(self) -> dict:
        """Facts of the last run's output a result keeps (names from the metrics table)."""
        return {}


@contextlib.contextmanager
def module_spans(stopwatch, modules: Iterable[tuple[object, str]]):
    """A span named `name` around every forward of each (module, name) while the block runs;
    nothing where the stopwatch keeps no spans. Spans of one name add up."""
    if stopwatch is None or not stopwatch.spans:
        yield
        return
    handles = []
    for module, name in modules:
        handles.append(module.register_forward_pre_hook(lambda *a, n=name: stopwatch.begin(n)))
        handles.append(module.register_forward_hook(lambda *a, n=name: stopwatch.end(n)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
