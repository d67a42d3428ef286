"""What the diffusion engines share.

Their runners of the library's path: a model that the other rungs of a case run too, so each
round sets the plan's attention implementation on it, and the attention calls of one denoising
step, which depend on the batch's shapes alone, recorded once.

Their lean engines (the compile, cuda_graph and quant rungs): copies of the networks made
channels-last with fused QKV projections where diffusers can fuse them, a guided noise
prediction over fixed-address buffers that compiles as one graph and replays as one CUDA
graph, and the runner that times them. A workload's engine writes its pipeline's loop around
these; the schedulers' updates stay eager, between the steps.
"""
from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from ..models.diffusion import largest_scores
from .cache import DecoderCache
from .graphs import capture_graph, compile_own, decode_step_options, warm_on_side_stream
from .plan import Plan
from .runner import RunnerBase

T = TypeVar("T")


def score_record(unet, batch) -> dict:
    """The paper's formula for the memory of the largest attention score tensor of a step
    (seed paper 2, Sec. V-A: O(L^4) in the latent's side L): its rows x heads x query x key
    elements in the UNet's dtype, which the classic (eager) processor materializes and fused
    attention does not. The measured counterpart, eager's peak less the fused rung's, is added
    where the result is assembled (run/assemble.py), beside the peaks."""
    dims = tuple(int(d) for d in batch.latents.shape[2:])   # (H, W), or (frames, H, W)
    top = largest_scores(unet, dims, context=batch.input_ids.shape[-1], rows=2 * batch.batch)
    dtype_bytes = unet.dtype.itemsize
    return top | {"image": [int(batch.height), int(batch.width)], "latent": list(dims), "dtype_bytes": dtype_bytes,
                  "formula_bytes": top["elements"] * dtype_bytes}


def shape_records(kind, model, batch) -> dict:
    """What a step's shapes alone decide, for a runner or engine class `kind` (its family's
    `attention_record` and `unet_of`): the attention calls, and the score formula where sized."""
    out = {"attention_calls": kind.attention_record(model, batch)}
    if kind.unet_of is not None:
        out["attention_scores"] = score_record(kind.unet_of(model), batch)
    return out


class SharedModelRunner(RunnerBase):
    """Subclasses set `set_attention(model, implementation)` and `attention_record(model,
    batch)` (the family's and the engine's) and implement `run` and `outputs`."""

    set_attention = None
    attention_record = None
    unet_of = None   # the network whose attention scores are sized (None: not recorded)

    def __init__(self, model, batch, attn_implementation: str = "eager"):
        self.model = model
        self.batch = batch
        self.attn_implementation = attn_implementation
        self._records = None

    def prepare(self) -> None:
        # The model is shared with the other rungs of the case: each sets what it needs.
        type(self).set_attention(self.model, self.attn_implementation)

    def recorded(self) -> dict:
        if self._records is None:
            self._records = shape_records(type(self), self.model, self.batch)
        return self._records


# -- the lean engines the compile, cuda_graph and quant rungs run ---------------------------
# What a lean engine is built from: a compile and a cuda_graph rung of one batch share it.
LEAN_FIELDS = ("attn_implementation", "compile", "compile_options", "quant")


def lean_engine(kind: str, model, shape: tuple, plan: Plan, decoders: DecoderCache, build: Callable[[], T]) -> T:
    return decoders.get(kind, model, shape, plan, LEAN_FIELDS, build)


def channels_last(net: nn.Module) -> nn.Module:
    """`net`'s convolution weights channels-last: 2-D ones as channels_last, a UNet3D's temporal
    (3-D) ones as channels_last_3d. `Module.to(memory_format=channels_last)` would fail on the
    5-D weights, which have no 4-D layout."""
    for p in net.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
        elif p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return net


def fuses_qkv(net: nn.Module) -> bool:
    """Whether diffusers fuses `net`'s attention projections: not where a processor adds keys
    and values of its own (DeepFloyd IF's text tokens), which `fuse_qkv_projections` refuses."""
    return hasattr(net, "fuse_qkv_projections") and not any(
        "Added" in type(p).__name__ for p in net.attn_processors.values())


def lean_copy(net: nn.Module, plan: Plan, set_attention: Callable[[nn.Module, str], None], *,
              fuse_qkv: bool = False) -> nn.Module:
    """A copy of a network of the shared model, as the lean engine runs it: the plan's attention
    processors, and compiled, channels-last with fused QKV projections (diffusers' own fast
    path) where `fuse_qkv` asks and diffusers can. The shared model keeps its layout and its
    processors, which the eager and sdpa rungs beside it run."""
    net = copy.deepcopy(net)
    set_attention(net, plan.attn_implementation)
    if plan.compile:
        channels_last(net)
        # Fused projections run through FusedAttnProcessor2_0, an SDPA processor: the classic
        # processor of the eager rung has no fused form.
        if fuse_qkv and plan.attn_implementation == "sdpa" and fuses_qkv(net):
            net.fuse_qkv_projections()
    return net


