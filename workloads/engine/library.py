"""The reference: the model library's own `generate`, exactly as users call it."""
from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .runner import RunnerBase


class _MarkFirstToken(LogitsProcessor):
    """Marks the stopwatch when the prefill's logits arrive (where the prefill span ends and
    the decode span begins); adds no synchronization."""

    def __init__(self, stopwatch):
        self.stopwatch = stopwatch
        self.done = False

    def __call__(self, input_ids, scores):
        if not self.done:
            self.stopwatch.end("prefill")
            self.stopwatch.mark("first_token")
            self.stopwatch.begin("decode")
            self.done = True
        return scores


def set_attention(model, implementation: str) -> None:
    if model.config._attn_implementation != implementation:
        model.set_attn_implementation(implementation)


class LibraryRunner(RunnerBase):
    """A model library's own entry point on one batch: nothing to set up but the attention."""

    def __init__(self, model, batch, attn_implementation: str):
        self.model = model
        self.batch = batch
        self.attn_implementation = attn_implementation

    def prepare(self) -> None:
        # The model object is shared with other runners of the case; each sets what it needs.
        set_attention(self.model, self.attn_implementation)


class LibraryGenerate(LibraryRunner):
    """Greedy `model.generate` with a dynamic cache and the plan's attention implementation."""

    def __init__(self, model, batch, attn_implementation: str, keep_logits: bool = False):
        super().__init__(model, batch, attn_implementation)
        self.keep_logits = keep_logits   # for tests: generate also returns every step's logits
        self.logits = None

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None) -> torch.Tensor:
        n = new_tokens or self.batch.new_tokens
        procs = LogitsProcessorList([_MarkFirstToken(stopwatch)]) if stopwatch is not None else None
        if stopwatch is not None:
            stopwatch.begin("prefill")
        out = self.model.generate(
            self.batch.input_ids,
            **getattr(self.batch, "extra_inputs", {}),   # e.g. an image's pixels
            attention_mask=self.batch.attention_mask,
            max_new_tokens=n,
            do_sample=False,
            num_beams=1,
            logits_processor=procs,
            output_logits=self.keep_logits,
            return_dict_in_generate=self.keep_logits,
        )
        if stopwatch is not None:
            stopwatch.end("decode")
        if self.keep_logits:
            self.logits = torch.stack(out.logits, 1).float()
            out = out.sequences
        return out[:, self.batch.padded_length:]

    def outputs(self) -> dict:
        """(batch, steps, vocab) logits of the last run, where kept."""
        return {} if self.logits is None else {"logits": self.logits}
