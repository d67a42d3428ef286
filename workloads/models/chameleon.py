"""Chameleon (early-fusion text and image tokens) from transformers' ChameleonConfig, and its image detokenizer.

transformers has the backbone and the VQ-VAE image encoder, but no VQ decoder: images come back
to pixels through `ImageDecoder` here, a VQGAN decoder mirroring the encoder's published config.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForImageTextToText, ChameleonConfig
from transformers.models.chameleon.modeling_chameleon import (
    ChameleonVQVAEEncoderAttnBlock,
    ChameleonVQVAEEncoderResnetBlock,
)

from .common import Preset, check_checkpoint_dir, default_dtype

MODEL_TYPE = "chameleon"

# Token ids of the vocabulary a random-weight model needs (a checkpoint brings its own
# tokenizer's map). Image codes sit at 4.. as in Chameleon's tokenizer; the markers' ids are
# ours: only their roles matter to latency.
FIRST_CODE_ID = 4
IMAGE_PLACEHOLDER_ID = 8711   # "<image>": transformers swaps each for one VQ code's token
BOI_ID = 8197                 # begin-of-image marker
EOI_ID = 8196                 # end-of-image marker
PAD_ID = 0
FIRST_TEXT_ID = 9000          # random prompt text is drawn from here up: no code, no marker


def _code_name(code: int) -> str:
    # transformers reads an image token's code from its name: "IMGIMG" + digits as letters A-J + "Z".
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def vocabulary_map(num_codes: int) -> dict[str, int]:
    vm = {_code_name(c): FIRST_CODE_ID + c for c in range(num_codes)}
    vm.update({"<image>": IMAGE_PLACEHOLDER_ID, "<racm3:break>": BOI_ID, "<eoss>": EOI_ID, "<pad>": PAD_ID})
    return vm


# Chameleon's image tokenizer (transformers' ChameleonVQVAEConfig defaults, from the released
# VQGAN): 512 px, base 128 channels, multipliers (1, 1, 2, 2, 4), 8192 codes of 256 dims: 32x32 codes.
_VQ_PAPER = dict(resolution=512, base_channels=128, channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2,
                 embed_dim=256, latent_channels=256, num_embeddings=8192)
# Same code paths at CPU size: 64 px, 4x4 = 16 codes (GroupNorm's 32 groups bound the width from below).
_VQ_TINY = dict(resolution=64, base_channels=32, channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=1,
                embed_dim=32, latent_channels=32, num_embeddings=256)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "chameleon-tiny", "tiny",
            dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512, vq_config=_VQ_TINY),
            source="CPU-sized Chameleon with the full 65536-token vocabulary and a 64 px image tokenizer",
        ),
        Preset(
            "chameleon-1b", "small",
            dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=32, vq_config=_VQ_PAPER),
            source="TinyLlama-1.1B shape with Chameleon's vocabulary, qk-norm and image tokenizer (no small Chameleon is published)",
        ),
        Preset(
            "chameleon-7b", "paper",
            dict(vq_config=_VQ_PAPER),
            source="transformers ChameleonConfig() defaults = facebook/chameleon-7b",
            published_params=7e9,   # Chameleon paper (arXiv 2405.09818): 7B
        ),
        Preset(
            "chameleon-34b", "paper",
            dict(hidden_size=8192, intermediate_size=22016, num_hidden_layers=48, num_attention_heads=64,
                 num_key_value_heads=8, swin_norm=True, vq_config=_VQ_PAPER),
            source="Chameleon paper (arXiv 2405.09818) 34B: 48 layers, width 8192, 64 heads (8 KV heads), norm re-ordering",
            published_params=34e9,
            large=True,
        ),
    ]
}


def config(preset: Preset) -> ChameleonConfig:
    # A fresh config every time: from_config mutates the one it is given.
    kw = dict(preset.config)
    kw["vq_config"] = dict(kw["vq_config"])
    return ChameleonConfig(**kw, vocabulary_map=vocabulary_map(kw["vq_config"]["num_embeddings"]), pad_token_id=PAD_ID)


def image_tokens(model) -> int:
    """Codes per image: the VQ grid (4 halvings per level after the first: 512 px -> 32 x 32)."""
    vq = model.config.vq_config
    side = vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)
    return side * side


def build(preset: Preset, device: torch.device | str, *, dtype: torch.dtype | None = None,
          attn_implementation: str = "eager", checkpoint: str | None = None, seed: int = 0):
    """ChameleonForConditionalGeneration in eval mode on `device`: random weights (seeded) or a local checkpoint."""
    dtype = dtype or default_dtype(device)
    if checkpoint is not None:
        path = check_checkpoint_dir(checkpoint, MODEL_TYPE)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True
        ).to(device)
    else:
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(config(preset), dtype=dtype,
                                                            attn_implementation=attn_implementation)
    model.generation_config.eos_token_id = None   # a fixed number of decode steps, never cut short
    model.generation_config.pad_token_id = PAD_ID
    return model.eval().requires_grad_(False)


def meta_model(preset: Preset):
    """The architecture without memory, to count parameters of configs too large to build here."""
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config(preset))


class TextLogits:
    """`head(model, **inputs)`: the last position's logits exactly as
    ChameleonForConditionalGeneration.forward gives them (image tokens at the dtype minimum:
    it generates text only), the image tokens held as a fixed boolean mask. The library indexes
    the logits with a Python list of all 8192 image token ids, which costs a compiled step
    about 10 ms of host time per call (measured on the CPU: 3.5 ms a tiny step with 256 codes,
    14 ms with 8192)."""

    def __init__(self, model):
        self.mask = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=model.device)
        self.mask[model.model.vocabulary_mapping.image_tokens] = True

    def __call__(self, model, **inputs) -> torch.Tensor:
        hidden = model.model(**inputs).last_hidden_state[:, -1]
        logits = model.lm_head(hidden)
        return logits.masked_fill(self.mask, torch.finfo(logits.dtype).min)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class ImageDecoder(nn.Module):
    """VQ codes -> pixels: codebook lookup, post-quant conv, then the VQGAN decoder.

    Ours because no installable library has Chameleon's decoder: transformers ships the encoder
    only, and diffusers' VQModel (the same taming-transformers layout) needs Pillow and requests,
    which the GPU hosts do not have. It mirrors transformers' ChameleonVQVAEEncoder (taming's
    Decoder: conv_in, mid resnet/attention/resnet, per level num_res_blocks + 1 resnet blocks
    and a 2x nearest upsample, GroupNorm, swish, conv_out) and reuses its resnet and attention
    blocks. The codebook and post-quant conv are the model's own (ChameleonVQVAE keeps a
    post_quant_conv it never uses).
    """

    def __init__(self, vqmodel):
        super().__init__()
        cfg = vqmodel.config
        self.codebook = vqmodel.quantize.embedding
        self.post_quant_conv = vqmodel.post_quant_conv
        mult = list(cfg.channel_multiplier)
        self.side = cfg.resolution // 2 ** (len(mult) - 1)
        ch = cfg.base_channels * mult[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, kernel_size=3, stride=1, padding=1)
        self.mid = nn.ModuleList([ChameleonVQVAEEncoderResnetBlock(cfg, ch, ch), ChameleonVQVAEEncoderAttnBlock(ch),
                                  ChameleonVQVAEEncoderResnetBlock(cfg, ch, ch)])
        attn_res = set(cfg.attn_resolutions or ())
        res = self.side
        self.up = nn.ModuleList()
        for level in reversed(range(len(mult))):
            out = cfg.base_channels * mult[level]
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ChameleonVQVAEEncoderResnetBlock(cfg, ch, out))
                ch = out
                if res in attn_res and cfg.attn_type == "vanilla":
                    blocks.append(ChameleonVQVAEEncoderAttnBlock(ch))
            if level != 0:
                blocks.append(_Upsample(ch))
                res *= 2
            self.up.append(blocks)
        self.norm_out = nn.GroupNorm(num_groups=32, num_channels=ch, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, side*side) code indices -> (B, 3, resolution, resolution) pixels in [-1, 1]."""
        B = codes.shape[0]
        z = self.codebook(codes).view(B, self.side, self.side, -1).permute(0, 3, 1, 2)
        h = self.conv_in(self.post_quant_conv(z))
        for block in self.mid:
            h = block(h)
        for level in self.up:
            for block in level:
                h = block(h)
        h = self.norm_out(h)
        h = h * torch.sigmoid(h)
        return self.conv_out(h).clamp(-1, 1)


def image_decoder(model, seed: int = 0) -> ImageDecoder:
    """The detokenizer for `model`'s image tokenizer, random decoder weights (seeded), on its device and dtype."""
    torch.manual_seed(seed)
    dev = model.device
    with torch.device(dev):
        dec = ImageDecoder(model.model.vqmodel)
    return dec.to(dtype=model.dtype).eval().requires_grad_(False)
