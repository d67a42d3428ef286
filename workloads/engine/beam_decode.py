"""Beam search over an encoder-decoder's text decoder, with static caches and in-place reorder.

It drives the library's decoder modules (token and position embeddings, layers, final norm,
LM head) over caches it owns: the self-attention cache of every layer is one slab of fixed
address, the cross-attention cache another, written once by the prefill. One decode step
(layers, log-softmax, top-k over beams, bookkeeping) touches only fixed buffers, so it compiles
as one graph and replays as one CUDA graph.

The beam reorder after each step is where the two ways of running differ:
- as transformers does it (`EncoderDecoderCache.reorder_cache`): every layer's self- and
  cross-attention keys and values gathered with `index_select`, here copied back into the
  static buffers, in eager mode, outside the step;
- `in_place`: one gather of the self-attention slab, copied into itself (compiled, and replayed
  as a graph of its own when the step is). The cross-attention cache is not reordered at all:
  its rows are identical within a beam group, so any beam's row serves all of them.

Decoding is forced to a fixed length (EOS suppressed, as `min_new_tokens` does), so the result
equals transformers' beam search: with no finished hypotheses its top-2K-then-top-K selection
is a plain top-K, and all beams end at one length.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import EncoderDecoderCache

from .graphs import capture_graph, compile_own, decode_step_options, null_span, warm_on_side_stream

try:   # transformers >= 5: hooks on every layer record outputs into a context variable
    from transformers.utils.output_capturing import _active_collector as _COLLECTOR
except ImportError:   # pragma: no cover - older or newer layouts have no such hooks
    _COLLECTOR = None

_BUCKET = 32   # cache lengths round up to this, so nearby decode lengths share one compiled step


def self_cache_length(start_tokens: int, new_tokens: int) -> int:
    need = start_tokens + max(new_tokens, 1) + 2   # +2: warm-up steps before a graph capture
    return -(-need // _BUCKET) * _BUCKET


class _Layer:
    """What transformers' attention reads of a cache layer: `keys` and `values`."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values


class _SelfCache:
    """Self-attention keys/values of all layers in one slab; writes go to the shared `write` slot."""

    def __init__(self, slab: torch.Tensor, write: torch.Tensor):
        self.slab, self.write = slab, write
        self.layers = [_Layer(slab[i, 0], slab[i, 1]) for i in range(slab.shape[0])]

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        layer = self.layers[layer_idx]
        at = self.write + torch.arange(key_states.shape[-2], device=self.write.device)
        layer.keys.index_copy_(2, at, key_states)
        layer.values.index_copy_(2, at, value_states)
        return layer.keys, layer.values


class _CrossCache:
    """Cross-attention keys/values, written whole by the prefill and only read after it."""

    def __init__(self, slab: torch.Tensor):
        self.slab = slab
        self.layers = [_Layer(slab[i, 0], slab[i, 1]) for i in range(slab.shape[0])]

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        layer = self.layers[layer_idx]
        layer.keys.copy_(key_states)
        layer.values.copy_(value_states)
        return layer.keys, layer.values


class _BeamCache(EncoderDecoderCache):
    """The cache object transformers' encoder-decoder attention expects (it checks the type),
    over our slabs. The library constructor is not called: it would build layers of its own."""

    def __init__(self, self_cache: _SelfCache, cross_cache: _CrossCache):
        self.self_attention_cache = self_cache
        self.cross_attention_cache = cross_cache
        self.is_updated = {}


