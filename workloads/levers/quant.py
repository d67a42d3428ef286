"""quant: the linear layers' weights and activations quantized dynamically with torchao, on the
copy of the network the engine runs (diffusers' own fast path for SDXL ends with it). The
engine picks the scheme from its device (engine/quantize.py): float8 where the GPU has float8
matmuls, else int8. Not exact: its tests hold it to a quality bound, not to eager's output.
"""
from __future__ import annotations

import importlib.util

from .base import Lever


def _why_not(ctx):
    if "quantize" not in ctx.supports:
        return "the workload's engine has no quantized path (it needs a copy of the network to quantize)"
    if importlib.util.find_spec("torchao") is None:
        return "quant needs torchao, which is not installed (pip install torchao)"
    return None


LEVER = Lever(
    "quant",
    "torchao dynamic quantization of the linear layers (float8 on GPUs that have it, else int8)",
    apply=lambda plan, ctx: plan.with_(engine="static", quant="dynamic"),
    why_not=_why_not,
)
