"""What the diffusion engines' runners share: a model that the other rungs of a case run too, so
each round sets the plan's attention implementation on it, and the attention calls of one
denoising step, which depend on the batch's shapes alone, recorded once."""
from __future__ import annotations

from .runner import RunnerBase


class SharedModelRunner(RunnerBase):
    """Subclasses set `set_attention(model, implementation)` and `attention_record(model,
    batch)` (the family's and the engine's) and implement `run` and `outputs`."""

    set_attention = None
    attention_record = None

    def __init__(self, model, batch, attn_implementation: str = "eager"):
        self.model = model
        self.batch = batch
        self.attn_implementation = attn_implementation
        self._attention = None

    def prepare(self) -> None:
        # The model is shared with the other rungs of the case: each sets what it needs.
        type(self).set_attention(self.model, self.attn_implementation)

    def recorded(self) -> dict:
        if self._attention is None:
            self._attention = type(self).attention_record(self.model, self.batch)
        return {"attention_calls": self._attention}
