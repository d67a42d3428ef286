"""An Imagen-like pixel cascade, as DeepFloyd IF's stages I and II: text to a 64 x 64 image and
up to 256 x 256 by pixel-space diffusion (seed paper 2): T5 text encoding, 100 guided steps of
stage I's UNet, 50 of stage II's conditioned on the upsampled stage-I image.

A decode step of the harness is a stage-I step with half a stage-II step: TTFT is text encoding
and the first stage-I step, TPOT the cascade's time per stage-I step (engine/pixel_cascade.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.cache import DecoderCache
from ..engine.denoising import DenoiseRunner
from ..engine.pixel_cascade import CascadeRunner, cascade_denoiser
from ..engine.plan import Plan
from ..models import imagen
from ..models.common import Preset
from ..models.diffusion import meta_unet_flops
from ..tasks import pixel_cascade
from .base import MAX_BATCH_MEMORY, Family, batch_that_fits

# Bytes per element of one attention call's scores at their peak in the classic added-KV
# processor: the scores in the model's dtype, their fp32 upcast, the fp32 softmax and its cast
# back (Attention(upcast_softmax=True) in diffusers' simple cross-attention blocks).
_SCORE_BYTES = 2 + 4 + 4 + 2
# Full-resolution activations of the first level held at once (a residual block's input,
# output and two intermediates), bf16.
_LEVEL_TENSORS = 4


@dataclass
class PixelCascadeWorkload(Family):
    name: str = "imagen"
    family: object = imagen
    tasks: dict = field(default_factory=lambda: dict(pixel_cascade.TASKS))
    # As for Stable Diffusion: fused attention, then both stages' noise predictions compiled
    # (channels-last), each replayed as one CUDA graph, and both UNets' linear layers quantized.
    ladder: tuple[str, ...] = ("eager", "sdpa", "compile", "cuda_graph", "quant")
    # None yet: a pull request's head and base would each pay 150 eager UNet evaluations a
    # round for a case no GPU run has measured; they join with the first baselines.
    pr_levers: tuple[str, ...] = ()
    pr_tasks: tuple[str, ...] = ()
    sources: tuple[str, ...] = (   # see suites.foreign_sources
        "workloads/models/imagen.py", "workloads/tasks/pixel_cascade.py", "workloads/engine/pixel_cascade.py",
        "workloads/suites/imagen.py", "perf_tests/test_imagen.py",
    )
    compile_tuning: bool = True   # the denoising steps are nearly all of the run
    module_groups: dict = field(default_factory=lambda: {
        "text_encoder": ("text_encoder",), "stage_1": ("stage_1",), "stage_2": ("stage_2",),
    })
    share_spans: tuple | None = None
    # Seed paper 2, Fig. 7's kinds. An attention block's projections are linear, its scores and
    # their softmax attention (diffusers' Attention, T5's); ResNet blocks are convolutions and
    # GroupNorms, T5's norms are its RMS LayerNorms.
    operator_groups: dict = field(default_factory=lambda: {
        "convolution": ("Conv2d",), "attention": ("Attention", "T5Attention"), "linear": ("Linear",),
        "norm": ("GroupNorm", "LayerNorm", "T5LayerNorm"),
    })
    tiny_max_batch: int = 4   # CPU seconds

    def check_checkpoint(self, path: str) -> None:
        imagen.check_checkpoint(path)

    def supports_for(self, task: str) -> frozenset[str]:
        return frozenset({"static_denoise", "quantize"})

    def cache_group(self, task: str) -> str:
        return task

    def inputs(self, task: str, scale: str, batch: int, model, device) -> pixel_cascade.CascadeBatch:
        te = model.text_encoder.config
        return pixel_cascade.make_batch(
            task, scale, batch, vocab_size=te.vocab_size, context=imagen.T5_CONTEXT,
            factors=tuple(imagen.downsampling_factor(u.config) for u in model.unets), device=device,
            dtype=model.unet_1.dtype)

    def max_batch(self, preset: Preset, task: str) -> int:
        """4 at tiny scale; else the largest batch whose eager run fits in 90% of 80 GB in bf16.
        Per prompt, the larger of the two stages (they run one after the other): two rows
        (guidance) through the stage's highest-resolution attention, whose classic processor
        holds the (rows x heads x L x (text + L)) scores at once in bf16 and fp32, and a few
        full-resolution activations of its first level. That is 0.6 GB a prompt at paper scale
        (stage I's 32 x 32 attention), meant as an upper bound; calibrating it against a
        measured peak would change the max-batch case ids."""
        if preset.scale == "tiny":
            return self.tiny_max_batch
        t = self.tasks[task]
        per_prompt = max(_stage_bytes(preset.config[f"unet_{i + 1}"], size)
                         for i, size in enumerate(t.sizes[preset.scale]))
        # The published cascade's weights at every scale: an upper bound that needs no model
        # built, so cases are listed where diffusers is not installed.
        weights = imagen.PAPER_PARAMS * 2
        fit = int((MAX_BATCH_MEMORY - weights) // per_prompt)
        return batch_that_fits(min(fit, t.samples))

    def runner(self, model, batch, plan: Plan, decoders: DecoderCache):
        """The cascade as IF's pipelines run it, or the lean loop the compile, cuda_graph and quant
        rungs share."""
        if plan.engine == "library":
            return CascadeRunner(model, batch, plan.attn_implementation)
        return DenoiseRunner(cascade_denoiser(model, batch, plan, decoders), plan.cuda_graph, plan.attn_implementation)

    def decode_bytes(self, model, batch) -> float:
        """Fewest bytes a decode step moves: stage I's weights once and half of stage II's (its
        share of a step). The steps are compute-bound (seed paper 2, Fig. 5), so their fraction
        of this floor is small by design."""
        def size(m):
            return float(sum(p.numel() * p.element_size() for p in m.parameters()))

        share = batch.stage_2_steps(batch.new_tokens) / batch.new_tokens
        return size(model.unet_1) + share * size(model.unet_2)

    def step_flops(self, model, batch) -> float:
        """A stage-I evaluation and the same share of a stage-II one as `decode_bytes` counts,
        each over the doubled batch, on the UNets' meta-device twins."""
        context, rows = batch.input_ids.shape[-1], 2 * batch.batch
        share = batch.stage_2_steps(batch.new_tokens) / batch.new_tokens
        return (meta_unet_flops(model.unet_1, tuple(batch.size_1), context=context, rows=rows)
                + share * meta_unet_flops(model.unet_2, tuple(batch.size_2), context=context, rows=rows))


def _stage_bytes(cfg: dict, size: int) -> float:
    """Peak bytes one prompt adds to a stage's eager step (two rows: classifier-free guidance)."""
    channels, kinds = cfg["block_out_channels"], cfg["down_block_types"]
    level = next(i for i, k in enumerate(kinds) if "CrossAttn" in k)
    L = (size // 2 ** level) ** 2
    heads = channels[level] // cfg["attention_head_dim"]
    attention = 2 * heads * L * (imagen.T5_CONTEXT + L) * _SCORE_BYTES
    activations = _LEVEL_TENSORS * 2 * channels[0] * size * size * 2
    return float(attention + activations)


WORKLOAD = PixelCascadeWorkload()
