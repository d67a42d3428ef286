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
    # The paper compiles with mode="max-autotune": its Triton convolution templates beat
    # cuDNN on these narrow 1-D convolutions (14.1 -> 9.0 ms per graph replay on an H100).
    return {"max_autotune": True} if ctx.device.type == "cuda" else {}


COMPILE = Lever(
    "vocoder_compile",
    "torch.compile of the vocoder's convolution stack, per length bucket",
    apply=lambda plan, ctx: plan.with_(engine="static", vocoder="compile", vocoder_options=_options(ctx)),
    why_not=_why_not_compile,
)
CUDA_GRAPH = Lever(
    "vocoder_cuda_graph",
    "the compiled vocoder replayed as one CUDA graph per length bucket",
    apply=lambda plan, ctx: plan.with_(engine="static", vocoder="cuda_graph",
                                       vocoder_options=plan.vocoder_options or _options(ctx)),
    why_not=_why_not_graph,
    needs_cuda=True,
)
# The 1-D rungs leave cuDNN's benchmark mode (timing each convolution's algorithms) off: PyTorch
# caches the chosen cuDNN plan per process under a key without that flag, so the first rung to run
# a shape would fix the plan for every other rung timed beside it, eager's included. The 2-D rung
# turns it on around its own calls: its channels-last shapes are keys no other rung runs.
# Beyond the paper's Table V: graphed, the vocoder no longer waits on launches (S-S with
# vocoder_cuda_graph is 9% host-bound as a whole on an H200, docs/measured.md) and what is left is its
# convolution kernels; 1-D convolutions get none of the channels-last kernels 2-D ones get.
CONV2D = Lever(
    "vocoder_conv2d",
    "the vocoder's 1-D convolutions as channels-last 2-D convolutions with cuDNN's timed plans, compiled "
    "(and graphed where stacked on it)",
    # Inductor's default mode: max-autotune would benchmark convolution templates for every 2-D
    # convolution shape of the stack, in every length bucket.
    apply=lambda plan, ctx: plan.with_(engine="static", vocoder=plan.vocoder if plan.vocoder != "eager" else "compile",
                                       vocoder_options={}, vocoder_conv2d=True),
    why_not=_why_not_compile,
)
