"""Runs latent diffusion for the harness: CLIP text encoding, guided denoising steps of the UNet,
and the autoencoder's decoder, through diffusers' own StableDiffusionPipeline.

How diffusion maps onto the decode-step protocol: a denoising step (one UNet evaluation over
the doubled batch, the guidance mix and the scheduler's update) is the "decode step". The run
marks `first_token` when the first step's latents are out (text encoding and one step: TTFT),
`decode_end` when the last step's are (so TPOT is the time per denoising step), and the
autoencoder's decode follows, as a vocoder follows Seamless's decoder. `count_steps(n)` runs
exactly n UNet evaluations, so the harness counts kernels per denoising step by difference.

The prompts are encoded here, once over the 2B rows (prompts, then empty prompts), and handed to
the pipeline as embeddings: the pipeline encodes with a tokenizer, and the token ids are the
task's. The starting noise is the batch's, so every lever denoises the same latents.

`Denoiser` is the lean engine the compile and cuda_graph rungs run: the pipeline's loop written
out over fixed-address buffers, so that the noise prediction (the UNet over the doubled batch
and the guidance mix, nearly all of a step) compiles as one graph and replays as one CUDA graph.
The scheduler's update runs eagerly after it: PNDM keeps its history in Python lists and a
counter, a few elementwise kernels a step.
"""
from __future__ import annotations

import copy

import torch

from ..models import diffusion, sd15
from .cache import DecoderCache
from .denoising import SharedModelRunner, score_record
from .graphs import capture_graph, compile_own, decode_step_options, null_span, warm_on_side_stream
from .plan import Plan
from .quantize import quantize_linears
from .runner import RunnerBase, module_spans


def _spanned(pipe):
    # The pipeline calls `vae.decode`, not the autoencoder's forward: the span is its decoder's.
    return ((pipe.text_encoder, "text_encoder"), (pipe.unet, "unet"), (pipe.vae.decoder, "vae"))


def attention_record(pipe, batch) -> dict:
    """The attention calls of one denoising step at this batch's size (seed paper 2, Fig. 8),
    from the UNet's meta-device twin: the same forward, on shapes alone."""
    h, w = batch.latents.shape[-2:]
    calls = sd15.attention_calls(pipe.unet, h, w, batch.input_ids.shape[-1])
    return {"per_step": len(calls),
            "self_query": [q for kind, q, _ in calls if kind == "self"],
            "cross_query": [q for kind, q, _ in calls if kind == "cross"],
            "cross_key": sorted({k for kind, _, k in calls if kind == "cross"})}


def unet_work(unet, batch) -> dict[str, float]:
    """FLOPs of a whole run's UNet evaluations (span `unet`), for its TFLOP/s: every run of a
    batch makes the same evaluations over the same shapes, whatever the lever."""
    h, w = batch.latents.shape[-2:]
    per = diffusion.meta_unet_flops(unet, (h, w), context=batch.input_ids.shape[-1], rows=2 * batch.batch)
    return {"unet": per * batch.new_tokens}


class _Marks:
    """The pipeline's step-end callback: phase marks on the stopwatch (no synchronization) and
    the final latents, which the pipeline hands to the decoder without returning them."""

    def __init__(self, stopwatch, evaluations: int):
        self.stopwatch, self.last, self.latents = stopwatch, evaluations - 1, None

    def __call__(self, pipe, i: int, t, kwargs: dict) -> dict:
        if self.stopwatch is not None:
            if i == 0:
                self.stopwatch.mark("first_token")
            if i == self.last:
                self.stopwatch.mark("decode_end")
        if i == self.last:
            self.latents = kwargs["latents"]
        return kwargs


class PipelineRunner(SharedModelRunner):
    """diffusers' pipeline as users call it, with the plan's attention implementation."""

    set_attention = staticmethod(sd15.set_attn_implementation)
    attention_record = staticmethod(attention_record)
    unet_of = staticmethod(lambda pipe: pipe.unet)

    def __init__(self, pipe, batch, attn_implementation: str = "eager"):
        super().__init__(pipe, batch, attn_implementation)
        self.latents = self.image = None

    def outputs(self) -> dict:
        return {"latents": self.latents, "image": self.image}

    def work(self) -> dict[str, float]:
        return unet_work(self.model.unet, self.batch)

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None):
        """The images (B, 3, H, W) in [0, 1] are kept in `image`, the final latents in `latents`;
        returns None: an image has no tokens whose agreement with eager's could be counted."""
        b, pipe = self.batch, self.model
        evaluations = new_tokens or b.new_tokens
        steps = b.steps if new_tokens is None else sd15.steps_for(pipe.scheduler, new_tokens)
        marks = _Marks(stopwatch, evaluations)
        with module_spans(stopwatch, _spanned(pipe)):
            embeds = pipe.text_encoder(b.input_ids)[0]
            self.image = pipe(prompt_embeds=embeds[: b.batch], negative_prompt_embeds=embeds[b.batch:],
                              latents=b.latents, num_inference_steps=steps, guidance_scale=b.guidance_scale,
                              height=b.height, width=b.width, output_type="pt", return_dict=False,
                              callback_on_step_end=marks)[0]
        self.latents = marks.latents
        return None


# What a Denoiser is built from: a compile and a cuda_graph rung of one batch share it.
DENOISER_FIELDS = ("attn_implementation", "compile", "compile_options", "quant")


def denoiser(pipe, batch, plan: Plan, decoders: DecoderCache) -> "Denoiser":
    shape = (batch.batch, *batch.latents.shape[-2:], batch.input_ids.shape[-1])
    return decoders.get("denoiser", pipe, shape, plan, DENOISER_FIELDS, lambda: Denoiser(pipe, batch, plan))


