"""T-I inputs for latent diffusion: prompts as CLIP token ids, and the seeded starting noise.

Seed paper 2 names no prompt set for its latency figures; its quality axis is FID on MS-COCO,
so prompts are MS-COCO captions: 10-39 tokens, mean 13.9 (seed paper 1, Table II, T-I). Token
ids are random, as for every workload here, laid out as CLIP's tokenizer lays them out for
Stable Diffusion: begin token, prompt, end token, padded with the end token to 77. Classifier-
free guidance adds an empty prompt per row (begin, end, padding): the text encoder sees 2B rows.

Image size and step count per scale: 512 x 512 and 50 steps at paper scale (Stable Diffusion
1.5's default and the issue's setting), 256 and 25 small, 64 and 4 tiny (CPU seconds).

The image-size sweep (seed paper 2, Figs. 9 and 10) runs the same task at fixed sizes,
`T-I-<size>px`, in fewer steps (SWEEP_STEPS): what it characterizes is per step (attention
lengths, kernels and time per step, the score tensor's size) or a ratio of kinds within one
round, and the text encoding and decode that a short run weighs more are the same at every
step count.
"""
from __future__ import annotations

from dataclasses import dataclass

from .diffusion_inputs import PromptBatch, latent_batch, task_lengths
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
    sweep: bool = False          # a point of the image-size sweep: a characterization, not a user's setting


# Seed paper 2 sweeps 64 to 1024 px at paper scale; smaller scales keep the doubling at sizes
# their budgets run (tiny: CPU seconds). Every size is a multiple of the autoencoder's factor 8.
SIZE_SWEEP: dict[str, tuple[int, ...]] = {"tiny": (32, 64, 128), "small": (64, 128, 256, 512),
                                          "paper": (64, 128, 256, 512, 768, 1024)}
# At least 2 steps (PNDM makes 3 evaluations of them), so a step after the first is timed; 10
# at paper scale keep the UNet most of a round at 1024 px, where the decode is heaviest.
SWEEP_STEPS: dict[str, int] = {"tiny": 2, "small": 5, "paper": 10}


def sweep_name(size: int) -> str:
    return f"T-I-{size}px"


def _sweep_tasks() -> dict[str, TextToImageTask]:
    sizes = sorted({n for ns in SIZE_SWEEP.values() for n in ns})
    out = {}
    for n in sizes:
        scales = [s for s, ns in SIZE_SWEEP.items() if n in ns]
        out[sweep_name(n)] = TextToImageTask(sweep_name(n), COCO_CAPTIONS, image_size={s: n for s in scales},
                                             steps={s: SWEEP_STEPS[s] for s in scales}, sweep=True)
    return out


TASKS: dict[str, TextToImageTask] = {
    "T-I": TextToImageTask("T-I", COCO_CAPTIONS, image_size={"tiny": 64, "small": 256, "paper": 512},
                           steps={"tiny": 4, "small": 25, "paper": 50}),
    **_sweep_tasks(),
}


def batch_from_lengths(lengths, *, vocab_size: int, context: int, latent_channels: int, factor: int, height: int,
                       width: int, steps: int, evaluations: int, guidance_scale: float = GUIDANCE_SCALE,
                       seed: int = 0, task: str = "custom", device=None) -> PromptBatch:
    """A batch of prompts of the given lengths; `evaluations` is what the model's scheduler makes
    of `steps`. The noise is drawn on the CPU from `seed`, so every device and every lever
    starts from the same latents."""
    return latent_batch(PromptBatch, lengths, what="image", latent="the latent is the image", vocab_size=vocab_size,
                        context=context, latent_channels=latent_channels, factor=factor, height=height, width=width,
                        steps=steps, evaluations=evaluations, guidance_scale=guidance_scale, seed=seed, task=task,
                        device=device)


def make_batch(task: str, scale: str, batch: int, *, evaluations_of, **model_facts) -> PromptBatch:
    """A seeded batch of `batch` prompts with lengths drawn from the task's distribution, at the
    task's image size and step count for `scale`. `evaluations_of(steps)` is the UNet
    evaluations the model's scheduler makes of them; `model_facts` are batch_from_lengths' other
    model arguments (vocabulary, context, latent channels, factor, device)."""
    t, lengths = task_lengths(TASKS, task, batch, "text-to-image")
    if scale not in t.image_size:
        raise ValueError(f"task {task} has no image size at {scale} scale; it runs at {sorted(t.image_size)}")
    size, steps = t.image_size[scale], t.steps[scale]
    return batch_from_lengths(lengths, height=size, width=size, steps=steps, evaluations=evaluations_of(steps),
                              guidance_scale=t.guidance_scale, task=task, **model_facts)
