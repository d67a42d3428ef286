"""T-V inputs for latent video diffusion: prompts as CLIP token ids, and the seeded starting noise
of every frame.

Neither seed paper gives prompt lengths for text-to-video, so prompts take the caption lengths
seed paper 1 publishes for text-to-image (MS-COCO: 10-39 tokens, mean 13.9, Table II, T-I):
short captions, as text-to-video models are prompted and evaluated with. Token ids are random,
laid out as CLIP's tokenizer lays them out (tasks/clip_prompts.py); classifier-free guidance
adds an empty prompt per row, so the text encoder sees 2B rows.

Frames, frame size and steps per scale: 16 frames of 256 x 256 and 50 steps at paper scale
(TextToVideoSDPipeline's defaults for this model: 16 frames, 50 steps, and the UNet's sample
size 32 times the autoencoder's factor 8), 8 frames of 128 and 25 steps small, 4 frames of 64
and 3 steps tiny (CPU seconds).

The frame sweep (seed paper 2, Figs. 12 and 14) runs the same task at fixed frame counts,
`T-V-<n>frames`, at the task's frame size and in fewer steps (SWEEP_STEPS), for the reason the
image-size sweep gives (tasks/text_to_image.py): what it reads is per step, or a ratio of kinds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .diffusion_inputs import PromptBatch, latent_batch, prompt_lengths, task_lengths
from .lengths import COCO_CAPTIONS, LengthDist

GUIDANCE_SCALE = 9.0   # TextToVideoSDPipeline's default
# Seed paper 2, Fig. 14 sweeps the frame count to show temporal attention's FLOPs growing with
# its square; 8 to 64 spans ModelScope's 16 and the paper's longer projections.
FRAME_SWEEP = (8, 16, 32, 64)
# The sweep's cases per scale: the paper's at paper scale, halved small, CPU seconds tiny.
FRAME_SWEEPS: dict[str, tuple[int, ...]] = {"tiny": (2, 4, 8), "small": (4, 8, 16, 32), "paper": FRAME_SWEEP}
SWEEP_STEPS: dict[str, int] = {"tiny": 2, "small": 5, "paper": 10}   # DDIM: one evaluation a step


@dataclass(frozen=True)
class TextToVideoTask:
    name: str
    prompt: LengthDist
    frames: dict[str, int] = field(default_factory=dict)       # per scale
    frame_size: dict[str, int] = field(default_factory=dict)   # per scale, square
    steps: dict[str, int] = field(default_factory=dict)        # inference steps per scale
    guidance_scale: float = GUIDANCE_SCALE
    samples: int = 500           # the caption set's size: seed paper 1, Table III (MS-COCO prompts)
    sweep: bool = False          # a point of the frame sweep: a characterization, not a user's setting


_SIZE = {"tiny": 64, "small": 128, "paper": 256}


def sweep_name(frames: int) -> str:
    return f"T-V-{frames}frames"


def _sweep_tasks() -> dict[str, TextToVideoTask]:
    out = {}
    for n in sorted({n for ns in FRAME_SWEEPS.values() for n in ns}):
        scales = [s for s, ns in FRAME_SWEEPS.items() if n in ns]
        out[sweep_name(n)] = TextToVideoTask(sweep_name(n), COCO_CAPTIONS, frames={s: n for s in scales},
                                             frame_size={s: _SIZE[s] for s in scales},
                                             steps={s: SWEEP_STEPS[s] for s in scales}, sweep=True)
    return out


TASKS: dict[str, TextToVideoTask] = {
    "T-V": TextToVideoTask("T-V", COCO_CAPTIONS, frames={"tiny": 4, "small": 8, "paper": 16},
                           frame_size=dict(_SIZE), steps={"tiny": 3, "small": 25, "paper": 50}),
    **_sweep_tasks(),
}


class VideoBatch(PromptBatch):
    """B prompts and their empty prompts as CLIP token ids, and the noise every frame's latent
    starts from: latents (B, latent channels, frames, height / f, width / f)."""

    @property
    def frames(self) -> int:
        return self.latents.shape[2]


def batch_from_lengths(lengths, *, frames: int, vocab_size: int, context: int, latent_channels: int, factor: int,
                       height: int, width: int, steps: int, evaluations: int, guidance_scale: float = GUIDANCE_SCALE,
                       seed: int = 0, task: str = "custom", device=None) -> VideoBatch:
    """A batch of prompts of the given lengths, each to a video of `frames` frames; `evaluations`
    is what the model's scheduler makes of `steps`. The noise is drawn on the CPU from `seed`,
    so every device and every lever starts from the same latents."""
    lengths = prompt_lengths(lengths)
    if frames < 1:
        raise ValueError(f"a video needs at least 1 frame, got {frames}")
    return latent_batch(VideoBatch, lengths, frames=(frames,), what="frame",
                        latent="each frame's latent is the frame", vocab_size=vocab_size, context=context,
                        latent_channels=latent_channels, factor=factor, height=height, width=width, steps=steps,
                        evaluations=evaluations, guidance_scale=guidance_scale, seed=seed, task=task, device=device)


def make_batch(task: str, scale: str, batch: int, *, evaluations_of, frames: int | None = None,
               **model_facts) -> VideoBatch:
    """A seeded batch of `batch` prompts with lengths drawn from the task's distribution, at the
    task's frame count (or `frames`), frame size and step count for `scale`.
    `evaluations_of(steps)` is the UNet evaluations the model's scheduler makes of them;
    `model_facts` are batch_from_lengths' other model arguments (vocabulary, context, latent
    channels, factor, device)."""
    t, lengths = task_lengths(TASKS, task, batch, "text-to-video")
    if scale not in t.frames:
        raise ValueError(f"task {task} has no frame count at {scale} scale; it runs at {sorted(t.frames)}")
    size, steps = t.frame_size[scale], t.steps[scale]
    return batch_from_lengths(lengths, frames=t.frames[scale] if frames is None else frames,
                              height=size, width=size, steps=steps, evaluations=evaluations_of(steps),
                              guidance_scale=t.guidance_scale, task=task, **model_facts)


def frame_sweep(lo: int = FRAME_SWEEP[0], hi: int = FRAME_SWEEP[-1]) -> tuple[int, ...]:
    """Frame counts from `lo` to `hi`, doubling (8, 16, 32, 64 by default): the x-axis of seed
    paper 2, Fig. 14, where temporal attention's FLOPs grow with the square of the count."""
    if lo < 1:
        raise ValueError(f"a frame sweep starts at 1 frame or more, got {lo}")
    if hi < lo:
        raise ValueError(f"a frame sweep ends at or after its start: {lo} to {hi}")
    out, n = [], lo
    while n <= hi:
        out.append(n)
        n *= 2
    return tuple(out)


__all__ = ["FRAME_SWEEP", "FRAME_SWEEPS", "GUIDANCE_SCALE", "SWEEP_STEPS", "TASKS", "TextToVideoTask", "VideoBatch",
           "batch_from_lengths", "frame_sweep", "make_batch", "sweep_name"]
