"""SeamlessM4T v2: the lean engine translates exactly as the library's `generate` does.

Tiny fp32 model on the CPU, random inputs of random lengths, beams and decode lengths. The
reference is the `eager` plan: `SeamlessM4Tv2Model.generate` with beam search and a dynamic
cache, as users call it. Tokens must be identical; waveforms agree to fp32 rounding except
where the compiled vocoder's length-bucket padding reaches back into the signal.

Besides the engine: the beam cache reorders, input checks and inputs, model facts the workload
depends on, and the case matrix.
"""
import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st

from perf_tests.test_seamless import LEVERS
from workloads.cases import matrix
from workloads.engine import translate as tr
from workloads.engine.beam_decode import BeamDecoder
from workloads.engine.plan import Plan
from workloads.levers import Context, plan_for
from workloads.models import seamless
from workloads.models.common import parameter_count
from workloads.registry import WORKLOADS, TranslationWorkload
from workloads.tasks.speech import TASKS, InputError, batch_from_lengths, check_lengths, make_batch
from workloads.tasks.text import DECODE_CAP

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

_DECODERS: dict = {}   # shared across examples and tests: one compile per shape, as in a session


@pytest.fixture(scope="module")
def built():
    """The tiny preset as `build` makes it."""
    return seamless.build(seamless.PRESETS["seamless-tiny"], CPU)


@pytest.fixture(scope="module")
def model():
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


def _batch(model, task: str, lengths, new_tokens: int, seed: int):
    cfg, t = model.config, TASKS[task]
    return batch_from_lengths(
        t, lengths, new_tokens, vocab_size=cfg.vocab_size,
        src_lang_id=model.generation_config.text_decoder_lang_to_code_id[seamless.SRC_LANG],
        eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id, limit=TranslationWorkload.input_limit(cfg, t.speech_in),
        rng=np.random.default_rng(seed),
    ).to(CPU)


def _plan(wl, name: str, task: str):
    plan, reason = plan_for(name, Context(CPU, wl.supports_for(task)), wl.ladder)
    assert plan is not None, f"{name} on {task}: {reason}"
    return plan


def _run(wl, model, batch, plan):
    runner = wl.runner(model, batch, plan, _DECODERS)
    for _, step in runner.setup_steps():
        step()
    runner.prepare()
    return runner.run(), runner


def _samples_per_frame(model) -> int:
    return math.prod(model.config.upsample_rates)


def _assert_waveform(model, wave, lengths, ref_wave, ref_lengths, bucket: int | None, what: str):
    """Equal lengths; samples equal within WAVE_ATOL, the last PAD_REACH_FRAMES frames excepted
    where the vocoder ran on frames padded up to `bucket` (None: no padding)."""
    assert wave.shape == ref_wave.shape, f"{what}: waveform {tuple(wave.shape)} vs library {tuple(ref_wave.shape)}"
    assert torch.equal(lengths.reshape(-1), ref_lengths.reshape(-1)), f"{what}: waveform lengths differ"
    spf = _samples_per_frame(model)
    frames = ref_wave.shape[1] // spf
    padded = bucket is not None and frames % bucket != 0
    keep = max(frames - PAD_REACH_FRAMES, 0) * spf if padded else ref_wave.shape[1]
    torch.testing.assert_close(wave[:, :keep], ref_wave[:, :keep], atol=WAVE_ATOL, rtol=0,
                               msg=lambda m: f"{what}, first {keep} of {ref_wave.shape[1]} samples: {m}")


def _library_text(model, batch, beams):
    """The library's text tokens alone (no speech), as its speech run decodes them first."""
    b = batch
    inputs = {"input_features": b.input_features} if b.task.speech_in else {"input_ids": b.input_ids}
    with torch.no_grad():
        out = model.generate(**inputs, attention_mask=b.attention_mask, tgt_lang=seamless.TGT_LANG, generate_speech=False,
                             text_num_beams=beams, text_max_new_tokens=b.new_tokens, text_min_new_tokens=b.new_tokens)
    return out[0] if isinstance(out, tuple) else getattr(out, "sequences", out)


