"""A decoder-only language model from transformers, generating text greedily: the shape Code
Llama has, and Chameleon's text-output tasks."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine.cache import DecoderCache
from ..engine.library import LibraryGenerate
from ..engine.plan import Plan
from ..engine.static_decode import StaticDecoder, StaticRunner, cache_length
from ..levers import LADDER
from ..models.common import Preset, kv_bytes_per_token, parameter_count, weight_bytes_per_token
from ..tasks import text
from .base import MAX_BATCH_MEMORY, Family, batch_that_fits

# What a static decoder is built from: a plan that agrees on these shares it (compile, cuda_graph).
DECODER_FIELDS = ("attn_implementation", "compile", "compile_options")


def static_decoder(model, batch, plan: Plan, decoders: DecoderCache, *, keep_logits: bool = False,
                   kind: str = "", **decoder_kwargs) -> StaticDecoder:
    """The shared static decoder for `batch`'s shapes and the plan, loaded with `batch`. `kind`
    tells decoders with different `decoder_kwargs` (head, choose) apart."""
    rows = batch.input_ids.shape[0]
    length = cache_length(batch.padded_length, batch.new_tokens)

    def build():
        dec = StaticDecoder(model, rows, length, attn_implementation=plan.attn_implementation,
                            keep_logits=keep_logits, **decoder_kwargs)
        if plan.compile:
            dec.compile(**plan.inductor_options)
        return dec

    dec = decoders.get(f"static{kind}", model, (rows, length, keep_logits), plan, DECODER_FIELDS, build)
    dec.load(batch)
    return dec


@dataclass
class CausalLMWorkload(Family):
    name: str
    family: object                       # module with PRESETS, build(), meta_model()
    tasks: dict[str, text.Dataset]
    table_iii_batch: int                 # the paper's max batch, used at tiny scale where memory does not bind
    supports: frozenset[str] = field(default_factory=lambda: frozenset({"static_decode"}))
    ladder: tuple[str, ...] = LADDER
    pr_levers: tuple[str, ...] = ("eager", "compile", "cuda_graph")   # at batch 1, the pull-request gate
    pr_tasks: tuple[str, ...] = ()
    compile_tuning: bool = True   # the decode step is nearly all of the run: autotune it
    module_groups: dict = field(default_factory=dict)   # one module: the breakdown has nothing to group
    share_spans: tuple | None = None
    sources: tuple[str, ...] = ()   # see suites.foreign_sources
    keep_logits: bool = False       # runners keep every step's logits (the equality tests)

    def supports_for(self, task: str) -> frozenset[str]:
        return self.supports

    def cache_group(self, task: str) -> str:
        return task

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
        # grow, and the eager prefill's fp32 scores and softmax. Conservative (docs/measured.md,
        # "Measured on an H100"); calibrating it would change the max-batch case ids.
        scores = 2 * cfg.num_attention_heads * dataset.prompt.hi**2 * 4
        fit = int((MAX_BATCH_MEMORY - weights) // (3 * kv + scores))
        return batch_that_fits(min(fit, dataset.samples))   # never more rows than the dataset has problems

    def runner(self, model, batch: text.TextBatch, plan: Plan, decoders: DecoderCache):
        """The library's generate, or a static decoder shared by the compile and cuda_graph rungs."""
        if plan.engine == "library":
            return LibraryGenerate(model, batch, plan.attn_implementation, keep_logits=self.keep_logits)
        return StaticRunner(static_decoder(model, batch, plan, decoders, keep_logits=self.keep_logits),
                            use_graph=plan.cuda_graph)

    def decode_bytes(self, model, batch: text.TextBatch) -> float:
        """Fewest bytes one decode step moves: every weight but the embedding table once, and
        each row's KV cache at its mean context over the decode."""
        weights = weight_bytes_per_token(model, model.get_input_embeddings())
        kv = kv_bytes_per_token(model.config, model.dtype)
        mean_ctx = sum(batch.prompt_lengths) + batch.batch * batch.new_tokens / 2
        return weights + kv * mean_ctx
