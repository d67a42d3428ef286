"""What the diffusion model families share: building their networks in a dtype on a device or on
the meta device, diffusers' pipeline directories (checking and loading them), attention
processors set and read across a model's networks, the attention calls of one denoising step
recorded on a UNet's meta-device twin, and step counts as a scheduler makes them.

The latent-diffusion helpers (`latent_components`, `load_latent_components`,
`LATENT_WEIGHTS`) build the CLIP text encoder, a conditional UNet and the KL autoencoder that
Stable Diffusion and ModelScope's text-to-video model both use; the UNet class is the family's.

diffusers is imported inside the functions that build: the registry imports every workload to
list its cases, and a GPU runner may have the project without diffusers.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .common import CheckpointError, Preset, default_dtype

# A latent-diffusion pipeline directory's networks, each a subdirectory with weights.
LATENT_WEIGHTS = ("unet", "vae", "text_encoder")


# -- building --------------------------------------------------------------------------------
def build_parts(preset: Preset, device, *, dtype: torch.dtype | None, checkpoint: str | None, seed: int,
                make: Callable[[Preset], dict], schedulers: Callable[[], object],
                check: Callable[[str], Path], load: Callable[[Path, torch.dtype], tuple]) -> tuple[dict, object]:
    """The networks on `device` in eval mode without gradients, and the schedulers: random
    weights (seeded) from `make`, or what `load` reads of a checkpoint `check` accepts."""
    dtype = dtype or default_dtype(device)
    if checkpoint is not None:
        components, scheds = load(check(checkpoint), dtype)
    else:
        torch.manual_seed(seed)
        # Made in their dtype where they live: diffusers' `to(dtype)` warns on every cast.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                components = make(preset)
        finally:
            torch.set_default_dtype(previous)
        scheds = schedulers()
    for m in components.values():
        m.to(device).eval().requires_grad_(False)
    return components, scheds


def meta_builders(make: Callable[[Preset], dict]):
    """A family's `meta_components` and `meta_model` from its builder of networks."""
    def meta_components(preset: Preset) -> dict[str, nn.Module]:
        """The three networks on the meta device: shapes and parameter counts without memory."""
        with torch.device("meta"):
            return make(preset)

    def meta_model(preset: Preset) -> nn.Module:
        return nn.ModuleDict(meta_components(preset))

    return meta_components, meta_model


