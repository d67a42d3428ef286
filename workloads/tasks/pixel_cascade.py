"""T-I inputs for a pixel-space cascade (Imagen-like, as DeepFloyd IF): prompts as T5 token ids,
and the seeded noise each stage starts from.

Seed paper 2 names no prompt set for its latency figures; its quality axis is FID on MS-COCO,
so prompts are MS-COCO captions: 10-39 tokens, mean 13.9 (seed paper 1, Table II, T-I), as
for Stable Diffusion. Token ids are random, as for every workload here, laid out as T5's
tokenizer lays them out for IF (IFPipeline.encode_prompt: max_length 77, special tokens added):
the prompt's pieces, the end token, padding to 77, with an attention mask over the pieces and
the end token. Classifier-free guidance adds an empty prompt per row (the end token alone):
the text encoder sees 2B rows.

Image sizes and steps per scale: at paper scale stage I makes 64 x 64 pixels in 100 steps with
guidance 7.0 (IFPipeline's defaults) and stage II 256 x 256 in 50 steps with guidance 4.0 and
the conditioning image re-noised to level 250 (IFSuperResolutionPipeline's defaults); small
keeps the sizes with half the steps; tiny makes 16 then 32 pixels in 4 and 2 steps (CPU
seconds). Every scale keeps stage II at half stage I's steps, so a run shortened to n stage-I
steps makes exactly n / 2 stage-II steps for the even n the harness counts kernels with
(engine/pixel_cascade.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .diffusion_inputs import GuidedPrompts, check_steps, prompt_lengths, prompt_rng, seeded_noise, task_lengths
from .lengths import COCO_CAPTIONS, LengthDist

GUIDANCE = (7.0, 4.0)   # IFPipeline's and IFSuperResolutionPipeline's defaults
NOISE_LEVEL = 250       # IFSuperResolutionPipeline's default
# T5's tokenizer: pad 0, end 1, unknown 2, then its 32000 sentencepiece pieces.
PAD, EOS, FIRST_PIECE, PIECES = 0, 1, 3, 32000
IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class PixelCascadeTask:
    name: str
    prompt: LengthDist
    sizes: dict[str, tuple[int, int]]   # per scale: stage I's and stage II's side, square
    steps: dict[str, tuple[int, int]]   # per scale: stage I's and stage II's inference steps
    guidance_scale: tuple[float, float] = GUIDANCE
    noise_level: int = NOISE_LEVEL
    samples: int = 500                  # seed paper 1, Table III (MS-COCO prompts)


TASKS: dict[str, PixelCascadeTask] = {
    "T-I": PixelCascadeTask("T-I", COCO_CAPTIONS, sizes={"tiny": (16, 32), "small": (64, 256), "paper": (64, 256)},
                            steps={"tiny": (4, 2), "small": (50, 25), "paper": (100, 50)}),
}


def stage_2_steps(stage_1: int, steps: tuple[int, int]) -> int:
    """Stage-II steps of a run of `stage_1` stage-I steps: the task's proportion, at least one."""
    return max(1, int(stage_1 * steps[1] / steps[0] + 0.5))


@dataclass
class CascadeBatch(GuidedPrompts):
    """B prompts and their empty prompts as T5 token ids, and the noise both stages start from."""

    input_ids: torch.Tensor       # (2B, context): the B prompts, then B empty prompts
    attention_mask: torch.Tensor  # (2B, context): 1 over the pieces and the end token
    noise_1: torch.Tensor         # (B, 3, H1, W1): stage I's starting image, standard normal
    noise_2: torch.Tensor         # (B, 3, H2, W2): stage II's starting image
    aug_noise: torch.Tensor       # (B, 3, H2, W2): what re-noises the upsampled stage-I image
    steps: tuple[int, int]        # inference steps of stage I and stage II
    new_tokens: int               # stage-I evaluations of a run: its "decode steps" (DDPM: one a step)
    guidance_scale: tuple[float, float]
    noise_level: int
    prompt_lengths: list[int]     # pieces of each prompt, the end token not counted
    seed: int = 0                 # the schedulers' variance noise
    task: str = "custom"

    @property
    def batch(self) -> int:
        return self.noise_1.shape[0]

    @property
    def size_1(self) -> tuple[int, int]:
        return tuple(self.noise_1.shape[-2:])

    @property
    def size_2(self) -> tuple[int, int]:
        return tuple(self.noise_2.shape[-2:])

    def stage_2_steps(self, stage_1: int | None = None) -> int:
        return self.steps[1] if stage_1 is None else stage_2_steps(stage_1, self.steps)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "CascadeBatch":
        """On `device`; the noise in `dtype` (the UNets'), token ids and mask unchanged."""
        def noise(t):
            return t.to(device=device, dtype=dtype or t.dtype)

        return CascadeBatch(self.input_ids.to(device), self.attention_mask.to(device), noise(self.noise_1),
                            noise(self.noise_2), noise(self.aug_noise), self.steps, self.new_tokens,
                            self.guidance_scale, self.noise_level, list(self.prompt_lengths), self.seed, self.task)


