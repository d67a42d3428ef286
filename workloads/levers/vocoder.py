"""vocoder_compile / vocoder_cuda_graph / vocoder_conv2d: the waveform generator compiled, then
replayed as a CUDA graph, then with its 1-D convolutions run as channels-last 2-D ones.

A unit vocoder (HiFi-GAN) is a stack of many small convolutions: in eager mode at batch 1 it is
launch-bound. Seed paper 1 (Table V, Fig. 7) reports 18.4x from compiling it and 30x with CUDA
graphs. Unit counts vary with the text, so compiled shapes are length buckets.
"""
from .base import Lever


def _why_not_compile(ctx):
    if "vocoder" not in ctx.supports:
        return "this task produces no speech: there is no vocoder to compile"
    return None


def _why_not_graph(ctx):
    if ctx.device.type != "cuda":
        return "CUDA graphs need a CUDA device (this run is on the CPU)"
    return _why_not_compile(ctx)


def _options(ctx):
    # The paper compiles with mode="max-autotune": its Triton convolution templates beat cuDNN on
    # these narrow 1-D convolutions (docs/measured.md, "SeamlessM4T v2 large, batch 1").
    return {"max_autotune": True} if ctx.device.type == "cuda" else {}


def _vocoder(plan, mode: str, options: dict, **more):
    return plan.with_(engine="static", compiles=True).with_extras(vocoder=mode, vocoder_options=options, **more)


def _compiled_mode(plan) -> str:
    """The mode the rungs below left the vocoder in, at least compiled."""
    mode = plan.extra("vocoder", "eager")
    return "compile" if mode == "eager" else mode


COMPILE = Lever(
    "vocoder_compile",
    "torch.compile of the vocoder's convolution stack, per length bucket",
    apply=lambda plan, ctx: _vocoder(plan, "compile", _options(ctx)),
    why_not=_why_not_compile,
)
CUDA_GRAPH = Lever(
    "vocoder_cuda_graph",
    "the compiled vocoder replayed as one CUDA graph per length bucket",
    apply=lambda plan, ctx: _vocoder(plan, "cuda_graph", plan.extra("vocoder_options") or _options(ctx)),
    why_not=_why_not_graph,
    needs_cuda=True,
)
# The 1-D rungs leave cuDNN's benchmark mode off: PyTorch caches the chosen cuDNN plan per
# process under a key without that flag, so the first rung to run a shape would fix the plan for
# every rung timed beside it, eager's included. The 2-D rung turns it on around its own calls:
# its channels-last shapes are keys no other rung runs. Beyond the paper's Table V: graphed, the
# vocoder waits on its convolution kernels, not launches, and PyTorch's channels-last kernels
# exist for 2-D convolutions only (docs/measured.md, "SeamlessM4T v2's vocoder alone").
CONV2D = Lever(
    "vocoder_conv2d",
    "the vocoder's 1-D convolutions as channels-last 2-D convolutions with cuDNN's timed plans, compiled "
    "(and graphed where stacked on it)",
    # Inductor's default mode: max-autotune would benchmark convolution templates for every 2-D
    # convolution shape of the stack, in every length bucket.
    apply=lambda plan, ctx: _vocoder(plan, _compiled_mode(plan), {}, vocoder_conv2d=True),
    why_not=_why_not_compile,
)
