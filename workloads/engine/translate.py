"""Speech and text translation with SeamlessM4T v2: the library's `generate`, and our lean pipeline.

Both run the same modules in the same order (encoder, text decoder with beam search, then for
speech output the text-to-unit model and the vocoder); the lean pipeline swaps in a static-cache
beam decoder and, where the plan says so, a compiled or graph-replayed vocoder. Where the time
goes is recorded as stopwatch spans per module: in the library's run by forward hooks on its
modules, in ours around each stage.
"""
from __future__ import annotations

import contextlib

import torch
from transformers import LogitsProcessorList
from transformers.cache_utils import EncoderDecoderCache
from transformers.models.seamless_m4t_v2.modeling_seamless_m4t_v2 import _compute_new_attention_mask

from .beam_decode import BeamDecoder
from .graphs import null_span
from .library import LibraryRunner, _MarkFirstToken, set_attention
from .runner import RunnerBase
from .vocoder import SPEAKER_ID, Vocoder, vocoder_flops


def _lang_ids(model, tgt_lang: str) -> dict[str, int]:
    gc = model.generation_config
    return {
        "text": gc.text_decoder_lang_to_code_id[tgt_lang],
        "vocoder": gc.vocoder_lang_code_to_id[tgt_lang],
    }


def start_ids(model, tgt_lang: str) -> list[int]:
    """The text decoder's forced start: decoder-start token, then the target language."""
    return [model.config.decoder_start_token_id, _lang_ids(model, tgt_lang)["text"]]


# -- the library's run, instrumented ---------------------------------------------------------
@contextlib.contextmanager
def _hooks(model, stopwatch, new_tokens: int):
    """Marks and spans from forward hooks: the text decoder's first call is the prefill, the
    next `new_tokens - 1` are decode steps (the last one ends decoding), any later call is the
    extra pass transformers makes for the text-to-unit model. Cache reorders are spans too."""
    handles = []
    calls = {"n": 0}

    def decoder_pre(mod, args, kwargs):
        calls["n"] += 1
        c = calls["n"]
        calls["name"] = "decoder.prefill" if c == 1 else ("decoder.step" if c <= new_tokens else "decoder.rerun")
        stopwatch.begin(calls["name"])

    def decoder_post(mod, args, kwargs, out):
        stopwatch.end(calls["name"])
        if calls["n"] == new_tokens:
            stopwatch.mark("decode_end")

    handles.append(model.text_decoder.register_forward_pre_hook(decoder_pre, with_kwargs=True))
    handles.append(model.text_decoder.register_forward_hook(decoder_post, with_kwargs=True))
    for name, mod in (("encoder", model.speech_encoder), ("encoder", model.text_encoder),
                      ("t2u", model.t2u_model), ("vocoder", model.vocoder)):
        handles.append(mod.register_forward_pre_hook(lambda m, a, name=name: stopwatch.begin(name)))
        handles.append(mod.register_forward_hook(lambda m, a, o, name=name: stopwatch.end(name)))
    original = EncoderDecoderCache.reorder_cache
    if stopwatch.spans:
        EncoderDecoderCache.reorder_cache = _spanned(original, stopwatch, "kv_reorder")
        # The text-to-unit stage's subword and character tables are host loops of the model's,
        # outside any module: without a span they would count as eager's "other" and as our t2u.
        for name in _SUBWORD_HELPERS:
            setattr(model, name, _spanned(getattr(model, name), stopwatch, "t2u.subwords"))
    try:
        yield
    finally:
        EncoderDecoderCache.reorder_cache = original
        for name in _SUBWORD_HELPERS:
            model.__dict__.pop(name, None)
        for h in handles:
            h.remove()


_SUBWORD_HELPERS = ("_indices_to_subwords", "_count_character_length_in_subword", "_get_char_input_ids")


def _spanned(fn, stopwatch, name: str):
    def call(*args, **kwargs):
        with stopwatch.span(name):
            return fn(*args, **kwargs)
    return call


