"""Chameleon's inputs: image captioning (I-T), visual question answering (IT-T), text-to-image (T-I).

Seed paper 1, Table II and Section III: I-T is one image (1024 tokens) and a 6-token static
prompt, 1030 tokens in all, 30 decode steps (MSCOCO); IT-T is the image and a question of 3-65
text tokens, 1033-1095 in all (mean 1040), 10 decode steps (VizWiz); T-I is a prompt of 10-39
text tokens (mean 13.9, MSCOCO captions) and exactly one image of tokens out. Table III: max
batch 16 for all three. Images are synthesized (seeded) and preprocessed as Chameleon's image
processor does; token ids are random, as for every workload here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .lengths import COCO_CAPTIONS, LengthDist

# The tokens around the image besides its codes: <s>, begin-image, end-image.
MARKERS = 3


@dataclass(frozen=True)
class ImageTask:
    name: str
    text: LengthDist | None      # text tokens besides the markers (None: the task has no text input)
    image_in: bool
    decode_steps: int | None     # fixed by the paper; None: one image of codes (T-I)
    cfg: bool                    # T-I: in-batch classifier-free guidance, three rows per prompt
    samples: int                 # Table III: the dataset's size

    @property
    def image_out(self) -> bool:
        return self.decode_steps is None


# I-T's 6 tokens beside the image are the markers and 3 tokens of static prompt.
STATIC_PROMPT = LengthDist(1030 - 1024 - MARKERS, 1030 - 1024 - MARKERS, 1030 - 1024 - MARKERS,
                           "seed paper 1, Section III-B: 1030 = 1024 image tokens + 6 static prompt tokens")
TASKS = {
    "I-T": ImageTask("I-T", STATIC_PROMPT, image_in=True, decode_steps=30, cfg=False, samples=5000),
    # The question comes after I-T's static prompt: 1033-1095 tokens, mean 1040.
    "IT-T": ImageTask("IT-T", LengthDist(3 + 3, 65 + 3, 10 + 3, "seed paper 1, Table II, VizWiz: 1033-1095, mean 1040"),
                      image_in=True, decode_steps=10, cfg=False, samples=4319),
    "T-I": ImageTask("T-I", COCO_CAPTIONS, image_in=False, decode_steps=None, cfg=True, samples=500),
}

# Chameleon's image processor settings (transformers' ChameleonImageProcessor): shortest edge
# to the tokenizer's resolution, center crop, x * 0.0078 - 1 (rescale, then mean 1 / std 1).
RESCALE = 0.0078


class ImageInputError(ValueError):
    """An input image the tokenizer cannot take; the message says what was wrong."""


def preprocess(images, resolution: int) -> torch.Tensor:
    """RGB uint8 images (H, W, 3), any size, -> (B, 3, resolution, resolution) pixel values.

    Ours because transformers' ChameleonImageProcessor needs Pillow or torchvision, which the
    suite's hosts do not have; it resizes with antialiased bicubic where the processor uses
    Lanczos. A wrong size is resized; a wrong mode or dtype is rejected.
    """
    out = []
    for i, img in enumerate(images):
        t = torch.as_tensor(img)
        if t.dtype != torch.uint8:
            raise ImageInputError(f"image {i}: expected uint8 RGB pixels, got dtype {t.dtype}")
        if t.dim() != 3 or t.shape[-1] != 3:
            mode = {2: "grayscale (H, W)"}.get(t.dim()) or (
                f"{t.shape[-1]} channels" if t.dim() == 3 else f"{t.dim()} dimensions")
            raise ImageInputError(f"image {i}: expected RGB of shape (H, W, 3), got {tuple(t.shape)} ({mode}); "
                                  "convert it to RGB first")
        H, W = t.shape[:2]
        if min(H, W) < 1:
            raise ImageInputError(f"image {i}: empty image of shape {tuple(t.shape)}")
        x = t.permute(2, 0, 1)[None].float()
        scale = resolution / min(H, W)
        h, w = max(resolution, round(H * scale)), max(resolution, round(W * scale))
        if (h, w) != (H, W):
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        top, left = (h - resolution) // 2, (w - resolution) // 2
        x = x[..., top:top + resolution, left:left + resolution].clamp(0, 255)
        out.append(x * RESCALE - 1.0)
    return torch.cat(out)


def synthetic_images(n: int, resolution: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Seeded RGB photos-to-be: smooth colour fields plus noise, at MSCOCO-like aspect ratios
    around the tokenizer's resolution, so every image goes through resize and crop."""
    imgs = []
    for _ in range(n):
        h = int(resolution * rng.uniform(1.0, 1.3))
        w = int(resolution * rng.uniform(1.0, 1.5))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)),
                         np.sin(4 * (xx + yy) + rng.uniform(0, 6))], -1)
        img = 127.5 + 100 * base + rng.normal(0, 12, size=(h, w, 3))
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return imgs


