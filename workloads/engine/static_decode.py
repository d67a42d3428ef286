"""A lean greedy decode loop over transformers' own causal-LM modules.

Static KV cache (transformers' StaticCache), eager prefill, and one decode step that reads
and writes only buffers with fixed addresses, so it can be compiled as one graph and replayed
as one CUDA graph: the token, its position, the attention mask and the output are all updated
in place on the device, and the host never waits inside the loop.

Why not `generate(cache_implementation="static")`: its loop does host work and syncs every
step (stopping criteria), which is most of a 7B decode step on a GPU.
"""
from __future__ import annotations

import torch
from transformers import StaticCache

from .graphs import capture_graph, compile_own, decode_step_options, warm_on_side_stream
from .library import set_attention
from .runner import RunnerBase

_BUCKET = 64   # cache lengths round up to this, so nearby prompt lengths share one compiled step


def cache_length(padded_prompt: int, new_tokens: int) -> int:
    # +2: the step runs a few times past the last token while warming up a CUDA graph capture.
    need = padded_prompt + max(new_tokens, 1) + 2
    return -(-need // _BUCKET) * _BUCKET


def _last_logits(model, **inputs) -> torch.Tensor:
    return model(**inputs, logits_to_keep=1).logits[:, -1]


def _greedy(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1, keepdim=True)


class StaticDecoder:
    """Decoding of `batch_size` rows into a cache of `max_len` positions.

    By default greedy over the causal LM's logits. A workload may pass `head(model, **inputs)`
    (the last position's logits, e.g. without a library's logit masking) and `choose(logits,
    t)` (each row's next token, given the output column `t` as a device tensor, e.g. guidance
    and sampling); both run inside the compiled step and its CUDA graph, so they must keep
    fixed addresses and never synchronize.
    """

    def __init__(self, model, batch_size: int, max_len: int, *, attn_implementation: str = "sdpa",
                 keep_logits: bool = False, head=None, choose=None):
        self.model = model
        self.head = head or _last_logits
        self.choose = choose or _greedy
        self.attn_implementation = attn_implementation
        self.batch_size, self.max_len = batch_size, max_len
        dev, dt = model.device, model.dtype
        self.neg = torch.finfo(dt).min
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        B, L = batch_size, max_len
        self.tok = torch.zeros(B, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(B, 1, dtype=torch.long, device=dev)
        self.write = torch.zeros(1, dtype=torch.long, device=dev)       # cache slot of the next token
        self.t = torch.zeros(1, dtype=torch.long, device=dev)           # column of the next output
        self.t0 = torch.zeros(1, dtype=torch.long, device=dev)          # the prefill's column
        self.mask = torch.full((B, 1, 1, L), self.neg, dtype=dt, device=dev)
        self.out = torch.zeros(B, L, dtype=torch.long, device=dev)
        # Every step's logits, for tests that compare them with eager's; off when timing.
        self.logits = torch.zeros(B, L, model.config.vocab_size, device=dev) if keep_logits else None
        self.step_fn = self._step
        self.compiled = False
        self.warmed = False
        self.graph = None
        self.batch = None
        self.setup_metrics: dict = {}   # compile and capture costs, filled by whoever times them

    # -- the step: everything it touches has a fixed address ------------------------------
    def _step(self):
        logits = self.head(
            self.model, input_ids=self.tok, position_ids=self.pos, attention_mask=self.mask,
            past_key_values=self.cache, use_cache=True,
        )
        nxt = self.choose(logits, self.t)
        if self.logits is not None:
            self.logits.index_copy_(1, self.t, logits[:, None].float())
        self.tok.copy_(nxt)
        self.out.index_copy_(1, self.t, nxt)
        self.pos.add_(1)
        self.t.add_(1)
        self.write.add_(1)
        self.mask.index_fill_(-1, self.write, 0.0)

    def compile(self, **inductor_options) -> None:
        """Compile the step as one graph (fullgraph: a graph break is an error, not a slowdown)."""
        self.step_fn = compile_own(StaticDecoder._step, self, fullgraph=True, dynamic=False,
                                   options=decode_step_options(inductor_options))
        self.compiled = True

    def warm(self) -> None:
        """Run a few steps so that compilation (on the first call) happens here, not in a timed round."""
        self.prepare()
        self.run(new_tokens=3)
        self.warmed = True

    # -- per batch ------------------------------------------------------------------------
    def load(self, batch) -> None:
        """Take a batch of left-padded prompts; shapes must fit this decoder."""
        B, P = batch.input_ids.shape
        if B != self.batch_size or cache_length(P, batch.new_tokens) > self.max_len:
            raise ValueError(
                f"batch of {B} x {P} + {batch.new_tokens} new tokens does not fit a decoder of "
                f"{self.batch_size} rows x {self.max_len} positions"
            )
        self.batch = batch
        am = batch.attention_mask.bool()
        self.prompt_pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        key_ok = torch.zeros(B, self.max_len, dtype=torch.bool, device=am.device)
        key_ok[:, :P] = am
        causal = torch.arange(self.max_len, device=am.device)[None, :] <= torch.arange(P, device=am.device)[:, None]
        self.prefill_mask = torch.where(causal[None, None] & key_ok[:, None, None, :], 0.0, self.neg).to(self.mask.dtype)
        self.decode_mask0 = torch.where(key_ok, 0.0, self.neg).to(self.mask.dtype)[:, None, None, :]
        self.decode_mask0[..., P] = 0.0
        self.next_pos0 = batch.attention_mask.sum(-1, keepdim=True)

    @torch.no_grad()
    def prepare(self) -> None:
        """Reset the cache and the loop state in place (untimed, before each round)."""
        set_attention(self.model, self.attn_implementation)
        self.cache.reset()
        self.mask.copy_(self.decode_mask0)
        self.pos.copy_(self.next_pos0)
        self.write.fill_(self.batch.padded_length)
        self.t.fill_(1)

    @torch.no_grad()
    def capture(self) -> None:
        """Record the step as a CUDA graph (the state is reset by the next `prepare`)."""
        self.prepare()
        self._prefill()
        warm_on_side_stream(self.step_fn)
        graph, _ = capture_graph(self.step_fn)
        self.graph = graph

    @torch.no_grad()
    def _prefill(self) -> None:
        # Inputs beyond the tokens (an image's pixels) go to the prefill only.
        extra = getattr(self.batch, "extra_inputs", {})
        logits = self.head(
            self.model, input_ids=self.batch.input_ids, position_ids=self.prompt_pos, attention_mask=self.prefill_mask,
            past_key_values=self.cache, use_cache=True, **extra,
        )
        first = self.choose(logits, self.t0)
        if self.logits is not None:
            self.logits[:, 0].copy_(logits)
        self.tok.copy_(first)
        self.out[:, :1].copy_(first)

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None, *, use_graph: bool = False) -> torch.Tensor:
        n = new_tokens or self.batch.new_tokens
        if use_graph and self.graph is None:
            raise RuntimeError("CUDA graph requested but not captured: call capture() first")
        if stopwatch is not None:
            stopwatch.begin("prefill")
        self._prefill()
        if stopwatch is not None:
            stopwatch.end("prefill")
            stopwatch.mark("first_token")
            stopwatch.begin("decode")
        if use_graph:
            for _ in range(n - 1):
                self.graph.replay()
        else:
            for _ in range(n - 1):
                self.step_fn()
        if stopwatch is not None:
            stopwatch.end("decode")
        return self.out[:, :n].clone()


class StaticRunner(RunnerBase):
    """A decoder in one mode (graph replay or not), with the runner interface the harness times."""

    def __init__(self, decoder: StaticDecoder, use_graph: bool):
        self.decoder = decoder
        self.use_graph = use_graph

    @property
    def batch(self):
        return self.decoder.batch

    @property
    def setup_metrics(self) -> dict:
        return self.decoder.setup_metrics

    def prepare(self) -> None:
        self.decoder.prepare()

    def setup_steps(self) -> list[tuple[str, object]]:
        """One-off work still due before timing, by the metric its cost is recorded as."""
        steps = []
        if self.decoder.compiled and not self.decoder.warmed:
            steps.append(("compile_s", self.decoder.warm))
        if self.use_graph and self.decoder.graph is None:
            steps.append(("capture_s", self.decoder.capture))
        return steps

    def run(self, stopwatch=None, new_tokens: int | None = None) -> torch.Tensor:
        self.steps = new_tokens or self.decoder.batch.new_tokens
        return self.decoder.run(stopwatch, new_tokens, use_graph=self.use_graph)

    def outputs(self) -> dict:
        """(batch, steps, vocab) logits of the last run, where the decoder keeps them."""
        return {} if self.decoder.logits is None else {"logits": self.decoder.logits[:, : self.steps]}
