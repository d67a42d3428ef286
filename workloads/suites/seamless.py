"""SeamlessM4T v2: speech/text in, text/speech out, beam search over the text decoder (seed
paper 1, Section IV-A deep dive, Table V)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine import translate as tr
from ..engine.beam_decode import BeamDecoder, self_cache_length
from ..engine.cache import DecoderCache
from ..engine.plan import Plan
from ..engine.vocoder import Vocoder
from ..models import seamless
from ..models.common import Preset, parameter_count
from ..tasks import speech, text
from .base import MAX_BATCH_MEMORY, Family, batch_that_fits

# What each shared object is built from (its plan fields and this workload's extras).
BEAM_DECODER = ("attn_implementation", "compile", "compile_options", "kv_reorder")
VOCODER = ("vocoder", "vocoder_conv2d")
VOCODER_BUCKETS = ("vocoder_conv2d",)   # compiled buckets, shared by the graph rung of the same layout


@dataclass
class SeamlessWorkload(Family):
    name: str = "seamless"
    family: object = seamless
    tasks: dict = field(default_factory=lambda: dict(speech.TASKS))
    # Seed paper 1, Table V: text decoder compile, + its CUDA graph, + the compiled in-place
    # reorder, + vocoder compile, + vocoder CUDA graph; each on top of the last.
    ladder: tuple[str, ...] = ("eager", "compile", "cuda_graph", "kv_reorder", "vocoder_compile", "vocoder_cuda_graph",
                               "vocoder_conv2d")
    pr_levers: tuple[str, ...] = ("eager", "kv_reorder", "vocoder_cuda_graph")   # top of each task's ladder
    # Speech in and out runs every module S-T and T-S do (encoder, decoders, vocoder); T-T is
    # the text encoder's path.
    pr_tasks: tuple[str, ...] = ("S-S", "T-T")
    sources: tuple[str, ...] = (   # see suites.foreign_sources
        "workloads/models/seamless.py", "workloads/tasks/speech.py", "workloads/engine/translate.py",
        "workloads/engine/vocoder.py", "workloads/engine/beam_decode.py", "workloads/engine/conv_layout.py",
        "workloads/levers/kv_reorder.py", "workloads/levers/vocoder.py", "workloads/suites/seamless.py",
        "perf_tests/test_seamless.py",
    )
    # The text decoder is a small share of an optimized run: coordinate-descent tuning would add
    # minutes of compile to the pull-request gate for a few milliseconds.
    compile_tuning: bool = False
    # Modules as the paper names them, from the spans the engines time them by.
    module_groups: dict = field(default_factory=lambda: {
        "encoder": ("encoder",),
        "text_decoder": ("decoder.prefill", "decoder.step", "kv_reorder"),
        "t2u": ("decoder.rerun", "t2u.subwords", "t2u"),
        "vocoder": ("vocoder",),
    })
    share_spans: tuple = ("kv_reorder", ("decoder.step", "kv_reorder"))   # the reorder's share of decoding
    beams: int = speech.BEAMS
    tiny_max_batch: int = 4   # CPU seconds; Table III's 128 / 384 apply from `small` up
    tgt_lang: str = seamless.TGT_LANG

    def supports_for(self, task: str) -> frozenset[str]:
        s = {"static_decode", "beam_search"}
        if self.tasks[task].speech_out:
            s.add("vocoder")
        return frozenset(s)

    def cache_group(self, task: str) -> str:
        # S-S and S-T translate the same speech, T-T and T-S the same text: one decoder each.
        return "speech" if self.tasks[task].speech_in else "text"

    @staticmethod
    def input_limit(cfg, speech_in: bool) -> int:
        """The longest input the model takes. Text: the text encoder's max_position_embeddings
        tokens, language and EOS tokens included. Speech: the adaptor shortens frames by its
        stride, and the encoder output is held to the same max_position_embeddings positions."""
        if speech_in:
            return cfg.max_position_embeddings * cfg.adaptor_stride
        return cfg.max_position_embeddings

    def inputs(self, task: str, scale: str, batch: int, model, device) -> speech.TranslationBatch:
        cfg = model.config
        t = self.tasks[task]
        b = speech.make_batch(
            task, scale, batch, vocab_size=cfg.vocab_size,
            src_lang_id=model.generation_config.text_decoder_lang_to_code_id[seamless.SRC_LANG],
            eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id, limit=self.input_limit(cfg, t.speech_in),
        ).to(device)
        if b.input_features is not None:
            b.input_features = b.input_features.to(model.dtype)
        return b

    def max_batch(self, preset: Preset, task: str) -> int:
        """Table III's batch (128 speech, 384 text), or the largest the reference fits in 80 GB.

        What binds is the library's generate: it keeps every step's beam scores (it asks for them
        itself), K x vocab fp32 per input per step; with the longest decode of the task that is
        about 0.5 GB per input at paper scale. Also counted: its dynamic caches, at twice their
        size while a reorder copies them, and the lever's static caches.
        """
        if preset.scale == "tiny":
            return self.tiny_max_batch
        t = self.tasks[task]
        cfg = self.family.config(preset)
        elem = 2   # bf16, as the GPU runs it
        weights = parameter_count(self.family.meta_model(preset)) * elem
        steps = min(speech.STEPS["speech" if t.speech_in else "text"].hi, text.DECODE_CAP[preset.scale])
        enc = (speech.SPEECH_IN.hi // cfg.adaptor_stride + 1) if t.speech_in else speech.TEXT_IN.hi
        kv_tok = 2 * cfg.decoder_layers * cfg.hidden_size * elem
        scores = self.beams * cfg.vocab_size * 4 * steps
        caches = self.beams * kv_tok * (2 * (steps + 2) + 2 * enc) + self.beams * kv_tok * (self_cache_length(2, steps) + enc)
        fit = int((MAX_BATCH_MEMORY - weights) // (scores + caches))
        return batch_that_fits(min(fit, t.table_iii_batch))

    def runner(self, model, batch, plan: Plan, decoders: DecoderCache):
        if plan.engine == "library":
            return tr.LibraryTranslate(model, batch, plan.attn_implementation, beams=self.beams, tgt_lang=self.tgt_lang)
        S, L = tr.encoder_length(model, batch), self_cache_length(2, batch.new_tokens)

        def beam_decoder():
            dec = BeamDecoder(model.text_decoder, model.lm_head, batch_size=batch.batch, beams=self.beams, enc_len=S,
                              max_len=L, eos_id=model.config.eos_token_id, pad_id=model.config.pad_token_id,
                              in_place_reorder=plan.extra("kv_reorder", False))
            if plan.compile:
                dec.compile(**plan.inductor_options)
            return dec

        dec = decoders.get("beam", model, (batch.batch, self.beams, S, L), plan, BEAM_DECODER, beam_decoder)
        voc = self._vocoder(model, plan, decoders) if batch.task.speech_out else None
        return tr.TranslateRunner(model, batch, dec, voc, use_graph=plan.cuda_graph,
                                  attn_implementation=plan.attn_implementation, tgt_lang=self.tgt_lang)

    @staticmethod
    def _vocoder(model, plan: Plan, decoders: DecoderCache) -> Vocoder:
        buckets = decoders.get("vocoder buckets", model, (), plan, VOCODER_BUCKETS, dict)
        return decoders.get("vocoder", model, (), plan, VOCODER, lambda: Vocoder(
            model.vocoder, plan.extra("vocoder", "eager"), compiled=buckets,
            inductor_options=plan.extra("vocoder_options"), conv2d=plan.extra("vocoder_conv2d", False)))

    def decode_bytes(self, model, batch) -> float:
        """Fewest bytes one beam step moves: the text decoder's layers, final norm and LM head
        (the tied embedding, read whole by the head), each beam's self-attention cache at its
        mean context and its cross-attention cache."""
        dec = model.text_decoder
        seen, weights = set(), 0
        for m in (dec.layers, dec.layer_norm, model.lm_head):
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    weights += p.numel() * p.element_size()
        cfg = model.config
        per_tok = 2 * cfg.decoder_layers * cfg.hidden_size * torch.empty((), dtype=model.dtype).element_size()
        rows = batch.batch * self.beams
        ctx = 2 + batch.new_tokens / 2
        return weights + per_tok * rows * (ctx + tr.encoder_length(model, batch))


WORKLOAD = SeamlessWorkload()
