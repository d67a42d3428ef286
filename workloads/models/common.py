"""What every model family shares: presets, dtypes, checkpoints, byte counts."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open


class CheckpointError(ValueError):
    """A local checkpoint directory that cannot be used, with the path and what is missing."""


@dataclass(frozen=True)
class Preset:
    """One named configuration of a model family at one scale."""

    name: str                 # e.g. "llama-7b"; the first part of a case id
    scale: str                # tiny | small | paper
    config: dict              # keyword arguments of the family's config class
    source: str               # where the numbers come from
    published_params: float | None = None   # parameter count the source publishes
    large: bool = False       # needs more than 80 GB of GPU memory


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on the GPU (as served), fp32 on the CPU (exact comparisons, no slow bf16 kernels)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def check_checkpoint_dir(path: str | Path, model_type: str) -> Path:
    """A directory with config.json of `model_type` and safetensors weights, or a clear error."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointError(f"checkpoint path {p} is not a directory")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"checkpoint path {p} has no config.json")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint path {p}: config.json is not valid JSON ({e})") from None
    if cfg.get("model_type") != model_type:
        raise CheckpointError(f"checkpoint path {p}: model_type is {cfg.get('model_type')!r}, expected {model_type!r}")
    weights = sorted(p.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"checkpoint path {p} has no *.safetensors weights")
    for f in weights:   # the header only: a truncated or foreign file fails here, not minutes into a run
        try:
            with safe_open(f, framework="pt"):
                pass
        except Exception as e:
            raise CheckpointError(f"checkpoint file {f} is not a readable safetensors file ({first_line(e)})") from None
    return p


def first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def parameter_count(model: torch.nn.Module) -> int:
    # parameters() yields a tied weight once.
    return sum(p.numel() for p in model.parameters())


def weight_bytes_per_token(model: torch.nn.Module, embedding: torch.nn.Module | None) -> int:
    """Bytes of weights one decode step must read: all of them but the embedding table,
    of which a step reads only the rows of its tokens."""
    skip = {id(p) for p in embedding.parameters()} if embedding is not None else set()
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes of key and value cache one token occupies across all layers."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * torch.empty((), dtype=dtype).element_size()
