"""What the diffusion engines' runners share: a model that the other rungs of a case run too, so
each round sets the plan's attention implementation on it, and the attention calls of one
denoising step, which depend on the batch's shapes alone, recorded once."""
from __future__ import annotations

from ..models.diffusion import largest_scores
from .runner import RunnerBase


def score_record(unet, batch) -> dict:
    """The paper's formula for the memory of the largest attention score tensor of a step
    (seed paper 2, Sec. V-A: O(L^4) in the latent's side L): its rows x heads x query x key
    elements in the UNet's dtype, which the classic (eager) processor materializes and fused
    attention does not. The measured counterpart, eager's peak less the fused rung's, is added
    where the result is assembled (run/assemble.py), beside the peaks."""
    dims = tuple(int(d) for d in batch.latents.shape[2:])   # (H, W), or (frames, H, W)
    top = largest_scores(unet, dims, context=batch.input_ids.shape[-1], rows=2 * batch.batch)
    dtype_bytes = unet.dtype.itemsize
    return top | {"image": [int(batch.height), int(batch.width)], "latent": list(dims), "dtype_bytes": dtype_bytes,
                  "formula_bytes": top["elements"] * dtype_bytes}


class SharedModelRunner(RunnerBase):
    """Subclasses set `set_attention(model, implementation)` and `attention_record(model,
    batch)` (the family's and the engine's) and implement `run` and `outputs`."""

    set_attention = None
    attention_record = None
    unet_of = None   # the network whose attention scores are sized (None: not recorded)

    def __init__(self, model, batch, attn_implementation: str = "eager"):
        self.model = model
        self.batch = batch
        self.attn_implementation = attn_implementation
        self._attention = self._scores = None

    def prepare(self) -> None:
        # The model is shared with the other rungs of the case: each sets what it needs.
        type(self).set_attention(self.model, self.attn_implementation)

    def recorded(self) -> dict:
        if self._attention is None:
            self._attention = type(self).attention_record(self.model, self.batch)
        out = {"attention_calls": self._attention}
        if type(self).unet_of is not None:
            if self._scores is None:
                self._scores = score_record(type(self).unet_of(self.model), self.batch)
            out["attention_scores"] = self._scores
        return out
