"""Stable Diffusion 1.5: text to a 512 x 512 image by latent diffusion (seed paper 2): CLIP text
encoding, 50 guided denoising steps of the UNet over a doubled batch, the autoencoder's decode;
and the same pipeline over the image-size sweep of seed paper 2, Figs. 9 and 10 (`T-I-<n>px`).

A denoising step is the decode step of the harness: TTFT is text encoding and the first step,
TPOT the time per denoising step (engine/diffusion.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.cache import DecoderCache
from ..engine.denoising import DenoiseRunner
from ..engine.diffusion import PipelineRunner, denoiser
from ..engine.plan import Plan
from ..models import sd15
from ..models.common import Preset
from ..models.diffusion import batch_facts, meta_unet_flops
from ..tasks import text_to_image
from .base import MAX_BATCH_MEMORY, Family, batch_that_fits


@dataclass
class DiffusionWorkload(Family):
    name: str = "sd15"
    family: object = sd15
    tasks: dict = field(default_factory=lambda: dict(text_to_image.TASKS))
    # In the order diffusion users apply them: fused attention, then the denoising step compiled
    # (channels-last, fused QKV), its noise prediction replayed as one CUDA graph, and the UNet's
    # linear layers quantized.
    ladder: tuple[str, ...] = ("eager", "sdpa", "compile", "cuda_graph", "quant")
    # None yet: a pull request's head and base would each pay 51 eager UNet evaluations a round
    # at 512 x 512 for a case no GPU run has measured; eager and sdpa at batch 1 join with the
    # GPU rungs and their first baselines.
    pr_levers: tuple[str, ...] = ()
    pr_tasks: tuple[str, ...] = ("T-I",)   # the image-size sweep characterizes; it never gates a pull request
    # The sweep compares attention before and after flash attention (seed paper 2, Fig. 10).
    sweep_levers: tuple[str, ...] = ("eager", "sdpa")
    sources: tuple[str, ...] = (   # see suites.foreign_sources
        "workloads/models/sd15.py", "workloads/tasks/text_to_image.py", "workloads/engine/diffusion.py",
        "workloads/suites/sd15.py", "perf_tests/test_sd15.py",
    )
    compile_tuning: bool = True   # the denoising steps are nearly all of the run
    module_groups: dict = field(default_factory=lambda: {
        "text_encoder": ("text_encoder",), "denoise": ("unet",), "vae": ("vae",),
    })
    share_spans: tuple | None = None
    # Seed paper 2, Fig. 7's kinds. An attention block's projections are linear, its scores and
    # their softmax attention; diffusers' ResNet blocks are convolutions and GroupNorms.
    operator_groups: dict = field(default_factory=lambda: {
        "convolution": ("Conv2d",), "attention": ("Attention", "CLIPAttention"), "linear": ("Linear", "LoRACompatibleLinear"),
        "norm": ("GroupNorm", "LayerNorm"),
    })
    tiny_max_batch: int = 4   # CPU seconds

    def check_checkpoint(self, path: str) -> None:
        sd15.check_checkpoint(path)

    def supports_for(self, task: str) -> frozenset[str]:
        return frozenset({"static_denoise", "quantize"})

    def tasks_at(self, scale: str) -> tuple[str, ...]:
        return tuple(name for name, t in self.tasks.items() if scale in t.image_size)

    def levers_for(self, task: str) -> tuple[str, ...] | None:
        return self.sweep_levers if self.tasks[task].sweep else None

    def cache_group(self, task: str) -> str:
        return task

    def inputs(self, task: str, scale: str, batch: int, model, device) -> text_to_image.PromptBatch:
        b = text_to_image.make_batch(task, scale, batch, device=device, **batch_facts(model))
        b.latents = b.latents.to(model.unet.dtype)
        return b

    def max_batch(self, preset: Preset, task: str) -> int:
        """4 at tiny scale; else the largest batch whose eager run fits in 90% of 80 GB in bf16.
        Per prompt: two rows (guidance) through the UNet's highest-resolution attention, whose
        classic processor holds two (rows x heads x L x L) tensors at once (the scores and their
        softmax); and the autoencoder's decode of one image: its mid-block attention's fp32
        scores over the latent, and four full-resolution activations of its last level. That
        is 1.48 GB a prompt at 512 x 512, meant as an upper bound; calibrating it against a
        measured peak would change the max-batch case ids."""
        t, cfg = self.tasks[task], preset.config
        if t.sweep:
            return 1   # a sweep point characterizes one image: batch 1 only
        if preset.scale == "tiny":
            return self.tiny_max_batch
        size = t.image_size[preset.scale]
        factor = 2 ** (len(cfg["vae"]["block_out_channels"]) - 1)
        L = (size // factor) ** 2
        heads = cfg["unet"]["attention_head_dim"]   # diffusers' name for the head count here
        unet = 2 * heads * L * L * 2 * 2
        vae = 2 * L * L * 4 + 4 * cfg["vae"]["block_out_channels"][0] * size * size * 2
        # The published model's weights at every scale: an upper bound (2.1 GB of the 72 GB the
        # batch fits in) that needs no model built, so cases are listed where diffusers is not
        # installed (a runner that installs the project without its dependencies).
        weights = sd15.PAPER_PARAMS * 2
        fit = int((MAX_BATCH_MEMORY - weights) // (unet + vae))
        return batch_that_fits(min(fit, t.samples))

    def runner(self, model, batch, plan: Plan, decoders: DecoderCache):
        """diffusers' pipeline, or the lean denoising loop the compile and cuda_graph rungs share."""
        if plan.engine == "library":
            return PipelineRunner(model, batch, plan.attn_implementation)
        return DenoiseRunner(denoiser(model, batch, plan, decoders), plan.cuda_graph, plan.attn_implementation)

    def decode_bytes(self, model, batch) -> float:
        """Fewest bytes a denoising step moves: the UNet's weights, read once. The step is
        compute-bound (seed paper 2, Fig. 5), so its fraction of this floor is small by design."""
        return float(sum(p.numel() * p.element_size() for p in model.unet.parameters()))

    def step_flops(self, model, batch) -> float:
        """One UNet evaluation over the doubled batch, counted on its meta-device twin."""
        return meta_unet_flops(model.unet, tuple(batch.latents.shape[-2:]), context=batch.input_ids.shape[-1],
                               rows=2 * batch.batch)


WORKLOAD = DiffusionWorkload()