def _check_against_library(model, task, wl, batch, stacks):
    """`stacks`: lever stack names, or plans (the lean engine before any lever)."""
    try:
        ref_tokens, ref = _run(wl, model, batch, _plan(wl, "eager", task))
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
        name, plan = (stack, _plan(wl, stack, task)) if isinstance(stack, str) else ("static engine", stack)
        tokens, runner = _run(wl, model, batch, plan)
        assert torch.equal(tokens, ref_tokens), (
            f"{name}: tokens differ from the library's for {task} lengths {batch.prompt_lengths}, "
            f"beams {wl.beams}, {batch.new_tokens} new tokens:\n{tokens.tolist()}\nvs\n{ref_tokens.tolist()}")
        if TASKS[task].speech_out:
            bucket = runner.vocoder.bucket if plan.vocoder != "eager" else None
            _assert_waveform(model, runner.waveform, runner.waveform_lengths, ref.waveform, ref.waveform_lengths,
                             bucket, f"{name} on {task}")


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


# -- 1, 2: every lever stack translates as the library does -----------------------------------
@pytest.mark.parametrize("task", list(TASKS))
@given(batch=st.integers(1, 3), beams=st.sampled_from(BEAMS), new_tokens=st.integers(2, 8), seed=seeds,
       data=st.data())
def test_uncompiled_engine_matches_library(model, task, batch, beams, new_tokens, seed, data):
    """The static beam decoder itself (library-style and in-place reorder), ragged inputs of any
    padded length; for speech output the eager vocoder gives the library's waveform."""
    wl = dataclasses.replace(WL, beams=beams)
    b = _batch(model, task, _lengths(data.draw, task, batch, pin=False), new_tokens, seed)
    _check_against_library(model, task, wl, b, [Plan(engine="static"), *UNCOMPILED_STACKS])


@pytest.mark.parametrize("task", list(TASKS))
@given(shape=st.sampled_from(COMPILED_SHAPES), new_tokens=st.sampled_from(COMPILED_NEW_TOKENS), seed=seeds,
       data=st.data())
def test_compiled_stacks_match_library(model, task, shape, new_tokens, seed, data):
    """compile, + in-place reorder, + compiled vocoder: the library's tokens, and its waveform
    but for the tail the vocoder's bucket padding reaches."""
    batch, beams = shape
    wl = dataclasses.replace(WL, beams=beams)
    b = _batch(model, task, _lengths(data.draw, task, batch, pin=True), new_tokens, seed)
    stacks = [s for s in COMPILED_STACKS if "vocoder" not in s or TASKS[task].speech_out]
    _check_against_library(model, task, wl, b, stacks)


def test_runner_keys_decoders_by_beam_count(model):
    """Workloads of different beam counts may share one decoder cache without getting each other's decoders."""
    b = _batch(model, "T-T", [5, 9], 4, 0)
    decoders: dict = {}
    plan = _plan(WL, "eager+kv_reorder", "T-T")
    for beams in (2, 5, 2):
        runner = dataclasses.replace(WL, beams=beams).runner(model, b, plan, decoders)
        assert runner.decoder.K == beams
    assert len(decoders) == 2


def _compiled_vocoder(model):
    """The vocoder the vocoder_compile stack runs (its compiled buckets shared with the tests above)."""
    b = _batch(model, "T-S", [3], 3, 0)
    return WL.runner(model, b, _plan(WL, "compile+kv_reorder+vocoder_compile", "T-S"), _DECODERS).vocoder


def _library_vocoder(model, units):
    B = units.shape[0]
    lang = model.generation_config.vocoder_lang_code_to_id[seamless.TGT_LANG]
    with torch.no_grad():
        return model.vocoder(input_ids=units, speaker_id=torch.full((B, 1), tr.SPEAKER_ID),
                             lang_id=torch.full((B, 1), lang))