class _SpeechOut:
    """A run's waveforms (speech output only): kept for the equality tests, their lengths
    recorded, and the vocoder stack's FLOPs for them counted."""

    waveform = waveform_lengths = None

    def outputs(self) -> dict:
        return {"waveform": self.waveform, "waveform_lengths": self.waveform_lengths}

    def work(self) -> dict[str, float]:
        if not self.batch.task.speech_out or self.waveform_lengths is None:
            return {}
        return {"vocoder": vocoder_flops(self.model.vocoder, self.waveform_lengths)}

    def recorded(self) -> dict:
        if self.waveform_lengths is None:
            return {}
        return {"audio_samples": [int(x) for x in self.waveform_lengths.reshape(-1).tolist()]}


class LibraryTranslate(_SpeechOut, LibraryRunner):
    """`SeamlessM4Tv2Model.generate` as users call it: beam search, dynamic cache, one call per batch."""

    def __init__(self, model, batch, attn_implementation: str, *, beams: int, tgt_lang: str):
        super().__init__(model, batch, attn_implementation)
        self.beams, self.tgt_lang = beams, tgt_lang

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None) -> torch.Tensor:
        n = new_tokens or self.batch.new_tokens
        b = self.batch
        inputs = ({"input_features": b.input_features} if b.task.speech_in else {"input_ids": b.input_ids})
        kwargs = dict(
            attention_mask=b.attention_mask, tgt_lang=self.tgt_lang, generate_speech=b.task.speech_out,
            speaker_id=SPEAKER_ID, text_num_beams=self.beams, text_max_new_tokens=n, text_min_new_tokens=n,
        )
        if b.task.speech_out:
            kwargs["return_intermediate_token_ids"] = True
        if stopwatch is not None:
            kwargs["text_logits_processor"] = LogitsProcessorList([_MarkFirstToken(stopwatch)])
        hooks = _hooks(self.model, stopwatch, n) if stopwatch is not None else contextlib.nullcontext()
        with hooks:
            out = self.model.generate(**inputs, **kwargs)
        if b.task.speech_out:
            self.waveform, self.waveform_lengths = out.waveform, out.waveform_lengths
        return out.sequences


# -- our pipeline ----------------------------------------------------------------------------
def encoder_length(model, batch) -> int:
    """Positions of the encoder output the text decoder attends over."""
    if not batch.task.speech_in:
        return batch.padded_length
    full = torch.ones(1, batch.padded_length, dtype=torch.long)
    return int(model._compute_sub_sample_lengths_from_attention_mask(full)[0])