class BeamDecoder:
    """Beam search of `beams` per row for `batch_size` rows over an encoder output of `enc_len`.

    `modules` is the library's decoder (with `embed_tokens`, `embed_positions`, `layers`,
    `layer_norm`) and `lm_head`.
    """

    def __init__(self, decoder, lm_head, *, batch_size: int, beams: int, enc_len: int, max_len: int,
                 eos_id: int, pad_id: int, in_place_reorder: bool = False, keep_scores: bool = False):
        self.decoder, self.lm_head = decoder, lm_head
        self.B, self.K, self.S, self.L = batch_size, beams, enc_len, max_len
        self.N = N = batch_size * beams
        self.eos_id, self.pad_id = eos_id, pad_id
        self.in_place_reorder = in_place_reorder
        p = next(decoder.parameters())
        dev, dt = p.device, p.dtype
        cfg = decoder.config
        layers = len(decoder.layers)
        heads = cfg.decoder_attention_heads
        hd = cfg.hidden_size // heads
        self.neg = torch.finfo(dt).min
        self.write = torch.zeros(1, dtype=torch.long, device=dev)
        self.self_slab = torch.zeros(layers, 2, N, heads, max_len, hd, dtype=dt, device=dev)
        self.cross_slab = torch.zeros(layers, 2, N, heads, enc_len, hd, dtype=dt, device=dev)
        self.cache = _BeamCache(_SelfCache(self.self_slab, self.write), _CrossCache(self.cross_slab))
        self.vocab = lm_head.out_features
        self.tok = torch.zeros(N, 1, dtype=torch.long, device=dev)
        self.t = torch.zeros(1, dtype=torch.long, device=dev)                 # position of the next token
        self.mask = torch.full((N, 1, 1, max_len), self.neg, dtype=dt, device=dev)
        self.cross_mask = torch.zeros(N, 1, 1, enc_len, dtype=dt, device=dev)
        self.enc = torch.zeros(N, enc_len, cfg.hidden_size, dtype=dt, device=dev)
        self.beam_scores = torch.zeros(batch_size, beams, dtype=torch.float32, device=dev)
        self.beam_idx = torch.arange(N, device=dev)
        self.row_base = (torch.arange(batch_size, device=dev) * beams)[:, None]
        self.seq = torch.zeros(N, max_len, dtype=torch.long, device=dev)
        self.keep_scores = keep_scores
        self.step_fn = self._step
        self.reorder_fn = self._reorder_in_place
        self.compiled = self.warmed = False
        self.graphs = None
        self.start_ids = None
        self.setup_metrics: dict = {}

    # -- per input ----------------------------------------------------------------------
    @torch.no_grad()
    def load(self, encoder_states: torch.Tensor, encoder_mask: torch.Tensor | None, start_ids: list[int]) -> None:
        """Take the encoder output (B, S, D) and its mask (B, S) and the decoder's start tokens."""
        B, S, _ = encoder_states.shape
        if B != self.B or S != self.S:
            raise ValueError(f"encoder output {tuple(encoder_states.shape)} does not fit a beam decoder of "
                             f"{self.B} rows x {self.S} encoder positions")
        self.enc.copy_(encoder_states.repeat_interleave(self.K, 0))
        if encoder_mask is None:
            self.cross_mask.zero_()
        else:
            m = encoder_mask.bool().repeat_interleave(self.K, 0)
            self.cross_mask.copy_(torch.where(m, 0.0, self.neg)[:, None, None, :].to(self.cross_mask.dtype))
        self.start_ids = list(start_ids)

    # -- the pieces of one step ---------------------------------------------------------
    def _positions(self, ids: torch.Tensor, t0) -> torch.Tensor:
        # transformers' sinusoidal positions: padding_idx + 1 + t, and the padding row for a pad token
        pad = self.decoder.embed_positions.padding_idx
        pos = (pad + 1 + t0 + torch.arange(ids.shape[1], device=ids.device))[None].expand_as(ids)
        pos = torch.where(ids != pad, pos, pad)
        w = self.decoder.embed_positions.weights
        return w.index_select(0, pos.reshape(-1)).view(*ids.shape, -1)

    def _forward(self, ids, t0, mask):
        # The layers' output-recording hooks read a context variable dynamo cannot trace; setting
        # it the library's way (a plain global while compiling) keeps them inert and traceable.
        token = _COLLECTOR.set(None) if _COLLECTOR is not None else None
        h = self.decoder.embed_tokens(ids) + self._positions(ids, t0).to(self.enc.dtype)
        for layer in self.decoder.layers:
            h = layer(h, mask, self.enc, encoder_attention_mask=self.cross_mask,
                      past_key_values=self.cache, use_cache=True)
        if _COLLECTOR is not None:
            _COLLECTOR.reset(token)
        return self.lm_head(self.decoder.layer_norm(h[:, -1]))

    def _select(self, logits) -> None:
        """One beam-search step from the last position's logits: scores, top-K, bookkeeping."""
        B, K, V = self.B, self.K, self.vocab
        logp = torch.log_softmax(logits.float(), -1)
        logp[:, self.eos_id] = float("-inf")          # forced length: EOS never wins
        scores = (logp + self.beam_scores.view(-1, 1)).view(B, K * V)
        top, idx = scores.topk(K, dim=1)
        src = torch.div(idx, V, rounding_mode="floor")
        nxt = (idx % V).view(-1, 1)
        self.beam_scores.copy_(top)
        self.beam_idx.copy_((self.row_base + src).view(-1))
        self.seq.copy_(self.seq.index_select(0, self.beam_idx))
        self.seq.index_copy_(1, self.t + 1, nxt)
        self.tok.copy_(nxt)

    def _step(self):
        logits = self._forward(self.tok, self.t, self.mask)
        self._select(logits)
        self.t.add_(1)
        self.write.add_(1)
        self.mask.index_fill_(-1, self.write, 0.0)

    def _reorder_in_place(self):
        self.self_slab.copy_(self.self_slab.index_select(2, self.beam_idx))

    def _reorder_like_library(self):
        # What EncoderDecoderCache.reorder_cache does, layer by layer, self and cross, kept at
        # the static addresses the step reads.
        for slab in (self.self_slab, self.cross_slab):
            for i in range(slab.shape[0]):
                for kv in (0, 1):
                    buf = slab[i, kv]
                    buf.copy_(buf.index_select(0, self.beam_idx))

    def reorder(self):
        if self.in_place_reorder:
            self.reorder_fn()
        else:
            self._reorder_like_library()

    # -- set-up ---------------------------------------------------------------------------
    def compile(self, **inductor_options) -> None:
        """Compile the step (and the in-place reorder) as whole graphs; each decoder gets code
        objects of its own so decoders of different shapes are not recompiles of one function."""
        kwargs = dict(fullgraph=True, dynamic=False, options=decode_step_options(inductor_options))
        self.step_fn = compile_own(BeamDecoder._step, self, **kwargs)
        if self.in_place_reorder:
            self.reorder_fn = compile_own(BeamDecoder._reorder_in_place, self, **kwargs)
        self.compiled = True

    @torch.no_grad()
    def prepare(self) -> None:
        """Reset the caches and the search state in place (untimed, before each round)."""
        self.cache.is_updated.clear()
        self.write.zero_()
        self.t.zero_()
        self.mask.fill_(self.neg)
        self.seq.zero_()
        self.beam_scores.zero_()
        self.beam_scores[:, 1:] = -1e9   # all beams start as one: only beam 0 may be extended first

    @torch.no_grad()
    def prefill(self) -> None:
        ids = torch.tensor(self.start_ids, device=self.tok.device)[None].expand(self.N, -1)
        P = ids.shape[1]
        causal = torch.arange(self.L, device=ids.device)[None] <= torch.arange(P, device=ids.device)[:, None]
        mask = torch.where(causal, 0.0, self.neg).to(self.mask.dtype)[None, None].expand(self.N, 1, P, self.L)
        self.seq[:, :P].copy_(ids)
        self.t.fill_(P - 1)
        logits = self._forward(ids, 0, mask)
        self.write.fill_(P)
        self.mask[..., : P + 1] = 0.0
        self._select(logits)
        self.t.fill_(P)

    @torch.no_grad()
    def capture(self) -> None:
        """Record the step (and the in-place reorder) as CUDA graphs; the state is reset by the
        next `prepare`. The library-style reorder stays eager, as it runs in the library."""
        self.prepare()
        self.prefill()
        warm_on_side_stream(lambda: (self.step_fn(), self.reorder()))
        step, _ = capture_graph(self.step_fn)
        reorder = capture_graph(self.reorder_fn, pool=step.pool())[0] if self.in_place_reorder else None
        self.graphs = (step, reorder)

    @torch.no_grad()   # compiled under grad mode, the step would be recompiled for the timed rounds
    def warm(self) -> None:
        """A few steps, so that compilation happens here and not in a timed round."""
        self.prepare()
        self.prefill()
        for _ in range(3):
            self.step_fn()
            self.reorder()
        self.warmed = True

    # -- running --------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, new_tokens: int, *, use_graph: bool = False, span=null_span, stopwatch=None) -> torch.Tensor:
        """Decode `new_tokens` tokens; returns the best beam's sequence (B, start + new_tokens)."""
        if use_graph and self.graphs is None:
            raise RuntimeError("CUDA graph requested but not captured: call capture() first")
        P = len(self.start_ids)
        if P + new_tokens + 2 > self.L:
            raise ValueError(f"{new_tokens} new tokens do not fit a cache of {self.L} positions")
        with span("decoder.prefill"):
            self.prefill()
        if stopwatch is not None:
            stopwatch.mark("first_token")
        with span("kv_reorder"):
            self.reorder()
        step = self.graphs[0].replay if use_graph else self.step_fn
        reorder = self.graphs[1].replay if use_graph and self.graphs[1] is not None else self.reorder
        for _ in range(new_tokens - 1):
            with span("decoder.step"):
                step()
            with span("kv_reorder"):
                reorder()
        if stopwatch is not None:
            stopwatch.mark("decode_end")
        return self.seq.index_select(0, self.best_rows())[:, : P + new_tokens]

    def best_rows(self) -> torch.Tensor:
        """Row of each input's best beam: all beams have one length, so the highest score."""
        return self.row_base[:, 0] + self.beam_scores.argmax(1)
