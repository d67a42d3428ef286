"""Workloads: a model family, its tasks, and the engines that run a plan on them.

This is the small protocol levers and the harness see of a workload: presets per scale, tasks,
inputs, runners for a plan, what its engine supports, and the byte counts for the roofline.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .engine import cfg as cfg_engine
from .engine import translate as tr
from .engine.beam_decode import BeamDecoder, self_cache_length
from .engine.library import LibraryGenerate
from .engine.hstu_attention import attention_flops
from .engine.plan import Plan
from .engine.recommend import HSTURunner, StaticForward
from .engine.static_decode import StaticDecoder, StaticRunner, cache_length
from .levers import LADDER
from .models import chameleon, hstu, llama, seamless
from .models.common import Preset, kv_bytes_per_token, parameter_count, weight_bytes_per_token
from .tasks import history, image, speech, text

# "Max batch" is the largest that fits in an 80 GB GPU (seed paper 1 sizes its max batches to
# an A100 80GB). 10% is left to the CUDA context, allocator fragmentation and workspaces.
MAX_BATCH_MEMORY = 80e9 * 0.90


class _Family:
    """Presets and builds, from the model family module a workload names in `family`."""

    def presets(self, scale: str) -> list[Preset]:
        return [p for p in self.family.PRESETS.values() if p.scale == scale]

    def preset(self, name: str) -> Preset:
        return self.family.PRESETS[name]

    def build(self, preset: Preset, device, checkpoint: str | None = None):
        return self.family.build(preset, device, checkpoint=checkpoint)


@dataclass
class CausalLMWorkload(_Family):
    """A decoder-only language model from transformers, generating text greedily."""

    name: str
    family: object                       # module with PRESETS, build(), meta_model()
    tasks: dict[str, text.Dataset]
    table_iii_batch: int                 # the paper's max batch, used at tiny scale where memory does not bind
    supports: frozenset[str] = field(default_factory=lambda: frozenset({"static_decode"}))
    ladder: tuple[str, ...] = LADDER
    pr_levers: tuple[str, ...] = ("eager", "compile", "cuda_graph")   # at batch 1, the pull-request gate
    compile_tuning: bool = True   # the decode step is nearly all of the run: autotune it
    module_groups: dict = field(default_factory=dict)   # one module: the breakdown has nothing to group
    share_spans: tuple | None = None
    sources: tuple[str, ...] = ()   # see `foreign_sources`

    def supports_for(self, task: str) -> frozenset[str]:
        return self.supports

    def cache_group(self, task: str) -> str:
        """Tasks of one group share compiled decoders (their inputs have the same shapes)."""
        return task


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
        return StaticRunner(self.static_decoder(model, batch, plan, decoders, keep_logits=keep_logits),
                            use_graph=plan.cuda_graph)

    @staticmethod
    def static_decoder(model, batch, plan: Plan, decoders: dict, *, keep_logits: bool = False, kind: tuple = (),
                       **decoder_kwargs) -> StaticDecoder:
        """The shared static decoder for `batch`'s shapes and the plan, loaded with `batch`.
        `kind` tells decoders with different `decoder_kwargs` (head, choose) apart."""
        rows = batch.input_ids.shape[0]
        L = cache_length(batch.padded_length, batch.new_tokens)
        key = (id(model), rows, L, plan.attn_implementation, plan.compile,
               tuple(sorted(plan.compile_options.items())), keep_logits) + kind
        dec = decoders.get(key)
        if dec is None:
            dec = decoders[key] = StaticDecoder(model, rows, L, attn_implementation=plan.attn_implementation,
                                                keep_logits=keep_logits, **decoder_kwargs)
            if plan.compile:
                dec.compile(**plan.compile_options)
        dec.load(batch)
        return dec

    # -- the roofline ------------------------------------------------------------------
    def decode_bytes(self, model, batch: text.TextBatch) -> float:
        """Fewest bytes one decode step moves: every weight but the embedding table once, and
        each row's KV cache at its mean context over the decode."""
        weights = weight_bytes_per_token(model, model.get_input_embeddings())
        kv = kv_bytes_per_token(model.config, model.dtype)
        mean_ctx = sum(batch.prompt_lengths) + batch.batch * batch.new_tokens / 2
        return weights + kv * mean_ctx


