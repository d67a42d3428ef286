"""ModelScope text-to-video (damo-vilab/text-to-video-ms-1.7b), the open Make-A-Video-like model:
a latent-diffusion UNet3D (Stable Diffusion's UNet with temporal convolutions and temporal
attention after each spatial block), the OpenCLIP ViT-H/14 text tower, and the KL autoencoder,
which decodes every frame as an image. Seed paper 2 characterizes Make-A-Video, whose weights
were never released; ModelScope's model has its structure (a text-to-image UNet extended by
temporal layers) and is what diffusers and transformers build.

Random weights from the published configs (unet/config.json, text_encoder/config.json,
vae/config.json, scheduler/scheduler_config.json of the model repository), or a local pipeline
directory in diffusers' layout. There is no tokenizer: prompts arrive as CLIP token ids
(tasks/text_to_video.py).

diffusers is imported inside the functions that build: the registry imports every workload to
list its cases, and a GPU runner may have the project without diffusers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from . import diffusion
from .common import CheckpointError, Preset
from .diffusion import LATENT_WEIGHTS, denoising_evaluations, steps_for, vae_factor

MODEL_TYPE = "text-to-video-ms"
CLIP_CONTEXT = 77

_T2V = "damo-vilab/text-to-video-ms-1.7b"
_DOWN = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D")
_UP = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D")

# unet/config.json (the model repository's; mirrored unchanged by ali-vilab/text-to-video-ms-1.7b,
# diffusers 0.15 conversion). `attention_head_dim` 64 is, in UNet3DConditionModel, the WIDTH of a
# head: its blocks build `channels // 64` heads of 64 (5, 10, 20, 20), and `transformer_in` 8
# heads of 64 over the 320 channels of the first level.
PAPER_UNET = dict(sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                  layers_per_block=2, down_block_types=_DOWN, up_block_types=_UP, cross_attention_dim=1024,
                  attention_head_dim=64, norm_num_groups=32, norm_eps=1e-5, act_fn="silu", downsample_padding=1,
                  mid_block_scale_factor=1)
# vae/config.json: Stable Diffusion's autoencoder, four levels, so the latent is each frame
# downsampled by 8.
PAPER_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, act_fn="silu", sample_size=512,
                 scaling_factor=0.18215)
# text_encoder/config.json: OpenCLIP ViT-H/14's text tower as Stable Diffusion 2 uses it (23 of
# its 24 layers: the penultimate layer's output conditions the UNet), GELU, width 1024.
PAPER_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                  num_attention_heads=16, max_position_embeddings=CLIP_CONTEXT, hidden_act="gelu",
                  projection_dim=512, layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1)
# scheduler/scheduler_config.json: DDIM, one UNet evaluation a step.
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")

# Published sizes. The model card and the ModelScope technical report (arXiv 2308.06571):
# "about 1.7 billion" parameters in all, "0.5 billion ... dedicated to temporal capabilities".
# The UNet's checkpoint (unet/diffusion_pytorch_model.safetensors) is 5.65 GB in fp32 (2.82 GB
# in fp16): 1.41B parameters at 4 bytes each. The networks built from the configs hold 1.835B
# (UNet 1.411B, text tower 340.4M, autoencoder 83.7M): 8% above the rounded total, which
# therefore checks only the order of magnitude; the UNet's file size pins the UNet.
PUBLISHED = {"unet": 5.65e9 / 4, "temporal": 0.5e9}
PAPER_PARAMS = 1.7e9
# An upper bound on the paper networks' parameters (the 1.835B above, rounded up), for memory
# models that must not build the model.
PARAMS_BOUND = 1.9e9

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # The published layout (four UNet levels, three with spatial, cross and temporal attention,
        # the input temporal transformer; four VAE levels, so the same factor 8) at CPU widths,
        # heads 8 wide. 8 norm groups, not 32: a group of one or two channels over a tiny latent
        # normalizes by a near-zero spread, which amplifies fp32 rounding between attention
        # implementations.
        Preset("video-tiny", "tiny", dict(
            unet=dict(PAPER_UNET, sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                      cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8),
            vae=dict(PAPER_VAE, block_out_channels=(32, 32, 64, 64), layers_per_block=1, sample_size=64,
                     norm_num_groups=8),
            text_encoder=dict(PAPER_TEXT, vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, projection_dim=32)),
            source=f"CPU-sized text-to-video with {_T2V}'s layout and scheduler"),
        # Every width halved; heads 32 wide, so each level keeps the published head count.
        Preset("video-small", "small", dict(
            unet=dict(PAPER_UNET, sample_size=16, block_out_channels=(160, 320, 640, 640), cross_attention_dim=512,
                      attention_head_dim=32),
            vae=dict(PAPER_VAE, block_out_channels=(64, 128, 256, 256), sample_size=128),
            text_encoder=dict(PAPER_TEXT, hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                              projection_dim=256)),
            source=f"{_T2V} with every width halved"),
        Preset("video", "paper", dict(unet=PAPER_UNET, vae=PAPER_VAE, text_encoder=PAPER_TEXT),
               source=f"{_T2V}: unet/, vae/, text_encoder/ config.json and scheduler/scheduler_config.json",
               published_params=PAPER_PARAMS),
    ]
}

IMPLEMENTATIONS = ("eager", "sdpa")
KINDS = ("spatial", "cross", "temporal")
_LABEL = "text-to-video"


def _is_temporal(name: str) -> bool:
    # UNet3DConditionModel's temporal transformers: `transformer_in` after conv_in and each
    # block's `temp_attentions`.
    return name.startswith("transformer_in.") or ".temp_attentions." in name


class VideoPipeline:
    """The four parts of the text-to-video pipeline. diffusers' own TextToVideoSDPipeline is
    deprecated (0.42) and has no step-end callback to mark phases with; the runner
    (engine/video_diffusion.py) writes its loop out over these parts instead."""

    def __init__(self, text_encoder, unet, vae, scheduler):
        self.text_encoder, self.unet, self.vae, self.scheduler = text_encoder, unet, vae, scheduler

    @property
    def components(self) -> dict:
        return {"text_encoder": self.text_encoder, "unet": self.unet, "vae": self.vae, "scheduler": self.scheduler}

    def save_pretrained(self, path: str | Path) -> None:
        """diffusers' pipeline layout, which `check_checkpoint` and `build(checkpoint=...)` read."""
        p = Path(path)
        for name in LATENT_WEIGHTS:
            getattr(self, name).save_pretrained(p / name)
        self.scheduler.save_pretrained(p / "scheduler")
        index = {"_class_name": "TextToVideoSDPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
                 "unet": ["diffusers", "UNet3DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                 "scheduler": ["diffusers", type(self.scheduler).__name__]}
        (p / "model_index.json").write_text(json.dumps(index, indent=2))


def _components(preset: Preset) -> dict[str, nn.Module]:
    return diffusion.latent_components(preset, "UNet3DConditionModel")


meta_components, meta_model = diffusion.meta_builders(_components)


def temporal_parameters(unet) -> int:
    """Parameters of the temporal layers: temporal convolutions and temporal transformers."""
    return sum(p.numel() for name, p in unet.named_parameters()
               if name.startswith("transformer_in.") or ".temp_attentions." in name or ".temp_convs." in name)


def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER)


def build(preset: Preset, device, *, dtype: torch.dtype | None = None, checkpoint: str | None = None,
          seed: int = 0) -> VideoPipeline:
    """The pipeline's parts on `device`, its networks in eval mode: random weights (seeded) or a
    local pipeline directory."""
    components, sched = diffusion.build_parts(preset, device, dtype=dtype, checkpoint=checkpoint, seed=seed,
                                              make=_components, schedulers=scheduler, check=check_checkpoint,
                                              load=_load)
    pipe = VideoPipeline(**components, scheduler=sched)
    set_attn_implementation(pipe, "eager")
    return pipe


def set_attn_implementation(pipe, implementation: str) -> None:
    """The attention of every network: the text encoder's through transformers, the UNet's
    (spatial, cross and temporal) and the autoencoder's through diffusers' processors."""
    diffusion.set_attention(pipe.text_encoder, (pipe.unet, pipe.vae), diffusion.attention_processors(),
                            implementation, _LABEL)


def set_module_attention(net, implementation: str) -> None:
    """One diffusers network's attention processors (the UNet3D's or the autoencoder's)."""
    diffusion.set_net_attention(net, diffusion.attention_processors(), implementation, _LABEL)


def attn_implementation(pipe) -> str:
    return diffusion.attention_of((pipe.unet, pipe.vae), diffusion.attention_processors())


class AttentionCall(NamedTuple):
    """One attention call as its matmuls see it (seed paper 2, Fig. 11): `batch` rows of
    `heads` heads, each `query` x `key` scores over `head_dim`-wide heads. Spatial attention
    runs over (rows x frames) images of H*W tokens; temporal attention over (rows x H*W)
    pixels of `frames` tokens."""

    kind: str        # spatial | cross | temporal
    batch: int
    heads: int
    query: int
    key: int
    head_dim: int


def _note(name: str):
    temporal = _is_temporal(name)

    def note(attn, hidden_states, encoder_hidden_states):
        keys = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        kind = "temporal" if temporal else ("spatial" if encoder_hidden_states is None else "cross")
        heads = attn.heads
        return AttentionCall(kind, int(hidden_states.shape[0]), heads, int(hidden_states.shape[1]),
                             int(keys.shape[1]), attn.to_q.out_features // heads)

    return note


def attention_calls(unet, frames: int, latent_height: int, latent_width: int, *, rows: int = 2,
                    context: int = CLIP_CONTEXT) -> list[AttentionCall]:
    """Every attention call of one denoising step of `unet` over `rows` latent videos (2 per
    prompt under classifier-free guidance) of `frames` frames, in call order. The UNet's twin on
    the meta device runs diffusers' own forward on shapes alone: no memory and no compute, at
    any frame count and size (seed paper 2, Figs. 12 and 14)."""
    if frames < 1:
        raise ValueError(f"a video needs at least 1 frame, got {frames}")
    return diffusion.meta_attention_calls(unet, _note, (frames, latent_height, latent_width), context=context,
                                          rows=rows)


def call_flops(call: AttentionCall) -> int:
    """FLOPs of the two matmuls of one attention call, QK^T and (scores)V, 2 a multiply-add:
    seed paper 2 counts attention's FLOPs by these two matmuls (Sec. VI-B, Fig. 14)."""
    return 4 * call.batch * call.heads * call.query * call.key * call.head_dim


def attention_flops(calls) -> dict[str, int]:
    """Attention FLOPs per kind over one denoising step's calls (seed paper 2, Figs. 12b and 14):
    temporal FLOPs grow with the square of the frame count, spatial ones linearly."""
    out = dict.fromkeys(KINDS, 0)
    for c in calls:
        out[c.kind] += call_flops(c)
    return out


def check_checkpoint(path: str | Path) -> Path:
    """A latent-diffusion pipeline directory (models/diffusion.py) whose UNet is a UNet3D."""
    p = diffusion.check_latent_checkpoint(path)
    unet_cfg = json.loads((p / "unet" / "config.json").read_text())
    if unet_cfg.get("_class_name", "UNet3DConditionModel") != "UNet3DConditionModel":
        raise CheckpointError(f"checkpoint path {p}: unet/ is a {unet_cfg.get('_class_name')}, not the "
                              f"UNet3DConditionModel of a text-to-video pipeline")
    return p


def _load(p: Path, dtype: torch.dtype):
    return diffusion.load_latent_components(p, dtype, "UNet3DConditionModel", "DDIMScheduler")


__all__ = ["CLIP_CONTEXT", "IMPLEMENTATIONS", "KINDS", "PAPER_PARAMS", "PARAMS_BOUND", "PRESETS", "PUBLISHED",
           "AttentionCall", "VideoPipeline", "attention_calls", "attention_flops", "build", "call_flops",
           "check_checkpoint", "denoising_evaluations", "meta_components", "meta_model", "scheduler",
           "set_attn_implementation", "set_module_attention", "steps_for", "temporal_parameters", "vae_factor"]
