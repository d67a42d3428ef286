"""Adding a workload needs no edit inside workloads/: a toy one (its model, task and suite are
the few lines below) registered in the registry runs its ladder through the scheduling, the
result assembly and the gate on the CPU, and the levers apply to it as to any other."""
import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from workloads import gate
from workloads.engine.cache import DecoderCache
from workloads.engine.plan import Plan
from workloads.engine.runner import RunnerBase
from workloads.models.common import CheckpointError, Preset
from workloads.run.schedule import run_case
from workloads.run.session import Session
from workloads.suites import WORKLOADS, Runner, Workload
from workloads.suites.matrix import matrix

CPU = torch.device("cpu")
PRESET = Preset("toy-tiny", "tiny", {"dim": 32, "heads": 2}, source="this test")


# -- the model: one attention block, applied once per step (a denoiser's shape) -------------------
class ToyModel(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.qkv, self.out, self.heads = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads
        self.attn_implementation = "eager"

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if self.attn_implementation == "sdpa":
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
        return x + self.out(a.transpose(1, 2).reshape(B, N, D))


# -- the task: seeded inputs, a fixed number of steps ----------------------------------------------
@dataclass
class ToyBatch:
    x: torch.Tensor
    new_tokens: int = 4

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def prompt_lengths(self) -> list[int]:
        return [self.x.shape[1]] * self.batch


# -- the suite: a runner per plan, and the workload's facts --------------------------------------------
class ToyRunner(RunnerBase):
    def __init__(self, model, batch, plan):
        self.model, self.batch, self.plan = model, batch, plan
        self.step = torch.compile(model, fullgraph=True, dynamic=False) if plan.compile else model
        self.warmed = not plan.compile

    def setup_steps(self):
        return [] if self.warmed else [("compile_s", self._warm)]

    def _warm(self):
        self.prepare()
        self.run()
        self.warmed = True

    def prepare(self):
        self.model.attn_implementation = self.plan.attn_implementation

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens=None):
        x = self.batch.x
        for i in range(new_tokens or self.batch.new_tokens):
            if stopwatch is not None:
                stopwatch.begin("step")
            x = self.step(x)
            if stopwatch is not None:
                stopwatch.end("step")
                stopwatch.mark("first_token") if i == 0 else None
        self.last = x
        return x.argmax(-1)

    def outputs(self):
        return {"x": self.last}


@dataclass
class ToyWorkload:
    name: str = "toy"
    tasks: dict = field(default_factory=lambda: {"X-X": None})
    ladder: tuple = ("eager", "sdpa", "compile")
    pr_levers: tuple = ("eager",)
    pr_tasks: tuple = ()
    operator_groups: dict = field(default_factory=dict)
    sources: tuple = ()
    compile_tuning: bool = False
    module_groups: dict = field(default_factory=lambda: {"steps": ("step",)})
    share_spans: tuple | None = None

    def models(self):
        return (PRESET.name,)

    def tasks_at(self, scale):
        return tuple(self.tasks)

    def levers_for(self, task):
        return None

    def presets(self, scale):
        return [PRESET] if scale == PRESET.scale else []

    def preset(self, name):
        return PRESET

    def build(self, preset, device, checkpoint=None):
        torch.manual_seed(0)
        return ToyModel(**preset.config).to(device).eval()

    def check_checkpoint(self, path):
        raise CheckpointError(f"{path}: the toy model loads no checkpoints")

    def supports_for(self, task):
        return frozenset({"static_forward"})

    def cache_group(self, task):
        return task

    def inputs(self, task, scale, batch, model, device):
        return ToyBatch(torch.randn(batch, 16, 32, generator=torch.Generator().manual_seed(batch)).to(device))

    def max_batch(self, preset, task):
        return 2

    def runner(self, model, batch, plan, decoders):
        return ToyRunner(model, batch, plan)

    def decode_bytes(self, model, batch):
        return None

    def step_flops(self, model, batch):
        return None


@pytest.fixture
def toy(monkeypatch):
    wl = ToyWorkload()
    monkeypatch.setitem(WORKLOADS, wl.name, wl)
    return wl


def test_a_toy_workload_follows_the_protocols(toy):
    assert isinstance(toy, Workload)
    model = toy.build(PRESET, CPU)
    assert isinstance(toy.runner(model, toy.inputs("X-X", "tiny", 1, model, CPU), Plan(), DecoderCache()), Runner)


def test_a_toy_workload_runs_its_ladder_and_is_gated(toy, tmp_path):
    cases = matrix("toy", toy.ladder, "tiny")
    assert [c.id for c in cases] == [f"toy-tiny/X-X/{lever}/tiny/bs{bs}" for bs in (1, 2) for lever in toy.ladder]
    assert [c.marks for c in cases[:3]] == [("pr",), (), ()]
    session = Session(CPU)
    session.plan(cases)
    results = {c.lever + str(c.batch): run_case(c, session) for c in cases}
    for key, r in results.items():
        assert (r["workload"], r["model"], r["task"], r["scale"]) == ("toy", "toy-tiny", "X-X", "tiny")
        assert r["latency_ms"]["median"] > 0 and r["tpot_ms"]["median"] > 0 and r["new_tokens"] == 4
        assert "step" in r["modules_ms"]["eager"]
        assert (r["speedup"] is None) == key.startswith("eager")
    compiled = results["compile1"]
    assert compiled["counters"] == {"recompiles": 0, "graphs": 1, "graph_breaks": 0}
    assert compiled["compile_s"] > 0 and compiled["module_speedup"]["steps"] > 0
    assert results["sdpa1"]["reference_latency_ms"]["samples"] == results["eager1"]["latency_ms"]["samples"][
        :results["sdpa1"]["rounds"]]   # one loop for the input's rungs
    for r in results.values():
        assert gate.judge(r, root=tmp_path, update_baselines=True, requirements=[]).gate == "updated"
        assert gate.judge(r, root=tmp_path, update_baselines=False, requirements=[]).gate == "pass (counters)"
    entry = gate.load(tmp_path / "cpu" / "tiny.json")["cases"]["toy-tiny/X-X/compile/tiny/bs1"]
    assert entry["counters"]["graphs"] == 1 and entry["compile_s"] > 0
    # A declared target the case has never met is reported with its gap, not failed; one its
    # entry met (the entry keeps module speedups) gates the next run.
    cid = "toy-tiny/X-X/compile/tiny/bs1"
    far = [dict(case=cid, device_class="cpu", min_module_speedup={"steps": 1e6}, why="far off")]
    v = gate.judge(compiled, root=tmp_path, update_baselines=False, requirements=far)
    assert v.gate == "pass (counters)" and not v.failures and "a target not met yet" in v.targets[0]
    met = [dict(case=cid, device_class="cpu", min_module_speedup={"steps": entry["module_speedup"]["steps"]}, why="met")]
    slower = dict(compiled) | {"module_speedup": {"steps": entry["module_speedup"]["steps"] / 2}}
    v = gate.judge(slower, root=tmp_path, update_baselines=False, requirements=met)
    assert v.gate == "FAIL" and v.failures[0].endswith("its baseline entry met this target, so it gates")
