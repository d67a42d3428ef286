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

`CascadeDenoiser` is the lean engine the compile, cuda_graph and quant rungs run: the same loop
(one `_Cascade._cascade` for both) with each stage's noise prediction over fixed-address
buffers, on copies of the two UNets, so that each compiles as one graph and replays as one CUDA
graph at its stage's fixed shape. DDPM's updates (dynamic thresholding takes a quantile of each
x0; variance noise comes from the run's generator), the upsampling and the re-noising stay
eager between the steps, so both stages' schedulers are the pipelines' own. The T5 encoder is
the shared model's, left as it is: it runs once a run over 2B rows against 150 UNet evaluations
at paper scale (a small share of the run to gain from), and quantizing it would change the text
states that every step of both stages is conditioned on, not one stage's arithmetic.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from ..models import imagen
from .cache import DecoderCache
from .denoising import LeanDenoiser, SharedModelRunner, StaticStep, lean_copy, lean_engine
from .graphs import null_span
from .plan import Plan
from .quantize import quantize_linears
from .runner import module_spans

STAGES = ("stage_1", "stage_2")
# The UNets' layers that read T5's states: the projection of the text tokens into the UNet's width
# (every attention block's added keys and values come from it) and the attention pooling of the
# text into the time embedding. quant keeps them in float, as it keeps T5: int8 in the projection
# alone moved a tiny stage-I evaluation to cosine 0.98 of the float one, and they are a few GEMMs
# over 77 tokens a step.
TEXT_PATH = ("encoder_hid_proj", "add_embedding")


def _spanned(model):
    return ((model.text_encoder, "text_encoder"), (model.unet_1, "stage_1"), (model.unet_2, "stage_2"))


def _guided(noise_pred: torch.Tensor, scale: float, channels: int) -> torch.Tensor:
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


class _Cascade:
    """The two stages as IF's pipelines run them, around a noise prediction the subclass makes:
    `_predict(stage, model_input, t, channels)` gives the guided noise (the image's `channels`)
    and the variance of one step, after `_begin(stage, embeds, class_labels)` named the stage's
    conditioning."""

    model: imagen.Cascade
    batch: object

    def _begin(self, stage: int, embeds: torch.Tensor, class_labels: torch.Tensor | None) -> None:
        raise NotImplementedError

    def _predict(self, stage: int, model_input: torch.Tensor, t: torch.Tensor, channels: int) -> torch.Tensor:
        raise NotImplementedError

    def _denoise(self, stage: int, sched, sample, steps, generator, stopwatch, *, upscaled=None, first=False,
                 last=False):
        sched.set_timesteps(steps, device=sample.device)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(0)
        channels = sample.shape[1]
        final = len(sched.timesteps) - 1
        for i, t in enumerate(sched.timesteps):
            model_input = sample if upscaled is None else torch.cat([sample, upscaled], dim=1)
            model_input = sched.scale_model_input(torch.cat([model_input] * 2), t)
            noise_pred = self._predict(stage, model_input, t, channels)
            if sched.config.variance_type not in ("learned", "learned_range"):
                noise_pred, _ = noise_pred.split(channels, dim=1)
            sample = sched.step(noise_pred, t, sample, generator=generator, return_dict=False)[0]
            if stopwatch is not None:
                if first and i == 0:
                    stopwatch.mark("first_token")
                if last and i == final:
                    stopwatch.mark("decode_end")
        return sample

    def _cascade(self, stopwatch, new_tokens: int | None, schedulers, span=null_span) -> None:
        """The images (B, 3, H2, W2) in [0, 1] are kept in `image`, stage I's (B, 3, H1, W1) in
        [-1, 1] in `stage_1_image`."""
        b, m = self.batch, self.model
        steps_1 = new_tokens or b.steps[0]
        steps_2 = b.stage_2_steps(new_tokens)
        generator = torch.Generator(device=b.noise_1.device).manual_seed(b.seed)
        with span("text_encoder"):
            states = m.text_encoder(b.input_ids, attention_mask=b.attention_mask)[0]
        states = states.to(m.unet_1.dtype)
        embeds = torch.cat([states[b.batch:], states[: b.batch]])   # IF's order: empty prompts first
        image = b.noise_1 * schedulers[0].init_noise_sigma
        self._begin(0, embeds, None)
        image = self._denoise(0, schedulers[0], image, steps_1, generator, stopwatch, first=True)
        self.stage_1_image = image
        upscaled = F.interpolate(image, b.size_2, mode="bilinear", align_corners=True)
        level = torch.full((b.batch,), b.noise_level, device=image.device, dtype=torch.long)
        upscaled = m.image_noising_scheduler.add_noise(upscaled, b.aug_noise, level)
        image = b.noise_2 * schedulers[1].init_noise_sigma
        self._begin(1, embeds, torch.cat([level] * 2))
        image = self._denoise(1, schedulers[1], image, steps_2, generator, stopwatch, upscaled=upscaled, last=True)
        self.image = (image / 2 + 0.5).clamp(0, 1)
        self.evaluations = (steps_1, steps_2)


class CascadeRunner(_Cascade, SharedModelRunner):
    """The two stages as IF's pipelines run them, with the plan's attention implementation."""

    set_attention = staticmethod(imagen.set_attn_implementation)
    attention_record = staticmethod(attention_record)

    def __init__(self, model, batch, attn_implementation: str = "eager"):
        super().__init__(model, batch, attn_implementation)
        self.stage_1_image = self.image = None
        self.evaluations = (0, 0)
        self._conditioning = (None, None)

    def outputs(self) -> dict:
        return {"stage_1": self.stage_1_image, "image": self.image}

    def _begin(self, stage, embeds, class_labels):
        self._conditioning = (embeds, class_labels)

    def _predict(self, stage, model_input, t, channels):
        embeds, class_labels = self._conditioning
        unet = self.model.unets[stage]
        noise_pred = unet(model_input, t, encoder_hidden_states=embeds, class_labels=class_labels,
                          return_dict=False)[0]
        return _guided(noise_pred, self.batch.guidance_scale[stage], channels)

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None):
        """Returns None: an image has no tokens whose agreement with eager's could be counted."""
        m = self.model
        with module_spans(stopwatch, _spanned(m)):
            self._cascade(stopwatch, new_tokens, (m.scheduler_1, m.scheduler_2))
        return None


