"""Runs latent video diffusion for the harness: CLIP text encoding, guided denoising steps of the
UNet3D over every frame at once, and the autoencoder's decode of every frame.

The loop is diffusers' TextToVideoSDPipeline's, written out: that pipeline is deprecated (0.42)
and calls back only with the old `callback(step, t, latents)` after its progress bookkeeping,
so the phases are marked here, between the same operations in the same order: the guided
noise prediction over the doubled batch (empty prompts first), the scheduler's update on the
latents laid out frame by frame, and the decode of all B x frames latents in one call.

How diffusion maps onto the decode-step protocol (as for Stable Diffusion, engine/diffusion.py):
a denoising step is the "decode step"; `first_token` is marked after the first step (text
encoding and one step: TTFT), `decode_end` after the last (TPOT is the time per denoising
step), and the autoencoder's decode follows. `run(stopwatch, n)` makes exactly n UNet
evaluations, so the harness counts kernels per step from runs of 4 and 12.

`VideoDenoiser` is the lean engine the compile, cuda_graph and quant rungs run: the same loop
(one `_VideoLoop._loop` for both) with the guided noise prediction over fixed-address buffers
of the frame-stacked latents, on copies of the UNet3D and the autoencoder, so that it compiles
as one graph and replays as one CUDA graph; the decode of every frame compiles as one graph
too. DDIM's update stays eager between the steps, on the latents laid out frame by frame.
"""
from __future__ import annotations

import inspect

import torch

from ..models import video
from .cache import DecoderCache
from .denoising import (LeanDenoiser, SharedModelRunner, StaticStep, cfg_mix, compiled_call, lean_copy,
                        lean_engine)
from .graphs import null_span
from .plan import Plan
from .quantize import quantize_linears
from .runner import module_spans


def _spanned(pipe):
    # The decode calls `vae.decode`, not the autoencoder's forward: the span is its decoder's.
    return ((pipe.text_encoder, "text_encoder"), (pipe.unet, "unet"), (pipe.vae.decoder, "vae"))


def attention_record(pipe, batch) -> dict:
    """One denoising step's attention calls at this batch's frame count and size (seed paper 2,
    Figs. 11, 12 and 14): the self-attention query lengths in call order as Stable Diffusion
    records them, cross-attention's text keys, temporal attention's lengths (the frame count)
    and the rows it runs over (batch x pixels), and each kind's FLOPs."""
    frames, h, w = batch.latents.shape[-3:]
    calls = video.attention_calls(pipe.unet, frames, h, w, rows=2 * batch.batch, context=batch.input_ids.shape[-1])
    temporal = [c for c in calls if c.kind == "temporal"]
    return {"per_step": len(calls),
            "frames": int(frames),
            "self_query": [c.query for c in calls if c.kind == "spatial"],
            "cross_query": [c.query for c in calls if c.kind == "cross"],
            "cross_key": sorted({c.key for c in calls if c.kind == "cross"}),
            "temporal_query": sorted({c.query for c in temporal}),
            "temporal_rows": [c.batch for c in temporal],
            "flops": video.attention_flops(calls)}


class _VideoLoop:
    """The pipeline's loop around a noise prediction the subclass makes: `_predict(x, t)` gives
    the guided noise of one step over the doubled batch `x`, after `_begin(cond)` named the text
    states; `_decode_frames(flat)` decodes (B x frames) latents."""

    batch: object

    def _begin(self, cond: torch.Tensor) -> None:
        raise NotImplementedError

    def _predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_frames(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _loop(self, pipe, sched, stopwatch, new_tokens: int | None, span=null_span) -> None:
        """The video (B, frames, 3, H, W) in [0, 1] is kept in `video`, the final latents in `latents`."""
        b = self.batch
        steps = b.steps if new_tokens is None else video.steps_for(sched, new_tokens)
        with span("text_encoder"):
            embeds = pipe.text_encoder(b.input_ids)[0]
        # The pipeline's order: unconditional rows first.
        self._begin(torch.cat([embeds[b.batch:], embeds[: b.batch]]))
        sched.set_timesteps(steps, device=b.latents.device)
        timesteps = sched.timesteps
        extra = {"eta": 0.0} if "eta" in inspect.signature(sched.step).parameters else {}
        latents = b.latents * sched.init_noise_sigma
        last = len(timesteps) - 1
        for i, t in enumerate(timesteps):
            x = sched.scale_model_input(torch.cat([latents] * 2), t)
            noise = self._predict(x, t)
            # The scheduler steps frame by frame, as the pipeline lays the latents out for it.
            bsz, channels, frames, h, w = latents.shape
            flat = latents.permute(0, 2, 1, 3, 4).reshape(bsz * frames, channels, h, w)
            noise = noise.permute(0, 2, 1, 3, 4).reshape(bsz * frames, channels, h, w)
            flat = sched.step(noise, t, flat, **extra).prev_sample
            latents = flat[None, :].reshape(bsz, frames, channels, h, w).permute(0, 2, 1, 3, 4)
            if stopwatch is not None:
                if i == 0:
                    stopwatch.mark("first_token")
                if i == last:
                    stopwatch.mark("decode_end")
        self.latents = latents
        # Every frame through the autoencoder's decoder in one call, as the pipeline decodes.
        bsz, channels, frames, h, w = latents.shape
        flat = (latents / pipe.vae.config.scaling_factor).permute(0, 2, 1, 3, 4).reshape(bsz * frames, channels, h, w)
        with span("vae"):
            image = self._decode_frames(flat)
        frames_out = image.reshape((bsz, frames) + image.shape[1:])
        self.video = (frames_out.float() / 2 + 0.5).clamp(0, 1)


class VideoRunner(_VideoLoop, SharedModelRunner):
    """The text-to-video loop with the plan's attention implementation."""

    set_attention = staticmethod(video.set_attn_implementation)
    attention_record = staticmethod(attention_record)
    unet_of = staticmethod(lambda pipe: pipe.unet)

    def __init__(self, pipe, batch, attn_implementation: str = "eager"):
        super().__init__(pipe, batch, attn_implementation)
        self.latents = self.video = self._cond = None

    def outputs(self) -> dict:
        return {"latents": self.latents, "video": self.video}

    def _begin(self, cond):
        self._cond = cond

    def _predict(self, x, t):
        noise = self.model.unet(x, t, encoder_hidden_states=self._cond, return_dict=False)[0]
        return cfg_mix(noise, self.batch.guidance_scale)

    def _decode_frames(self, flat):
        return self.model.vae.decode(flat).sample

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None):
        """Returns None: frames have no tokens whose agreement could be counted."""
        pipe = self.model
        with module_spans(stopwatch, _spanned(pipe)):
            self._loop(pipe, pipe.scheduler, stopwatch, new_tokens)
        return None


