"""An Imagen-like pixel-space cascade, as DeepFloyd IF's open stages: the T5 v1.1 XXL encoder,
stage I (IF-I-XL, a UNet denoising 64 x 64 pixels) and stage II (IF-II-L, a UNet that denoises
256 x 256 pixels conditioned on the upsampled stage-I image and its noise level), built from
diffusers' and transformers' config classes with random weights, or from local pipeline
directories.

Seed paper 2 characterizes Imagen (its Table I: attention at resolutions 32, 16, 8 of a 64-px
base model, 3 residual blocks a level, 64 channels a head, a frozen T5 encoder); Imagen's
weights are not public, and DeepFloyd IF is its open re-implementation with the same cascade,
the same attention resolutions and block count (the IF-I-XL config below). Stage III (a x4
upscaler to 1024 px, Stable Diffusion's x4 upscaler in diffusers' IF docs) is left out: the
paper's Figs. 7-9 characterize the base model's and the first super-resolution's UNets.

Sources of every config value:
  IF-I-XL  DeepFloyd/IF-I-XL-v1.0 unet/config.json (as copied into fine-tunes that name it as
           `_name_or_path`, e.g. huggingface.co/lucostiguy11/dreambooth_if unet/config.json);
  IF-II-L  DeepFloyd/IF-II-L-v1.0 unet/config.json (huggingface.co/williamberman/
           dreambooth_me_upscale unet/config.json names it as `_name_or_path`), with what diffusers'
           scripts/convert_if.py sets for the super-resolution UNets (time embedding width =
           model channels x last multiplier, GELU time embedding, skip-time activation, output
           and middle-block scale 1 / 0.7071);
  T5       google/t5-v1_1-xxl config.json (IF's text_encoder/config.json is that model's encoder);
  DDPM     DeepFloyd/IF-I-XL-v1.0 scheduler/scheduler_config.json (mirrored at huggingface.co/
           ckpt/IF-I-XL-v1.0-16bit) and scripts/convert_if.py for stage II's scheduler
           (sample_max_value 1.0) and its image-noising scheduler.

diffusers is imported inside the functions that build: the registry imports every workload to
list its cases, and a GPU runner may have no diffusers installed.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import diffusion
from .common import CheckpointError, Preset

MODEL_TYPE = "deepfloyd-if"

# IFPipeline.encode_prompt tokenizes to 77 tokens (max_length = 77).
T5_CONTEXT = 77
# T5's tokenizer: pad 0, end-of-sequence 1, unknown 2, then its 32000 sentencepiece pieces
# (the last 100 of them its sentinel tokens; the embedding is padded to 32128 rows).
T5_PAD, T5_EOS, T5_FIRST_PIECE, T5_PIECES = 0, 1, 3, 32000

_XL, _IIL, _T5 = "DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0", "google/t5-v1_1-xxl"

# Both stages' UNets: every attention block is diffusers' "simple cross-attention" (one
# attention over the pixels and the projected text tokens, keys and values of both, through
# the added-KV processors), text projected from T5's width (encoder_hid_dim) to the UNet's
# (cross_attention_dim), and the T5 states pooled by attention into the time embedding
# (addition_embed_type "text").
_SIMPLE = dict(mid_block_type="UNetMidBlock2DSimpleCrossAttn", encoder_hid_dim_type="text_proj", attention_head_dim=64,
               addition_embed_type="text", addition_embed_type_num_heads=64, cross_attention_norm="group_norm",
               resnet_time_scale_shift="scale_shift", act_fn="gelu", norm_num_groups=32, norm_eps=1e-5,
               flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, only_cross_attention=False,
               upcast_attention=False, use_linear_projection=False, center_input_sample=False)

# IF-I-XL: 64 px, channels 704 x (1, 2, 3, 4), attention at the 32, 16 and 8 px levels. 3 RGB
# channels in; 6 out: the noise and the learned variance range (DDPM "learned_range").
PAPER_STAGE_1 = dict(_SIMPLE, sample_size=64, in_channels=3, out_channels=6, block_out_channels=(704, 1408, 2112, 2816),
                     layers_per_block=3, cross_attention_dim=2816, encoder_hid_dim=4096,
                     down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
                     up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
                     mid_block_scale_factor=1, resnet_out_scale_factor=1.0, resnet_skip_time_act=False)
# IF-II-L: 256 px, channels 160 x (1, 2, 4, 6, 8), attention at the 16 and 8 px levels only (the
# super-resolution UNet swaps the high-resolution attention for convolutions: seed paper 2,
# Sec. IV-A). 6 channels in: the noisy image and the upsampled, re-noised stage-I image; the
# noise level enters as a class embedding of timestep kind.
_SCALE_OUT = 1 / 0.7071
PAPER_STAGE_2 = dict(_SIMPLE, sample_size=256, in_channels=6, out_channels=6, block_out_channels=(160, 320, 640, 960, 1280),
                     layers_per_block=(2, 2, 3, 5, 5), cross_attention_dim=1280, encoder_hid_dim=4096,
                     down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("SimpleCrossAttnDownBlock2D",) * 2,
                     up_block_types=("SimpleCrossAttnUpBlock2D",) * 2 + ("ResnetUpsampleBlock2D",) * 3,
                     class_embed_type="timestep", time_embedding_dim=1280, time_embedding_act_fn="gelu",
                     mid_block_scale_factor=_SCALE_OUT, resnet_out_scale_factor=_SCALE_OUT, resnet_skip_time_act=True)
# T5 v1.1 XXL's encoder.
PAPER_TEXT = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                  feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, relative_attention_num_buckets=32,
                  relative_attention_max_distance=128, tie_word_embeddings=False, pad_token_id=T5_PAD,
                  eos_token_id=T5_EOS)

# DDPM, cosine betas, the UNet's learned variance range, and dynamic thresholding of x0 at the
# 95th percentile, clipped to 1.5 (stage I) or 1.0 (stage II); stage II's conditioning image is
# re-noised to its noise level with a plain cosine DDPM.
SCHEDULER_1 = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02,
                   variance_type="learned_range", prediction_type="epsilon", thresholding=True,
                   dynamic_thresholding_ratio=0.95, sample_max_value=1.5, clip_sample=True, clip_sample_range=1.0)
SCHEDULER_2 = dict(SCHEDULER_1, sample_max_value=1.0)
NOISING_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02)

# Parameter counts as DeepFloyd publishes them (the IF-I-XL-v1.0 model card: "Num Parameters:
# 4.3B"; deep-floyd/IF README: "IF-I 4.3B ... IF-II 1.2B"; the model card's architecture figure:
# frozen T5 encoder 4.8B), to the precision published.
PUBLISHED = {"text_encoder": 4.8e9, "unet_1": 4.3e9, "unet_2": 1.2e9}
PUBLISHED_PRECISION = 0.05e9   # one decimal of a billion
PAPER_PARAMS = float(sum(PUBLISHED.values()))
COMPONENTS = ("text_encoder", "unet_1", "unet_2")


def _tiny_unet(base: dict, **kw) -> dict:
    # CPU widths, 8-channel heads and 8 norm groups (sd15-tiny's lesson: a group of one or two
    # channels over a few pixels makes fp32 rounding visible between attention implementations).
    return dict(base, attention_head_dim=8, addition_embed_type_num_heads=2, norm_num_groups=8, **kw)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # Both stages' published layouts (4 and 5 levels, the same attention levels, the tuple of
        # residual blocks a level) at CPU widths, with a 2-layer T5 whose width the UNets project.
        Preset("imagen-tiny", "tiny", dict(
            unet_1=_tiny_unet(PAPER_STAGE_1, sample_size=16, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
                              cross_attention_dim=32, encoder_hid_dim=32),
            unet_2=_tiny_unet(PAPER_STAGE_2, sample_size=32, block_out_channels=(16, 16, 16, 32, 32),
                              layers_per_block=(1, 1, 1, 2, 2), cross_attention_dim=32, encoder_hid_dim=32,
                              time_embedding_dim=32),
            text_encoder=dict(PAPER_TEXT, vocab_size=1000, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)),
            source=f"CPU-sized DeepFloyd IF with {_XL}'s and {_IIL}'s layouts and schedulers"),
        # The published layouts at about half width (not IF-I-M / IF-II-M, whose configs are not
        # cited here) and T5 v1.1 large's encoder (google/t5-v1_1-large: d_model 1024, d_ff
        # 2816, 24 layers, 16 heads), whose width the UNets project.
        Preset("imagen-small", "small", dict(
            unet_1=dict(PAPER_STAGE_1, block_out_channels=(320, 640, 960, 1280), cross_attention_dim=1280,
                        encoder_hid_dim=1024),
            unet_2=dict(PAPER_STAGE_2, block_out_channels=(96, 192, 384, 576, 768), cross_attention_dim=768,
                        time_embedding_dim=768, encoder_hid_dim=1024),
            text_encoder=dict(PAPER_TEXT, d_model=1024, d_ff=2816, num_heads=16)),
            source=f"{_XL} and {_IIL} layouts at about half width; google/t5-v1_1-large's encoder"),
        Preset("imagen", "paper", dict(unet_1=PAPER_STAGE_1, unet_2=PAPER_STAGE_2, text_encoder=PAPER_TEXT),
               source=f"{_XL} and {_IIL}: unet/config.json, scheduler/scheduler_config.json; {_T5} config.json",
               published_params=PAPER_PARAMS),
    ]
}

IMPLEMENTATIONS = ("eager", "sdpa")
_LABEL = "DeepFloyd IF"


def _processors() -> dict:
    from diffusers.models.attention_processor import AttnAddedKVProcessor, AttnAddedKVProcessor2_0

    # eager: the added-KV processor that materializes the scores (baddbmm, softmax upcast to
    # fp32, bmm); sdpa: the same attention through scaled_dot_product_attention.
    return {"eager": AttnAddedKVProcessor, "sdpa": AttnAddedKVProcessor2_0}


class Cascade(nn.Module):
    """The networks and schedulers of the two stages, as IFPipeline and IFSuperResolutionPipeline
    hold them (stage II shares stage I's text encoder, as diffusers' IF docs load it)."""

    def __init__(self, text_encoder: nn.Module, unet_1: nn.Module, unet_2: nn.Module, scheduler_1=None,
                 scheduler_2=None, image_noising_scheduler=None):
        super().__init__()
        self.text_encoder, self.unet_1, self.unet_2 = text_encoder, unet_1, unet_2
        self.scheduler_1, self.scheduler_2 = scheduler_1, scheduler_2
        self.image_noising_scheduler = image_noising_scheduler

    @property
    def unets(self) -> tuple[nn.Module, nn.Module]:
        return self.unet_1, self.unet_2


def _components(preset: Preset) -> dict[str, nn.Module]:
    from diffusers import UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    c = preset.config
    return {"text_encoder": T5EncoderModel(T5Config(**c["text_encoder"])),
            "unet_1": UNet2DConditionModel.from_config(dict(c["unet_1"])),
            "unet_2": UNet2DConditionModel.from_config(dict(c["unet_2"]))}


meta_components, meta_model = diffusion.meta_builders(_components)


def schedulers() -> dict:
    from diffusers import DDPMScheduler

    return {"scheduler_1": DDPMScheduler(**SCHEDULER_1), "scheduler_2": DDPMScheduler(**SCHEDULER_2),
            "image_noising_scheduler": DDPMScheduler(**NOISING_SCHEDULER)}


def build(preset: Preset, device, *, dtype: torch.dtype | None = None, checkpoint: str | None = None,
          seed: int = 0) -> Cascade:
    """The cascade on `device`, its networks in eval mode: random weights (seeded) or local
    pipeline directories (check_checkpoint)."""
    components, scheds = diffusion.build_parts(preset, device, dtype=dtype, checkpoint=checkpoint, seed=seed,
                                               make=_components, schedulers=schedulers, check=check_checkpoint,
                                               load=_load)
    model = Cascade(**components, **scheds)
    set_attn_implementation(model, "eager")
    return model


def set_attn_implementation(model: Cascade, implementation: str) -> None:
    """The attention of every network: T5's through transformers, the UNets' through diffusers'
    added-KV processors."""
    diffusion.set_attention(model.text_encoder, model.unets, _processors(), implementation, _LABEL)


def set_module_attention(net, implementation: str) -> None:
    """One UNet's added-KV attention processors."""
    diffusion.set_net_attention(net, _processors(), implementation, _LABEL)