def _units(model, rows, seed):
    """Unit ids as the vocoder gets them: row i has rows[i] units, then padding."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    units = torch.randint(0, cfg.unit_hifi_gan_vocab_size, (len(rows), max(rows)), generator=g)
    for i, n in enumerate(rows):
        units[i, n:] = cfg.t2u_pad_token_id
    return units


@given(rows=st.lists(st.integers(1, 64), min_size=1, max_size=2), seed=seeds)
@example(rows=[64], seed=0)
@example(rows=[64, 20], seed=1)
@example(rows=[50], seed=2)
def test_compiled_vocoder_matches_library(model, rows, seed):
    """Unit sequences of up to one bucket: equal waveform lengths, equal samples up to the padding's reach."""
    voc = _compiled_vocoder(model)
    units = _units(model, rows, seed)
    ref_wave, ref_lengths = _library_vocoder(model, units)
    lang = model.generation_config.vocoder_lang_code_to_id[seamless.TGT_LANG]
    wave, lengths = voc(units, lang)
    _assert_waveform(model, wave, lengths, ref_wave, ref_lengths, voc.bucket, f"compiled vocoder, rows {rows}")


def test_compiled_vocoder_whole_waveform_when_frames_fill_the_bucket(model):
    voc = _compiled_vocoder(model)
    units = _units(model, [voc.bucket, 17], 3)   # the built vocoder gives every unit one frame
    ref_wave, _ = _library_vocoder(model, units)
    frames = ref_wave.shape[1] // _samples_per_frame(model)
    assert frames % voc.bucket == 0, f"{frames} frames: the example no longer fills a bucket"
    wave, _ = voc(units, model.generation_config.vocoder_lang_code_to_id[seamless.TGT_LANG])
    torch.testing.assert_close(wave, ref_wave, atol=WAVE_ATOL, rtol=0)


def _conv2d_vocoder(model):
    """The vocoder the vocoder_conv2d stack runs, compiled on the CPU (its graph needs CUDA)."""
    b = _batch(model, "T-S", [3], 3, 0)
    return WL.runner(model, b, _plan(WL, "compile+kv_reorder+vocoder_conv2d", "T-S"), _DECODERS).vocoder


@given(rows=st.lists(st.integers(1, 64), min_size=1, max_size=2), seed=seeds)
@example(rows=[64, 20], seed=1)
def test_vocoder_with_2d_convolutions_matches_library(model, rows, seed):
    """The 1-D convolutions as channels-last 2-D ones: the library's waveform, to the same
    tolerance and padding reach; the library's own module keeps its 1-D convolutions."""
    voc = _conv2d_vocoder(model)
    assert voc.hifi_gan is not model.vocoder.hifi_gan
    assert not any(type(m) is torch.nn.Conv1d for m in voc.hifi_gan.modules())
    assert any(type(m) is torch.nn.Conv1d for m in model.vocoder.hifi_gan.modules())
    units = _units(model, rows, seed)
    ref_wave, ref_lengths = _library_vocoder(model, units)
    wave, lengths = voc(units, model.generation_config.vocoder_lang_code_to_id[seamless.TGT_LANG])
    _assert_waveform(model, wave, lengths, ref_wave, ref_lengths, voc.bucket, f"2-D conv vocoder, rows {rows}")


def test_only_the_2d_stack_runs_with_cudnns_timed_plans(model):
    """cuDNN's benchmark mode is on while the 2-D stack runs, and as it was before and after; the
    1-D compiled stack, whose convolution shapes eager shares, runs with it as it was."""
    units = _units(model, [20], 0)
    lang = model.generation_config.vocoder_lang_code_to_id[seamless.TGT_LANG]
    orig = torch.backends.cudnn.benchmark
    for conv2d in (True, False):
        for before in (False, True):
            voc, seen = tr.Vocoder(model.vocoder, "compile", conv2d=conv2d), []
            voc.hifi_gan = _Recording(voc.hifi_gan, seen)
            torch.backends.cudnn.benchmark = before
            try:
                voc(units, lang)
                after = torch.backends.cudnn.benchmark
            finally:
                torch.backends.cudnn.benchmark = orig
            assert seen and set(seen) == {conv2d or before}, (conv2d, before, seen)
            assert after == before


