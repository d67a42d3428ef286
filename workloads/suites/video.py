"""Make-A-Video-like text to video by latent diffusion (seed paper 2, Sec. VI), as ModelScope's
open text-to-video model: CLIP text encoding, 50 guided denoising steps of a UNet3D over 16
frames at once (spatial, cross and temporal attention), the autoencoder's decode of every frame;
and the same loop over the frame sweep of seed paper 2, Figs. 12 and 14 (`T-V-<n>frames`).

A denoising step is the decode step of the harness: TTFT is text encoding and the first step,
TPOT the time per denoising step (engine/video_diffusion.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.cache import DecoderCache
from ..engine.plan import Plan
from ..engine.denoising import DenoiseRunner
from ..engine.video_diffusion import VideoRunner, video_denoiser
from ..models import video
from ..models.common import Preset
from ..models.diffusion import batch_facts, meta_unet_flops
from ..tasks import text_to_video
from .base import MAX_BATCH_MEMORY, Family, batch_that_fits


@dataclass
class VideoWorkload(Family):
    name: str = "video"
    family: object = video
    tasks: dict = field(default_factory=lambda: dict(text_to_video.TASKS))
    # As for Stable Diffusion: fused attention, then the UNet3D's noise prediction over every
    # frame and the decode of every frame compiled (channels-last, fused QKV), the noise
    # prediction replayed as one CUDA graph, and the UNet3D's linear layers quantized.
    ladder: tuple[str, ...] = ("eager", "sdpa", "compile", "cuda_graph", "quant")
    # None yet: a pull request's head and base would each pay 50 eager UNet3D evaluations over 16
    # frames a round for a case no GPU run has measured.
    pr_levers: tuple[str, ...] = ()
    pr_tasks: tuple[str, ...] = ("T-V",)   # the frame sweep characterizes; it never gates a pull request
    sweep_levers: tuple[str, ...] = ("eager", "sdpa")
    sources: tuple[str, ...] = (   # see suites.foreign_sources
        "workloads/models/video.py", "workloads/tasks/text_to_video.py", "workloads/engine/video_diffusion.py",
        "workloads/suites/video.py", "perf_tests/test_video.py",
    )
    compile_tuning: bool = True   # the denoising steps are nearly all of the run
    module_groups: dict = field(default_factory=lambda: {
        "text_encoder": ("text_encoder",), "denoise": ("unet",), "vae": ("vae",),
    })
    share_spans: tuple | None = None
    # Seed paper 2, Fig. 7's kinds, with temporal attention apart (Fig. 12): diffusers' Attention
    # inside the temporal transformers (`transformer_in`, each block's `temp_attentions`) counts
    # on its own. UNet3D's temporal convolutions are Conv3d.
    operator_groups: dict = field(default_factory=lambda: {
        "convolution": ("Conv2d", "Conv3d"), "temporal_attention": ("TransformerTemporalModel>Attention",),
        "attention": ("Attention", "CLIPAttention"), "linear": ("Linear", "LoRACompatibleLinear"),
        "norm": ("GroupNorm", "LayerNorm"),
    })
    tiny_max_batch: int = 2   # CPU seconds: each prompt is 4 frames

    def check_checkpoint(self, path: str) -> None:
        video.check_checkpoint(path)

    def supports_for(self, task: str) -> frozenset[str]:
        return frozenset({"static_denoise", "quantize"})

    def tasks_at(self, scale: str) -> tuple[str, ...]:
        return tuple(name for name, t in self.tasks.items() if scale in t.frames)

    def levers_for(self, task: str) -> tuple[str, ...] | None:
        return self.sweep_levers if self.tasks[task].sweep else None

    def cache_group(self, task: str) -> str:
        return task

    def inputs(self, task: str, scale: str, batch: int, model, device) -> text_to_video.VideoBatch:
        b = text_to_video.make_batch(task, scale, batch, device=device, **batch_facts(model))
        b.latents = b.latents.to(model.unet.dtype)
        return b

    def max_batch(self, preset: Preset, task: str) -> int:
        """2 at tiny scale; else the largest batch whose eager run fits in 90% of 80 GB in bf16.
        Per prompt: two rows (guidance) of F frames through the UNet's highest-resolution
        spatial attention, whose classic processor holds two (rows x F x heads x L x L) tensors
        at once (the scores and their softmax), the same for temporal attention over
        (rows x L) pixels of F frames; and the autoencoder's decode of F frames at once: each
        frame's mid-block attention fp32 scores over its latent and four full-resolution
        activations of the last level. At most the task's sample count. An upper bound, not
        calibrated by a committed run: calibrating it would change the max-batch case ids."""
        t, cfg = self.tasks[task], preset.config
        if t.sweep:
            return 1   # a sweep point characterizes one video: batch 1 only
        if preset.scale == "tiny":
            return self.tiny_max_batch
        size, frames = t.frame_size[preset.scale], t.frames[preset.scale]
        factor = 2 ** (len(cfg["vae"]["block_out_channels"]) - 1)
        L = (size // factor) ** 2
        u = cfg["unet"]
        # UNet3D's `attention_head_dim` is a head's width: the first level has channels / width heads.
        heads = u["block_out_channels"][0] // u["attention_head_dim"]
        spatial = 2 * frames * heads * L * L * 2 * 2
        temporal = 2 * L * heads * frames * frames * 2 * 2
        vae = frames * (L * L * 4 + 4 * cfg["vae"]["block_out_channels"][0] * size * size * 2)
        # The published model's weights at every scale, needing no model built, so that cases
        # are listed where diffusers is not installed.
        weights = video.PARAMS_BOUND * 2
        fit = int((MAX_BATCH_MEMORY - weights) // (spatial + temporal + vae))
        return batch_that_fits(min(fit, t.samples))

    def runner(self, model, batch, plan: Plan, decoders: DecoderCache):
        """The pipeline's loop over the shared parts, or the lean loop the compile, cuda_graph and
        quant rungs share."""
        if plan.engine == "library":
            return VideoRunner(model, batch, plan.attn_implementation)
        return DenoiseRunner(video_denoiser(model, batch, plan, decoders), plan.cuda_graph, plan.attn_implementation)

    def decode_bytes(self, model, batch) -> float:
        """Fewest bytes a denoising step moves: the UNet's weights, read once. The step is
        compute-bound (seed paper 2, Fig. 5), so its fraction of this floor is small by design."""
        return float(sum(p.numel() * p.element_size() for p in model.unet.parameters()))

    def step_flops(self, model, batch) -> float:
        """One UNet3D evaluation over the doubled batch of every frame, counted on its meta twin."""
        return meta_unet_flops(model.unet, tuple(batch.latents.shape[-3:]), context=batch.input_ids.shape[-1],
                               rows=2 * batch.batch)


WORKLOAD = VideoWorkload()
