"""Runs a pixel-space cascade (DeepFloyd IF's stages I and II) for the harness: T5 encoding,
stage I's guided denoising loop, the upsampling of its image, stage II's guided loop.

The loops are written here over diffusers' UNets and schedulers, because IF's pipelines
tokenize their prompts themselves and report steps through the old `callback` API. Each step
is what IFPipeline.__call__ and IFSuperResolutionPipeline.__call__ (diffusers 0.42) do:
  - the text encoder runs once over the 2B rows (prompts, then empty prompts) with the
    tokenizer's attention mask, and the UNets get the empty prompts' states first and the
    prompts' second (`torch.cat([negative_prompt_embeds, prompt_embeds])`);
  - a step evaluates the UNet over the doubled batch, splits each half's output into the noise
    and the learned variance, mixes the noise as uncond + w (text - uncond) and keeps the text
    half's variance, and hands both to DDPM's step, which thresholds x0 dynamically (the
    scheduler's config) and adds variance noise drawn from the run's generator;
  - stage II upsamples stage I's image (still in [-1, 1]) bilinearly with aligned corners,
    re-noises it to the noise level with the image-noising scheduler, concatenates it to its
    own noisy image on the channels at every step, and passes the noise level as the UNet's
    class label, for both halves of the batch.
The last image is mapped to [0, 1] as the pipelines' post-processing does.

How the cascade maps onto the decode-step protocol: a decode step is one stage-I denoising
step together with its share of stage II, which makes half as many steps at every scale
(tasks/pixel_cascade.py). `new_tokens` counts stage-I evaluations and a run of n of them makes
round(n x stage-II steps / stage-I steps) stage-II evaluations: exactly n / 2 for the 4 and 12
the harness counts kernels with, so the per-step kernels and GPU time are a stage-I step plus
half a stage-II step, and a whole run is what runs once plus that times the stage-I steps.
The run marks `first_token` after the first stage-I step (text encoding and one step: TTFT)
and `decode_end` after the last stage-II step, so TPOT is the cascade's denoising time (the
upsampling included) over the stage-I steps after the first; the post-processing follows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import imagen
from .denoising import SharedModelRunner
from .runner import module_spans


def _spanned(model):
    return ((model.text_encoder, "text_encoder"), (model.unet_1, "stage_1"), (model.unet_2, "stage_2"))


def _guided(noise_pred: torch.Tensor, channels: int, scale: float) -> torch.Tensor:
    """The guidance mix of the predicted noise, the text half's learned variance kept."""
    uncond, text = noise_pred.chunk(2)
    uncond, _ = uncond.split(channels, dim=1)
    text, variance = text.split(channels, dim=1)
    return torch.cat([uncond + scale * (text - uncond), variance], dim=1)


def attention_record(model, batch) -> dict:
    """The attention calls of one denoising step of each stage at this batch's sizes (seed
    paper 2, Figs. 8 and 9), from the UNets' meta-device twins. The top level is stage I's
    (the step the harness counts; what the report's table reads), `stages` has both."""
    context = batch.input_ids.shape[-1]
    stages = {}
    for name, unet, (h, w) in (("stage_1", model.unet_1, batch.size_1), ("stage_2", model.unet_2, batch.size_2)):
        calls = imagen.attention_calls(unet, h, w, context)
        stages[name] = {
            "per_step": len(calls),
            "self_query": [q for _, q, _, _ in calls],
            "key": [k for _, _, k, _ in calls],
            "cross_key": sorted({t for _, _, _, t in calls if t}),
            "kinds": sorted({kind for kind, _, _, _ in calls}),
        }
    return dict(stages["stage_1"], stages=stages)


class CascadeRunner(SharedModelRunner):
    """The two stages as IF's pipelines run them, with the plan's attention implementation."""

    set_attention = staticmethod(imagen.set_attn_implementation)
    attention_record = staticmethod(attention_record)

    def __init__(self, model, batch, attn_implementation: str = "eager"):
        super().__init__(model, batch, attn_implementation)
        self.stage_1_image = self.image = None
        self.evaluations = (0, 0)

    def outputs(self) -> dict:
        return {"stage_1": self.stage_1_image, "image": self.image}

    def _denoise(self, unet, sched, sample, embeds, steps, guidance, generator, stopwatch, *, upscaled=None,
                 class_labels=None, first=False, last=False):
        sched.set_timesteps(steps, device=sample.device)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(0)
        channels = sample.shape[1]
        final = len(sched.timesteps) - 1
        for i, t in enumerate(sched.timesteps):
            model_input = sample if upscaled is None else torch.cat([sample, upscaled], dim=1)
            model_input = sched.scale_model_input(torch.cat([model_input] * 2), t)
            noise_pred = unet(model_input, t, encoder_hidden_states=embeds, class_labels=class_labels,
                              return_dict=False)[0]
            noise_pred = _guided(noise_pred, channels, guidance)
            if sched.config.variance_type not in ("learned", "learned_range"):
                noise_pred, _ = noise_pred.split(channels, dim=1)
            sample = sched.step(noise_pred, t, sample, generator=generator, return_dict=False)[0]
            if stopwatch is not None:
                if first and i == 0:
                    stopwatch.mark("first_token")
                if last and i == final:
                    stopwatch.mark("decode_end")
        return sample

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None):
        """The images (B, 3, H2, W2) in [0, 1] are kept in `image`, stage I's (B, 3, H1, W1) in
        [-1, 1] in `stage_1`; returns None: an image has no tokens whose agreement with eager's
        could be counted."""
        b, m = self.batch, self.model
        steps_1 = new_tokens or b.steps[0]
        steps_2 = b.stage_2_steps(new_tokens)
        generator = torch.Generator(device=b.noise_1.device).manual_seed(b.seed)
        with module_spans(stopwatch, _spanned(m)):
            states = m.text_encoder(b.input_ids, attention_mask=b.attention_mask)[0]
            states = states.to(m.unet_1.dtype)
            embeds = torch.cat([states[b.batch:], states[: b.batch]])   # IF's order: empty prompts first
            image = b.noise_1 * m.scheduler_1.init_noise_sigma
            image = self._denoise(m.unet_1, m.scheduler_1, image, embeds, steps_1, b.guidance_scale[0], generator,
                                  stopwatch, first=True)
            self.stage_1_image = image
            upscaled = F.interpolate(image, b.size_2, mode="bilinear", align_corners=True)
            level = torch.full((b.batch,), b.noise_level, device=image.device, dtype=torch.long)
            upscaled = m.image_noising_scheduler.add_noise(upscaled, b.aug_noise, level)
            image = b.noise_2 * m.scheduler_2.init_noise_sigma
            image = self._denoise(m.unet_2, m.scheduler_2, image, embeds, steps_2, b.guidance_scale[1], generator,
                                  stopwatch, upscaled=upscaled, class_labels=torch.cat([level] * 2), last=True)
        self.image = (image / 2 + 0.5).clamp(0, 1)
        self.evaluations = (steps_1, steps_2)
        return None
