"""A case's result, and the one table of what a result may hold.

Every figure a result carries is a row of METRICS: what it is, how a run's rounds are summed up
into it, whether a gate judges it, and whether a baseline entry keeps it. Adding a metric is a
row here plus the code that measures it; a result refuses a name that is not in the table.
"""
from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field

from .case import Case


@dataclass(frozen=True)
class Metric:
    name: str
    meaning: str
    summary: str = "value"   # "rounds": median, 95% CI and every timed round; "ratio": paired ratio of medians
    gate: str = ""           # which gate judges it ("" for none): see docs/gate.md
    stored: bool = False     # a baseline entry keeps it
    setup: bool = False      # one-off seconds of a shared decoder's setup, never in the timed rounds


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("levers", "the lever stack that ran, in the order it applies"),
    Metric("prompt_lengths", "each row's input length"),
    Metric("new_tokens", "decode steps a run makes (0: one forward pass)"),
    Metric("rounds", "timed rounds"),
    Metric("latency_ms", "end-to-end latency of a round", "rounds", "latency", True),
    Metric("ttft_ms", "time to the first token", "rounds", stored=True),
    Metric("tpot_ms", "time per output token after the first", "rounds", "targets", True),
    Metric("reference_latency_ms", "the eager rounds timed beside this rung (paired with its own)", "rounds"),
    Metric("speedup", "eager's latency over this rung's, paired by round", "ratio", "speedup floor, targets", True),
    Metric("peak_memory", "peak device memory of its warm-up round", stored=True),
    Metric("reference_peak_memory", "the eager reference's peak"),
    Metric("build_s", "seconds to build the model, weights included", stored=True),
    Metric("compile_s", "seconds to compile the shared decoder", stored=True, setup=True),
    Metric("capture_s", "seconds to capture its CUDA graph", stored=True, setup=True),
    Metric("vocoder_setup_s", "seconds to compile (and capture) the vocoder's first length bucket", stored=True,
           setup=True),
    Metric("untimed_s", "seconds outside the timed rounds and setup: warm-up, breakdown, counting", stored=True),
    Metric("agreement", "fraction of output tokens equal to eager's (bf16 paths may diverge)"),
    Metric("modules_ms", "ms per module span in one instrumented round, eager's side and the lever's"),
    Metric("module_speedup", "eager over lever per module group", gate="targets", stored=True),
    Metric("operators_ms", "ms per kind of operator in one profiled round, each side, and the GPU's idle ms "
                           "(the timed median less the kernels)"),
    Metric("span_tflops", "TFLOP/s of the spans whose work is counted, per side"),
    Metric("matmul_peak_tflops", "bf16 matmul throughput measured on the same GPU"),
    Metric("audio_samples", "samples of each row's waveform"),
    Metric("attention_calls", "attention calls of one denoising step: their number, the query lengths of self- "
                              "and cross-attention in call order, and the cross-attention key lengths"),
    Metric("attention_scores", "diffusion: the largest attention score tensor of a denoising step, rows x heads x "
                               "query x key in the UNet's dtype (the paper's O(L^4) formula), and where a rung differs "
                               "from eager by its attention alone, eager's peak memory less its own"),
    Metric("intensity", "FLOPs of a decode step over the bytes it must move (arithmetic intensity), and the "
                        "device's ridge point: measured matmul peak over measured copy bandwidth (GPU only)"),
    Metric("counters", "graphs, graph breaks, recompiles, kernels and launches per step or run", gate="exact",
           stored=True),
    Metric("compiler", "what inductor and AOTAutograd did while compiling (cache hits, timed choices)"),
    Metric("gpu_ms", "GPU time: the kernels' summed durations, per decode step, once a run, and a whole run",
           gate="gpu time", stored=True),
    Metric("kernel_names", "kernels per step or run by name", stored=True),
    Metric("host", "the host's speed and load during the rounds, and the host-bound shares", stored=True),
    Metric("roofline", "bytes a decode step moves over the measured copy bandwidth, against the TPOT", gate="targets",
           stored=True),
    Metric("gpu_state", "clocks, power, temperature, throttle reasons", stored=True),
    Metric("provenance", "code, libraries, hardware and time of the run", stored=True),
    Metric("timed_alone_after_oom", "timed in a loop of its own after its input's rungs ran out of memory together"),
)}

SETUP_METRICS = tuple(name for name, m in METRICS.items() if m.setup)


class UnknownMetric(KeyError):
    pass


def _check(name: str) -> str:
    if name not in METRICS:
        raise UnknownMetric(f"{name!r} is not in workloads.result.METRICS: add a row there for a new metric")
    return name


@dataclass
class Result(MutableMapping):
    """One case's figures. Read as a mapping it is the JSON a case log, pytest-benchmark's
    extra_info and the gate see: the case's fields, then its metrics."""

    case: Case
    device_class: str
    metrics: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in self.metrics:
            _check(name)

    @property
    def _identity(self) -> dict:
        c = self.case
        return {"case": c.id, "workload": c.workload, "model": c.model, "task": c.task, "scale": c.scale,
                "lever": c.lever, "batch": c.batch, "device_class": self.device_class}

    def __getitem__(self, key: str):
        identity = self._identity
        return identity[key] if key in identity else self.metrics[key]

    def __setitem__(self, key: str, value) -> None:
        self.metrics[_check(key)] = value

    def __delitem__(self, key: str) -> None:
        del self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._identity
        yield from self.metrics

    def __len__(self) -> int:
        return len(self._identity) + len(self.metrics)

    def to_json(self) -> dict:
        return dict(self)
