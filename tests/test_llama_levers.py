"""Every lever computes what eager computes: greedy tokens identical, logits within tolerance.

Tiny fp32 Llama, random prompts (left-padded batches of 1-4), random seeds. The reference is
the library's own generate with eager attention and a dynamic cache, as users run it.
"""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from workloads.engine.cache import DecoderCache
from workloads.engine.plan import Plan
from workloads.levers import Context, plan_for
from workloads.suites import WORKLOADS
from workloads.tasks.text import batch_from_lengths

WL = WORKLOADS["llama"]
NEW_TOKENS = 6
# fp32: eager vs sdpa differ ~1e-7; inductor reorders reductions, ~1e-5 on these logits.
ATOL = RTOL = 1e-4
_DECODERS = DecoderCache()   # shared across examples: one compile per batch size, as in a session


def _run(model, batch, plan, device):
    runner = dataclasses.replace(WL, keep_logits=True).runner(model, batch, plan, _DECODERS)
    for _, step in runner.setup_steps():
        step()
    runner.prepare()
    tokens = runner.run(None)
    return tokens, runner.outputs().get("logits")


def _check(lever, model, device, lengths, seed):
    plan, reason = plan_for(lever, Context(device, WL.supports))
    if plan is None:
        pytest.skip(reason)
    batch = batch_from_lengths(lengths, NEW_TOKENS, vocab_size=model.config.vocab_size, device=device,
                               rng=np.random.default_rng(seed))
    ref_tokens, ref_logits = _run(model, batch, Plan(), device)
    tokens, logits = _run(model, batch, plan, device)
    assert tokens.shape == (len(lengths), NEW_TOKENS)
    torch.testing.assert_close(logits, ref_logits, atol=ATOL, rtol=RTOL)
    assert torch.equal(tokens, ref_tokens), f"{lever}: tokens differ from eager for prompt lengths {lengths}"


prompts = st.lists(st.integers(1, 40), min_size=1, max_size=4)
seeds = st.integers(0, 2**16)


@pytest.mark.parametrize("lever", ["sdpa", "eager+compile", "compile", "cuda_graph"])
@given(lengths=prompts, seed=seeds)
def test_lever_matches_eager(tiny_llama, device, lever, lengths, seed):
    _check(lever, tiny_llama, device, lengths, seed)


def test_static_decoder_uncompiled_matches_eager(tiny_llama, device):
    """The lean loop itself, before any compiler touches it (left padding, ragged prompts)."""
    plan = Plan(attn_implementation="sdpa", engine="static")
    batch = batch_from_lengths([3, 17, 9], NEW_TOKENS, vocab_size=tiny_llama.config.vocab_size, device=device,
                               rng=np.random.default_rng(1))
    ref_tokens, ref_logits = _run(tiny_llama, batch, Plan(), device)
    tokens, logits = _run(tiny_llama, batch, plan, device)
    torch.testing.assert_close(logits, ref_logits, atol=ATOL, rtol=RTOL)
    assert torch.equal(tokens, ref_tokens)


def test_rounds_are_independent(tiny_llama, device):
    """A runner gives the same output round after round: prepare() resets every piece of state."""
    plan, _ = plan_for("compile", Context(device, WL.supports))
    batch = batch_from_lengths([5, 12], NEW_TOKENS, vocab_size=tiny_llama.config.vocab_size, device=device,
                               rng=np.random.default_rng(2))
    first, _ = _run(tiny_llama, batch, plan, device)
    second, _ = _run(tiny_llama, batch, plan, device)
    assert torch.equal(first, second)


def test_compiled_step_is_one_graph_without_breaks(tiny_llama, device):
    from workloads.measure.counters import dynamo_delta

    plan, _ = plan_for("compile", Context(device, WL.supports))
    batch = batch_from_lengths([7], NEW_TOKENS, vocab_size=tiny_llama.config.vocab_size, device=device,
                               rng=np.random.default_rng(3))
    runner = WL.runner(tiny_llama, batch, plan, DecoderCache())   # a fresh decoder: compiles here
    with dynamo_delta() as d:
        for _, step in runner.setup_steps():
            step()
        for _ in range(3):
            runner.prepare()
            runner.run(None)
    assert (d.graphs, d.graph_breaks) == (1, 0)
    # The compiled graph came from inductor's cache or was compiled: either way it is on record.
    assert any(k.startswith("inductor.fxgraph_cache_") for k in d.compiler), d.compiler


def test_many_compiled_decoders_in_one_process(tiny_llama, device):
    """A session keeps a decoder per (model, batch, cache length) alive. Each compiles once;
    none may count as a recompile of another's step (an error under fullgraph past the limit).
    The limit is lowered here so that a few shapes show it, as nine would in a long session."""
    import torch._dynamo

    from workloads.engine.static_decode import StaticDecoder

    batch = batch_from_lengths([4], NEW_TOKENS, vocab_size=tiny_llama.config.vocab_size, device=device,
                               rng=np.random.default_rng(4))
    outputs, alive = [], []
    with torch._dynamo.config.patch(recompile_limit=2):
        for length in (64, 128, 192, 256):
            dec = StaticDecoder(tiny_llama, 1, length)
            alive.append(dec)
            dec.compile()
            dec.load(batch)
            dec.warm()
            dec.prepare()
            outputs.append(dec.run())
    assert all(torch.equal(o, outputs[0]) for o in outputs)


def test_static_step_compiles_without_timed_gemm_padding(tiny_llama, monkeypatch):
    """Inductor's pad_mm pass picks padding by timing it while it compiles, so one code could
    count different kernels per step in different processes: the step turns it off, and an
    option the caller passes still wins."""
    from workloads.engine.static_decode import StaticDecoder

    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw["options"]) or fn)
    StaticDecoder(tiny_llama, 1, 64).compile()
    StaticDecoder(tiny_llama, 1, 64).compile(shape_padding=True, max_autotune=False)
    assert seen == [{"shape_padding": False}, {"shape_padding": True, "max_autotune": False}]


def test_prefill_and_decode_are_timed_as_spans(tiny_llama, device):
    """Both engines mark the phases the breakdown reports: prefill up to the first token, decode after it."""
    from workloads.measure.timing import Stopwatch

    batch = batch_from_lengths([5, 9], NEW_TOKENS, vocab_size=tiny_llama.config.vocab_size, device=device,
                               rng=np.random.default_rng(5))
    for plan in (Plan(), Plan(attn_implementation="sdpa", engine="static")):
        runner = WL.runner(tiny_llama, batch, plan, DecoderCache())
        runner.prepare()
        sw = Stopwatch(device, spans=True)
        sw.start()
        runner.run(sw)
        marks = sw.stop()
        assert marks["span:prefill"] <= marks["first_token"] <= marks["end"]
        assert 0 < marks["span:decode"] <= marks["end"] - marks["first_token"] + 1e-6