class _Recording(torch.nn.Module):
    """A module run as it is, noting cuDNN's benchmark flag at each call (tracing calls it too)."""

    def __init__(self, inner, seen):
        super().__init__()
        self.inner, self.seen = inner, seen

    def forward(self, x):
        self.seen.append(torch.backends.cudnn.benchmark)
        return self.inner(x)


@settings(max_examples=10)
@given(frames=st.lists(st.integers(1, 90), min_size=1, max_size=3))
def test_vocoder_flops_are_the_flop_counters_on_each_unpadded_row(built, frames):
    """The count the throughput is reported against: what torch's flop counter counts when the
    stack runs each row alone, recovered from the waveform lengths the run returns."""
    from torch.utils.flop_counter import FlopCounterMode

    from workloads.engine.translate import vocoder_flops

    hg = built.vocoder.hifi_gan
    lengths, expected = [], 0
    for f in frames:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            wave = hg(torch.zeros(1, hg.conv_pre.in_channels, f, dtype=next(hg.parameters()).dtype))
        lengths.append(wave.shape[-1])
        expected += fc.get_total_flops()
    assert lengths == [int(built.vocoder._get_output_hifigan_lengths(torch.tensor(f))) for f in frames]
    assert vocoder_flops(built.vocoder, torch.tensor(lengths)) == expected > 0


def test_speech_output_cases_report_the_vocoders_throughput():
    """TFLOP/s of the vocoder on both sides of a speech-output case; none for text output. Both
    sides time the text-to-unit stage by the same spans, the library's subword tables (host
    loops outside any module) included, so its module speedup compares like with like."""
    from workloads.cases import Case
    from workloads.engine.translate import _SUBWORD_HELPERS
    from workloads.harness import Session, run_case
    from workloads.registry import WORKLOADS

    session = Session(CPU)
    r = run_case(Case("seamless", "seamless-tiny", "T-S", "compile", "tiny", 1), session)
    assert set(r["span_tflops"]) == {"eager", "lever"}
    assert all(side["vocoder"] > 0 for side in r["span_tflops"].values())
    for side in ("eager", "lever"):
        assert {"decoder.rerun", "t2u.subwords", "t2u"} <= set(r["modules_ms"][side])
    assert r["module_speedup"]["t2u"] > 0
    model = session.model(WORKLOADS["seamless"], "seamless-tiny")
    assert not set(_SUBWORD_HELPERS) & set(vars(model))   # the library's own methods again
    assert "span_tflops" not in run_case(Case("seamless", "seamless-tiny", "T-T", "compile", "tiny", 1), session)


def test_vocoder_padding_reach(model):
    """PAD_REACH_FRAMES is the reach of the padding: forward-mode AD marks every output sample
    that frames past the end can change (exact zeros elsewhere, not a tolerance)."""
    from torch.func import jvp

    hifi = copy.deepcopy(model.vocoder.hifi_gan).double()
    spf = _samples_per_frame(model)
    assert spf == 320   # the published 16 kHz output at 50 frames per second
    T, pad = 2 * PAD_REACH_FRAMES + 10, 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, hifi.conv_pre.in_channels, T + pad, dtype=torch.float64, generator=g)
    tangent = torch.zeros_like(x)
    tangent[..., T:] = 1.0
    with torch.no_grad():
        _, dy = jvp(hifi, (x,), (tangent,))
    first = int(dy[0].nonzero().min())
    assert (T - PAD_REACH_FRAMES) * spf <= first < (T - PAD_REACH_FRAMES + 1) * spf, (
        f"padding reaches {(T * spf - first) / spf:.2f} frames back; PAD_REACH_FRAMES is {PAD_REACH_FRAMES}")


