"""SeamlessM4T v2: input checks and inputs, model facts the workload depends on, and the case matrix."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from perf_tests.test_seamless import LEVERS
from workloads.engine import translate as tr
from workloads.engine.vocoder import SPEAKER_ID
from workloads.levers import Context, plan_for
from workloads.models import seamless
from workloads.models.common import parameter_count
from workloads.suites.matrix import matrix
from workloads.suites.seamless import SeamlessWorkload
from workloads.tasks.speech import TASKS, InputError, batch_from_lengths, check_lengths, make_batch
from workloads.tasks.text import DECODE_CAP

from .seamless_common import CPU, WL, _batch, built, model, seeds  # noqa: F401 (fixtures)


# -- 4, 5: inputs -----------------------------------------------------------------------------
def _input_kwargs(limit=None, speech_in=True):
    cfg = seamless.config(seamless.PRESETS["seamless-tiny"])
    return dict(vocab_size=cfg.vocab_size, src_lang_id=seamless.lang_ids(cfg)["text_decoder_lang_to_code_id"]["eng"],
                eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id,
                limit=limit if limit is not None else SeamlessWorkload.input_limit(cfg, speech_in))


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
    assert SeamlessWorkload.input_limit(cfg, False) == cfg.max_position_embeddings == 4096
    assert SeamlessWorkload.input_limit(cfg, True) == 4096 * cfg.adaptor_stride


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
                             generate_speech=True, speaker_id=SPEAKER_ID, text_num_beams=2,
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
    assert pr == {(t, lv) for t in ("S-S", "T-T") for lv in ("eager", "kv_reorder", "vocoder_cuda_graph")}
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
            assert plan.extra("vocoder") == ("cuda_graph" if lever == "vocoder_conv2d" else lever.removeprefix("vocoder_"))
            assert plan.extra("vocoder_conv2d", False) == (lever == "vocoder_conv2d")
            assert plan.extra("kv_reorder") and plan.compile and plan.cuda_graph and plan.compiles
        else:
            assert plan is None and "speech" in reason, f"{lever} on {task}: {reason}"


def test_plain_kv_reorder_is_a_rung_above_cuda_graph():
    plan, reason = plan_for("kv_reorder", Context(CPU, WL.supports_for("T-T")), WL.ladder)
    assert plan is None and "CUDA" in reason
    plan, reason = plan_for("eager+kv_reorder", Context(CPU, WL.supports_for("T-T")), WL.ladder)
    assert reason is None and (plan.extra("kv_reorder"), plan.compile, plan.engine) == (True, False, "static")
