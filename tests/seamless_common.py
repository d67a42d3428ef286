"""What the Seamless test files share: the tiny model (built once a session, so that compiled
decoders are shared by every file as they would be in a session of the suite), inputs, plans,
and the check of a lever stack against the library's `generate`."""
import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import reject
from hypothesis import strategies as st

from workloads.engine.cache import DecoderCache
from workloads.levers import Context, plan_for
from workloads.models import seamless
from workloads.suites import WORKLOADS
from workloads.suites.seamless import SeamlessWorkload
from workloads.tasks.speech import TASKS, batch_from_lengths

CPU = torch.device("cpu")
WL = WORKLOADS["seamless"]

SPEECH_FRAMES = (20, 120)   # input lengths drawn here: 50 Hz frames ...
TEXT_TOKENS = (3, 20)       # ... and tokens, language and EOS included
BEAMS = (2, 5)              # the workload's 5, and the smallest beam search
# Compiled runs: every (batch, beams) is a decoder compile of its own (5-10 s on one CPU thread)
# and every (batch, frame bucket) a vocoder compile (~12 s). Batch 1 with the workload's 5 beams
# (the `pr` cases' shape) and batch 2 with 2 beams; decode lengths whose speech stays within
# one vocoder bucket (64 frames).
COMPILED_SHAPES = ((1, 5), (2, 2))
COMPILED_NEW_TOKENS = (3, 5)
COMPILED_STACKS = ("compile", "compile+kv_reorder", "compile+kv_reorder+vocoder_compile")
# The in-place reorder without compile. Plain "kv_reorder" is the ladder's rung above cuda_graph,
# which needs a GPU; the explicit stack is the same lever on top of eager.
UNCOMPILED_STACKS = ("eager+kv_reorder",)

# fp32 on the CPU: the compiled vocoder's samples differ from eager's by <= 6e-8 (measured).
WAVE_ATOL = 1e-5
# Padding reaches 20.06 frames back (exact, test_vocoder_padding_reach): conv_pre 3, the dilated
# k=11 resblocks of the first stage 12 and of the second 3, the rest 2.06. Nothing earlier changes.
PAD_REACH_FRAMES = 21

DECODERS = DecoderCache()   # shared across examples and test files: one compile per shape, as in a session


@functools.cache
def built_model():
    """The tiny preset as `build` makes it."""
    return seamless.build(seamless.PRESETS["seamless-tiny"], CPU)


@functools.cache
def varied_model():
    """The tiny preset with weights that make outputs depend on the input.

    As built, a random model emits the same tokens whatever it is given, so equal outputs would
    prove little. Every matrix but layer norms and embeddings is redrawn at std 0.3, except two:
    the vocoder, whose activations then grow so large that fp32 rounding alone flips output
    samples (no tolerance could compare waveforms), and the text-to-unit duration head, which
    `build` sets to the published units per character (else unit counts, and with them the
    compiled vocoder's length buckets, vary tenfold).
    """
    m = seamless.build(seamless.PRESETS["seamless-tiny"], CPU)
    kept = ("layer_norm", "embed", "duration_predictor.proj")
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2 and not name.startswith("vocoder.") and not any(k in name for k in kept):
                p.normal_(0, 0.3)
    return m


@pytest.fixture(scope="module")
def built():
    """The tiny preset as `build` makes it."""
    return built_model()


@pytest.fixture(scope="module")
def model():
    """The tiny preset with weights that make outputs depend on the input (see varied_model); both cached, so every file shares them."""
    return varied_model()


def _batch(model, task: str, lengths, new_tokens: int, seed: int):
    cfg, t = model.config, TASKS[task]
    return batch_from_lengths(
        t, lengths, new_tokens, vocab_size=cfg.vocab_size,
        src_lang_id=model.generation_config.text_decoder_lang_to_code_id[seamless.SRC_LANG],
        eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id, limit=SeamlessWorkload.input_limit(cfg, t.speech_in),
        rng=np.random.default_rng(seed),
    ).to(CPU)


def _plan(wl, name: str, task: str, device=CPU):
    plan, reason = plan_for(name, Context(device, wl.supports_for(task)), wl.ladder)
    assert plan is not None, f"{name} on {task}: {reason}"
    return plan


