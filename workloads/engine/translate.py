"""Speech and text translation with SeamlessM4T v2: the library's `generate`, and our lean pipeline.

Both run the same modules in the same order (encoder, text decoder with beam search, then for
speech output the text-to-unit model and the vocoder); the lean pipeline swaps in a static-cache
beam decoder and, where the plan says so, a compiled or graph-replayed vocoder. Where the time
goes is recorded as stopwatch spans per module: in the library's run by forward hooks on its
modules, in ours around each stage.
"""
from __future__ import annotations

import contextlib
import copy
import math
import weakref

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import LogitsProcessorList
from transformers.cache_utils import EncoderDecoderCache
from transformers.models.seamless_m4t_v2.modeling_seamless_m4t_v2 import _compute_new_attention_mask

from .beam_decode import BeamDecoder
from .conv_layout import conv1d_as_channels_last_2d
from .graphs import capture_graph, compile_own, null_span, warm_on_side_stream
from .library import LibraryRunner, _MarkFirstToken, set_attention

SPEAKER_ID = 0


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


class LibraryTranslate(LibraryRunner):
    """`SeamlessM4Tv2Model.generate` as users call it: beam search, dynamic cache, one call per batch."""

    def __init__(self, model, batch, attn_implementation: str, *, beams: int, tgt_lang: str):
        super().__init__(model, batch, attn_implementation)
        self.beams, self.tgt_lang = beams, tgt_lang
        self.waveform = self.waveform_lengths = None

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
        # or a one-element copy (0.7-1.7 s a call at batch 72-88 on an H200, docs/measured.md),
        # on a host copy a list lookup. Same helpers, same tables: one copy each way instead.
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