@dataclass
class TranslationWorkload(_Family):
    """SeamlessM4T v2: speech/text in, text/speech out, beam search over the text decoder."""

    name: str = "seamless"
    family: object = seamless
    tasks: dict = field(default_factory=lambda: dict(speech.TASKS))
    # Seed paper 1, Table V: text decoder compile, + its CUDA graph, + the compiled in-place
    # reorder, + vocoder compile, + vocoder CUDA graph; each on top of the last.
    ladder: tuple[str, ...] = ("eager", "compile", "cuda_graph", "kv_reorder", "vocoder_compile", "vocoder_cuda_graph",
                               "vocoder_conv2d")
    pr_levers: tuple[str, ...] = ("eager", "kv_reorder", "vocoder_cuda_graph")   # top of each task's ladder
    sources: tuple[str, ...] = (   # see `foreign_sources`
        "workloads/models/seamless.py", "workloads/tasks/speech.py", "workloads/engine/translate.py",
        "workloads/engine/beam_decode.py", "workloads/engine/conv_layout.py", "workloads/levers/kv_reorder.py",
        "workloads/levers/vocoder.py", "perf_tests/test_seamless.py",
    )
    # The text decoder is ~15% of an optimized run (1 ms a step): coordinate-descent tuning
    # would add minutes of compile to the pull-request gate for a few milliseconds.
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

        What binds is the library's generate: it keeps every step's beam scores (it asks
        for them itself), K x vocab fp32 per input per step, about 5 MB at paper scale; with
        the longest decode of the task (95 steps) that is ~0.5 GB per input, so Table III's
        128 inputs ran out of memory on an 80 GB H100. Also counted: its dynamic caches, at
        twice their size while a reorder copies them, and the lever's static caches.
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
        fit = min(fit, t.table_iii_batch)
        return max(1, fit - fit % 8 if fit >= 8 else fit)

    def runner(self, model, batch, plan: Plan, decoders: dict, *, keep_logits: bool = False):
        if plan.engine == "library":
            return tr.LibraryTranslate(model, batch, plan.attn_implementation, beams=self.beams, tgt_lang=self.tgt_lang)
        S = tr.encoder_length(model, batch)
        L = self_cache_length(2, batch.new_tokens)
        key = ("beam", id(model), batch.batch, self.beams, S, L, plan.attn_implementation, plan.compile,
               tuple(sorted(plan.compile_options.items())), plan.kv_reorder)
        dec = decoders.get(key)
        if dec is None:
            dec = decoders[key] = BeamDecoder(
                model.text_decoder, model.lm_head, batch_size=batch.batch, beams=self.beams, enc_len=S, max_len=L,
                eos_id=model.config.eos_token_id, pad_id=model.config.pad_token_id, in_place_reorder=plan.kv_reorder)
            if plan.compile:
                dec.compile(**plan.compile_options)
        voc = None
        if batch.task.speech_out:
            vkey = ("vocoder", id(model), plan.vocoder, plan.vocoder_conv2d)
            voc = decoders.get(vkey)
            if voc is None:
                # Compiled buckets, shared by the graph rung of the same layout.
                fns = decoders.setdefault(("vocoder_fns", id(model), plan.vocoder_conv2d), {})
                voc = decoders[vkey] = tr.Vocoder(model.vocoder, plan.vocoder, compiled=fns,
                                                  inductor_options=plan.vocoder_options, conv2d=plan.vocoder_conv2d)
        return tr.TranslateRunner(model, batch, dec, voc, use_graph=plan.cuda_graph,
                                  attn_implementation=plan.attn_implementation, tgt_lang=self.tgt_lang)

    def span_flops(self, model, batch, runner) -> dict[str, float]:
        """FLOPs of the spans whose work the run's output fixes: the vocoder's convolution stack
        for the waveforms this run produced (speech output only)."""
        lengths = getattr(runner, "waveform_lengths", None)
        if not batch.task.speech_out or lengths is None:
            return {}
        return {"vocoder": tr.vocoder_flops(model.vocoder, lengths)}

    def decode_bytes(self, model, batch) -> float:
        """Fewest bytes one beam step moves: the text decoder's layers, final norm and LM head
        (the tied embedding, read whole by the head), each beam's self-attention cache at its
        mean context and its cross-attention cache."""
        dec = model.text_decoder
        mods = [dec.layers, dec.layer_norm, model.lm_head]
        seen, weights = set(), 0
        for m in mods:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    weights += p.numel() * p.element_size()
        cfg = model.config
        per_tok = 2 * cfg.decoder_layers * cfg.hidden_size * torch.empty((), dtype=model.dtype).element_size()
        rows = batch.batch * self.beams
        ctx = 2 + batch.new_tokens / 2
        return weights + per_tok * rows * (ctx + tr.encoder_length(model, batch))


