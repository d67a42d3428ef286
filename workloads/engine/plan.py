"""A generation plan: how to run a model, as the levers leave it. Levers write it, engines read it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Plan:
    attn_implementation: str = "eager"   # transformers' attention implementation
    engine: str = "library"              # "library": the model library's own generate; "static": our lean loop
    compile: bool = False                # torch.compile the decode step
    compile_options: dict = field(default_factory=dict, hash=False, compare=False)   # inductor options
    cuda_graph: bool = False             # replay the decode step as one CUDA graph
    kv_reorder: bool = False             # beam search: reorder the self-attention cache in place, skip cross-attention
    vocoder: str = "eager"               # "eager" | "compile" | "cuda_graph": how the waveform generator runs
    vocoder_options: dict = field(default_factory=dict, hash=False, compare=False)   # inductor options for it
    vocoder_conv2d: bool = False         # its 1-D convolutions as channels-last 2-D ones (compiled paths)
    levers: tuple[str, ...] = ()         # the stack that produced this plan, in order

    def with_(self, **changes) -> "Plan":
        return replace(self, **changes)