def attn_implementation(model: Cascade) -> str:
    return diffusion.attention_of(model.unets, _processors())


def _note(name: str):
    # IF's blocks attend once over the pixels and the text together: the text tokens' added keys
    # and values are concatenated before the pixels' own (only_cross_attention False), so a
    # call's key length is the text's plus the query's.
    def note(attn, hidden_states, encoder_hidden_states):
        q = diffusion.token_length(hidden_states)
        if encoder_hidden_states is None:
            return ("self", q, q, 0)
        text = int(encoder_hidden_states.shape[1])
        return ("text", q, text, text) if attn.only_cross_attention else ("self+text", q, text + q, text)

    return note


def attention_calls(unet, height: int, width: int, context: int = T5_CONTEXT) -> list[tuple[str, int, int, int]]:
    """(kind, query length, key length, text tokens among the keys) of every attention call of
    one denoising step of `unet` over `height` x `width` pixels, in call order (seed paper 2,
    Figs. 8 and 9). The UNet's twin on the meta device runs diffusers' own forward on shapes
    alone: no memory and no compute, at any image size."""
    return diffusion.meta_attention_calls(unet, _note, (height, width), context=context)


def downsampling_factor(unet_config) -> int:
    """How much a UNet's deepest level is smaller than its input: 2 per level after the first.
    A side that is not a multiple of it cannot go down and back up to the same size."""
    return 2 ** (len(unet_config["block_out_channels"]) - 1)


