"""T-I inputs for latent diffusion: prompts as CLIP token ids, and the seeded starting noise.

Seed paper 2 names no prompt set for its latency figures; its quality axis is FID on MS-COCO,
so prompts are MS-COCO captions: 10-39 tokens, mean 13.9 (seed paper 1, Table II, T-I). Token
ids are random, as for every workload here, laid out as CLIP's tokenizer lays them out for
Stable Diffusion: begin token, prompt, end token, padded with the end token to 77. Classifier-
free guidance adds an empty prompt per row (begin, end, padding): the text encoder sees 2B rows.

Image size and step count per scale: 512 x 512 and 50 steps at paper scale (Stable Diffusion
1.5's default and the issue's setting), 256 and 25 small, 64 and 4 tiny (CPU seconds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .clip_prompts import clip_ids
from .lengths import COCO_CAPTIONS, LengthDist

GUIDANCE_SCALE = 7.5   # StableDiffusionPipeline's default


@dataclass(frozen=True)
class TextToImageTask:
    name: str
    prompt: LengthDist
    image_size: dict[str, int]   # per scale, square
    steps: dict[str, int]        # inference steps per scale, as a user asks the pipeline for them
    guidance_scale: float = GUIDANCE_SCALE
    samples: int = 500           # seed paper 1, Table III (MS-COCO prompts)


TASKS: dict[str, TextToImageTask] = {
    "T-I": TextToImageTask("T-I", COCO_CAPTIONS, image_size={"tiny": 64, "small": 256, "paper": 512},
                           steps={"tiny": 4, "small": 25, "paper": 50}),
}


@dataclass
class PromptBatch:
    """B prompts and their empty prompts as CLIP token ids, and the noise the latents start from."""

    input_ids: torch.Tensor      # (2B, context): the B prompts, then B empty prompts
    latents: torch.Tensor        # (B, latent channels, height / f, width / f), seeded standard normal
    height: int
    width: int
    steps: int                   # inference steps the pipeline is asked for
    new_tokens: int              # UNet evaluations those steps make: the run's "decode steps"
    guidance_scale: float
    prompt_lengths: list[int]    # tokens of each prompt, begin and end tokens not counted
    task: str = "custom"

    @property
    def batch(self) -> int:
        return self.latents.shape[0]

    @property
    def prompt_ids(self) -> torch.Tensor:
        return self.input_ids[: self.batch]

    @property
    def empty_ids(self) -> torch.Tensor:
        return self.input_ids[self.batch:]

    def to(self, device) -> "PromptBatch":
        return PromptBatch(self.input_ids.to(device), self.latents.to(device), self.height, self.width, self.steps,
                           self.new_tokens, self.guidance_scale, list(self.prompt_lengths), self.task)


def batch_from_lengths(lengths, *, vocab_size: int, context: int, latent_channels: int, factor: int, height: int,
                       width: int, steps: int, evaluations: int, guidance_scale: float = GUIDANCE_SCALE,
                       seed: int = 0, task: str = "custom", device=None) -> PromptBatch:
    """A batch of prompts of the given lengths; `evaluations` is what the model's scheduler makes
    of `steps`. The noise is drawn on the CPU from `seed`, so every device and every lever
    starts from the same latents."""
    lengths = [int(n) for n in lengths]
    if not lengths:
        raise ValueError("a batch needs at least one prompt")
    if min(lengths) < 0:
        raise ValueError(f"prompt lengths must be >= 0 tokens, got {lengths}")
    if steps < 1:
        raise ValueError(f"the number of denoising steps must be at least 1, got {steps}")
    for name, n in (("height", height), ("width", width)):
        if n < factor or n % factor:
            raise ValueError(f"image {name} {n} px is not a positive multiple of the autoencoder's downsampling "
                             f"factor {factor}: the latent is the image divided by {factor}")
    rng = np.random.default_rng([seed, len(lengths)])
    prompts = clip_ids(lengths, vocab_size=vocab_size, context=context, rng=rng)
    empty = clip_ids([0] * len(lengths), vocab_size=vocab_size, context=context, rng=rng)
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((len(lengths), latent_channels, height // factor, width // factor), generator=g)
    b = PromptBatch(torch.cat([prompts, empty]), latents, height, width, steps, evaluations, guidance_scale,
                    lengths, task)
    return b.to(device) if device is not None else b


def make_batch(task: str, scale: str, batch: int, *, evaluations_of, **model_facts) -> PromptBatch:
    """A seeded batch of `batch` prompts with lengths drawn from the task's distribution, at the
    task's image size and step count for `scale`. `evaluations_of(steps)` is the UNet
    evaluations the model's scheduler makes of them; `model_facts` are batch_from_lengths' other
    model arguments (vocabulary, context, latent channels, factor, device)."""
    if task not in TASKS:
        raise ValueError(f"unknown text-to-image task {task!r}; known: {sorted(TASKS)}")
    if batch < 1:
        raise ValueError(f"batch size must be >= 1, got {batch}")
    t = TASKS[task]
    rng = np.random.default_rng([0, batch])
    size = t.image_size[scale]
    steps = t.steps[scale]
    return batch_from_lengths(t.prompt.draw(batch, rng), height=size, width=size, steps=steps,
                              evaluations=evaluations_of(steps), guidance_scale=t.guidance_scale, task=task,
                              **model_facts)
