"""Timing: one clock per device, warm-up, and interleaved A/B rounds.

All timing in the suite goes through this module. On CUDA a run is timed with device events
recorded on the current stream (so host work between the events that leaves the GPU idle is
counted, as a user would feel it); on the CPU with perf_counter.
"""
from __future__ import annotations

import contextlib
import gc
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import device as _device
from .counters import compiled_graphs

# The host probe taken before each timed round (device.launch_overhead_us): 800 adds with its
# warm-up, off the clock (what it costs a round on a GPU host: docs/measured.md, "Chameleon T-I
# batch 16 gated at fe9c2b5: three rungs pass, eager does not"). Per round, because the host's
# speed moves within a loop of rounds, and a probe taken once after them can miss the window
# they ran in (docs/measured.md, "Chameleon 7B gated at b41795e: I-T and IT-T 16 of 16, T-I
# batch 1 with the unpadded step", and the section after it).
ROUND_PROBE_OPS, ROUND_PROBE_REPEATS = 200, 3


class Stopwatch:
    """Marks points of one run; `times_ms()` gives each mark's time since `start()`.

    Code under test calls `mark(name)` at phase boundaries (e.g. "first_token"); it costs one
    event record on CUDA and never synchronizes. With `spans=True` it also sums named spans
    (`begin(name)` ... `end(name)`, or `with span(name)`), reported as "span:<name>": the time
    each module took, summed over its calls. Spans are off in timed rounds (a span per decode
    step is two event records) and on in the one breakdown round.
    """

    def __init__(self, device: torch.device | str, spans: bool = False):
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._marks: list[tuple[str, object]] = []
        self.spans = spans
        self._open: dict[str, object] = {}
        self._spans: dict[str, list] = defaultdict(list)

    def _now(self):
        if self._cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self._marks = [("start", self._now())]

    def mark(self, name: str) -> None:
        self._marks.append((name, self._now()))

    def begin(self, name: str) -> None:
        if self.spans:
            self._open[name] = self._now()

    def end(self, name: str) -> None:
        if self.spans and name in self._open:
            self._spans[name].append((self._open.pop(name), self._now()))

    @contextlib.contextmanager
    def span(self, name: str):
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def stop(self) -> dict[str, float]:
        self.mark("end")
        return self.times_ms()

    def times_ms(self) -> dict[str, float]:
        if not self._marks:
            raise RuntimeError("Stopwatch was never started")
        t0 = self._marks[0][1]
        if self._cuda:
            self._marks[-1][1].synchronize()
            out = {name: float(t0.elapsed_time(ev)) for name, ev in self._marks[1:]}
            out |= {f"span:{k}": float(sum(a.elapsed_time(b) for a, b in v)) for k, v in self._spans.items()}
            return out
        out = {name: (t - t0) * 1e3 for name, t in self._marks[1:]}
        out |= {f"span:{k}": sum(b - a for a, b in v) * 1e3 for k, v in self._spans.items()}
        return out


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def release_compile_workers() -> None:
    """Shut down inductor's compile-worker processes once compiling is done.

    Idle workers stay alive for the rest of the process, beside host-bound eager code that
    is being timed. On an H100 host eager code timed slower after a compile than before one
    (docs/measured.md, "SeamlessM4T v2 large, batch 1", under "Measured on an H100"); eager's
    own swings there kept that effect from being isolated, but a timing process has no use
    for the workers. A later compile starts a new pool.
    """
    try:
        from torch._inductor.async_compile import shutdown_compile_workers
    except ImportError:   # pragma: no cover - older layouts
        return
    shutdown_compile_workers()


class Stopclock:
    """Host wall seconds of a `with` block, in `.s` once it ends: the cost of untimed work
    (warm-ups, breakdown rounds, counting), for planning runs, never a measurement of a case."""

    s: float = 0.0

    def __enter__(self) -> "Stopclock":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self._t0


