"""compile: static KV cache and one torch.compile'd decode step (no CUDA graph yet)."""
from .base import Lever

# What an engine can compile as one graph: a decode step over a static KV cache, a denoising
# step's noise prediction over fixed-address latents, or (for a workload that generates
# nothing) its whole forward over fixed-address inputs.
STATIC_STEPS = frozenset({"static_decode", "static_denoise", "static_forward"})


# Without the static CUDA launcher: kernels it loads from a warm compile cache drop what coordinate
# descent chose (pytorch#172819), so every process tuned again and kept a different winner, its
# step's GPU time moving 6% between two processes of one host (docs/measured.md, "Tuned kernels
# kept across processes").
TUNED = {"coordinate_descent_tuning": True, "use_static_cuda_launcher": False}


def _apply(plan, ctx):
    # Coordinate-descent tuning of inductor's Triton kernels pays where one compiled step is most
    # of the run (docs/measured.md, "Measured on an H100"); the CPU backend ignores it.
    options = TUNED if ctx.device.type == "cuda" and ctx.tuning else {}
    return plan.with_(engine="static", compile=True, compile_options=options, compiles=True)


def _why_not(ctx):
    if not ctx.supports & STATIC_STEPS:
        return "the workload's engine has no static-cache decode step (or fixed-shape forward) to compile"
    return None


LEVER = Lever("compile", "static KV cache + torch.compile(fullgraph) of the decode step", _apply, _why_not)
