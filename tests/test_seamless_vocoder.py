"""SeamlessM4T v2's vocoder: compiled, graphed and 2-D layouts give the library's waveform (but
for the tail its bucket padding reaches), its FLOPs, and its throughput in a case."""
import copy

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from workloads.case import Case
from workloads.engine.vocoder import SPEAKER_ID, Vocoder
from workloads.models import seamless

from .seamless_common import (CPU, DECODERS, PAD_REACH_FRAMES, WAVE_ATOL, WL, _assert_waveform, _batch, _plan,
                              _samples_per_frame, built, model, seeds)  # noqa: F401 (fixtures)


def _compiled_vocoder(model):
    """The vocoder the vocoder_compile stack runs (its compiled buckets shared with the tests above)."""
    b = _batch(model, "T-S", [3], 3, 0)
    return WL.runner(model, b, _plan(WL, "compile+kv_reorder+vocoder_compile", "T-S"), DECODERS).vocoder


def _library_vocoder(model, units):
    B = units.shape[0]
    lang = model.generation_config.vocoder_lang_code_to_id[seamless.TGT_LANG]
    with torch.no_grad():
        return model.vocoder(input_ids=units, speaker_id=torch.full((B, 1), SPEAKER_ID),
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
    return WL.runner(model, b, _plan(WL, "compile+kv_reorder+vocoder_conv2d", "T-S"), DECODERS).vocoder


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
            voc, seen = Vocoder(model.vocoder, "compile", conv2d=conv2d), []
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

    from workloads.engine.vocoder import vocoder_flops

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
    from workloads.engine.translate import _SUBWORD_HELPERS
    from workloads.run.schedule import run_case
    from workloads.run.session import Session

    session = Session(CPU)
    r = run_case(Case("seamless", "seamless-tiny", "T-S", "compile", "tiny", 1), session)
    assert set(r["span_tflops"]) == {"eager", "lever"}
    assert all(side["vocoder"] > 0 for side in r["span_tflops"].values())
    for side in ("eager", "lever"):
        assert {"decoder.rerun", "t2u.subwords", "t2u"} <= set(r["modules_ms"][side])
    assert r["module_speedup"]["t2u"] > 0
    model = session.model(WL, "seamless-tiny")
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