@dataclass
class RecommenderWorkload(_Family):
    """HSTU: one forward pass over jagged user histories ranks a candidate and retrieves items.

    Nothing is generated, so there is no first token and no decode step: a case's latency is
    the forward's, and its breakdown is attention against the rest (seed paper 1, Fig. 4: over
    90% of HSTU's time is attention).
    """

    name: str = "hstu"
    family: object = hstu
    tasks: dict = field(default_factory=lambda: dict(history.TASKS))
    # Seed paper 1, Section V: the attention without the N x N tensor, then fused with the
    # bias; torch.compile and CUDA graphs on top of the best of them.
    ladder: tuple[str, ...] = ("eager", "memory_efficient", "fused", "compile", "cuda_graph")
    pr_levers: tuple[str, ...] = ("eager", "fused", "cuda_graph")
    sources: tuple[str, ...] = (   # see `foreign_sources`
        "workloads/models/hstu.py", "workloads/tasks/history.py", "workloads/engine/hstu_attention.py",
        "workloads/engine/hstu_triton.py", "workloads/engine/recommend.py", "workloads/levers/hstu_attention.py",
        "perf_tests/test_hstu.py",
    )
    compile_tuning: bool = False   # the fused kernel is ours, not inductor's: tuning would tune only the dense layers
    module_groups: dict = field(default_factory=lambda: {
        "attention": ("attention",), "dense": ("dense",), "embedding": ("embedding",), "heads": ("heads",),
    })
    share_spans: tuple = ("attention", ("embedding", "dense", "attention", "heads"))   # attention's share of the forward
    max_batch_size: int = history.MAX_BATCH

    def supports_for(self, task: str) -> frozenset[str]:
        return frozenset({"jagged_attention", "static_forward"})

    def cache_group(self, task: str) -> str:
        return task   # every task draws its own lengths: nothing compiled is shared between tasks

    def inputs(self, task: str, scale: str, batch: int, model, device) -> history.HistoryBatch:
        cfg = model.config
        b = history.make_batch(task, scale, batch, num_items=cfg.num_items, num_actions=cfg.num_actions,
                               max_len=cfg.max_seq_len, limit=cfg.truncate_to if cfg.truncated_layers else None)
        hstu.check_lengths(cfg, b.lengths)
        history.check_timestamps(b.timestamps)
        return b.to(device)

    def max_batch(self, preset: Preset, task: str) -> int:
        """Table III's 32 at every scale: the eager reference's largest scores tensor at 8K,
        (32, 4, 8192, 8192) in bf16, is 17 GiB, which an 80 GB GPU holds."""
        return self.max_batch_size

    def runner(self, model, batch, plan: Plan, decoders: dict, *, keep_logits: bool = False):
        if not (plan.compile or plan.cuda_graph):
            return HSTURunner(model, batch, attn_implementation=plan.attn_implementation)
        # The compile and cuda_graph rungs share one compiled forward over bucketed static inputs.
        key = ("hstu", id(model), batch.task, batch.batch, plan.attn_implementation, plan.compile)
        static = decoders.get(key)
        if static is None or not static.fits(batch):
            static = decoders[key] = StaticForward(model, batch, attn_implementation=plan.attn_implementation,
                                                   bucketed=True)
            if plan.compile:
                static.compile(**plan.compile_options)
        static.load(batch)
        return HSTURunner(model, batch, attn_implementation=plan.attn_implementation, static=static,
                          use_graph=plan.cuda_graph)

    def span_flops(self, model, batch, runner) -> dict[str, float]:
        """FLOPs of each timed span that has a fixed count: the attention's causal products."""
        c = model.config
        full = attention_flops(batch.lengths, c.num_heads, c.qk_dim, c.v_dim) * c.full_layers
        kept = attention_flops(batch.kept_lengths or batch.lengths, c.num_heads, c.qk_dim, c.v_dim) * c.truncated_layers
        return {"attention": full + kept}

    def decode_bytes(self, model, batch) -> float | None:
        return None   # no decode step: no per-token roofline


