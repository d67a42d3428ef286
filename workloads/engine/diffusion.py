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

import torch

from ..models import diffusion, sd15
from .cache import DecoderCache
from .denoising import (LeanDenoiser, SharedModelRunner, StaticStep, cfg_mix, compiled_call, lean_copy,
                        lean_engine)
from .graphs import null_span
from .plan import Plan
from .quantize import quantize_linears
from .runner import module_spans


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


def denoiser(pipe, batch, plan: Plan, decoders: DecoderCache) -> "Denoiser":
    shape = (batch.batch, *batch.latents.shape[-2:], batch.input_ids.shape[-1])
    return lean_engine("denoiser", pipe, shape, plan, decoders, lambda: Denoiser(pipe, batch, plan))


class Denoiser(LeanDenoiser):
    """The pipeline's denoising loop over buffers with fixed addresses, on copies of its UNet and
    autoencoder (the rungs beside it run the shared pipeline as users do). Compiled, the copies
    are channels-last with fused QKV projections, as diffusers' own fast path sets them."""

    set_attention = staticmethod(sd15.set_attn_implementation)
    attention_record = staticmethod(attention_record)
    unet_of = staticmethod(lambda pipe: pipe.unet)
    warm_tokens = 3   # PNDM's shortest run of more than one evaluation

    def __init__(self, pipe, batch, plan: Plan):
        super().__init__(pipe, batch, plan)
        self.pipe = pipe
        self.unet = lean_copy(pipe.unet, plan, sd15.set_module_attention, fuse_qkv=True)
        self.vae = lean_copy(pipe.vae, plan, sd15.set_module_attention)
        self.quant = quantize_linears(self.unet, batch.latents.device) if plan.quant else None   # after fusing
        B, dev = batch.batch, batch.latents.device
        x = torch.zeros((2 * B, *batch.latents.shape[1:]), dtype=self.unet.dtype, device=dev)
        embeds = torch.zeros((2 * B, batch.input_ids.shape[-1], self.unet.config.cross_attention_dim),
                             dtype=self.unet.dtype, device=dev)
        self.step = StaticStep(self.unet, x, embeds, torch.zeros_like(batch.latents), cfg_mix, batch.guidance_scale)
        self.steps = (self.step,)
        if plan.compile:
            self.step.compile(plan.inductor_options)
        self.decode_fn = compiled_call(Denoiser._decode, self, plan)

    def _decode(self, latents):
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None, *, use_graph: bool = False):
        b, step = self.batch, self.step
        evaluations = new_tokens or b.new_tokens
        sched = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)   # PNDM keeps state
        sched.set_timesteps(b.steps if new_tokens is None else sd15.steps_for(sched, new_tokens), device=step.x.device)
        # Spans by hand: a compiled network runs no forward hooks.
        span = stopwatch.span if stopwatch is not None else null_span
        with span("text_encoder"):
            embeds = self.pipe.text_encoder(b.input_ids)[0]
        # The pipeline's order: the empty prompts' rows first.
        step.embeds.copy_(torch.cat([embeds[b.batch:], embeds[: b.batch]]))
        latents = b.latents * sched.init_noise_sigma
        for i, t in enumerate(sched.timesteps[:evaluations]):
            step.x.copy_(sched.scale_model_input(torch.cat([latents] * 2), t))
            with span("unet"):
                eps = step(t, use_graph)
            # A copy: PNDM keeps the last predictions, and the buffer is the next step's.
            latents = sched.step(eps.clone(), t, latents, return_dict=False)[0]
            if stopwatch is not None and i == 0:
                stopwatch.mark("first_token")
        if stopwatch is not None:
            stopwatch.mark("decode_end")
        with span("vae"):
            image = self.decode_fn(latents)
        self.latents, self.image = latents, (image / 2 + 0.5).clamp(0, 1)
        return None

    def outputs(self) -> dict:
        return {"latents": self.latents, "image": self.image}

    def work(self) -> dict[str, float]:
        return unet_work(self.pipe.unet, self.batch)