def cfg_mix(eps: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance over a doubled batch (empty prompts' rows first)."""
    uncond, text = eps.chunk(2)
    return uncond + scale * (text - uncond)


class StaticStep:
    """One guided noise prediction over buffers with fixed addresses: the UNet over the doubled
    batch `x` at timestep `t` with the text states `embeds` (and `labels`, a class embedding's
    input, where the UNet has one), mixed by `mix(eps, scale)` into `out`. The caller copies
    each step's input in and reads `out`; compiled, it is one graph (fullgraph, static shapes)
    under a code object of its own; captured, one CUDA graph replayed a step."""

    def __init__(self, unet: nn.Module, x: torch.Tensor, embeds: torch.Tensor, out: torch.Tensor,
                 mix: Callable[[torch.Tensor, float], torch.Tensor], scale: float, labels: torch.Tensor | None = None):
        self.unet, self.x, self.embeds, self.out, self.mix, self.scale = unet, x, embeds, out, mix, scale
        self.t = torch.zeros((), dtype=torch.long, device=x.device)
        self.extra = {} if labels is None else {"class_labels": labels}
        self.fn, self.graph = self._step, None

    def _step(self) -> None:
        eps = self.unet(self.x, self.t, encoder_hidden_states=self.embeds, return_dict=False, **self.extra)[0]
        self.out.copy_(self.mix(eps, self.scale))

    def compile(self, inductor_options: dict) -> None:
        self.fn = compile_own(StaticStep._step, self, fullgraph=True, dynamic=False,
                              options=decode_step_options(inductor_options))

    def capture(self) -> None:
        warm_on_side_stream(self.fn)
        self.graph, _ = capture_graph(self.fn)

    def __call__(self, t: torch.Tensor, use_graph: bool = False) -> torch.Tensor:
        self.t.copy_(t)
        if use_graph:
            self.graph.replay()
        else:
            self.fn()
        return self.out


def compiled_call(fn: Callable, obj, plan: Plan) -> Callable:
    """`fn` bound to `obj`, compiled as one graph where the plan compiles (an autoencoder's decode)."""
    if not plan.compile:
        return types.MethodType(fn, obj)
    return compile_own(fn, obj, fullgraph=True, dynamic=False, options=decode_step_options(plan.inductor_options))


class LeanDenoiser:
    """What a workload's lean engine shares with the others: its shared model and batch, its
    static steps (each captured for the cuda_graph rung), one warm-up run that compiles them,
    and the one-off figures every rung on it reports. Subclasses set `steps`, `compiled`,
    `quant`, `warm_tokens` and implement `run(stopwatch, new_tokens, use_graph=...)` and
    `outputs()`; `set_attention(model, implementation)` and `attention_record(model, batch)`
    are the family's and the engine's."""

    set_attention = None
    attention_record = None
    unet_of = None   # the network whose attention scores are sized (None: not recorded)
    warm_tokens = 1

    def __init__(self, model, batch, plan: Plan):
        self.model, self.batch = model, batch
        self.compiled, self.quant = plan.compile, None
        self.steps: tuple[StaticStep, ...] = ()
        self.warmed, self.records = False, None
        self.setup_metrics: dict = {}

    @property
    def captured(self) -> bool:
        return bool(self.steps) and all(s.graph is not None for s in self.steps)

    @torch.no_grad()
    def warm(self) -> None:
        """A short run, so that compilation happens here and not in a timed round."""
        self.run(new_tokens=self.warm_tokens)
        self.warmed = True

    @torch.no_grad()
    def capture(self) -> None:
        for s in self.steps:
            s.capture()

    def run(self, stopwatch=None, new_tokens: int | None = None, *, use_graph: bool = False):
        raise NotImplementedError

    def outputs(self) -> dict:
        raise NotImplementedError

    def work(self) -> dict[str, float]:
        return {}

    def recorded(self) -> dict:
        if self.records is None:
            self.records = shape_records(type(self), self.model, self.batch)
        return self.records


class DenoiseRunner(RunnerBase):
    """A lean denoiser in one mode (graph replay or not), with the runner interface the harness times."""

    def __init__(self, den: LeanDenoiser, use_graph: bool, attn_implementation: str):
        self.den, self.use_graph, self.attn_implementation = den, use_graph, attn_implementation

    @property
    def batch(self):
        return self.den.batch

    @property
    def setup_metrics(self) -> dict:
        return self.den.setup_metrics

    def prepare(self) -> None:
        # The text encoder is the shared model's own, shared with the rungs beside this one.
        type(self.den).set_attention(self.den.model, self.attn_implementation)

    def setup_steps(self) -> list[tuple[str, object]]:
        steps = []
        if self.den.compiled and not self.den.warmed:
            steps.append(("compile_s", self.den.warm))
        if self.use_graph and not self.den.captured:
            steps.append(("capture_s", self.den.capture))
        return steps

    def run(self, stopwatch=None, new_tokens: int | None = None):
        return self.den.run(stopwatch, new_tokens, use_graph=self.use_graph)

    def outputs(self) -> dict:
        return self.den.outputs()

    def work(self) -> dict[str, float]:
        return self.den.work()

    def recorded(self) -> dict:
        return self.den.recorded()
