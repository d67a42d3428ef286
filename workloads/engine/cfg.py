"""Image-token decoding with in-batch classifier-free guidance, then detokenization to pixels.

Chameleon's official text-to-image recipe (facebookresearch/chameleon's
inference code): each prompt runs as three rows (full condition, image-only condition,
unconditioned); their last logits are mixed `u + 1.2 (img - u) + 3.0 (full - img)`, only image
tokens are allowed, and the token sampled with temperature 0.7 and top-p 0.9 is fed to all
three rows. transformers masks image tokens out of its logits and has no such loop: the
reference here is this loop as a user would write it over the library's modules (eager,
dynamic cache); the levers run the same `ImageTokenChooser` inside the static decoder's
compiled step, so the CUDA graph covers guidance and sampling too.

Randomness under CUDA graphs: a replayed graph cannot draw fresh numbers from a host-seeded
generator, so every step's uniform draw is made up front (one per prompt per step, from a
seeded torch.Generator, in place into a fixed buffer) and the step reads its column through
the inverse CDF of the top-p-truncated distribution. Every path draws the same numbers; on fp32
models eager and compiled sample the same tokens (tests/test_chameleon.py).
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from .library import LibraryRunner
from .static_decode import StaticRunner

IMAGE_SCALE = 1.2   # guidance toward the image-only condition, away from the unconditioned
TEXT_SCALE = 3.0    # guidance toward the full (text) condition, away from the image-only one
TEMPERATURE = 0.7
TOP_P = 0.9


def cfg_mix(full: torch.Tensor, image: torch.Tensor, uncond: torch.Tensor,
            image_scale: float = IMAGE_SCALE, text_scale: float = TEXT_SCALE) -> torch.Tensor:
    return uncond + image_scale * (image - uncond) + text_scale * (full - image)


def sample_top_p(logits: torch.Tensor, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """Column index per row from softmax(logits) truncated to the smallest set of mass >= top_p,
    picked by the uniform draw `u` (rows,) through the inverse CDF."""
    probs = logits.softmax(-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    cum = sorted_p.cumsum(-1)
    sorted_p = sorted_p * ((cum - sorted_p) < top_p)   # the most likely token always stays
    cum = sorted_p.cumsum(-1)
    k = (cum < u[:, None] * cum[:, -1:]).sum(-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    return order.gather(-1, k)


def unmasked_logits(model, **inputs) -> torch.Tensor:
    """The last position's logits over the whole vocabulary. ChameleonForConditionalGeneration's
    forward sets image-token logits to the dtype minimum (it generates text only), so the
    backbone and head are called directly."""
    hidden = model.model(**inputs).last_hidden_state[:, -1]
    return model.lm_head(hidden)


class ImageTokenChooser:
    """`choose(logits, t)` for the decoders: guidance over the three row groups, image tokens
    only, then greedy (temperature 0) or seeded top-p sampling; the chosen token goes to all
    three rows of its prompt. Its buffers have fixed addresses for graph replay."""

    def __init__(self, token_to_code: dict[int, int], batch: int, steps: int, device, *,
                 temperature: float = TEMPERATURE, top_p: float = TOP_P):
        """`token_to_code`: the vocabulary's image tokens and their VQ codes; `steps`: how many
        output columns a run may reach (the decoder's cache length bounds it)."""
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature}, {top_p}")
        ids = sorted(token_to_code)
        self.ids = torch.tensor(ids, dtype=torch.long, device=device)
        self.codes = torch.tensor([token_to_code[i] for i in ids], dtype=torch.long, device=device)
        self.batch, self.steps = batch, steps
        self.temperature, self.top_p = temperature, top_p
        self.noise = torch.zeros(steps, batch, device=device)

    def reseed(self, seed: int) -> None:
        """Draw every step's uniforms for the next run (in place: the buffer keeps its address)."""
        g = torch.Generator(device=self.noise.device).manual_seed(seed)
        self.noise.copy_(torch.rand(self.noise.shape, generator=g, device=self.noise.device))

    def __call__(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        full, image, uncond = logits.index_select(-1, self.ids).float().view(3, self.batch, -1).unbind(0)
        mixed = cfg_mix(full, image, uncond)
        if self.temperature == 0:
            k = mixed.argmax(-1, keepdim=True)
        else:
            k = sample_top_p(mixed / self.temperature, self.top_p, self.noise.index_select(0, t).view(-1))
        return self.ids[k].repeat(3, 1)


class CFGGenerate(LibraryRunner):
    """The reference: the guided loop over the library's modules, eager, with its dynamic cache."""

    def __init__(self, model, batch, attn_implementation: str, chooser: ImageTokenChooser, detokenizer):
        super().__init__(model, batch, attn_implementation)
        self.chooser = chooser
        self.detokenizer = detokenizer
        self.image = None

    @property
    def batch_tokens(self) -> int:
        return self.batch.new_tokens

    def prepare(self) -> None:
        super().prepare()
        self.chooser.reseed(self.batch.seed)

    def outputs(self) -> dict:
        return {"image": self.image}

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None) -> torch.Tensor:
        n = new_tokens or self.batch.new_tokens
        sw = stopwatch
        mask = self.batch.attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        if sw is not None:
            sw.begin("prefill")
        logits = unmasked_logits(self.model, input_ids=self.batch.input_ids, attention_mask=mask, position_ids=pos,
                                 past_key_values=cache, use_cache=True)
        tok = self.chooser(logits, torch.zeros(1, dtype=torch.long, device=mask.device))
        out = [tok]
        if sw is not None:
            sw.end("prefill")
            sw.mark("first_token")
            sw.begin("decode")
        pos = pos[:, -1:]
        for i in range(1, n):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], -1)
            pos = pos + 1
            logits = unmasked_logits(self.model, input_ids=tok, attention_mask=mask, position_ids=pos,
                                     past_key_values=cache, use_cache=True)
            tok = self.chooser(logits, torch.tensor([i], device=mask.device))
            out.append(tok)
        del cache   # free the three rows' cache before the detokenizer's activations arrive
        tokens = torch.cat(out, -1)[: self.batch.batch]
        return detokenize(self, tokens, sw)


