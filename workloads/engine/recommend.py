"""Runs HSTU's one forward pass (rank and retrieve) for the harness: as built, compiled, or replayed.

HSTU generates nothing: a run is one forward over a jagged batch of histories. Where the time
goes is recorded as stopwatch spans by forward hooks: the attention of every layer, the dense
rest of the layers (projections, norms, output), the embeddings and the heads. Compiled and
replayed forwards are one graph: they are timed whole.

For graph replay the inputs live in static buffers sized by length buckets (rows rounded up,
each sequence's grid rounded up): a later batch of the same size whose rows fit the bucket is
copied in and replays the same graph. Rows past the batch's last offset belong to no sequence:
the dense layers compute on them and the attention never reads them.
"""
from __future__ import annotations

import torch

from .graphs import capture_graph, compile_own, null_span, warm_on_side_stream
from .hstu_attention import Jagged, attention_flops, load_fused
from .runner import RunnerBase, module_spans

ROW_BUCKET = 1024     # packed rows round up to a multiple of this for a captured graph
LENGTH_BUCKET = 256   # and each sequence's grid of query rows to a multiple of this


def _up(n: int, step: int) -> int:
    return -(-n // step) * step


def jagged_of(batch) -> tuple[Jagged, Jagged | None]:
    jag = Jagged(batch.offsets, tuple(batch.lengths))
    kept = None if batch.kept_offsets is None else Jagged(batch.kept_offsets, tuple(batch.kept_lengths))
    return jag, kept


def _spanned(model):
    """The modules timed as spans, each with its kind."""
    yield model.embed, "embedding"
    yield model.heads, "heads"
    for layer in model.layers:
        yield layer.projection, "dense"
        yield layer.output, "dense"
        yield layer.attention, "attention"


class StaticForward:
    """The forward over fixed-address input buffers: compilable once, capturable as a CUDA graph."""

    def __init__(self, model, batch, *, attn_implementation: str, bucketed: bool):
        self.model = model
        self.attn_implementation = attn_implementation
        B = batch.batch
        dev = batch.offsets.device
        T, T2 = batch.total, (len(batch.keep_index) if batch.keep_index is not None else 0)
        if bucketed:
            T, T2 = _up(T, ROW_BUCKET), _up(T2, ROW_BUCKET) if T2 else 0
        self.bucketed = bucketed
        self.batch_size, self.rows, self.kept_rows = B, T, T2
        self.item_ids = torch.zeros(T, dtype=torch.long, device=dev)
        self.actions = torch.zeros(T, dtype=torch.long, device=dev)
        self.timestamps = torch.zeros(T, dtype=torch.long, device=dev)
        self.offsets = torch.zeros(B + 1, dtype=torch.long, device=dev)
        self.inv_n = torch.zeros(1, dtype=torch.float32, device=dev)
        self.keep_index = torch.zeros(T2, dtype=torch.long, device=dev) if T2 else None
        self.kept_offsets = torch.zeros(B + 1, dtype=torch.long, device=dev) if T2 else None
        self.kept_inv_n = torch.zeros(1, dtype=torch.float32, device=dev)
        self.fn = self._forward
        self.compiled = self.warmed = False
        self.graph = self.out = None
        self.setup_metrics: dict = {}

    def _grid(self, n: int) -> int:
        return _up(n, LENGTH_BUCKET) if self.bucketed else n

    def fits(self, batch) -> bool:
        """Whether `batch` can be copied in; once a graph is captured, also whether its kernel
        grids (the length buckets of the full and the truncated layers) are the captured ones."""
        T2 = len(batch.keep_index) if batch.keep_index is not None else 0
        if batch.batch != self.batch_size or batch.total > self.rows or T2 > self.kept_rows:
            return False
        if (T2 == 0) != (self.keep_index is None):
            return False
        if self.graph is None:
            return True
        same_kept = self.kept is None or self._grid(max(batch.kept_lengths)) == self.kept.grid_len
        return self._grid(batch.max_len) == self.jag.grid_len and same_kept

    def load(self, batch) -> None:
        if not self.fits(batch):
            raise ValueError(f"a batch of {batch.batch} histories, {batch.total} rows, does not fit static inputs of "
                             f"{self.batch_size} histories, {self.rows} rows")
        n = batch.total
        for buf, src in ((self.item_ids, batch.item_ids), (self.actions, batch.actions), (self.timestamps, batch.timestamps)):
            buf[:n].copy_(src)
            buf[n:].zero_()
        self.offsets.copy_(batch.offsets)
        self.inv_n.fill_(1.0 / batch.max_len)
        self.jag = Jagged(self.offsets, tuple(batch.lengths), self._grid(batch.max_len), self.inv_n)
        self.kept = None
        if self.keep_index is not None:
            k = len(batch.keep_index)
            self.keep_index[:k].copy_(batch.keep_index)
            self.keep_index[k:].zero_()
            self.kept_offsets.copy_(batch.kept_offsets)
            self.kept_inv_n.fill_(1.0 / max(batch.kept_lengths))
            self.kept = Jagged(self.kept_offsets, tuple(batch.kept_lengths), self._grid(max(batch.kept_lengths)),
                               self.kept_inv_n)

    def _forward(self):
        return self.model(self.item_ids, self.actions, self.timestamps, self.jag, self.keep_index, self.kept)

    def prepare(self) -> None:
        self.model.set_attn_implementation(self.attn_implementation)

    def compile(self, **inductor_options) -> None:
        self.fn = compile_own(StaticForward._forward, self, fullgraph=True, dynamic=False, options=inductor_options or None)
        self.compiled = True

    @torch.no_grad()
    def warm(self) -> None:
        self.prepare()
        self.fn()
        self.warmed = True

    @torch.no_grad()
    def capture(self) -> None:
        self.prepare()
        warm_on_side_stream(self.fn)
        self.graph, self.out = capture_graph(self.fn)

    @torch.no_grad()
    def run(self, use_graph: bool):
        if use_graph:
            if self.graph is None:
                raise RuntimeError("CUDA graph requested but not captured: call capture() first")
            self.graph.replay()
            return self.out
        return self.fn()


class HSTURunner(RunnerBase):
    """One batch through the model, as the plan says, with the runner interface the harness times."""

    def __init__(self, model, batch, *, attn_implementation: str = "eager", static: StaticForward | None = None,
                 use_graph: bool = False):
        self.model = model
        self.batch = batch
        self.attn_implementation = attn_implementation
        self.static = static
        self.use_graph = use_graph
        self.logits = None
        self.jag, self.kept = jagged_of(batch)
        if attn_implementation == "fused":
            load_fused()

    def setup_steps(self) -> list[tuple[str, object]]:
        if self.static is None:
            return []
        steps = []
        if self.static.compiled and not self.static.warmed:
            steps.append(("compile_s", self.static.warm))
        if self.use_graph and self.static.graph is None:
            steps.append(("capture_s", self.static.capture))
        return steps

    @property
    def setup_metrics(self) -> dict:
        return super().setup_metrics if self.static is None else self.static.setup_metrics

    def prepare(self) -> None:
        self.model.set_attn_implementation(self.attn_implementation)

    def outputs(self) -> dict:
        return {"logits": self.logits}

    def work(self) -> dict[str, float]:
        """The attention's causal products: a fixed count for the batch's lengths."""
        c, b = self.model.config, self.batch
        full = attention_flops(b.lengths, c.num_heads, c.qk_dim, c.v_dim) * c.full_layers
        kept = attention_flops(b.kept_lengths or b.lengths, c.num_heads, c.qk_dim, c.v_dim) * c.truncated_layers
        return {"attention": full + kept}

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None) -> torch.Tensor:
        """The retrieved item ids (B, k); the ranking logits are kept in `logits`."""
        if self.static is not None:
            span = stopwatch.span if stopwatch is not None else null_span
            with span("forward"):
                self.logits, top = self.static.run(self.use_graph)
            return top
        b = self.batch
        with module_spans(stopwatch, _spanned(self.model)):
            self.logits, top = self.model(b.item_ids, b.actions, b.timestamps, self.jag, b.keep_index, self.kept)
        return top
