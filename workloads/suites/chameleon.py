"""Chameleon: text out of an image and a prompt (I-T, IT-T: greedy, like Code Llama), and an
image out of a prompt (T-I: guided decoding of image tokens, then the detokenizer)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine import cfg as cfg_engine
from ..engine.cache import DecoderCache
from ..engine.library import LibraryGenerate
from ..engine.plan import Plan
from ..engine.static_decode import StaticRunner, cache_length
from ..models import chameleon
from ..models.common import Preset, kv_bytes_per_token, parameter_count
from ..tasks import image
from .base import MAX_BATCH_MEMORY, batch_that_fits
from .causal_lm import CausalLMWorkload, static_decoder


@dataclass
class ChameleonWorkload(CausalLMWorkload):
    name: str = "chameleon"
    family: object = chameleon
    tasks: dict = field(default_factory=lambda: dict(image.TASKS))
    table_iii_batch: int = 16     # seed paper 1, Table III, all three tasks
    tiny_max_batch: int = 4       # CPU seconds
    # One rung per task gates pull requests: the T-I reference alone (1024 guided eager steps)
    # takes tens of seconds a round at 7B.
    pr_levers: tuple[str, ...] = ("cuda_graph",)
    # IT-T's prefill and step are I-T's with a longer prompt and fewer steps.
    pr_tasks: tuple[str, ...] = ("I-T", "T-I")
    sources: tuple[str, ...] = (   # see suites.foreign_sources
        "workloads/models/chameleon.py", "workloads/tasks/image.py", "workloads/engine/cfg.py",
        "workloads/suites/chameleon.py", "perf_tests/test_chameleon.py",
    )
    # The phases the paper reports, from the spans the engines time them by.
    module_groups: dict = field(default_factory=lambda: {
        "prefill": ("prefill",), "decode": ("decode",), "detokenize": ("detokenize",),
    })
    temperature: float = cfg_engine.TEMPERATURE   # T-I sampling; 0 is greedy over the guided logits

    def cache_group(self, task: str) -> str:
        # I-T and IT-T read an image and a little text: nearby lengths share compiled decoders.
        return "image-out" if self.tasks[task].image_out else "text-out"

    def _ids(self, model) -> dict:
        vm = model.config.vocabulary_map
        return dict(bos=model.config.bos_token_id, boi=vm.get("<racm3:break>", chameleon.BOI_ID),
                    eoi=vm.get("<eoss>", chameleon.EOI_ID), image=model.model.vocabulary_mapping.image_token_id,
                    pad=chameleon.PAD_ID, first_text=chameleon.FIRST_TEXT_ID)

    def inputs(self, task: str, scale: str, batch: int, model, device, **kw) -> image.ImageTextBatch:
        cfg = model.config
        b = image.make_batch(
            self.tasks[task], batch, image_tokens=chameleon.image_tokens(model), resolution=cfg.vq_config.resolution,
            ids=self._ids(model), vocab_size=cfg.vocab_size, max_positions=cfg.max_position_embeddings,
            device=device, **kw,
        )
        if b.pixel_values is not None:
            b.pixel_values = b.pixel_values.to(model.dtype)
        return b

    def max_batch(self, preset: Preset, task: str) -> int:
        """Table III's 16 where it fits in 80 GB (bf16): per row the lever's static cache and
        the reference's dynamic cache, and the eager prefill's fp32 scores; T-I has three rows
        per prompt."""
        if preset.scale == "tiny":
            return self.tiny_max_batch
        t = self.tasks[task]
        cfg = self.family.config(preset)
        vq = cfg.vq_config
        img = (vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)) ** 2
        prompt = image.MARKERS + img + t.text.hi if t.image_in else t.text.hi + 2
        ctx = cache_length(prompt, t.decode_steps or img)
        weights = parameter_count(self.family.meta_model(preset)) * 2
        kv = kv_bytes_per_token(cfg, torch.bfloat16) * ctx
        scores = 2 * cfg.num_attention_heads * prompt**2 * 4
        per_prompt = (3 if t.cfg else 1) * (2 * kv + scores)
        return batch_that_fits(min(int((MAX_BATCH_MEMORY - weights) // per_prompt), self.table_iii_batch))

    def runner(self, model, batch, plan: Plan, decoders: DecoderCache):
        if not batch.cfg:
            if plan.engine == "library":
                return LibraryGenerate(model, batch, plan.attn_implementation, keep_logits=self.keep_logits)
            dec = static_decoder(model, batch, plan, decoders, keep_logits=self.keep_logits, kind=":text",
                                 head=chameleon.TextLogits(model))
            return StaticRunner(dec, use_graph=plan.cuda_graph)
        detok = decoders.get("detokenizer", model, (), plan, (), lambda: chameleon.image_decoder(model))
        to_code = model.model.vocabulary_mapping.bpe2img
        if plan.engine == "library":
            chooser = cfg_engine.ImageTokenChooser(to_code, batch.batch, batch.new_tokens, model.device,
                                                   temperature=self.temperature)
            return cfg_engine.CFGGenerate(model, batch, plan.attn_implementation, chooser, detok)
        chooser = cfg_engine.ImageTokenChooser(to_code, batch.batch, cache_length(batch.padded_length, batch.new_tokens),
                                               model.device, temperature=self.temperature)
        dec = static_decoder(model, batch, plan, decoders, keep_logits=self.keep_logits,
                             kind=f":cfg:{self.temperature}", head=cfg_engine.unmasked_logits, choose=chooser)
        return cfg_engine.CFGRunner(dec, plan.cuda_graph, dec.choose, detok)

    def decode_bytes(self, model, batch) -> float:
        """Fewest bytes one decode step moves: the decoder layers, final norm and LM head once
        (not the embedding table, nor the image tokenizer), and every row's KV cache at its mean
        context over the decode (three rows per prompt for T-I)."""
        mods = (model.model.layers, model.model.norm, model.lm_head)
        weights = sum(p.numel() * p.element_size() for m in mods for p in m.parameters())
        kv = kv_bytes_per_token(model.config, model.dtype)
        rows = batch.input_ids.shape[0]
        mean_ctx = float(batch.attention_mask.sum()) + rows * batch.new_tokens / 2
        return weights + kv * mean_ctx


WORKLOAD = ChameleonWorkload()