# -- 3: the in-place reorder is the library's gather -----------------------------------------
def _beam_decoder(model, B, K, S, L, in_place):
    cfg = model.config
    return BeamDecoder(model.text_decoder, model.lm_head, batch_size=B, beams=K, enc_len=S, max_len=L,
                       eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id, in_place_reorder=in_place)


@st.composite
def beam_indices(draw, n: int):
    kind = draw(st.sampled_from(("identity", "permutation", "any")))
    if kind == "identity":
        return list(range(n))
    if kind == "permutation":
        return draw(st.permutations(range(n)))
    return draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))   # repeats: beams that fork


def _fill(dec, seed):
    g = torch.Generator().manual_seed(seed)
    dec.self_slab.copy_(torch.randn(dec.self_slab.shape, generator=g))
    dec.cross_slab.copy_(torch.randn(dec.cross_slab.shape, generator=g))


def _check_reorder(dec, idx):
    self_before, cross_before = dec.self_slab.clone(), dec.cross_slab.clone()
    ptrs = dec.self_slab.data_ptr(), dec.cross_slab.data_ptr()
    dec.beam_idx.copy_(torch.tensor(idx))
    with torch.no_grad():
        dec.reorder()
    assert (dec.self_slab.data_ptr(), dec.cross_slab.data_ptr()) == ptrs   # a compiled step reads these addresses
    assert torch.equal(dec.self_slab, self_before.index_select(2, torch.tensor(idx)))
    # The attention layers read the cache through views of the slab: they see the reorder.
    layer = dec.cache.self_attention_cache.layers[-1]
    assert torch.equal(layer.values, dec.self_slab[-1, 1])
    return cross_before


@given(batch=st.integers(1, 3), beams=st.sampled_from((1, 2, 5)), data=st.data(), seed=seeds)
def test_reorders_equal_index_select(model, batch, beams, data, seed):
    n = batch * beams
    idx = data.draw(beam_indices(n))
    dec = _beam_decoder(model, batch, beams, 7, 32, in_place=True)
    _fill(dec, seed)
    cross_before = _check_reorder(dec, idx)
    assert torch.equal(dec.cross_slab, cross_before), "in-place reorder must leave the cross-attention cache alone"

    lib = _beam_decoder(model, batch, beams, 7, 32, in_place=False)
    _fill(lib, seed)
    cross_before = _check_reorder(lib, idx)
    assert torch.equal(lib.cross_slab, cross_before.index_select(2, torch.tensor(idx))), (
        "the library-style reorder gathers the cross-attention cache too")


