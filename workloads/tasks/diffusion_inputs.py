"""What the diffusion tasks' inputs share: prompt lengths and step counts checked with one
wording, lengths drawn from a task's distribution, token ids and noise seeded (ids from
[seed, batch], noise on the CPU from `seed`, so every device and every lever starts from the
same inputs), the prompts and empty prompts of classifier-free guidance, and the batch of a
guided latent diffusion (Stable Diffusion's images, text-to-video's frames)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .clip_prompts import guided_ids


def prompt_lengths(lengths) -> list[int]:
    """The prompts' lengths as ints: at least one prompt, none shorter than 0 tokens."""
    lengths = [int(n) for n in lengths]
    if not lengths:
        raise ValueError("a batch needs at least one prompt")
    if min(lengths) < 0:
        raise ValueError(f"prompt lengths must be >= 0 tokens, got {lengths}")
    return lengths


def check_steps(steps: int, of: str = "") -> None:
    """`of` names what makes the steps in the error (" of stage I")."""
    if steps < 1:
        raise ValueError(f"the number of denoising steps{of} must be at least 1, got {steps}")


def task_lengths(tasks: dict, task: str, batch: int, kind: str):
    """The task and `batch` prompt lengths drawn from its distribution (seeded by the batch
    size); `kind` names the tasks in the error."""
    if task not in tasks:
        raise ValueError(f"unknown {kind} task {task!r}; known: {sorted(tasks)}")
    if batch < 1:
        raise ValueError(f"batch size must be >= 1, got {batch}")
    t = tasks[task]
    return t, t.prompt.draw(batch, np.random.default_rng([0, batch]))


def prompt_rng(seed: int, lengths: list[int]) -> np.random.Generator:
    return np.random.default_rng([seed, len(lengths)])


def seeded_noise(seed: int, *shapes) -> list[torch.Tensor]:
    """Standard normal tensors of `shapes`, drawn in order on the CPU from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for shape in shapes]


class GuidedPrompts:
    """`input_ids` holds the B prompts, then B empty prompts, which classifier-free guidance
    encodes beside them; `batch` is B."""

    @property
    def prompt_ids(self) -> torch.Tensor:
        return self.input_ids[: self.batch]

    @property
    def empty_ids(self) -> torch.Tensor:
        return self.input_ids[self.batch:]


@dataclass
class PromptBatch(GuidedPrompts):
    """B prompts and their empty prompts as CLIP token ids, and the noise the latents start from."""

    input_ids: torch.Tensor      # (2B, context): the B prompts, then B empty prompts
    latents: torch.Tensor        # (B, latent channels, [frames,] height / f, width / f), seeded standard normal
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

    def to(self, device) -> "PromptBatch":
        return type(self)(self.input_ids.to(device), self.latents.to(device), self.height, self.width, self.steps,
                          self.new_tokens, self.guidance_scale, list(self.prompt_lengths), self.task)


def latent_batch(cls, lengths, *, frames: tuple[int, ...] = (), what: str, latent: str, vocab_size: int,
                 context: int, latent_channels: int, factor: int, height: int, width: int, steps: int,
                 evaluations: int, guidance_scale: float, seed: int, task: str, device) -> PromptBatch:
    """A `cls` (a PromptBatch) of prompts of the given lengths as CLIP token ids and latents of
    (`frames`,) height / factor x width / factor; `what` and `latent` name the picture and its
    latent in the error a size that is not a multiple of the factor raises."""
    lengths = prompt_lengths(lengths)
    check_steps(steps)
    for name, n in (("height", height), ("width", width)):
        if n < factor or n % factor:
            raise ValueError(f"{what} {name} {n} px is not a positive multiple of the autoencoder's downsampling "
                             f"factor {factor}: {latent} divided by {factor}")
    ids = guided_ids(lengths, vocab_size=vocab_size, context=context, rng=prompt_rng(seed, lengths))
    latents, = seeded_noise(seed, (len(lengths), latent_channels, *frames, height // factor, width // factor))
    b = cls(ids, latents, height, width, steps, evaluations, guidance_scale, lengths, task)
    return b.to(device) if device is not None else b


__all__ = ["GuidedPrompts", "PromptBatch", "check_steps", "latent_batch", "prompt_lengths", "prompt_rng",
           "seeded_noise", "task_lengths"]
