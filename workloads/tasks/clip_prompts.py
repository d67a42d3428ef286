"""Prompts as CLIP token ids, laid out as CLIP's tokenizer lays them out for the diffusion
pipelines that encode with it (Stable Diffusion, ModelScope text-to-video): begin token,
prompt, end token, padded with the end token to the context. Token ids are random, as for
every workload here; only the layout and the lengths matter to latency."""
from __future__ import annotations

import numpy as np
import torch

SPECIAL_TOKENS = 2     # CLIP's vocabulary ends with its begin and end tokens


def clip_ids(lengths, *, vocab_size: int, context: int, rng: np.random.Generator) -> torch.Tensor:
    """(B, context) token ids of prompts of `lengths` tokens, laid out as CLIP's tokenizer does."""
    bos, eos = vocab_size - 2, vocab_size - 1
    limit = context - SPECIAL_TOKENS
    over = [n for n in lengths if n > limit]
    if over:
        raise ValueError(f"a prompt of {max(over)} tokens does not fit CLIP's {context}-token context: at most "
                         f"{limit} prompt tokens between its begin and end tokens")
    ids = np.full((len(lengths), context), eos, dtype=np.int64)
    ids[:, 0] = bos
    for i, n in enumerate(lengths):
        ids[i, 1:n + 1] = rng.integers(0, vocab_size - SPECIAL_TOKENS, size=n)
    return torch.from_numpy(ids)


def guided_ids(lengths, *, vocab_size: int, context: int, rng: np.random.Generator) -> torch.Tensor:
    """(2B, context): the B prompts, then B empty prompts (begin, end, padding), which
    classifier-free guidance encodes beside them."""
    prompts = clip_ids(lengths, vocab_size=vocab_size, context=context, rng=rng)
    empty = clip_ids([0] * len(lengths), vocab_size=vocab_size, context=context, rng=rng)
    return torch.cat([prompts, empty])


__all__ = ["SPECIAL_TOKENS", "clip_ids", "guided_ids"]
