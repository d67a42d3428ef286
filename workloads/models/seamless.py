"""SeamlessM4T v2 from transformers' SeamlessM4Tv2Config: random weights or a local checkpoint.

A random-weight model is made to behave like the published one where the workload depends on
it: the generation config gets the language and subword tables `generate` looks up, the
text-to-unit head can only emit units the vocoder has, and the text-to-unit duration head
yields the published number of units per character (so the vocoder sees as many frames as the
paper's speech outputs).
"""
from __future__ import annotations

import numpy as np
import torch
from transformers import SeamlessM4Tv2Config, SeamlessM4Tv2Model

from .common import Preset, check_checkpoint_dir, default_dtype

MODEL_TYPE = "seamless_m4t_v2"
SRC_LANG, TGT_LANG = "eng", "spa"   # seed paper 1 analyses English to Spanish (Fleurs en_us -> es_419)

# Seed paper 1, Table II: ~35 target tokens become ~385-393 units (S-S, T-S). Our subwords
# average ~4.5 characters with the word-start marker, so ~2.5 units per character; the
# duration head rounds, so a constant 3 per character lands at ~390 units for 35 tokens.
UNITS_PER_CHAR = 3
_MEAN_SUBWORD_CHARS = 3.5   # letters per random subword, plus "▁" on every other one

_TINY = dict(
    hidden_size=64, vocab_size=4096,
    speech_encoder_layers=2, speech_encoder_attention_heads=4, speech_encoder_intermediate_size=128,
    encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
    decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=128,
    t2u_encoder_layers=1, t2u_decoder_layers=1, t2u_encoder_attention_heads=4, t2u_decoder_attention_heads=4,
    t2u_encoder_ffn_dim=128, t2u_decoder_ffn_dim=128,
    t2u_variance_predictor_embed_dim=64, t2u_variance_predictor_hidden_dim=32,
    unit_embed_dim=32, lang_embed_dim=8, spkr_embed_dim=8, upsample_initial_channel=32,
    max_position_embeddings=1024, t2u_max_position_embeddings=2048,
)
_SMALL = dict(
    hidden_size=512, vocab_size=256102,
    speech_encoder_layers=12, speech_encoder_attention_heads=8, speech_encoder_intermediate_size=2048,
    encoder_layers=12, encoder_attention_heads=8, encoder_ffn_dim=4096,
    decoder_layers=12, decoder_attention_heads=8, decoder_ffn_dim=4096,
    t2u_encoder_layers=3, t2u_decoder_layers=3, t2u_encoder_attention_heads=8, t2u_decoder_attention_heads=8,
    t2u_encoder_ffn_dim=4096, t2u_decoder_ffn_dim=4096, t2u_variance_predictor_embed_dim=512,
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("seamless-tiny", "tiny", _TINY,
               source="CPU-sized SeamlessM4T v2: every module of the large model, 64 wide, 1-2 layers"),
        Preset("seamless-small", "small", _SMALL,
               source="half the width and depth of SeamlessM4T v2 large, full vocabularies"),
        Preset("seamless-large", "paper", {},
               source="SeamlessM4Tv2Config() defaults = facebook/seamless-m4t-v2-large",
               published_params=2.3e9),   # model card: 2.3B parameters
    ]
}


def config(preset: Preset) -> SeamlessM4Tv2Config:
    # A fresh config every time: from_config mutates the one it is given.
    return SeamlessM4Tv2Config(**preset.config)


def lang_ids(cfg) -> dict[str, dict[str, int]]:
    """Language codes -> ids for the text decoder, the text-to-unit model and the vocoder.

    The published tables put language tokens at the end of the text vocabulary; only the two
    languages of the paper's analysis are needed.
    """
    V = cfg.vocab_size
    return {
        "text_decoder_lang_to_code_id": {SRC_LANG: V - 2, TGT_LANG: V - 1},
        "t2u_lang_code_to_id": {SRC_LANG: 0, TGT_LANG: 1},
        "vocoder_lang_code_to_id": {SRC_LANG: 0, TGT_LANG: min(1, cfg.vocoder_num_langs - 1)},
    }


def _subword_tables(cfg, seed: int) -> tuple[dict[str, str], dict[str, int]]:
    """`id_to_text` (every text id to a subword) and `char_to_id`, as the generation config of
    the published checkpoint has them; subwords are random letter strings of plausible length."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzáéíóúñ"))
    lengths = np.clip(rng.poisson(_MEAN_SUBWORD_CHARS - 1, cfg.vocab_size) + 1, 1, 12)
    starts = rng.random(cfg.vocab_size) < 0.5
    pool = rng.choice(letters, size=int(lengths.sum()))
    id_to_text, at = {}, 0
    for i, (n, s) in enumerate(zip(lengths, starts)):
        piece = "".join(pool[at: at + n])
        at += n
        id_to_text[str(i)] = ("▁" + piece) if s else piece
    chars = ["▁", *letters.tolist()]
    char_to_id = {c: 4 + k for k, c in enumerate(chars)}   # 0-3 are pad/unk/bos/eos of the char vocabulary
    return id_to_text, char_to_id


def _make_generatable(model, seed: int) -> None:
    """Give a random-weight model what a published checkpoint brings besides its weights."""
    cfg = model.config
    gc = model.generation_config
    for key, table in lang_ids(cfg).items():
        setattr(gc, key, table)
    gc.id_to_text, gc.char_to_id = _subword_tables(cfg, seed)
    # A trained text-to-unit head never emits control units (0-3) nor units beyond the
    # vocoder's 10000; random weights do, and the vocoder then indexes out of range.
    t2u = model.t2u_model
    lo, hi = cfg.vocoder_offset, cfg.vocoder_offset + cfg.unit_hifi_gan_vocab_size
    keep = torch.zeros(cfg.t2u_vocab_size, dtype=torch.bool)
    keep[lo:hi] = True
    t2u.register_buffer("_unit_mask", torch.where(keep, 0.0, float("-inf")).to(model.device, model.dtype),
                        persistent=False)
    t2u.lm_head.register_forward_hook(lambda m, args, out: out + t2u._unit_mask)
    # Durations as published (see UNITS_PER_CHAR): a constant log-duration from the head's bias.
    proj = t2u.model.decoder.duration_predictor.proj
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.fill_(float(np.log1p(UNITS_PER_CHAR)))


def build(preset: Preset, device: torch.device | str, *, dtype: torch.dtype | None = None,
          attn_implementation: str = "eager", checkpoint: str | None = None, seed: int = 0):
    """SeamlessM4Tv2Model (all four tasks) in eval mode on `device`."""
    dtype = dtype or default_dtype(device)
    if checkpoint is not None:
        path = check_checkpoint_dir(checkpoint, MODEL_TYPE)
        model = SeamlessM4Tv2Model.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation,
                                                   local_files_only=True).to(device)
    else:
        torch.manual_seed(seed)
        with torch.device(device):
            model = SeamlessM4Tv2Model._from_config(config(preset), dtype=dtype,
                                                    attn_implementation=attn_implementation)
        _make_generatable(model, seed)
    return model.eval().requires_grad_(False)


def meta_model(preset: Preset):
    with torch.device("meta"):
        return SeamlessM4Tv2Model._from_config(config(preset))