@dataclass
class ChameleonWorkload(CausalLMWorkload):
    """Chameleon: text out of an image and a prompt (I-T, IT-T: greedy, like Code Llama), and an
    image out of a prompt (T-I: guided decoding of image tokens, then the detokenizer)."""

    name: str = "chameleon"
    family: object = chameleon
    tasks: dict = field(default_factory=lambda: dict(image.TASKS))
    table_iii_batch: int = 16     # seed paper 1, Table III, all three tasks
    tiny_max_batch: int = 4       # CPU seconds
    # One rung per task gates pull requests: at 7B the T-I reference alone (1024 guided eager
    # steps) takes tens of seconds a round.
    pr_levers: tuple[str, ...] = ("cuda_graph",)
    sources: tuple[str, ...] = (   # see `foreign_sources`
        "workloads/models/chameleon.py", "workloads/tasks/image.py", "workloads/engine/cfg.py",
        "perf_tests/test_chameleon.py",
    )
    # The phases the issue asks for, from the spans the engines time them by.
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
        fit = min(int((MAX_BATCH_MEMORY - weights) // per_prompt), self.table_iii_batch)
        return max(1, fit - fit % 8 if fit >= 8 else fit)

    def runner(self, model, batch, plan: Plan, decoders: dict, *, keep_logits: bool = False):
        if not batch.cfg:
            if plan.engine == "library":
                return LibraryGenerate(model, batch, plan.attn_implementation, keep_logits=keep_logits)
            dec = self.static_decoder(model, batch, plan, decoders, keep_logits=keep_logits, kind=("text",),
                                      head=chameleon.TextLogits(model))
            return StaticRunner(dec, use_graph=plan.cuda_graph)
        detok = decoders.get(("detokenizer", id(model)))
        if detok is None:
            detok = decoders[("detokenizer", id(model))] = chameleon.image_decoder(model)
        to_code = model.model.vocabulary_mapping.bpe2img
        if plan.engine == "library":
            chooser = cfg_engine.ImageTokenChooser(to_code, batch.batch, batch.new_tokens, model.device,
                                                   temperature=self.temperature)
            return cfg_engine.CFGGenerate(model, batch, plan.attn_implementation, chooser, detok)
        chooser = cfg_engine.ImageTokenChooser(to_code, batch.batch, cache_length(batch.padded_length, batch.new_tokens),
                                               model.device, temperature=self.temperature)
        dec = self.static_decoder(model, batch, plan, decoders, keep_logits=keep_logits,
                                  kind=("cfg", self.temperature), head=cfg_engine.unmasked_logits, choose=chooser)
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


WORKLOADS = {
    "llama": CausalLMWorkload(
        "llama", llama, tasks={"T-T": text.HUMANEVAL}, table_iii_batch=4,
        sources=("workloads/models/llama.py", "perf_tests/test_llama.py"),
    ),
    "seamless": TranslationWorkload(),
    "hstu": RecommenderWorkload(),
    "chameleon": ChameleonWorkload(),
}


def foreign_sources(workload: str) -> frozenset[str]:
    """The files other workloads name as their own (`sources`: paths from the repository root,
    files only that workload runs). A case's source fingerprint leaves them out, so an edit to
    one workload's model or engine starts no other workload's baselines afresh; everything
    else (harness, measurement, common engines, levers' base, this registry) counts for all."""
    return frozenset(f for name, wl in WORKLOADS.items() if name != workload for f in wl.sources)
