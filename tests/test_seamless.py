"""SeamlessM4T v2: the lean engine translates exactly as the library's `generate` does, and
its in-place beam reorder is the library's gather.

Tiny fp32 model on the CPU, random inputs of random lengths, beams and decode lengths. The
reference is the `eager` plan: `SeamlessM4Tv2Model.generate` with beam search and a dynamic
cache, as users call it. Tokens must be identical; waveforms agree to fp32 rounding except
where the compiled vocoder's length-bucket padding reaches back into the signal. The vocoder
alone: tests/test_seamless_vocoder.py; inputs, model facts and cases: tests/test_seamless_inputs.py.
"""
import copy
import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from workloads.engine.beam_decode import BeamDecoder
from workloads.engine.cache import DecoderCache
from workloads.engine.plan import Plan
from workloads.suites.matrix import matrix
from workloads.tasks.speech import TASKS

from .seamless_common import (BEAMS, COMPILED_NEW_TOKENS, COMPILED_SHAPES, COMPILED_STACKS, UNCOMPILED_STACKS, WL,
                              _batch, _check_against_library, _lengths, _plan, built, model, seeds, varied_model)  # noqa: F401 (fixtures)


# On the GPU, in fp32 with TF32 off: kernels there sum in other orders than the CPU's, so samples
# may differ by more than WAVE_ATOL. A bound, not a measurement: a failure prints the largest.
GPU_WAVE_ATOL = 1e-4


@pytest.mark.parametrize("task", ["S-S", "T-T"])
def test_gpu_rungs_match_library_on_the_gpu(device, task):
    """The rungs only a GPU runs (CUDA graphs, the graphed in-place reorder, the vocoder's
    compiled, graphed and 2-D forms, with the sdpa below them) translate as the library does
    there: its tokens, and its waveform but for the bucket padding's reach. The pull-request
    subset's two inputs, at the workload's five beams."""
    if device.type != "cuda":
        pytest.skip("needs a CUDA GPU; on the CPU, test_compiled_stacks_match_library checks the rungs below cuda_graph")
    rungs = list(dict.fromkeys(c.lever for c in matrix("seamless", ("sdpa", *WL.ladder), "tiny")
                               if c.task == task and c.batch == 1 and "gpu" in c.marks))
    assert "kv_reorder" in rungs, rungs
    gpu_model = copy.deepcopy(varied_model()).to(device)   # the CPU tests' model stays where it is
    longest = 120 if TASKS[task].speech_in else 20
    batch = _batch(gpu_model, task, [longest], new_tokens=5, seed=0).to(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        _check_against_library(gpu_model, task, WL, batch, rungs, device=device, decoders=DecoderCache(),
                               wave_atol=GPU_WAVE_ATOL)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


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
    decoders = DecoderCache()
    plan = _plan(WL, "eager+kv_reorder", "T-T")
    for beams in (2, 5, 2):
        runner = dataclasses.replace(WL, beams=beams).runner(model, b, plan, decoders)
        assert runner.decoder.K == beams
    assert len(decoders) == 2


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
