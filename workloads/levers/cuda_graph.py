"""cuda_graph: the compiled decode step captured once and replayed as a CUDA graph."""
from .base import Lever
from .compile import STATIC_STEPS


def _why_not(ctx):
    if ctx.device.type != "cuda":
        return "CUDA graphs need a CUDA device (this run is on the CPU)"
    if not ctx.supports & STATIC_STEPS:
        return "the workload's engine has no static-cache decode step (or fixed-shape forward) to capture"
    return None


LEVER = Lever(
    "cuda_graph",
    "decode step replayed as one CUDA graph over a static KV cache",
    apply=lambda plan, ctx: plan.with_(engine="static", cuda_graph=True),
    why_not=_why_not,
    needs_cuda=True,
)