class Vocoder:
    """The unit HiFi-GAN: the library module as is, or compiled (and replayed as CUDA graphs)
    per length bucket.

    The library's forward upsamples units to frames with `repeat_interleave`, whose output
    size is data: a host sync in the middle, and eager launches around it. Here it is split
    in two stages with one host read between them: (A) unit embedding and the library's
    duration predictor over units padded to a multiple of `unit_bucket` (masked, so padding
    changes no duration), giving each unit's last frame; (B) frames gathered by
    `searchsorted` over those ends, padded to a multiple of `bucket`, the language and
    speaker embeddings, and the convolution stack. `compile` compiles B per (batch, units,
    frames) bucket; `cuda_graph` also records A (eager kernels, so durations round exactly
    as the library's do) and B as CUDA graphs. Frame padding changes only the last samples
    within the convolutions' reach of the end (tests state the bound).
    """

    def __init__(self, module, mode: str = "eager", *, bucket: int = 64, unit_bucket: int = 32,
                 inductor_options: dict | None = None, compiled: dict | None = None, conv2d: bool = False):
        if mode not in ("eager", "compile", "cuda_graph"):
            raise ValueError(f"vocoder mode {mode!r}: expected eager, compile or cuda_graph")
        if conv2d and mode == "eager":
            raise ValueError("vocoder conv2d: the 2-D layout is for the compiled paths (mode compile or cuda_graph)")
        self.module, self.mode, self.bucket, self.unit_bucket = module, mode, bucket, unit_bucket
        # The convolution stack stage B runs: the library's, or a copy with its 1-D convolutions
        # as channels-last 2-D ones (the library's module, which eager runs, is left as it is).
        self.hifi_gan = conv1d_as_channels_last_2d(module.hifi_gan) if conv2d else module.hifi_gan
        self.inductor_options = inductor_options or None
        self.conv2d = conv2d
        self._compiled: dict[tuple, object] = {} if compiled is None else compiled   # may be shared
        self._samples_for: dict[int, int] = {}
        self._graphs_a: dict[tuple, tuple] = {}
        self._graphs_b: dict[tuple, tuple] = {}

    # -- stage A: durations ---------------------------------------------------------------
    def _durations(self, ids: torch.Tensor, unit_mask: torch.Tensor):
        """Unit embeddings, each unit's end frame (cumulative durations) and each row's count
        of non-pad units, as CodeHifiGan.forward and _get_dur_output_lengths compute them."""
        voc = self.module
        h = voc.unit_embedding(ids)
        log_dur = voc.dur_predictor(h, padding_mask=unit_mask)
        dur = torch.clamp(torch.round(torch.expm1(log_dur)).long(), min=1) * unit_mask
        real = (ids != voc.pad_token_id).sum(1, keepdim=True)   # bucket padding is pad too
        return h, torch.cat([dur.cumsum(1), real], dim=1)

    def _stage_a(self, ids: torch.Tensor, unit_mask: torch.Tensor):
        if self.mode != "cuda_graph":
            return self._durations(ids, unit_mask)
        key = tuple(ids.shape)
        if key not in self._graphs_a:
            static = (ids.clone(), unit_mask.clone())
            warm_on_side_stream(lambda: self._durations(*static))
            graph, out = capture_graph(lambda: self._durations(*static))
            self._graphs_a[key] = (graph, static, out)
        graph, (s_ids, s_mask), out = self._graphs_a[key]
        s_ids.copy_(ids)
        s_mask.copy_(unit_mask)
        graph.replay()
        return out

    # -- stage B: frames and the convolution stack ----------------------------------------
    def _synthesize(self, h: torch.Tensor, ends: torch.Tensor, lang: torch.Tensor, spkr: torch.Tensor,
                    frames: int) -> torch.Tensor:
        voc = self.module
        B, U, _ = h.shape
        t = torch.arange(frames, device=h.device)
        # The unit each frame repeats: the first whose end lies beyond it (repeat_interleave's order).
        unit = torch.searchsorted(ends, t.expand(B, frames).contiguous(), right=True).clamp(max=U - 1)
        x = torch.gather(h, 1, unit.unsqueeze(-1).expand(B, frames, h.shape[-1]))
        x = (x * (t < ends[:, -1:]).unsqueeze(-1).to(x.dtype)).transpose(1, 2)   # zeros past each row's frames
        spkr_e = voc.speaker_embedding(spkr).transpose(1, 2).expand(-1, -1, frames)
        lang_e = voc.language_embedding(lang).transpose(1, 2).expand(-1, -1, frames)
        return self.hifi_gan(torch.cat([lang_e, x, spkr_e], dim=1))

    def _compiled_b(self, key: tuple):
        fn = self._compiled.get(key)
        if fn is None:
            # A code object per bucket: buckets are separate graphs, not recompiles of one.
            fn = self._compiled[key] = compile_own(type(self)._synthesize, self, fullgraph=True, dynamic=False,
                                                   options=self.inductor_options)
        return fn

    def _cudnn_plans(self):
        """cuDNN's benchmark mode around the 2-D stack's calls: the plan for each convolution
        shape is then the fastest cuDNN timed, not its heuristic's pick (a probe of S-S's
        vocoder on an H200: 5.0 -> 4.0 ms a graphed call, docs/measured.md). PyTorch caches a
        shape's plan under a key without this flag but with the memory format, so the
        channels-last shapes, which only this stack runs, get timed plans, and the 1-D stacks
        timed beside it (eager's too) keep their heuristic ones."""
        if not self.conv2d:
            return contextlib.nullcontext()
        return _cudnn_benchmark()

    def _stage_b(self, h, ends, lang, spkr, frames: int) -> torch.Tensor:
        key = (tuple(h.shape), frames)
        fn = self._compiled_b(key)
        if self.mode == "compile":
            with self._cudnn_plans():
                return fn(h, ends, lang, spkr, frames)
        if key not in self._graphs_b:
            static = (h, ends, lang.clone(), spkr.clone())   # h, ends: stage A's graph outputs
            with self._cudnn_plans():   # plans are chosen in the warm-up, outside the capture
                warm_on_side_stream(lambda: fn(*static, frames))
                graph, out = capture_graph(lambda: fn(*static, frames))
            self._graphs_b[key] = (graph, static, out)
        graph, (_, _, s_lang, s_spkr), out = self._graphs_b[key]
        s_lang.copy_(lang)
        s_spkr.copy_(spkr)
        graph.replay()
        return out

    @torch.no_grad()
    def __call__(self, unit_ids: torch.Tensor, lang_id: int, speaker_id: int = SPEAKER_ID):
        voc = self.module
        B, U = unit_ids.shape
        dev = unit_ids.device
        lang = torch.full((B, 1), lang_id, dtype=torch.long, device=dev)
        spkr = torch.full((B, 1), speaker_id, dtype=torch.long, device=dev)
        if self.mode == "eager":
            return voc(input_ids=unit_ids, speaker_id=spkr, lang_id=lang)
        Ub = -(-U // self.unit_bucket) * self.unit_bucket
        ids = nn.functional.pad(unit_ids, (0, Ub - U), value=voc.pad_token_id)
        unit_mask = (torch.arange(Ub, device=dev) < U).expand(B, Ub).to(torch.long)
        h, ends_real = self._stage_a(ids, unit_mask)
        ends = ends_real[:, :-1]
        # The one host read: frame counts choose the bucket.
        host = ends_real.cpu()
        T = int(host[:, Ub - 1].max())
        Tb = -(-T // self.bucket) * self.bucket
        wave = self._stage_b(h, ends, lang, spkr, Tb)
        # While the stack runs: output lengths by the library's formula, on the host (on the
        # device they are a hundred tiny kernels).
        last = host[:, -1].clamp(0, U - 1)   # the library's index: the count of non-pad units
        units = host[:, :-1].gather(1, last.unsqueeze(1)).reshape(-1)
        lengths = torch.tensor([self._samples(int(n)) for n in units], dtype=torch.long)
        return wave[:, :self._samples(T)].clone(), lengths

    def _samples(self, frames: int) -> int:
        """The library's waveform length for `frames` frames, once per count: its formula is some
        four hundred tensor operations, about a millisecond of host time."""
        n = self._samples_for.get(frames)
        if n is None:
            n = self._samples_for[frames] = int(self.module._get_output_hifigan_lengths(torch.tensor(frames)))
        return n


# Not torch.backends.cudnn.flags: it sets every other cuDNN flag too, to its own defaults
# (enabled=False among them) unless each is passed.
@contextlib.contextmanager
def _cudnn_benchmark():
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


_META_STACKS: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def vocoder_flops(vocoder: nn.Module, waveform_lengths) -> float:
    """FLOPs of the vocoder's HiFi-GAN convolution stack for waveforms of these lengths (one per
    row, each as if run without padding), as torch's flop counter counts them; the unit
    embedding and the duration predictor are left out. Counted on a copy of the stack on the
    meta device: shapes only, no memory, no kernels. Each frame upsamples to
    prod(upsample_rates) samples, so a row's frames are its length over that."""
    stack = _META_STACKS.get(vocoder)
    if stack is None:
        stack = _META_STACKS[vocoder] = copy.deepcopy(vocoder.hifi_gan).to("meta")
    hop = math.prod(vocoder.config.upsample_rates)
    dtype = next(stack.parameters()).dtype
    frames = [int(n) // hop for n in torch.as_tensor(waveform_lengths).reshape(-1).tolist()]
    per_length: dict[int, float] = {}
    for f in set(frames):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            stack(torch.empty(1, stack.conv_pre.in_channels, f, device="meta", dtype=dtype))
        per_length[f] = float(fc.get_total_flops())
    return sum(per_length[f] for f in frames)


class TranslateRunner:
    """Our pipeline for one batch: encoder, static beam decoder, text-to-unit, vocoder."""

    def __init__(self, model, batch, decoder: BeamDecoder, vocoder: Vocoder | None, *, use_graph: bool,
                 attn_implementation: str, tgt_lang: str):
        self.model, self.batch = model, batch
        self.decoder, self.vocoder = decoder, vocoder
        self.use_graph = use_graph
        self.attn_implementation = attn_implementation
        self.tgt_lang = tgt_lang
        self.langs = _lang_ids(model, tgt_lang)
        self.waveform = self.waveform_lengths = None
        self.units = None

    def setup_steps(self) -> list[tuple[str, object]]:
        """One-off work still due before timing, by the metric its cost is recorded as."""
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