def test_beam_step_and_reorder_compile_without_timed_gemm_padding(model, monkeypatch):
    """The step's GEMMs (M = batch x beams) are where pad_mm's timed choice moved the kernel
    count between processes: step and reorder both compile without it, with the caller's options."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw["options"]) or fn)
    _beam_decoder(model, 1, 5, 7, 32, in_place=True).compile(coordinate_descent_tuning=False)
    assert seen == [{"shape_padding": False, "coordinate_descent_tuning": False}] * 2


_COMPILED_REORDER: dict = {}


@given(data=st.data(), seed=seeds)
def test_compiled_in_place_reorder_equals_index_select(model, data, seed):
    """The compiled gather-into-itself: no row read after it was overwritten, whatever the indices."""
    if "dec" not in _COMPILED_REORDER:
        dec = _COMPILED_REORDER["dec"] = _beam_decoder(model, *COMPILED_SHAPES[0], 7, 32, in_place=True)
        dec.compile()
    dec = _COMPILED_REORDER["dec"]
    idx = data.draw(beam_indices(dec.N))
    _fill(dec, seed)
    cross_before = _check_reorder(dec, idx)
    assert torch.equal(dec.cross_slab, cross_before)


# -- 4, 5: inputs -----------------------------------------------------------------------------
def _input_kwargs(limit=None, speech_in=True):
    cfg = seamless.config(seamless.PRESETS["seamless-tiny"])
    return dict(vocab_size=cfg.vocab_size, src_lang_id=seamless.lang_ids(cfg)["text_decoder_lang_to_code_id"]["eng"],
                eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id,
                limit=limit if limit is not None else TranslationWorkload.input_limit(cfg, speech_in))


@pytest.mark.parametrize("task", ["S-T", "T-T"])
def test_bad_lengths_are_rejected_naming_the_limit(task):
    t = TASKS[task]
    kw = _input_kwargs(speech_in=t.speech_in)
    limit = kw["limit"]
    unit = "frames" if t.speech_in else "tokens"
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=r"input 1 has length 0: it must be at least 1 ") as e:
        batch_from_lengths(t, [5, 0], 4, rng=rng, **kw)
    assert unit in str(e.value)
    with pytest.raises(InputError) as e:
        batch_from_lengths(t, [limit + 1], 4, rng=rng, **kw)
    assert f"maximum of {limit} {unit}" in str(e.value) and f"{limit + 1}" in str(e.value)
    with pytest.raises(InputError, match="empty"):
        batch_from_lengths(t, [], 4, rng=rng, **kw)
    check_lengths([1, limit], speech=t.speech_in, limit=limit)   # both ends of the range are fine
    # make_batch checks what it draws: the published batch-1 input against a smaller model.
    small = 100 if t.speech_in else 20
    with pytest.raises(InputError) as e:
        make_batch(task, "paper", 1, **_input_kwargs(limit=small))
    assert f"maximum of {small} {unit}" in str(e.value)


def test_model_input_limits():
    cfg = seamless.config(seamless.PRESETS["seamless-large"])
    assert TranslationWorkload.input_limit(cfg, False) == cfg.max_position_embeddings == 4096
    assert TranslationWorkload.input_limit(cfg, True) == 4096 * cfg.adaptor_stride


def test_make_batch_is_deterministic_and_shared_between_tasks_of_one_modality():
    kw = _input_kwargs()
    fresh = make_batch.__wrapped__   # past the cache: two draws, not one object twice
    a, b = fresh("S-S", "tiny", 3, **kw, seed=7), fresh("S-S", "tiny", 3, **kw, seed=7)
    assert a.prompt_lengths == b.prompt_lengths and torch.equal(a.input_features, b.input_features)
    other = fresh("S-S", "tiny", 3, **kw, seed=8)
    assert other.prompt_lengths != a.prompt_lengths
    for x, y in (("S-S", "S-T"), ("T-T", "T-S")):
        bx, by = make_batch(x, "tiny", 4, **kw), make_batch(y, "tiny", 4, **kw)
        assert bx.prompt_lengths == by.prompt_lengths and bx.new_tokens == by.new_tokens
        assert torch.equal(bx.attention_mask, by.attention_mask)
        if bx.task.speech_in:
            assert torch.equal(bx.input_features, by.input_features)
        else:
            assert torch.equal(bx.input_ids, by.input_ids)


@pytest.mark.parametrize("task,length,steps", [("S-S", 493, 35), ("S-T", 493, 35), ("T-T", 30, 34), ("T-S", 30, 34)])
def test_batch_one_is_the_published_mean(task, length, steps):
    assert DECODE_CAP["paper"] > steps   # the cap does not bind at paper scale
    b = make_batch(task, "paper", 1, **_input_kwargs())
    assert (b.prompt_lengths, b.new_tokens, b.padded_length) == ([length], steps, length)
    if TASKS[task].speech_in:
        assert b.input_features.shape == (1, length, 160)
    assert make_batch(task, "tiny", 1, **_input_kwargs()).new_tokens == DECODE_CAP["tiny"]


@given(lengths=st.lists(st.integers(1, 150), min_size=1, max_size=4), seed=seeds)
def test_speech_features_have_the_frames_requested(lengths, seed):
    b = batch_from_lengths(TASKS["S-T"], lengths, 4, rng=np.random.default_rng(seed), **_input_kwargs())
    assert b.input_features.shape == (len(lengths), max(lengths), 160)
    assert b.attention_mask.sum(1).tolist() == lengths
    assert b.input_ids is None and torch.isfinite(b.input_features).all()


@given(lengths=st.lists(st.integers(2, 40), min_size=1, max_size=4), seed=seeds)
def test_text_inputs_are_framed_as_nllb_frames_them(lengths, seed):
    kw = _input_kwargs(speech_in=False)
    b = batch_from_lengths(TASKS["T-T"], lengths, 4, rng=np.random.default_rng(seed), **kw)
    assert b.input_ids.shape == (len(lengths), max(lengths)) and b.attention_mask.sum(1).tolist() == lengths
    for row, n in zip(b.input_ids.tolist(), lengths):
        assert row[0] == kw["src_lang_id"] and row[n - 1] == kw["eos_id"]
        assert all(4 <= t < kw["vocab_size"] - 8 for t in row[1: n - 1])
        assert all(t == kw["pad_id"] for t in row[n:])


# -- 6: model and preset facts ----------------------------------------------------------------
def test_large_preset_has_the_published_parameter_count():
    preset = seamless.PRESETS["seamless-large"]
    n = parameter_count(seamless.meta_model(preset))
    assert abs(n - preset.published_params) <= 0.02 * preset.published_params, f"{n / 1e9:.3f}B parameters"


def _unit_range(cfg):
    return cfg.vocoder_offset, cfg.vocoder_offset + cfg.unit_hifi_gan_vocab_size


@pytest.mark.parametrize("which", ["built", "model"])
def test_text_to_unit_head_masks_units_the_vocoder_lacks(request, which):
    m = request.getfixturevalue(which)
    lo, hi = _unit_range(m.config)
    assert (lo, hi) == (4, 10004)
    h = torch.randn(3, 11, m.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 10
    with torch.no_grad():
        logits = m.t2u_model.lm_head(h)
    assert torch.isneginf(logits[..., :lo]).all() and torch.isneginf(logits[..., hi:]).all()
    assert torch.isfinite(logits[..., lo:hi]).all()


def test_library_generate_emits_only_vocoder_units(model):
    b = _batch(model, "T-S", [6, 14, 9], 5, 0)
    with torch.no_grad():
        out = model.generate(input_ids=b.input_ids, attention_mask=b.attention_mask, tgt_lang=seamless.TGT_LANG,
                             generate_speech=True, speaker_id=tr.SPEAKER_ID, text_num_beams=2,
                             text_max_new_tokens=5, text_min_new_tokens=5, return_intermediate_token_ids=True)
    lo, hi = _unit_range(model.config)
    units = out.unit_sequences
    assert ((units >= lo) & (units < hi)).all(), f"units {units.min()}..{units.max()} outside [{lo}, {hi})"
    assert len(set(units.view(-1).tolist())) > 1   # input-dependent, not one unit everywhere


@given(batch=st.integers(1, 3), tokens=st.integers(1, 6), seed=seeds)
def test_units_per_character(built, batch, tokens, seed):
    """The text-to-unit model gives every character UNITS_PER_CHAR units, as `build` promises."""
    cfg = built.config
    rng = np.random.default_rng(seed)
    src = _batch(built, "T-S", [5] * batch, tokens + 1, seed)
    seq = torch.tensor([[*tr.start_ids(built, seamless.TGT_LANG), *rng.integers(4, cfg.vocab_size - 8, tokens + 1)]
                        for _ in range(batch)])
    seen = {}
    hooks = [
        built.t2u_model.register_forward_pre_hook(
            lambda m, a, kw: seen.__setitem__("chars", kw["char_count_per_id"].sum(1)), with_kwargs=True),
        built.t2u_model.register_forward_hook(lambda m, a, o: seen.__setitem__("units", o.padding_mask.sum(1))),
    ]
    try:
        with torch.no_grad():
            tr.text_to_units(built, seq, *tr.encode(built, src))
    finally:
        for h in hooks:
            h.remove()
    assert (seen["chars"] > 0).all()
    assert torch.equal(seen["units"], seamless.UNITS_PER_CHAR * seen["chars"])


# -- 7: the case matrix -----------------------------------------------------------------------
def test_case_matrix_at_tiny_scale():
    cases = matrix("seamless", LEVERS, "tiny")
    assert len(cases) == 4 * 2 * 8      # four tasks, two batches, the ladder of eight rungs (sdpa included)
    assert {(c.task, c.batch) for c in cases} == {(t, b) for t in TASKS for b in (1, WL.tiny_max_batch)}
    assert WL.tiny_max_batch == 4
    ids = {c.id: c for c in cases}
    assert len(ids) == len(cases)
    assert "seamless-tiny/S-S/vocoder_cuda_graph/tiny/bs1" in ids and "seamless-tiny/S-S/vocoder_conv2d/tiny/bs1" in ids
    pr = {(c.task, c.lever) for c in cases if "pr" in c.marks}
    assert pr == {(t, lv) for t in TASKS for lv in ("eager", "kv_reorder", "vocoder_cuda_graph")}
    assert all(c.batch == 1 for c in cases if "pr" in c.marks)
    # On the CPU only the rungs below cuda_graph run; the rest need a GPU.
    assert {c.lever for c in cases if "gpu" not in c.marks} == {"eager", "sdpa", "compile"}


def test_case_matrix_at_paper_scale():
    """Max batches: Table III's (128 speech in, 384 text in) where the reference fits in 80 GB,
    else the most that fits, in multiples of 8; tasks of one input modality share it (and so
    their inputs and compiled decoders)."""
    cases = matrix("seamless", LEVERS, "paper")
    preset = WL.preset("seamless-large")
    assert {c.model for c in cases} == {preset.name}
    assert (TASKS["S-S"].table_iii_batch, TASKS["T-T"].table_iii_batch) == (128, 384)
    top = {task: max(c.batch for c in cases if c.task == task) for task in TASKS}
    for task, t in TASKS.items():
        assert {c.batch for c in cases if c.task == task} == {1, top[task]}
        assert 8 <= top[task] <= t.table_iii_batch and top[task] % 8 == 0
    assert top["S-S"] == top["S-T"] and top["T-T"] == top["T-S"]
    assert top["S-S"] == WL.max_batch(preset, "S-S")
    assert all("gpu" in c.marks for c in cases)
    assert all("slow" in c.marks for c in cases if c.batch > 1)


@pytest.mark.parametrize("lever", ["vocoder_compile", "vocoder_cuda_graph", "vocoder_conv2d"])
def test_vocoder_levers_apply_to_speech_output_only(lever):
    gpu = torch.device("cuda")   # where the whole ladder applies; no GPU is needed to plan
    for task, t in TASKS.items():
        plan, reason = plan_for(lever, Context(gpu, WL.supports_for(task)), WL.ladder)
        if t.speech_out:
            assert reason is None
            assert plan.vocoder == ("cuda_graph" if lever == "vocoder_conv2d" else lever.removeprefix("vocoder_"))
            assert plan.vocoder_conv2d == (lever == "vocoder_conv2d")
            assert plan.kv_reorder and plan.compile and plan.cuda_graph
        else:
            assert plan is None and "speech" in reason, f"{lever} on {task}: {reason}"


def test_plain_kv_reorder_is_a_rung_above_cuda_graph():
    plan, reason = plan_for("kv_reorder", Context(CPU, WL.supports_for("T-T")), WL.ladder)
    assert plan is None and "CUDA" in reason
    plan, reason = plan_for("eager+kv_reorder", Context(CPU, WL.supports_for("T-T")), WL.ladder)
    assert reason is None and (plan.kv_reorder, plan.compile, plan.engine) == (True, False, "static")