def video_denoiser(pipe, batch, plan: Plan, decoders: DecoderCache) -> "VideoDenoiser":
    shape = (batch.batch, *batch.latents.shape[-3:], batch.input_ids.shape[-1])
    return lean_engine("video", pipe, shape, plan, decoders, lambda: VideoDenoiser(pipe, batch, plan))


class VideoDenoiser(_VideoLoop, LeanDenoiser):
    """The loop with the guided noise prediction a StaticStep over buffers with fixed addresses
    (the UNet3D over the doubled batch of every frame at once), on copies of the UNet3D and the
    autoencoder (the rungs beside it run the shared pipeline as users do). Compiled, the copies
    are channels-last (the temporal convolutions' weights channels_last_3d) with fused QKV
    projections, spatial, cross and temporal attention alike, and the decode of every frame is
    one graph too."""

    set_attention = staticmethod(video.set_attn_implementation)
    attention_record = staticmethod(attention_record)
    unet_of = staticmethod(lambda pipe: pipe.unet)
    warm_tokens = 1   # DDIM: one evaluation a step; one step compiles the step and the decode

    def __init__(self, pipe, batch, plan: Plan):
        super().__init__(pipe, batch, plan)
        self.unet = lean_copy(pipe.unet, plan, video.set_module_attention, fuse_qkv=True)
        self.vae = lean_copy(pipe.vae, plan, video.set_module_attention)
        dev = batch.latents.device
        self.quant = quantize_linears(self.unet, dev) if plan.quant else None   # after fusing
        B, dtype = batch.batch, self.unet.dtype
        x = torch.zeros((2 * B, *batch.latents.shape[1:]), dtype=dtype, device=dev)
        embeds = torch.zeros((2 * B, batch.input_ids.shape[-1], self.unet.config.cross_attention_dim), dtype=dtype,
                             device=dev)
        self.step = StaticStep(self.unet, x, embeds, torch.zeros_like(batch.latents), cfg_mix, batch.guidance_scale)
        self.steps = (self.step,)
        if plan.compile:
            self.step.compile(plan.inductor_options)
        self.decode_fn = compiled_call(VideoDenoiser._decode, self, plan)
        self.latents = self.video = None
        self._use_graph = False

    def _decode(self, flat):
        return self.vae.decode(flat, return_dict=False)[0]

    def _begin(self, cond):
        self.step.embeds.copy_(cond)

    def _predict(self, x, t):
        self.step.x.copy_(x)
        with self._span("unet"):
            out = self.step(t, self._use_graph)
        # A copy: the buffer is the next step's, and a scheduler may keep what it is handed.
        return out.clone()

    def _decode_frames(self, flat):
        return self.decode_fn(flat)

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None, *, use_graph: bool = False):
        pipe = self.model
        # Spans by hand: a compiled network runs no forward hooks.
        self._span = stopwatch.span if stopwatch is not None else null_span
        self._use_graph = use_graph
        sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
        self._loop(pipe, sched, stopwatch, new_tokens, self._span)
        return None

    def outputs(self) -> dict:
        return {"latents": self.latents, "video": self.video}
