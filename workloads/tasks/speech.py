"""Speech and text translation inputs (S-S, S-T, T-T, T-S) with the lengths of Fleurs en->es.

Seed paper 1, Table II (Seamless rows, Fleurs en_us -> es_419) and Section III: speech is
80-bin filterbanks at 100 Hz stacked by two into 160-dim 50 Hz frames, 179-1464 frames
(mean 492.83, i.e. the 9.88 s mean duration of en_us); text inputs are 12-80 tokens (mean
30.48); the text decoder takes ~34-35 steps. Table III: max batch 128 for speech input, 384
for text input.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .lengths import LengthDist
from .text import DECODE_CAP

SAMPLE_RATE = 16000
_HOP, _WINDOW = 160, 400   # the feature extractor's 10 ms hop and 25 ms window, in samples

SPEECH_IN = LengthDist(179, 1464, 492.83, "seed paper 1, Table II, Fleurs en_us speech input (50 Hz frames)")
TEXT_IN = LengthDist(12, 80, 30.48, "seed paper 1, Table II, Fleurs en_us text input (tokens)")
# Decoding steps of the text decoder: 34.68 from speech, 33.91 from text (Table II); the range
# is the text output's (4-95 tokens).
STEPS = {
    "speech": LengthDist(4, 95, 34.68, "seed paper 1, Table II, Seamless S-T decoding steps"),
    "text": LengthDist(4, 95, 33.91, "seed paper 1, Table II, Seamless T-T decoding steps"),
}
BEAMS = 5   # the official SeamlessM4T translator's beam size


@dataclass(frozen=True)
class Task:
    name: str
    speech_in: bool
    speech_out: bool
    table_iii_batch: int


TASKS = {
    t.name: t
    for t in (
        Task("S-S", True, True, 128),
        Task("S-T", True, False, 128),
        Task("T-T", False, False, 384),
        Task("T-S", False, True, 384),
    )
}


class InputError(ValueError):
    """An input the model cannot take, with the limit it breaks."""


@dataclass
class TranslationBatch:
    task: Task
    input_ids: torch.Tensor | None        # (B, P) text tokens, right-padded, or None
    input_features: torch.Tensor | None   # (B, T, 160) speech frames, right-padded, or None
    attention_mask: torch.Tensor          # (B, P or T)
    new_tokens: int                       # text decoding steps, forced
    prompt_lengths: list[int]             # input lengths: tokens or 50 Hz frames

    @property
    def batch(self) -> int:
        return self.attention_mask.shape[0]

    @property
    def padded_length(self) -> int:
        return self.attention_mask.shape[1]

    def to(self, device) -> "TranslationBatch":
        mv = lambda t: None if t is None else t.to(device)   # noqa: E731
        return TranslationBatch(self.task, mv(self.input_ids), mv(self.input_features), mv(self.attention_mask),
                                self.new_tokens, self.prompt_lengths)


def samples_for_frames(frames: int) -> int:
    """Waveform length whose features are exactly `frames` stacked frames."""
    return (2 * frames - 1) * _HOP + _WINDOW


def synth_speech(frames: int, rng: np.random.Generator) -> np.ndarray:
    """A speech-like waveform: a voiced source (gliding pitch, harmonics) under a syllabic
    envelope, plus breath noise. Latency does not depend on the content; the features do
    depend on it being audio-like rather than silence."""
    n = samples_for_frames(frames)
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 2 * np.pi)))
    wave = 0.1 * envelope * voiced + 0.005 * rng.standard_normal(n)
    return wave.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _extractor():
    from transformers import SeamlessM4TFeatureExtractor

    return SeamlessM4TFeatureExtractor()   # the published defaults: 80 bins, stride 2, 16 kHz


def speech_features(frames: list[int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of synthesized speech of the given lengths, by the model's own feature extractor."""
    waves = [synth_speech(f, rng) for f in frames]
    out = _extractor()(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
    return out["input_features"], out["attention_mask"]


def check_lengths(lengths: list[int], *, speech: bool, limit: int) -> None:
    kind = "speech input" if speech else "text input"
    unit = "frames (50 Hz)" if speech else "tokens"
    if not lengths:
        raise InputError(f"{kind}: empty batch")
    for i, n in enumerate(lengths):
        if n < 1:
            raise InputError(f"{kind} {i} has length {n}: it must be at least 1 {unit}")
        if n > limit:
            raise InputError(f"{kind} {i} has {n} {unit}, more than the model's maximum of {limit} {unit}")


def batch_from_lengths(task: Task, lengths: list[int], new_tokens: int, *, vocab_size: int, src_lang_id: int,
                       eos_id: int, pad_id: int, limit: int, rng: np.random.Generator) -> TranslationBatch:
    """Inputs of the given lengths on the CPU: speech frames, or tokens framed as NLLB's tokenizer
    frames them (source language token first, EOS last)."""
    lengths = [int(n) for n in lengths]
    check_lengths(lengths, speech=task.speech_in, limit=limit)
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    if task.speech_in:
        feats, mask = speech_features(lengths, rng)
        return TranslationBatch(task, None, feats, mask, int(new_tokens), lengths)
    P = max(lengths)
    ids = np.full((len(lengths), P), pad_id, dtype=np.int64)
    mask = np.zeros((len(lengths), P), dtype=np.int64)
    for i, n in enumerate(lengths):
        body = rng.integers(4, vocab_size - 8, size=n)   # ordinary subwords, clear of specials and languages
        body[0], body[-1] = src_lang_id, eos_id
        ids[i, :n], mask[i, :n] = body, 1
    return TranslationBatch(task, torch.from_numpy(ids), None, torch.from_numpy(mask), int(new_tokens), lengths)


@functools.lru_cache(maxsize=8)
def make_batch(task_name: str, scale: str, batch: int, *, vocab_size: int, src_lang_id: int, eos_id: int,
               pad_id: int, limit: int, seed: int = 0) -> TranslationBatch:
    """A seeded batch on the CPU. Tasks sharing an input modality draw the same inputs and
    decoding steps, so S-S and S-T translate the same speech (and T-T and T-S the same text).

    Batch 1 is the typical request: the published mean input length and decoding steps (a
    single draw would make the one-request latency depend on where the draw fell). Larger
    batches draw every length, and decode until their longest member is done.
    """
    if batch < 1:
        raise ValueError(f"batch size must be >= 1, got {batch}")
    task = TASKS[task_name]
    modality = "speech" if task.speech_in else "text"
    rng = np.random.default_rng([seed, batch, 0 if task.speech_in else 1])
    inputs, steps = (SPEECH_IN if task.speech_in else TEXT_IN), STEPS[modality]
    if batch == 1:
        lengths, new_tokens = [round(inputs.mean)], round(steps.mean)
    else:
        lengths, new_tokens = inputs.draw(batch, rng), int(steps.draw(batch, rng).max())
    new_tokens = min(new_tokens, DECODE_CAP[scale])
    return batch_from_lengths(task, lengths, new_tokens, vocab_size=vocab_size, src_lang_id=src_lang_id,
                              eos_id=eos_id, pad_id=pad_id, limit=limit, rng=rng)