def encode(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output and the mask of its valid positions, as SeamlessM4Tv2Model.forward computes them."""
    if batch.task.speech_in:
        h = model.speech_encoder(input_features=batch.input_features, attention_mask=batch.attention_mask).last_hidden_state
        lengths = model._compute_sub_sample_lengths_from_attention_mask(batch.attention_mask).to(h.device)
        return h, _compute_new_attention_mask(hidden_states=h, seq_lens=lengths)
    h = model.text_encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return h, batch.attention_mask


def text_to_units(model, sequences: torch.Tensor, enc: torch.Tensor, enc_mask: torch.Tensor,
                  span=null_span) -> torch.Tensor:
    """Unit ids for the vocoder from the translated text, step for step as
    SeamlessM4Tv2Model.generate does it (it offers no entry point for this stage alone). Its
    spans are the ones the library's instrumented run records for the same work."""
    gc, cfg = model.generation_config, model.config
    pad = gc.pad_token_id
    with span("decoder.rerun"):
        hidden = model.text_decoder(input_ids=sequences[:, :-1], encoder_hidden_states=enc,
                                    encoder_attention_mask=enc_mask).last_hidden_state
    t2u_mask = _compute_new_attention_mask(hidden, (sequences[:, :-1] != pad).int().sum(1))
    ids = sequences[:, 2:-1]   # without the decoder-start and language tokens, and the last token
    ids = torch.masked_fill(ids, ids == gc.eos_token_id, pad)
    with span("t2u.subwords"):
        # The library's helpers walk the tokens one by one; on a GPU tensor every step is a sync
        # or a one-element copy (seconds a call at max batch: docs/measured.md, "The Seamless
        # batch-1 gate at a30f994, ..."), on a host copy a list lookup. Same helpers, same
        # tables: one copy each way instead.
        host = ids.cpu()
        subwords = model._indices_to_subwords(host)
        chars_per_id = model._count_character_length_in_subword(host, subwords, pad_token_id=pad)
        zero = chars_per_id.new_zeros((chars_per_id.shape[0], 1))
        chars_per_id = torch.cat([zero, chars_per_id, zero], dim=1)
        char_ids = model._get_char_input_ids(host, subwords, chars_per_id, pad_token_id=pad)
        chars_per_id, char_ids = chars_per_id.to(ids.device), char_ids.to(ids.device)
    with span("t2u"):
        logits, padding_mask = model.t2u_model(inputs_embeds=hidden, char_input_ids=char_ids,
                                               char_count_per_id=chars_per_id, attention_mask=t2u_mask)[:2]
    units = logits.argmax(dim=-1)
    units = units.masked_fill((units == cfg.t2u_eos_token_id) | ~padding_mask.bool(), cfg.t2u_pad_token_id)
    return torch.where(units == cfg.t2u_pad_token_id, units, units - cfg.vocoder_offset)


class TranslateRunner(_SpeechOut, RunnerBase):
    """Our pipeline for one batch: encoder, static beam decoder, text-to-unit, vocoder."""

    def __init__(self, model, batch, decoder: BeamDecoder, vocoder: Vocoder | None, *, use_graph: bool,
                 attn_implementation: str, tgt_lang: str):
        self.model, self.batch = model, batch
        self.decoder, self.vocoder = decoder, vocoder
        self.use_graph = use_graph
        self.attn_implementation = attn_implementation
        self.tgt_lang = tgt_lang
        self.langs = _lang_ids(model, tgt_lang)
        self.units = None

    @property
    def setup_metrics(self) -> dict:
        return self.decoder.setup_metrics

    def setup_steps(self) -> list[tuple[str, object]]:
        steps = []
        if self.decoder.compiled and not self.decoder.warmed:
            steps.append(("compile_s", self._warm))
        if self.use_graph and self.decoder.graphs is None:
            steps.append(("capture_s", self._capture))
        if self.vocoder is not None and self.vocoder.mode != "eager":
            # The first run through a new length bucket compiles (and captures) it.
            steps.append(("vocoder_setup_s", self._once))
        return steps

    def _load(self):
        self.prepare()
        self.decoder.load(*encode(self.model, self.batch), start_ids(self.model, self.tgt_lang))

    def _once(self):
        self.prepare()
        self.run()

    def _warm(self):
        self._load()
        self.decoder.warm()

    def _capture(self):
        self._load()
        self.decoder.capture()

    def prepare(self) -> None:
        set_attention(self.model, self.attn_implementation)
        self.decoder.prepare()

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None, *, text_only: bool = False) -> torch.Tensor:
        n = new_tokens or self.batch.new_tokens
        span = stopwatch.span if stopwatch is not None else null_span
        with span("encoder"):
            enc, enc_mask = encode(self.model, self.batch)
        self.decoder.load(enc, enc_mask, start_ids(self.model, self.tgt_lang))
        seq = self.decoder.run(n, use_graph=self.use_graph, span=span, stopwatch=stopwatch)
        if self.batch.task.speech_out and not text_only:
            self.units = text_to_units(self.model, seq, enc, enc_mask, span)
            with span("vocoder"):
                self.waveform, self.waveform_lengths = self.vocoder(self.units, self.langs["vocoder"])
        return seq

    def count_steps(self, new_tokens: int):
        """The text part only, for counting kernels per decode step."""
        self.prepare()
        return self.run(None, new_tokens, text_only=True)