def wall_seconds(fn: Callable[[], object], device) -> float:
    """Host wall time of a one-off step (compile, graph capture), device work included."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


class GcClock:
    """Wall time Python's cyclic garbage collector spent collecting while the block ran, and how
    many full (oldest-generation) collections it made. A host-bound round stalls for every
    collection, and a full one scans every live object the process holds (a model's modules,
    compiled graphs, earlier results), so the same round can take longer in a fuller process.
    The standard library's gc.callbacks say when each collection starts and stops; nothing
    else reports it."""

    def __enter__(self) -> "GcClock":
        self.ms, self.full, self._t0 = 0.0, 0, None
        gc.callbacks.append(self._on)
        return self

    def _on(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.ms += (time.perf_counter() - self._t0) * 1e3
            self.full += info.get("generation") == 2
            self._t0 = None

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._on)


# A run receives the stopwatch so it can mark phases; what it returns is kept from the last round.
Run = Callable[[Stopwatch], object]
Prepare = Callable[[], None]


@dataclass
class Variant:
    """One side of an A/B comparison: a run and the untimed preparation before each round."""

    name: str
    run: Run
    prepare: Prepare | None = None
    samples: list[dict[str, float]] = field(default_factory=list)
    output: object = None
    recompiles: int = 0
    # Per timed round, the share of its wall time the timing thread spent on a CPU: near 1 in a
    # host-bound round whose thread ran throughout (a slower round then means a slower CPU),
    # lower where it was descheduled, throttled or blocked in the kernel. CUDA's default sync
    # spins, so a GPU-bound round reads near 1 too; it says something only of host-bound rounds.
    on_cpu: list[float] = field(default_factory=list)
    # Per timed round, the milliseconds and full collections of Python's garbage collector (GcClock).
    gc_ms: list[float] = field(default_factory=list)
    gc_full: list[int] = field(default_factory=list)
    # Per timed round, the cores this process's other threads kept busy (process CPU time less
    # the timing thread's, over the wall time): a spinning worker pool, a profiler's or a
    # compiler's threads competing with the timing thread for the host, unseen by other_cores.
    own_threads: list[float] = field(default_factory=list)
    # Per timed round, the host's time per framework op probed right before it, off the clock.
    launch_us: list[float] = field(default_factory=list)

    def once(self, device, record: bool, spans: bool = False) -> dict[str, float]:
        if record:
            self.launch_us.append(_device.launch_overhead_us(device, ops=ROUND_PROBE_OPS, repeats=ROUND_PROBE_REPEATS))
        if self.prepare is not None:
            self.prepare()
        synchronize(device)
        graphs = compiled_graphs()
        sw = Stopwatch(device, spans=spans)
        cpu0, proc0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
        with GcClock() as collector:
            sw.start()
            out = self.run(sw)
            marks = sw.stop()
        cpu, proc, wall = time.thread_time() - cpu0, time.process_time() - proc0, time.perf_counter() - wall0
        if record:
            self.samples.append(marks)
            if wall > 0:
                self.on_cpu.append(min(cpu / wall, 1.0))
                self.own_threads.append(max(proc - cpu, 0.0) / wall)
            self.gc_ms.append(collector.ms)
            self.gc_full.append(collector.full)
            # Graphs compiled during timed rounds are recompiles; counted per variant, outside
            # the clock, since the variants of one loop share the compiler's counters.
            self.recompiles += compiled_graphs() - graphs
        self.output = out
        return marks

    def series(self, mark: str = "end") -> list[float]:
        return [s[mark] for s in self.samples]


@dataclass(frozen=True)
class Schedule:
    """How many rounds: at least `min_rounds`, then more until `max_rounds` or `budget_s`."""

    warmup: int = 1
    min_rounds: int = 3
    max_rounds: int = 20
    budget_s: float = 30.0


def interleave(variants: list[Variant], device, schedule: Schedule) -> None:
    """Warm each variant up, then time them in alternating order, round by round.

    The first variant is the reference: every round times it beside each variant still open, so
    a variant's i-th sample and the reference's i-th come from one round (a paired ratio). A
    variant closes once it has `min_rounds` and either `max_rounds` or `budget_s` of wall time
    spent on it and the reference in its rounds: with two variants that is the whole loop's
    time, and a rung timed in a group of rungs gets the rounds it would get alone. The
    reference runs while any other does. The order flips every round (A B C, C B A, ...) so
    that no side always runs right after another's cache or clock state.
    """
    for v in variants:
        for _ in range(schedule.warmup):
            v.once(device, record=False)
    ref, others = variants[0], variants[1:]
    spent = {id(v): 0.0 for v in variants}
    open_ = list(others)
    rounds = 0
    while rounds < schedule.max_rounds:
        active = [ref] + open_
        wall = {}
        for v in (active if rounds % 2 == 0 else list(reversed(active))):
            t0 = time.perf_counter()
            v.once(device, record=True)
            wall[id(v)] = time.perf_counter() - t0
        rounds += 1
        spent[id(ref)] += wall[id(ref)]
        for v in open_:
            spent[id(v)] += wall[id(v)] + wall[id(ref)]
        if rounds < schedule.min_rounds:
            continue
        open_ = [v for v in open_ if spent[id(v)] <= schedule.budget_s]
        if not open_ and (others or spent[id(ref)] > schedule.budget_s):
            break


class ReplayClock:
    """A clock for pytest-benchmark that replays samples measured elsewhere.

    pytest-benchmark times a callable with a host clock; our samples come from device events
    of an interleaved loop. Each `advance(seconds)` moves this clock forward by one sample, so
    `benchmark.pedantic(clock.advance, ...)` records exactly the measured durations.
    """

    def __init__(self) -> None:
        self._t = 0.0
        self._queue: list[float] = []

    def __call__(self) -> float:
        return self._t

    def load(self, seconds: list[float]) -> None:
        self._queue = list(seconds)

    def advance(self) -> None:
        self._t += self._queue.pop(0)


REPLAY_CLOCK = ReplayClock()
