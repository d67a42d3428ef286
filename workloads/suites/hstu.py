"""HSTU: one forward pass over jagged user histories ranks a candidate and retrieves items.

Nothing is generated, so there is no first token and no decode step: a case's latency is the
forward's, and its breakdown is attention against the rest (seed paper 1, Fig. 4).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.cache import DecoderCache
from ..engine.plan import Plan
from ..engine.recommend import HSTURunner, StaticForward
from ..models import hstu
from ..models.common import Preset
from ..tasks import history
from .base import Family

# What the static forward is built from: the compile and cuda_graph rungs share it.
STATIC_FORWARD = ("attn_implementation", "compile", "compile_options")


@dataclass
class RecommenderWorkload(Family):
    name: str = "hstu"
    family: object = hstu
    tasks: dict = field(default_factory=lambda: dict(history.TASKS))
    # Seed paper 1, Section V: the attention without the N x N tensor, then fused with the
    # bias; torch.compile and CUDA graphs on top of the best of them.
    ladder: tuple[str, ...] = ("eager", "memory_efficient", "fused", "compile", "cuda_graph")
    pr_levers: tuple[str, ...] = ("eager", "fused", "cuda_graph")
    # The sweep's two ends: the shortest history runs the code the longer ones do.
    pr_tasks: tuple[str, ...] = ("H-A", "H-A-8K")
    sources: tuple[str, ...] = (   # see suites.foreign_sources
        "workloads/models/hstu.py", "workloads/tasks/history.py", "workloads/engine/hstu_attention.py",
        "workloads/engine/hstu_triton.py", "workloads/engine/recommend.py", "workloads/levers/hstu_attention.py",
        "workloads/suites/hstu.py", "perf_tests/test_hstu.py",
    )
    compile_tuning: bool = False   # the fused kernel is ours, not inductor's: tuning would tune only the dense layers
    module_groups: dict = field(default_factory=lambda: {
        "attention": ("attention",), "dense": ("dense",), "embedding": ("embedding",), "heads": ("heads",),
    })
    share_spans: tuple = ("attention", ("embedding", "dense", "attention", "heads"))   # attention's share of the forward
    max_batch_size: int = history.MAX_BATCH

    def supports_for(self, task: str) -> frozenset[str]:
        return frozenset({"jagged_attention", "static_forward"})

    def cache_group(self, task: str) -> str:
        return task   # every task draws its own lengths: nothing compiled is shared between tasks

    def inputs(self, task: str, scale: str, batch: int, model, device) -> history.HistoryBatch:
        cfg = model.config
        b = history.make_batch(task, scale, batch, num_items=cfg.num_items, num_actions=cfg.num_actions,
                               max_len=cfg.max_seq_len, limit=cfg.truncate_to if cfg.truncated_layers else None)
        hstu.check_lengths(cfg, b.lengths)
        history.check_timestamps(b.timestamps)
        return b.to(device)

    def max_batch(self, preset: Preset, task: str) -> int:
        """Table III's 32 at every scale: the eager reference's largest scores tensor at 8K,
        (32, 4, 8192, 8192) in bf16, is 17 GiB, which an 80 GB GPU holds."""
        return self.max_batch_size

    def runner(self, model, batch, plan: Plan, decoders: DecoderCache):
        if not (plan.compile or plan.cuda_graph):
            return HSTURunner(model, batch, attn_implementation=plan.attn_implementation)

        def build():
            static = StaticForward(model, batch, attn_implementation=plan.attn_implementation, bucketed=True)
            if plan.compile:
                static.compile(**plan.inductor_options)
            return static

        static = decoders.get("hstu", model, (batch.task, batch.batch), plan, STATIC_FORWARD, build,
                              fits=lambda s: s.fits(batch))
        static.load(batch)
        return HSTURunner(model, batch, attn_implementation=plan.attn_implementation, static=static,
                          use_graph=plan.cuda_graph)

    def decode_bytes(self, model, batch) -> float | None:
        return None   # no decode step: no per-token roofline


WORKLOAD = RecommenderWorkload()
