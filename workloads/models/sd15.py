"""Stable Diffusion 1.5 (latent diffusion) from diffusers' and transformers' config classes:
the CLIP ViT-L/14 text encoder, the conditional UNet, the KL autoencoder (its decoder makes the
image) and the PNDM scheduler, assembled as diffusers' own StableDiffusionPipeline.

Random weights from the published configs (runwayml/stable-diffusion-v1-5: unet/config.json,
vae/config.json, text_encoder/config.json, scheduler/scheduler_config.json), or a local
pipeline directory in diffusers' layout. The pipeline has no tokenizer: prompts arrive as token
ids laid out as CLIP's tokenizer lays them out (tasks/text_to_image.py).

diffusers is imported inside the functions that build: the registry imports every workload to
list its cases, and diffusers' import costs about a second.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import diffusion
from .common import Preset
from .diffusion import denoising_evaluations, steps_for, token_length, vae_factor

MODEL_TYPE = "stable-diffusion"

# CLIP's text context: 75 prompt tokens between the begin and end tokens.
CLIP_CONTEXT = 77

_SD15 = "runwayml/stable-diffusion-v1-5"
_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

# unet/config.json. `attention_head_dim` 8 is, in diffusers' naming, the number of heads
# (320 / 8 = 40 channels a head at the first level).
PAPER_UNET = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                  layers_per_block=2, down_block_types=_DOWN, up_block_types=_UP, cross_attention_dim=768,
                  attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu", flip_sin_to_cos=True,
                  freq_shift=0, downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False)
# vae/config.json: four levels, so the latent is the image downsampled by 8.
PAPER_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, act_fn="silu", sample_size=512,
                 scaling_factor=0.18215)
# text_encoder/config.json (openai/clip-vit-large-patch14's text tower). Its legacy special ids
# (eos 2) make CLIP pool at the largest id, which is the tokenizer's end token.
PAPER_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, max_position_embeddings=CLIP_CONTEXT, hidden_act="quick_gelu",
                  projection_dim=768, layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1)
# scheduler/scheduler_config.json: PNDM (PLMS, no Runge-Kutta warm-up steps).
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)

# Parameters as the published checkpoint holds them (UNet 859.52M, CLIP ViT-L/14 text encoder
# 123.06M, autoencoder 83.65M): Rombach et al. give "an 860M UNet and a 123M text encoder".
PUBLISHED = {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863}
PAPER_PARAMS = float(sum(PUBLISHED.values()))

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # The published layout (four UNet levels, three with cross-attention; four VAE levels, so
        # the same factor 8) at CPU widths: the same code paths and sequence-length U over a step.
        # 8 norm groups, not 32: a group of one or two channels over a 2 x 2 latent normalizes by
        # a near-zero spread, which turned fp32 rounding (1e-6) into 0.4% differences between
        # attention implementations after four guided steps.
        Preset("sd15-tiny", "tiny", dict(
            unet=dict(PAPER_UNET, sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                      cross_attention_dim=32, norm_num_groups=8),
            vae=dict(PAPER_VAE, block_out_channels=(32, 32, 64, 64), layers_per_block=1, sample_size=64,
                     norm_num_groups=8),
            text_encoder=dict(PAPER_TEXT, vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, projection_dim=32)),
            source=f"CPU-sized Stable Diffusion with {_SD15}'s layout and scheduler"),
        Preset("sd15-small", "small", dict(
            unet=dict(PAPER_UNET, sample_size=32, block_out_channels=(160, 320, 640, 640), cross_attention_dim=512),
            vae=dict(PAPER_VAE, block_out_channels=(64, 128, 256, 256), sample_size=256),
            text_encoder=dict(PAPER_TEXT, hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                              projection_dim=512)),
            source=f"{_SD15} with every width halved; CLIP ViT-B/32's text tower"),
        Preset("sd15", "paper", dict(unet=PAPER_UNET, vae=PAPER_VAE, text_encoder=PAPER_TEXT),
               source=f"{_SD15}: unet/, vae/, text_encoder/ config.json and scheduler/scheduler_config.json",
               published_params=PAPER_PARAMS),
    ]
}


IMPLEMENTATIONS = ("eager", "sdpa")
_LABEL = "Stable Diffusion"


def _components(preset: Preset) -> dict[str, nn.Module]:
    return diffusion.latent_components(preset, "UNet2DConditionModel")


meta_components, meta_model = diffusion.meta_builders(_components)


def scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(**SCHEDULER)


def _pipeline(components: dict, sched):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components, scheduler=sched, tokenizer=None, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build(preset: Preset, device, *, dtype: torch.dtype | None = None, checkpoint: str | None = None, seed: int = 0):
    """diffusers' StableDiffusionPipeline on `device`, its networks in eval mode: random
    weights (seeded) or a local pipeline directory."""
    components, sched = diffusion.build_parts(preset, device, dtype=dtype, checkpoint=checkpoint, seed=seed,
                                              make=_components, schedulers=scheduler, check=check_checkpoint,
                                              load=_load)
    pipe = _pipeline(components, sched)
    set_attn_implementation(pipe, "eager")
    return pipe


def set_attn_implementation(pipe, implementation: str) -> None:
    """The attention of every network of the pipeline: the text encoder's through transformers,
    the UNet's and the autoencoder's through diffusers' attention processors."""
    diffusion.set_attention(pipe.text_encoder, (pipe.unet, pipe.vae), diffusion.attention_processors(),
                            implementation, _LABEL)


def set_module_attention(net, implementation: str) -> None:
    """One diffusers network's attention processors (a UNet's or an autoencoder's)."""
    diffusion.set_net_attention(net, diffusion.attention_processors(), implementation, _LABEL)


def attn_implementation(pipe) -> str:
    return diffusion.attention_of((pipe.unet, pipe.vae), diffusion.attention_processors())


def _note(name: str):
    def note(attn, hidden_states, encoder_hidden_states):
        keys = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        return ("self" if encoder_hidden_states is None else "cross", token_length(hidden_states), token_length(keys))

    return note


def attention_calls(unet, latent_height: int, latent_width: int,
                    context: int = CLIP_CONTEXT) -> list[tuple[str, int, int]]:
    """(kind, query length, key length) of every attention call of one denoising step of `unet`
    over latents of `latent_height` x `latent_width`, in call order (seed paper 2, Fig. 8), from
    the UNet's meta-device twin: no memory and no compute, at any image size."""
    return diffusion.meta_attention_calls(unet, _note, (latent_height, latent_width), context=context)


check_checkpoint = diffusion.check_latent_checkpoint


def _load(p: Path, dtype: torch.dtype):
    return diffusion.load_latent_components(p, dtype, "UNet2DConditionModel", "PNDMScheduler")


__all__ = ["CLIP_CONTEXT", "IMPLEMENTATIONS", "PAPER_PARAMS", "PRESETS", "PUBLISHED", "attention_calls", "build",
           "check_checkpoint", "denoising_evaluations", "meta_components", "meta_model", "scheduler", "set_attn_implementation",
           "set_module_attention", "steps_for", "vae_factor"]