class Denoiser:
    """The pipeline's denoising loop over buffers with fixed addresses, on copies of its UNet and
    autoencoder (the rungs beside it run the shared pipeline as users do). Compiled, the copies
    are channels-last with fused QKV projections, as diffusers' own fast path sets them."""

    def __init__(self, pipe, batch, plan: Plan):
        self.pipe, self.batch = pipe, batch
        self.unet, self.vae = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.vae)
        sd15.set_module_attention(self.unet, plan.attn_implementation)
        sd15.set_module_attention(self.vae, plan.attn_implementation)
        self.compiled = plan.compile
        if plan.compile:
            for net in (self.unet, self.vae):
                net.to(memory_format=torch.channels_last)
            if plan.attn_implementation == "sdpa":
                self.unet.fuse_qkv_projections()
        self.quant = quantize_linears(self.unet, batch.latents.device) if plan.quant else None   # after fusing
        B, dev = batch.batch, batch.latents.device
        self.x = torch.zeros((2 * B, *batch.latents.shape[1:]), dtype=self.unet.dtype, device=dev)
        self.t = torch.zeros((), dtype=torch.long, device=dev)
        self.embeds = torch.zeros((2 * B, batch.input_ids.shape[-1], self.unet.config.cross_attention_dim),
                                  dtype=self.unet.dtype, device=dev)
        self.eps = torch.zeros_like(batch.latents)
        self.step_fn, self.decode_fn = self._step, self._decode
        if plan.compile:
            options = decode_step_options(plan.inductor_options)
            self.step_fn = compile_own(Denoiser._step, self, fullgraph=True, dynamic=False, options=options)
            self.decode_fn = compile_own(Denoiser._decode, self, fullgraph=True, dynamic=False, options=options)
        self.warmed, self.graph, self.attention, self.scores = False, None, None, None
        self.setup_metrics: dict = {}

    def _step(self):
        """The noise prediction of one step: the UNet over the doubled batch, then the guidance mix."""
        eps = self.unet(self.x, self.t, encoder_hidden_states=self.embeds, return_dict=False)[0]
        uncond, text = eps.chunk(2)
        self.eps.copy_(uncond + self.batch.guidance_scale * (text - uncond))

    def _decode(self, latents):
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]

    @torch.no_grad()
    def warm(self) -> None:
        """A short run, so that compilation happens here and not in a timed round."""
        self.run(new_tokens=3)   # PNDM's shortest run of more than one evaluation
        self.warmed = True

    @torch.no_grad()
    def capture(self) -> None:
        """The noise prediction recorded as a CUDA graph over the buffers."""
        warm_on_side_stream(self.step_fn)
        self.graph, _ = capture_graph(self.step_fn)

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None, *, use_graph: bool = False):
        b = self.batch
        evaluations = new_tokens or b.new_tokens
        sched = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)   # PNDM keeps state
        sched.set_timesteps(b.steps if new_tokens is None else sd15.steps_for(sched, new_tokens), device=self.x.device)
        # Spans by hand: a compiled network runs no forward hooks.
        span = stopwatch.span if stopwatch is not None else null_span
        with span("text_encoder"):
            embeds = self.pipe.text_encoder(b.input_ids)[0]
        # The pipeline's order: the empty prompts' rows first.
        self.embeds.copy_(torch.cat([embeds[b.batch:], embeds[: b.batch]]))
        latents = b.latents * sched.init_noise_sigma
        for i, t in enumerate(sched.timesteps[:evaluations]):
            self.x.copy_(sched.scale_model_input(torch.cat([latents] * 2), t))
            self.t.copy_(t)
            with span("unet"):
                if use_graph:
                    self.graph.replay()
                else:
                    self.step_fn()
            # A copy: PNDM keeps the last predictions, and the buffer is the next step's.
            latents = sched.step(self.eps.clone(), t, latents, return_dict=False)[0]
            if stopwatch is not None and i == 0:
                stopwatch.mark("first_token")
        if stopwatch is not None:
            stopwatch.mark("decode_end")
        with span("vae"):
            image = self.decode_fn(latents)
        self.latents, self.image = latents, (image / 2 + 0.5).clamp(0, 1)
        return None


class DenoiseRunner(RunnerBase):
    """A Denoiser in one mode (graph replay or not), with the runner interface the harness times."""

    def __init__(self, den: Denoiser, use_graph: bool, attn_implementation: str):
        self.den, self.use_graph, self.attn_implementation = den, use_graph, attn_implementation

    @property
    def batch(self):
        return self.den.batch

    @property
    def setup_metrics(self) -> dict:
        return self.den.setup_metrics

    def prepare(self) -> None:
        # The text encoder is the pipeline's own, shared with the rungs beside this one.
        sd15.set_attn_implementation(self.den.pipe, self.attn_implementation)

    def setup_steps(self) -> list[tuple[str, object]]:
        steps = []
        if self.den.compiled and not self.den.warmed:
            steps.append(("compile_s", self.den.warm))
        if self.use_graph and self.den.graph is None:
            steps.append(("capture_s", self.den.capture))
        return steps

    def run(self, stopwatch=None, new_tokens: int | None = None):
        return self.den.run(stopwatch, new_tokens, use_graph=self.use_graph)

    def outputs(self) -> dict:
        return {"latents": self.den.latents, "image": self.den.image}

    def work(self) -> dict[str, float]:
        return unet_work(self.den.pipe.unet, self.batch)

    def recorded(self) -> dict:
        if self.den.attention is None:
            self.den.attention = attention_record(self.den.pipe, self.den.batch)
            self.den.scores = score_record(self.den.pipe.unet, self.den.batch)
        return {"attention_calls": self.den.attention, "attention_scores": self.den.scores}