def _run(wl, model, batch, plan, decoders=DECODERS):
    runner = wl.runner(model, batch, plan, decoders)
    for _, step in runner.setup_steps():
        step()
    runner.prepare()
    return runner.run(), runner


def _samples_per_frame(model) -> int:
    return math.prod(model.config.upsample_rates)


def _assert_waveform(model, wave, lengths, ref_wave, ref_lengths, bucket: int | None, what: str, atol: float = WAVE_ATOL):
    """Equal lengths; samples equal within WAVE_ATOL, the last PAD_REACH_FRAMES frames excepted
    where the vocoder ran on frames padded up to `bucket` (None: no padding)."""
    assert wave.shape == ref_wave.shape, f"{what}: waveform {tuple(wave.shape)} vs library {tuple(ref_wave.shape)}"
    assert torch.equal(lengths.reshape(-1), ref_lengths.reshape(-1)), f"{what}: waveform lengths differ"
    spf = _samples_per_frame(model)
    frames = ref_wave.shape[1] // spf
    padded = bucket is not None and frames % bucket != 0
    keep = max(frames - PAD_REACH_FRAMES, 0) * spf if padded else ref_wave.shape[1]
    torch.testing.assert_close(wave[:, :keep], ref_wave[:, :keep], atol=atol, rtol=0,
                               msg=lambda m: f"{what}, first {keep} of {ref_wave.shape[1]} samples: {m}")


def _library_text(model, batch, beams):
    """The library's text tokens alone (no speech), as its speech run decodes them first."""
    b = batch
    inputs = {"input_features": b.input_features} if b.task.speech_in else {"input_ids": b.input_ids}
    with torch.no_grad():
        out = model.generate(**inputs, attention_mask=b.attention_mask, tgt_lang=seamless.TGT_LANG, generate_speech=False,
                             text_num_beams=beams, text_max_new_tokens=b.new_tokens, text_min_new_tokens=b.new_tokens)
    return out[0] if isinstance(out, tuple) else getattr(out, "sequences", out)


def _check_against_library(model, task, wl, batch, stacks, device=CPU, decoders=DECODERS, wave_atol=WAVE_ATOL):
    """`stacks`: lever stack names, or plans (the lean engine before any lever)."""
    try:
        ref_tokens, ref = _run(wl, model, batch, _plan(wl, "eager", task, device), decoders)
    except RuntimeError:
        # Random weights may decode the pad token (its tied embedding row is zero, so its logit
        # is 0 where others can be lower); the library's text-to-unit step then miscounts the
        # text's characters and fails. A trained model never emits pad: such inputs are rejected.
        text = _library_text(model, batch, wl.beams)
        if TASKS[task].speech_out and (text[:, 1:] == model.config.pad_token_id).any():
            reject()
        raise
    assert ref_tokens.shape == (batch.batch, 2 + batch.new_tokens)
    for stack in stacks:
        name, plan = (stack, _plan(wl, stack, task, device)) if isinstance(stack, str) else ("static engine", stack)
        tokens, runner = _run(wl, model, batch, plan, decoders)
        assert torch.equal(tokens, ref_tokens), (
            f"{name}: tokens differ from the library's for {task} lengths {batch.prompt_lengths}, "
            f"beams {wl.beams}, {batch.new_tokens} new tokens:\n{tokens.tolist()}\nvs\n{ref_tokens.tolist()}")
        if TASKS[task].speech_out:
            bucket = runner.vocoder.bucket if plan.extra("vocoder", "eager") != "eager" else None
            out, want = runner.outputs(), ref.outputs()
            _assert_waveform(model, out["waveform"], out["waveform_lengths"], want["waveform"], want["waveform_lengths"],
                             bucket, f"{name} on {task}", wave_atol)


def _lengths(draw, task: str, batch: int, pin: bool):
    lo, hi = SPEECH_FRAMES if TASKS[task].speech_in else TEXT_TOKENS
    if not pin:
        return draw(st.lists(st.integers(lo, hi), min_size=batch, max_size=batch))
    # One member at the longest: the padded length, hence the encoder length, is the same in
    # every example, so that compiled decoders differ only in batch and beams.
    rest = draw(st.lists(st.integers(lo, hi), min_size=batch - 1, max_size=batch - 1))
    at = draw(st.integers(0, batch - 1))
    return rest[:at] + [hi] + rest[at:]


seeds = st.integers(0, 2**16)
