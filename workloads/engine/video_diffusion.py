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
"""
from __future__ import annotations

import inspect

import torch

from ..models import video
from .denoising import SharedModelRunner
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


class VideoRunner(SharedModelRunner):
    """The text-to-video loop with the plan's attention implementation."""

    set_attention = staticmethod(video.set_attn_implementation)
    attention_record = staticmethod(attention_record)
    unet_of = staticmethod(lambda pipe: pipe.unet)

    def __init__(self, pipe, batch, attn_implementation: str = "eager"):
        super().__init__(pipe, batch, attn_implementation)
        self.latents = self.video = None

    def outputs(self) -> dict:
        return {"latents": self.latents, "video": self.video}

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None):
        """The video (B, frames, 3, H, W) in [0, 1] is kept in `video`, the final latents in
        `latents`; returns None: frames have no tokens whose agreement could be counted."""
        b, pipe = self.batch, self.model
        sched = pipe.scheduler
        steps = b.steps if new_tokens is None else video.steps_for(sched, new_tokens)
        with module_spans(stopwatch, _spanned(pipe)):
            embeds = pipe.text_encoder(b.input_ids)[0]
            # The pipeline's order: unconditional rows first.
            cond = torch.cat([embeds[b.batch:], embeds[: b.batch]])
            sched.set_timesteps(steps, device=b.latents.device)
            timesteps = sched.timesteps
            extra = {"eta": 0.0} if "eta" in inspect.signature(sched.step).parameters else {}
            latents = b.latents * sched.init_noise_sigma
            last = len(timesteps) - 1
            for i, t in enumerate(timesteps):
                x = sched.scale_model_input(torch.cat([latents] * 2), t)
                noise = pipe.unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]
                uncond, text = noise.chunk(2)
                noise = uncond + b.guidance_scale * (text - uncond)
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
            self.video = self._decode(latents)
        return None

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Every frame through the autoencoder's decoder in one call, as the pipeline decodes."""
        vae = self.model.vae
        bsz, channels, frames, h, w = latents.shape
        flat = (latents / vae.config.scaling_factor).permute(0, 2, 1, 3, 4).reshape(bsz * frames, channels, h, w)
        image = vae.decode(flat).sample
        frames_out = image.reshape((bsz, frames) + image.shape[1:])
        return (frames_out.float() / 2 + 0.5).clamp(0, 1)
