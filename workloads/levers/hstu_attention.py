"""memory_efficient / fused: HSTU's attention without the materialized N x N scores.

Seed paper 1, Section V (SDPA results): HSTU's own memory-efficient attention (blockwise,
skipping padding) and a kernel fusing the relative-bias construction with the grouped GEMMs
gave 2.11x at batch 1 and 9.87x at max batch, up to 15x on 8K sequences. SDPA itself does not
apply: HSTU's attention has no softmax.
"""
from .base import Lever


def _why_not(ctx):
    if "jagged_attention" not in ctx.supports:
        return "the workload has no HSTU (pointwise, jagged) attention to replace"
    return None


def _why_not_fused(ctx):
    if ctx.device.type != "cuda":
        return "the fused Triton kernel needs a CUDA device (this run is on the CPU; its arithmetic is tested on the CPU under Triton's interpreter)"
    return _why_not(ctx)


MEMORY_EFFICIENT = Lever(
    "memory_efficient",
    "blockwise jagged attention in PyTorch: no padding, no N x N tensor",
    apply=lambda plan, ctx: plan.with_(attn_implementation="memory_efficient"),
    why_not=_why_not,
)
FUSED = Lever(
    "fused",
    "one Triton kernel over the jagged layout with the relative bias built in the kernel",
    apply=lambda plan, ctx: plan.with_(attn_implementation="fused"),
    why_not=_why_not_fused,
    needs_cuda=True,
)