def t5_ids(lengths, *, vocab_size: int, context: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, context) token ids of prompts of `lengths` pieces and their attention mask, laid out
    as T5's tokenizer does: pieces, the end token, padding."""
    limit = context - 1
    over = [n for n in lengths if n > limit]
    if over:
        raise ValueError(f"a prompt of {max(over)} tokens does not fit T5's {context}-token context: at most "
                         f"{limit} prompt tokens before its end token")
    top = min(vocab_size, PIECES)
    if top <= FIRST_PIECE:
        raise ValueError(f"a vocabulary of {vocab_size} has no pieces after T5's pad, end and unknown tokens")
    ids = np.full((len(lengths), context), PAD, dtype=np.int64)
    mask = np.zeros((len(lengths), context), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(FIRST_PIECE, top, size=n)
        ids[i, n] = EOS
        mask[i, :n + 1] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def batch_from_lengths(lengths, *, vocab_size: int, context: int, factors: tuple[int, int], sizes: tuple[int, int],
                       steps: tuple[int, int], guidance_scale: tuple[float, float] = GUIDANCE,
                       noise_level: int = NOISE_LEVEL, seed: int = 0, task: str = "custom",
                       device=None, dtype: torch.dtype | None = None) -> CascadeBatch:
    """A batch of prompts of the given lengths. `factors` are the stages' UNets' downsampling
    factors. The noise is drawn on the CPU from `seed`, so every device and every lever starts
    from the same images."""
    lengths = prompt_lengths(lengths)
    for stage, n in zip(("I", "II"), steps):
        check_steps(n, f" of stage {stage}")
    for stage, size, factor in zip(("I", "II"), sizes, factors):
        if size < factor or size % factor:
            raise ValueError(f"stage {stage}'s image side {size} px is not a positive multiple of its UNet's "
                             f"downsampling factor {factor}: the UNet halves the image {factor.bit_length() - 1} "
                             f"times and must come back to the same size")
    if not 0 <= noise_level < 1000:
        raise ValueError(f"stage II's noise level must be a timestep in [0, 1000), got {noise_level}")
    rng = prompt_rng(seed, lengths)
    prompts, prompt_mask = t5_ids(lengths, vocab_size=vocab_size, context=context, rng=rng)
    empty, empty_mask = t5_ids([0] * len(lengths), vocab_size=vocab_size, context=context, rng=rng)
    b = len(lengths)
    noise_1, noise_2, aug_noise = seeded_noise(seed, (b, IMAGE_CHANNELS, sizes[0], sizes[0]),
                                               *[(b, IMAGE_CHANNELS, sizes[1], sizes[1])] * 2)
    out = CascadeBatch(torch.cat([prompts, empty]), torch.cat([prompt_mask, empty_mask]), noise_1, noise_2, aug_noise,
                       tuple(steps), steps[0], tuple(guidance_scale), noise_level, lengths, seed, task)
    return out.to(device, dtype) if device is not None or dtype is not None else out


def make_batch(task: str, scale: str, batch: int, **model_facts) -> CascadeBatch:
    """A seeded batch of `batch` prompts with lengths drawn from the task's distribution, at the
    task's sizes and steps for `scale`; `model_facts` are batch_from_lengths' model arguments
    (vocabulary, context, downsampling factors, device, dtype)."""
    t, lengths = task_lengths(TASKS, task, batch, "pixel-cascade")
    return batch_from_lengths(lengths, sizes=t.sizes[scale], steps=t.steps[scale],
                              guidance_scale=t.guidance_scale, noise_level=t.noise_level, task=task, **model_facts)
