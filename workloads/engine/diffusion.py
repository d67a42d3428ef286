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
"""
from __future__ import annotations

import torch

from ..models import sd15
from .runner import RunnerBase, module_spans


def _spanned(pipe):
    # The pipeline calls `vae.decode`, not the autoencoder's forward: the span is its decoder's.
    return ((pipe.text_encoder, "text_encoder"), (pipe.unet, "unet"), (pipe.vae.decoder, "vae"))


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


class PipelineRunner(RunnerBase):
    """diffusers' pipeline as users call it, with the plan's attention implementation."""

    def __init__(self, pipe, batch, attn_implementation: str = "eager"):
        self.pipe = pipe
        self.batch = batch
        self.attn_implementation = attn_implementation
        self.latents = self.image = None
        self._attention = None

    def prepare(self) -> None:
        # The pipeline is shared with the other rungs of the case: each sets what it needs.
        sd15.set_attn_implementation(self.pipe, self.attn_implementation)

    def outputs(self) -> dict:
        return {"latents": self.latents, "image": self.image}

    def recorded(self) -> dict:
        """The attention calls of one denoising step at this batch's size (seed paper 2, Fig. 8),
        from the UNet's meta-device twin: the same forward, on shapes alone."""
        if self._attention is None:
            h, w = self.batch.latents.shape[-2:]
            calls = sd15.attention_calls(self.pipe.unet, h, w, self.batch.input_ids.shape[-1])
            self._attention = {
                "per_step": len(calls),
                "self_query": [q for kind, q, _ in calls if kind == "self"],
                "cross_query": [q for kind, q, _ in calls if kind == "cross"],
                "cross_key": sorted({k for kind, _, k in calls if kind == "cross"}),
            }
        return {"attention_calls": self._attention}

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None):
        """The images (B, 3, H, W) in [0, 1] are kept in `image`, the final latents in `latents`;
        returns None: an image has no tokens whose agreement with eager's could be counted."""
        b, pipe = self.batch, self.pipe
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