def cascade_denoiser(model, batch, plan: Plan, decoders: DecoderCache) -> "CascadeDenoiser":
    shape = (batch.batch, batch.size_1, batch.size_2, batch.input_ids.shape[-1])
    return lean_engine("cascade", model, shape, plan, decoders, lambda: CascadeDenoiser(model, batch, plan))


class CascadeDenoiser(_Cascade, LeanDenoiser):
    """The cascade's loop with each stage's guided noise prediction a StaticStep over buffers
    with fixed addresses, on copies of both UNets (the rungs beside it run the shared cascade as
    users do). Compiled, the copies are channels-last; their QKV projections stay apart: every
    attention of IF's UNets adds the text's keys and values (diffusers' added-KV processors),
    which diffusers' `fuse_qkv_projections` does not fuse."""

    set_attention = staticmethod(imagen.set_attn_implementation)
    attention_record = staticmethod(attention_record)
    warm_tokens = 2   # two stage-I steps and one stage-II step: both stages compile

    def __init__(self, model, batch, plan: Plan):
        super().__init__(model, batch, plan)
        dev = batch.noise_1.device
        self.unets = tuple(lean_copy(u, plan, imagen.set_module_attention) for u in model.unets)
        # Each UNet's linear layers; the T5 encoder stays the shared model's (module docstring).
        if plan.quant:
            self.quant, = {quantize_linears(u, dev, skip=TEXT_PATH) for u in self.unets}
        B, dtype = batch.batch, self.unets[0].dtype
        te = model.text_encoder.config
        # Both stages read the same text states: one buffer.
        embeds = torch.zeros((2 * B, batch.input_ids.shape[-1], te.d_model), dtype=dtype, device=dev)
        steps = []
        for stage, (unet, noise) in enumerate(zip(self.unets, (batch.noise_1, batch.noise_2))):
            x = torch.zeros((2 * B, unet.config.in_channels, *noise.shape[-2:]), dtype=dtype, device=dev)
            out = torch.zeros((B, unet.config.out_channels, *noise.shape[-2:]), dtype=dtype, device=dev)
            labels = torch.zeros(2 * B, dtype=torch.long, device=dev) if stage == 1 else None
            mix = partial(_guided, channels=noise.shape[1])
            steps.append(StaticStep(unet, x, embeds, out, mix, batch.guidance_scale[stage], labels))
        self.steps = tuple(steps)
        if plan.compile:
            for s in self.steps:
                s.compile(plan.inductor_options)
        self.stage_1_image = self.image = None
        self.evaluations = (0, 0)
        self._use_graph, self._span = False, null_span

    def _begin(self, stage, embeds, class_labels):
        step = self.steps[stage]
        step.embeds.copy_(embeds)
        if class_labels is not None:
            step.extra["class_labels"].copy_(class_labels)

    def _predict(self, stage, model_input, t, channels):
        step = self.steps[stage]
        step.x.copy_(model_input)
        with self._span(STAGES[stage]):
            out = step(t, self._use_graph)
        # A copy: the buffer is the next step's, and a scheduler may keep what it is handed.
        return out.clone()

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None, *, use_graph: bool = False):
        m = self.model
        # Spans by hand: a compiled network runs no forward hooks.
        self._span = stopwatch.span if stopwatch is not None else null_span
        self._use_graph = use_graph
        schedulers = tuple(type(s).from_config(s.config) for s in (m.scheduler_1, m.scheduler_2))
        self._cascade(stopwatch, new_tokens, schedulers, self._span)
        return None

    def outputs(self) -> dict:
        return {"stage_1": self.stage_1_image, "image": self.image}