def latent_components(preset: Preset, unet_class: str) -> dict[str, nn.Module]:
    """The CLIP text encoder, the UNet (diffusers' `unet_class`) and the KL autoencoder of
    `preset`'s configs."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    c = preset.config
    return {"text_encoder": CLIPTextModel(CLIPTextConfig(**c["text_encoder"])),
            "unet": getattr(diffusers, unet_class).from_config(dict(c["unet"])),
            "vae": diffusers.AutoencoderKL.from_config(dict(c["vae"]))}


# -- pipeline directories --------------------------------------------------------------------
def checkpoint_root(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointError(f"checkpoint path {p} is not a directory")
    return p


def check_pipeline_dir(root: Path, stage: str = "", *, weights: tuple[str, ...] = LATENT_WEIGHTS,
                       schedulers: tuple[str, ...] = ("scheduler",)) -> None:
    """One diffusers pipeline directory (`root`, or its subdirectory `stage`): model_index.json,
    `weights` with a config.json and safetensors weights each, `schedulers` with a
    scheduler_config.json each. Errors name `root` and the path below it."""
    d, prefix = (root / stage, f"{stage}/") if stage else (root, "")
    if not (d / "model_index.json").is_file():
        raise CheckpointError(f"checkpoint path {root} has no {prefix}model_index.json "
                              f"(a diffusers pipeline directory)")
    for sub in weights:
        if not (d / sub / "config.json").is_file():
            raise CheckpointError(f"checkpoint path {root} has no {prefix}{sub}/config.json")
        if not any((d / sub).glob("*.safetensors")):
            raise CheckpointError(f"checkpoint path {root} has no {prefix}{sub}/*.safetensors weights")
    for sub in schedulers:
        if not (d / sub / "scheduler_config.json").is_file():
            raise CheckpointError(f"checkpoint path {root} has no {prefix}{sub}/scheduler_config.json")


def check_latent_checkpoint(path: str | Path) -> Path:
    """A diffusers pipeline directory: model_index.json, and unet/, vae/, text_encoder/ with a
    config.json and safetensors weights each, and scheduler/scheduler_config.json."""
    p = checkpoint_root(path)
    check_pipeline_dir(p)
    return p


def load_scheduler(root: Path, directory: Path, default: str, what: str = "scheduler"):
    """The scheduler saved in `directory`, of the diffusers class its config names (`default`
    where it names none)."""
    import diffusers

    cfg = json.loads((directory / "scheduler_config.json").read_text())
    cls = getattr(diffusers, cfg.get("_class_name", default), None)
    if cls is None:
        raise CheckpointError(f"checkpoint path {root}: {what} class {cfg.get('_class_name')!r} is not in diffusers")
    return cls.from_config(cfg)


def load_latent_components(p: Path, dtype: torch.dtype, unet_class: str, default_scheduler: str):
    """The networks and the scheduler of a latent-diffusion pipeline directory."""
    import diffusers
    from transformers import CLIPTextModel

    components = {
        "text_encoder": CLIPTextModel.from_pretrained(p / "text_encoder", dtype=dtype, local_files_only=True),
        "unet": getattr(diffusers, unet_class).from_pretrained(p, subfolder="unet", torch_dtype=dtype,
                                                               local_files_only=True),
        "vae": diffusers.AutoencoderKL.from_pretrained(p, subfolder="vae", torch_dtype=dtype, local_files_only=True),
    }
    return components, load_scheduler(p, p / "scheduler", default_scheduler)


# -- attention processors --------------------------------------------------------------------
def attention_processors() -> dict:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    # eager: diffusers' classic processor, the scores materialized (baddbmm, softmax, bmm);
    # sdpa: torch's scaled_dot_product_attention.
    return {"eager": AttnProcessor, "sdpa": AttnProcessor2_0}


def _processor_class(processors: dict, implementation: str, label: str):
    if implementation not in processors:
        raise ValueError(f"unknown {label} attention implementation {implementation!r}; known: {tuple(processors)}")
    return processors[implementation]


def set_net_attention(net, processors: dict, implementation: str, label: str) -> None:
    """One diffusers network's attention processors; `label` names the model in errors."""
    cls = _processor_class(processors, implementation, label)
    if any(type(p) is not cls for p in net.attn_processors.values()):
        net.set_attn_processor(cls())


def set_attention(text_encoder, nets, processors: dict, implementation: str, label: str) -> None:
    """The text encoder's attention through transformers, every one of `nets`' through
    diffusers' processors."""
    _processor_class(processors, implementation, label)   # before any network is changed
    if text_encoder.config._attn_implementation != implementation:
        text_encoder.set_attn_implementation(implementation)
    for net in nets:
        set_net_attention(net, processors, implementation, label)


def attention_of(nets, processors: dict) -> str:
    """The implementation all of `nets`' processors are, or "mixed"."""
    kinds = {type(p) for net in nets for p in net.attn_processors.values()}
    for name, cls in processors.items():
        if kinds == {cls}:
            return name
    return "mixed"


# -- attention calls of a step ---------------------------------------------------------------
class Recording:
    """An attention processor that notes each call through `note(attn, hidden_states,
    encoder_hidden_states)`, then runs the one it wraps: whatever implementation is set, its
    calls are the model's."""

    def __init__(self, inner, note: Callable, calls: list):
        self.inner, self.note, self.calls = inner, note, calls

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        self.calls.append(self.note(attn, hidden_states, encoder_hidden_states))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


def token_length(x: torch.Tensor) -> int:
    # (batch, tokens, channels), or (batch, channels, height, width) where a block attends over pixels
    return int(x.shape[1]) if x.dim() == 3 else int(x.shape[2] * x.shape[3])


def meta_attention_calls(unet, note_for: Callable[[str], Callable], dims: tuple[int, ...], *, context: int,
                         rows: int = 2) -> list:
    """What `note_for(processor name)` notes of every attention call of one denoising step of
    `unet` over `rows` samples of spatial (or frames and spatial) `dims`, in call order. The
    UNet's twin on the meta device runs diffusers' own forward on shapes alone: no memory and
    no compute, at any size."""
    twin = _twin(unet)
    calls: list = []
    twin.set_attn_processor({name: Recording(p, note_for(name), calls) for name, p in twin.attn_processors.items()})
    _twin_step(twin, dims, context, rows)
    return calls


def _score_note(name: str) -> Callable:
    def note(attn, hidden_states, encoder_hidden_states):
        keys = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        return (int(hidden_states.shape[0]), int(attn.heads), token_length(hidden_states), token_length(keys),
                "self" if encoder_hidden_states is None else "cross")

    return note