def detokenize(runner, tokens: torch.Tensor, stopwatch) -> torch.Tensor:
    """Image tokens -> pixels, timed as its own phase; the runner keeps the image."""
    if stopwatch is not None:
        stopwatch.end("decode")
        stopwatch.mark("decode_end")
        stopwatch.begin("detokenize")
    ch = runner.chooser
    # A shortened run (kernel counting, warm-up) has no whole image to decode.
    full = tokens.shape[1] == runner.batch_tokens
    runner.image = runner.detokenizer(ch.codes[torch.searchsorted(ch.ids, tokens)]) if full else None
    if stopwatch is not None:
        stopwatch.end("detokenize")
    return tokens


class CFGRunner(StaticRunner):
    """The static decoder over the tripled rows (guidance in its step), then the detokenizer."""

    def __init__(self, decoder, use_graph: bool, chooser: ImageTokenChooser, detokenizer):
        super().__init__(decoder, use_graph)
        self.chooser = chooser
        self.detokenizer = detokenizer
        self.image = None

    @property
    def batch_tokens(self) -> int:
        return self.decoder.batch.new_tokens

    def prepare(self) -> None:
        super().prepare()
        self.chooser.reseed(self.decoder.batch.seed)

    def outputs(self) -> dict:
        return super().outputs() | {"image": self.image}

    @torch.no_grad()
    def run(self, stopwatch=None, new_tokens: int | None = None) -> torch.Tensor:
        rows = super().run(stopwatch, new_tokens)
        return detokenize(self, rows[: self.decoder.batch.batch], stopwatch)