_STAGES = {
    "stage_1": (("text_encoder", "unet"), ("scheduler",)),
    "stage_2": (("unet",), ("scheduler", "image_noising_scheduler")),
}


def check_checkpoint(path: str | Path) -> Path:
    """A directory holding one diffusers pipeline directory per stage, as IFPipeline and
    IFSuperResolutionPipeline save them: stage_1/ (IF-I-XL: model_index.json, text_encoder/ and
    unet/ with a config.json and safetensors weights each, scheduler/scheduler_config.json) and
    stage_2/ (IF-II-L: model_index.json, unet/, scheduler/ and image_noising_scheduler/; its text
    encoder, if saved, is not used: stage I's encodes for both)."""
    p = diffusion.checkpoint_root(path)
    for stage, (weights, scheds) in _STAGES.items():
        if not (p / stage).is_dir():
            raise CheckpointError(f"checkpoint path {p} has no {stage}/ (one diffusers pipeline directory per stage: "
                                  f"stage_1/ for IF-I, stage_2/ for IF-II)")
        diffusion.check_pipeline_dir(p, stage, weights=weights, schedulers=scheds)
    return p


def _load(p: Path, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel
    from transformers import T5EncoderModel

    components = {
        "text_encoder": T5EncoderModel.from_pretrained(p / "stage_1" / "text_encoder", dtype=dtype, local_files_only=True),
        "unet_1": UNet2DConditionModel.from_pretrained(p / "stage_1", subfolder="unet", torch_dtype=dtype,
                                                       local_files_only=True),
        "unet_2": UNet2DConditionModel.from_pretrained(p / "stage_2", subfolder="unet", torch_dtype=dtype,
                                                       local_files_only=True),
    }
    where = {"scheduler_1": ("stage_1", "scheduler"), "scheduler_2": ("stage_2", "scheduler"),
             "image_noising_scheduler": ("stage_2", "image_noising_scheduler")}
    scheds = {name: diffusion.load_scheduler(p, p / stage / sub, "DDPMScheduler", f"{stage}/{sub}")
              for name, (stage, sub) in where.items()}
    return components, scheds


def save_pretrained(model: Cascade, path: str | Path) -> Path:
    """The cascade as the two pipeline directories check_checkpoint reads, written by diffusers'
    own IFPipeline and IFSuperResolutionPipeline (no tokenizer, safety checker or watermarker)."""
    from diffusers import IFPipeline, IFSuperResolutionPipeline

    p = Path(path).expanduser()
    none = dict(tokenizer=None, safety_checker=None, feature_extractor=None, watermarker=None,
                requires_safety_checker=False)
    IFPipeline(text_encoder=model.text_encoder, unet=model.unet_1, scheduler=model.scheduler_1,
               **none).save_pretrained(p / "stage_1")
    IFSuperResolutionPipeline(text_encoder=None, unet=model.unet_2, scheduler=model.scheduler_2,
                              image_noising_scheduler=model.image_noising_scheduler,
                              **none).save_pretrained(p / "stage_2")
    return p


__all__ = ["COMPONENTS", "Cascade", "IMPLEMENTATIONS", "PAPER_PARAMS", "PRESETS", "PUBLISHED", "PUBLISHED_PRECISION",
           "T5_CONTEXT", "attention_calls", "attn_implementation", "build", "check_checkpoint", "downsampling_factor",
           "meta_components", "meta_model", "save_pretrained", "schedulers", "set_attn_implementation",
           "set_module_attention"]
