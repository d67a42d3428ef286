"""Code Llama (Llama-2 architecture) from transformers' LlamaConfig, random weights or a checkpoint."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from .common import Preset, check_checkpoint_dir, default_dtype

MODEL_TYPE = "llama"
_COMMON = dict(rms_norm_eps=1e-5, rope_theta=1e6, max_position_embeddings=16384, tie_word_embeddings=False)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "llama-tiny", "tiny",
            dict(_COMMON, hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=32016),
            source="CPU-sized Llama with Code Llama's vocabulary and grouped-query attention",
        ),
        Preset(
            "llama-1b", "small",
            dict(_COMMON, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32016),
            source="TinyLlama-1.1B shape (TinyLlama/TinyLlama-1.1B config.json) with Code Llama's vocabulary",
        ),
        Preset(
            "llama-7b", "paper",
            dict(_COMMON, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32016),
            source="codellama/CodeLlama-7b-hf config.json",
            published_params=6.74e9,   # model card: 6.74B parameters
        ),
        Preset(
            "llama-34b", "paper",
            dict(_COMMON, hidden_size=8192, intermediate_size=22016, num_hidden_layers=48, num_attention_heads=64,
                 num_key_value_heads=8, vocab_size=32000),
            source="codellama/CodeLlama-34b-hf config.json",
            published_params=33.7e9,   # model card: 33.7B parameters
            large=True,
        ),
    ]
}


def config(preset: Preset) -> LlamaConfig:
    # A fresh config every time: from_config mutates the one it is given.
    return LlamaConfig(**preset.config)


def build(preset: Preset, device: torch.device | str, *, dtype: torch.dtype | None = None,
          attn_implementation: str = "eager", checkpoint: str | None = None, seed: int = 0):
    """The model in eval mode on `device`: random weights (seeded) or a local checkpoint."""
    dtype = dtype or default_dtype(device)
    if checkpoint is not None:
        path = check_checkpoint_dir(checkpoint, MODEL_TYPE)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True
        ).to(device)
    else:
        torch.manual_seed(seed)
        # Initialized where it runs: a 7B model initialized on the host takes minutes.
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config(preset), dtype=dtype, attn_implementation=attn_implementation)
    model.generation_config.eos_token_id = None   # a fixed number of decode steps, never cut short
    model.generation_config.pad_token_id = 0
    return model.eval().requires_grad_(False)


def meta_model(preset: Preset):
    """The architecture without memory, to count parameters of configs too large to build here."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config(preset))