@dataclass
class ImageTextBatch:
    """Left-padded token rows for one task, with its images.

    For T-I the rows are tripled for classifier-free guidance: `rows` = 3 x `batch`, first the
    full prompts, then the image-only condition, then the unconditioned rows.
    """
    input_ids: torch.Tensor          # (rows, P)
    attention_mask: torch.Tensor     # (rows, P)
    new_tokens: int
    prompt_lengths: list[int]        # per prompt, markers and image tokens included
    dataset: str
    pixel_values: torch.Tensor | None = None   # (batch, 3, R, R)
    cfg: bool = False
    seed: int = 0                    # for sampling

    @property
    def batch(self) -> int:
        return self.input_ids.shape[0] // 3 if self.cfg else self.input_ids.shape[0]

    @property
    def padded_length(self) -> int:
        return self.input_ids.shape[1]

    @property
    def extra_inputs(self) -> dict:
        """What the model's first forward takes besides the tokens."""
        return {} if self.pixel_values is None else {"pixel_values": self.pixel_values}


def _left_pad(rows: list[list[int]], pad_id: int):
    P = max(len(r) for r in rows)
    ids = np.full((len(rows), P), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), P), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, P - len(r):] = r
        mask[i, P - len(r):] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def batch_from_lengths(task: ImageTask, text_lengths, *, image_tokens: int, resolution: int, ids: dict,
                       vocab_size: int, max_positions: int, device, rng: np.random.Generator,
                       new_tokens: int | None = None, images=None) -> ImageTextBatch:
    """A batch of the task with the given text lengths; `ids` names bos, boi, eoi, image, pad and
    first_text token ids. `images` (uint8 RGB arrays) replace the synthesized ones."""
    text_lengths = [int(n) for n in text_lengths]
    if not text_lengths or min(text_lengths) < (1 if task.cfg else 0):
        raise ValueError(f"text lengths must be >= 1, got {text_lengths}")
    steps = new_tokens or (task.decode_steps if task.decode_steps is not None else image_tokens)
    rows = []
    for n in text_lengths:
        text = rng.integers(ids["first_text"], vocab_size, size=n).tolist()
        if task.image_in:
            rows.append([ids["bos"], ids["boi"]] + [ids["image"]] * image_tokens + [ids["eoi"]] + text)
        else:
            rows.append([ids["bos"]] + text + [ids["boi"]])
    lengths = [len(r) for r in rows]
    if max(lengths) + steps > max_positions:
        raise ValueError(f"prompt of {max(lengths)} tokens + {steps} new tokens exceeds the model's context "
                         f"of {max_positions} positions (max_position_embeddings)")
    if task.cfg:
        # Chameleon's in-batch guidance: the image-only condition keeps a prompt's images and
        # drops its text (a T-I prompt has none, so it is <s> + begin-image, like the
        # unconditioned row); both still run, as in the official decoder.
        cond = [[ids["bos"], ids["boi"]] for _ in rows]
        rows = rows + cond + [list(c) for c in cond]
    input_ids, mask = _left_pad(rows, ids["pad"])
    pixel_values = None
    if task.image_in:
        imgs = images if images is not None else synthetic_images(len(lengths), resolution, rng)
        if len(imgs) != len(lengths):
            raise ValueError(f"{len(imgs)} images for {len(lengths)} prompts")
        pixel_values = preprocess(imgs, resolution)
    return ImageTextBatch(
        input_ids=input_ids.to(device), attention_mask=mask.to(device), new_tokens=int(steps),
        prompt_lengths=lengths, dataset=task.name, cfg=task.cfg,
        pixel_values=None if pixel_values is None else pixel_values.to(device),
        seed=int(rng.integers(0, 2**31)),
    )


def make_batch(task: ImageTask, batch: int, **kw) -> ImageTextBatch:
    """A seeded batch: text lengths drawn from the task's distribution."""
    if batch < 1:
        raise ValueError(f"batch size must be >= 1, got {batch}")
    seed = kw.pop("seed", 0)
    rng = np.random.default_rng([seed, batch])
    return batch_from_lengths(task, task.text.draw(batch, rng), rng=rng, **kw)
