"""Workloads: a model family, its tasks, and the engines that run a plan on them.

This is the small protocol levers and the harness see of a workload: presets per scale, tasks,
inputs, runners for a plan, what its engine supports, and the byte counts for the roofline.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .engine.library import LibraryGenerate
from .engine.plan import Plan
from .engine.static_decode import StaticDecoder, StaticRunner, cache_length
from .models import llama
from .models.common import Preset, kv_bytes_per_token, parameter_count, weight_bytes_per_token
from .tasks import text

# "Max batch" is the largest that fits in an 80 GB GPU (seed paper 1 sizes its max batches to
# an A100 80GB). 10% is left to the CUDA context, allocator fragmentation and workspaces.
MAX_BATCH_MEMORY = 80e9 * 0.90


@dataclass
class CausalLMWorkload:
    """A decoder-only language model from transformers, generating text greedily."""

    name: str
    family: object                       # module with PRESETS, build(), meta_model()
    tasks: dict[str, text.Dataset]
    table_iii_batch: int                 # the paper's max batch, used at tiny scale where memory does not bind
    supports: frozenset[str] = field(default_factory=lambda: frozenset({"static_decode"}))

    def presets(self, scale: str) -> list[Preset]:
        return [p for p in self.family.PRESETS.values() if p.scale == scale]

    def preset(self, name: str) -> Preset:
        return self.family.PRESETS[name]

    def build(self, preset: Preset, device, checkpoint: str | None = None):
        return self.family.build(preset, device, checkpoint=checkpoint)

    # -- inputs ------------------------------------------------------------------------
    def inputs(self, task: str, scale: str, batch: int, model, device) -> text.TextBatch:
        return text.make_batch(
            self.tasks[task], scale, batch, vocab_size=model.config.vocab_size, device=device,
            max_positions=model.config.max_position_embeddings,
        )

    def max_batch(self, preset: Preset, task: str) -> int:
        """Table III's batch at tiny scale; else the largest batch whose caches fit in 80 GB."""
        if preset.scale == "tiny":
            return self.table_iii_batch
        dataset = self.tasks[task]
        cfg = self.family.config(preset)
        dtype = torch.bfloat16   # sized for the GPU run, whatever machine lists the cases
        elem = torch.empty((), dtype=dtype).element_size()
        weights = parameter_count(self.family.meta_model(preset)) * elem
        ctx = cache_length(dataset.prompt.hi, text.DECODE_CAP[preset.scale])
        kv = kv_bytes_per_token(cfg, dtype) * ctx
        # Per sequence: the lever's static cache, the reference's dynamic cache with room to
        # grow, and the eager prefill's fp32 scores and softmax. This is conservative: at 7B
        # bs56 the measured peak was 41.7 GB (eager running beside the static cache), so a
        # larger batch would fit; calibrating it changes the max-batch case ids and their baselines.
        scores = 2 * cfg.num_attention_heads * dataset.prompt.hi**2 * 4
        per_seq = 3 * kv + scores
        fit = int((MAX_BATCH_MEMORY - weights) // per_seq)
        fit = min(fit, dataset.samples)   # never more rows than the dataset has problems
        return max(1, fit - fit % 8 if fit >= 8 else fit)

    # -- running -----------------------------------------------------------------------
    def runner(self, model, batch: text.TextBatch, plan: Plan, decoders: dict, *, keep_logits: bool = False):
        """A runner for `plan`; static decoders are shared through `decoders` so that the
        compile and cuda_graph rungs reuse one compiled step."""
        if plan.engine == "library":
            return LibraryGenerate(model, batch, plan.attn_implementation, keep_logits=keep_logits)
        L = cache_length(batch.padded_length, batch.new_tokens)
        key = (id(model), batch.batch, L, plan.attn_implementation, plan.compile,
               tuple(sorted(plan.compile_options.items())), keep_logits)
        dec = decoders.get(key)
        if dec is None:
            dec = decoders[key] = StaticDecoder(model, batch.batch, L, attn_implementation=plan.attn_implementation,
                                                keep_logits=keep_logits)
            if plan.compile:
                dec.compile(**plan.compile_options)
        dec.load(batch)
        return StaticRunner(dec, use_graph=plan.cuda_graph)

    # -- the roofline ------------------------------------------------------------------
    def decode_bytes(self, model, batch: text.TextBatch) -> float:
        """Fewest bytes one decode step moves: every weight but the embedding table once, and
        each row's KV cache at its mean context over the decode."""
        weights = weight_bytes_per_token(model, model.get_input_embeddings())
        kv = kv_bytes_per_token(model.config, model.dtype)
        mean_ctx = sum(batch.prompt_lengths) + batch.batch * batch.new_tokens / 2
        return weights + kv * mean_ctx


WORKLOADS = {
    "llama": CausalLMWorkload(
        "llama", llama, tasks={"T-T": text.HUMANEVAL}, table_iii_batch=4,
    ),
}