def largest_scores(unet, dims: tuple[int, ...], *, context: int, rows: int = 2) -> dict:
    """The largest self-attention score tensor of one denoising step of `unet` over `rows`
    samples of `dims`, as the paper sizes it (seed paper 2, Sec. V-A): rows x heads x query x
    key elements. It is the highest-resolution level's, where query = key = H x W, so it grows
    with the fourth power of the latent's side (the O(L^4) claim); cross-attention's keys are
    the text's, and a video's temporal attention's are its frames. Read from the
    meta-device twin, for processors whose keys are the tokens they are handed (not IF's added
    text keys)."""
    calls = [c for c in meta_attention_calls(unet, _score_note, dims, context=context, rows=rows) if c[4] == "self"]
    b, h, q, k, _ = max(calls, key=lambda c: c[0] * c[1] * c[2] * c[3])
    return {"rows": b, "heads": h, "query": q, "key": k, "elements": b * h * q * k}


def meta_unet_flops(unet, dims: tuple[int, ...], *, context: int, rows: int = 2) -> float:
    """FLOPs of one evaluation of `unet` over `rows` samples of `dims` (matmuls, convolutions
    and attention, as torch's FlopCounterMode counts them), from its meta-device twin."""
    from torch.utils.flop_counter import FlopCounterMode

    twin = _twin(unet)
    with FlopCounterMode(display=False) as counter:
        _twin_step(twin, dims, context, rows)
    return float(counter.get_total_flops())


def _twin(unet):
    with torch.device("meta"):
        return type(unet).from_config(unet.config)


def _twin_step(twin, dims: tuple[int, ...], context: int, rows: int) -> None:
    cfg = twin.config
    # A UNet that projects the text (IF's) takes the encoder's width; one with a class
    # embedding (IF's stage II, the noise level) takes labels.
    width = getattr(cfg, "encoder_hid_dim", None) or cfg.cross_attention_dim
    with torch.device("meta"), torch.no_grad():
        sample = torch.empty(rows, cfg.in_channels, *dims)
        embeds = torch.empty(rows, context, width)
        extra = {}
        if getattr(cfg, "class_embed_type", None) is not None:
            extra["class_labels"] = torch.ones(rows, dtype=torch.long)
        twin(sample, torch.tensor(1), encoder_hidden_states=embeds, **extra)


# -- steps -----------------------------------------------------------------------------------
def vae_factor(pipe) -> int:
    """How much the autoencoder downsamples: 2 per level after the first."""
    return 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def denoising_evaluations(sched, steps: int) -> int:
    """UNet evaluations a run of `steps` inference steps makes: PNDM repeats one timestep
    (50 steps are 51 evaluations), DDIM makes one a step."""
    if steps < 1:
        raise ValueError(f"the number of denoising steps must be at least 1, got {steps}")
    s = type(sched).from_config(sched.config)
    s.set_timesteps(steps)
    return len(s.timesteps)


def steps_for(sched, evaluations: int) -> int:
    """The inference steps that make exactly `evaluations` UNet evaluations."""
    for k in range(evaluations, 0, -1):
        n = denoising_evaluations(sched, k)
        if n == evaluations:
            return k
        if n < evaluations:
            break
    raise ValueError(f"{type(sched).__name__} makes no run of exactly {evaluations} UNet evaluations")


def batch_facts(pipe) -> dict:
    """What a latent-diffusion task's make_batch needs of the pipeline: the text encoder's
    vocabulary and context, the latent's channels and downsampling factor, and the UNet
    evaluations the scheduler makes of a step count."""
    te = pipe.text_encoder.config
    return dict(evaluations_of=lambda steps: denoising_evaluations(pipe.scheduler, steps),
                vocab_size=te.vocab_size, context=te.max_position_embeddings,
                latent_channels=pipe.unet.config.in_channels, factor=vae_factor(pipe))


__all__ = ["LATENT_WEIGHTS", "Recording", "attention_of", "attention_processors", "batch_facts", "build_parts",
           "check_latent_checkpoint", "check_pipeline_dir", "checkpoint_root", "denoising_evaluations", "largest_scores",
           "latent_components",
           "load_latent_components", "load_scheduler", "meta_attention_calls", "meta_builders", "set_attention",
           "set_net_attention", "steps_for", "token_length", "vae_factor"]
