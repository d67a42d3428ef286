"""Chameleon: every lever decodes what eager decodes (I-T, IT-T, T-I), guidance and sampling do
what the official recipe says, the detokenizer gives images, and bad inputs are named.

Tiny fp32 model, random prompts and images, batches of 1-2 (every new shape is a compile).
Token equality is asserted at temperature 0; for T-I that is greedy over the guided logits,
restricted to image tokens.
"""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.engine import cfg as cfg_engine
from workloads.engine.cache import DecoderCache
from workloads.engine.plan import Plan
from workloads.levers import Context, plan_for
from workloads.models import chameleon
from workloads.models.common import parameter_count
from workloads.suites import WORKLOADS
from workloads.tasks import image

WL = WORKLOADS["chameleon"]
GREEDY = dataclasses.replace(WL, temperature=0.0)
_DECODERS = DecoderCache()   # shared across examples: one compile per shape, as in a session


@pytest.fixture(scope="module")
def tiny(device):
    return chameleon.build(chameleon.PRESETS["chameleon-tiny"], device, dtype=torch.float32)


def _batch(wl, model, task, text_lengths, seed, device, **kw):
    cfg = model.config
    return image.batch_from_lengths(
        image.TASKS[task], text_lengths, image_tokens=chameleon.image_tokens(model),
        resolution=cfg.vq_config.resolution, ids=wl._ids(model), vocab_size=cfg.vocab_size,
        max_positions=cfg.max_position_embeddings, device=device, rng=np.random.default_rng(seed), **kw)


def _run(wl, model, batch, plan, decoders=_DECODERS):
    runner = wl.runner(model, batch, plan, decoders)
    for _, step in runner.setup_steps():
        step()
    runner.prepare()
    return runner.run(None), runner


# Text lengths per task, drawn so that cache lengths stay in one bucket (one compile per batch size).
_TEXT = {"I-T": st.just(3), "IT-T": st.integers(6, 30), "T-I": st.integers(10, 39)}


@pytest.mark.parametrize("task", ["I-T", "IT-T", "T-I"])
@pytest.mark.parametrize("lever", ["sdpa", "compile", "cuda_graph"])
@settings(max_examples=4)
@given(data=st.data(), batch=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_lever_matches_eager(tiny, device, task, lever, data, batch, seed):
    plan, reason = plan_for(lever, Context(device, GREEDY.supports_for(task)))
    if plan is None:
        pytest.skip(reason)
    lengths = data.draw(st.lists(_TEXT[task], min_size=batch, max_size=batch))
    b = _batch(GREEDY, tiny, task, lengths, seed, device)
    ref, _ = _run(GREEDY, tiny, b, Plan())
    out, _ = _run(GREEDY, tiny, b, plan)
    assert out.shape == (batch, b.new_tokens)
    assert torch.equal(out, ref), f"{task}/{lever}: tokens differ from eager for text lengths {lengths}"


def test_decode_steps_follow_the_paper(tiny, device):
    steps = {t: _batch(WL, tiny, t, [12], 0, device).new_tokens for t in ("I-T", "IT-T", "T-I")}
    assert steps == {"I-T": 30, "IT-T": 10, "T-I": chameleon.image_tokens(tiny)}


def test_task_lengths_follow_table_ii():
    # At paper scale: I-T 1030 tokens, IT-T 1033-1095, T-I prompts of 10-39 text tokens.
    img = 32 * 32
    it = image.TASKS["I-T"].text
    itt = image.TASKS["IT-T"].text
    assert img + image.MARKERS + it.lo == 1030
    assert (img + image.MARKERS + itt.lo, img + image.MARKERS + itt.hi) == (1033, 1095)
    assert img + image.MARKERS + itt.mean == 1040
    assert (image.TASKS["T-I"].text.lo, image.TASKS["T-I"].text.hi) == (10, 39)


# -- guidance and sampling -------------------------------------------------------------------
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 3))
def test_cfg_mixing_is_the_official_formula(seed, batch):
    rng = np.random.default_rng(seed)
    vocab, codes = 50, 20
    logits = rng.normal(0, 3, size=(3 * batch, vocab))
    ids = sorted(rng.choice(vocab, size=codes, replace=False).tolist())
    full, img, unc = logits[:batch], logits[batch:2 * batch], logits[2 * batch:]
    want = unc + 1.2 * (img - unc) + 3.0 * (full - img)
    got = cfg_engine.cfg_mix(*(torch.from_numpy(x) for x in (full, img, unc)))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    # Greedy choice: the best image token of the mixed logits, fed to all three rows of its prompt.
    chooser = cfg_engine.ImageTokenChooser({t: i for i, t in enumerate(ids)}, batch, 4, "cpu", temperature=0.0)
    tok = chooser(torch.from_numpy(logits).float(), torch.zeros(1, dtype=torch.long))
    best = np.array(ids)[want[:, ids].argmax(-1)]
    assert tok.shape == (3 * batch, 1)
    assert tok[:, 0].tolist() == np.tile(best, 3).tolist()


@given(seed=st.integers(0, 2**16), top_p=st.sampled_from([0.1, 0.5, 0.9, 1.0]))
def test_top_p_samples_only_from_the_nucleus(seed, top_p):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 30, generator=g) * 2
    u = torch.rand(4, generator=g)
    k = cfg_engine.sample_top_p(logits, top_p, u)[:, 0]
    p = logits.softmax(-1)
    for row in range(4):
        sp, order = p[row].sort(descending=True)
        rank = (order == k[row]).nonzero().item()
        assert sp[:rank].sum() < top_p + 1e-6, "sampled outside the smallest set of mass >= top_p"
    # u -> 0 picks the most likely token.
    assert torch.equal(cfg_engine.sample_top_p(logits, top_p, torch.zeros(4))[:, 0], logits.argmax(-1))


@pytest.mark.parametrize("lever", ["eager", "compile"])
def test_seeded_sampling_is_reproducible(tiny, device, lever):
    plan, _ = plan_for(lever, Context(device, WL.supports_for("T-I")))
    b = _batch(WL, tiny, "T-I", [14, 20], 7, device)
    first, _ = _run(WL, tiny, b, plan)
    second, _ = _run(WL, tiny, b, plan)
    assert torch.equal(first, second)
    other = dataclasses.replace(b, seed=b.seed + 1)
    third, _ = _run(WL, tiny, other, plan)
    assert not torch.equal(first, third), "a different seed should sample a different image"
    codes = set(tiny.model.vocabulary_mapping.image_tokens)
    assert set(first.flatten().tolist()) <= codes, "T-I emitted a token that is not an image code"


def test_sampled_tokens_match_between_eager_and_compiled(tiny, device):
    """fp32, same uniforms: the compiled guided step samples what the eager loop samples."""
    plan, _ = plan_for("compile", Context(device, WL.supports_for("T-I")))
    b = _batch(WL, tiny, "T-I", [11], 3, device)
    ref, _ = _run(WL, tiny, b, Plan())
    out, _ = _run(WL, tiny, b, plan)
    assert torch.equal(out, ref)


def test_text_to_image_gives_an_image(tiny, device):
    b = _batch(WL, tiny, "T-I", [12, 30], 5, device)
    for plan in (Plan(), plan_for("compile", Context(device, WL.supports_for("T-I")))[0]):
        _, runner = _run(WL, tiny, b, plan)
        R = tiny.config.vq_config.resolution
        image = runner.outputs()["image"]
        assert image.shape == (2, 3, R, R)
        assert torch.isfinite(image).all()
        # A shortened run (the harness counts kernels per step with one) decodes no partial image.
        runner.prepare()
        assert runner.run(None, 4).shape == (2, 4) and runner.outputs()["image"] is None


def test_detokenizer_mirrors_the_published_tokenizer():
    """At paper scale 32 x 32 codes of 8192 become one 512 x 512 RGB image (shapes on the meta device)."""
    model = chameleon.meta_model(chameleon.PRESETS["chameleon-7b"])
    with torch.device("meta"):
        dec = chameleon.ImageDecoder(model.model.vqmodel)
        img = dec(torch.zeros(2, 1024, dtype=torch.long))
    assert img.shape == (2, 3, 512, 512)
    assert model.model.vqmodel.config.num_embeddings == 8192
    # The decoder mirrors the encoder: one more resnet block per level, so somewhat more weights.
    enc = parameter_count(model.model.vqmodel.encoder)
    assert enc < parameter_count(dec) < 2 * enc


# -- presets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n, p in chameleon.PRESETS.items() if p.published_params])
def test_paper_presets_match_published_parameter_counts(name):
    preset = chameleon.PRESETS[name]
    count = parameter_count(chameleon.meta_model(preset))
    assert count == pytest.approx(preset.published_params, rel=0.02), f"{name}: {count / 1e9:.3f}B"


def test_presets_and_max_batch():
    assert {p.scale for p in chameleon.PRESETS.values()} == {"tiny", "small", "paper"}
    assert chameleon.PRESETS["chameleon-34b"].large
    p7 = chameleon.PRESETS["chameleon-7b"]
    assert {t: WL.max_batch(p7, t) for t in WL.tasks} == {"I-T": 16, "IT-T": 16, "T-I": 16}


# -- bad input -------------------------------------------------------------------------------
def test_images_of_any_size_are_resized_and_cropped():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(40, 90, 3), (300, 200, 3), (64, 64, 3)]]
    px = image.preprocess(imgs, 64)
    assert px.shape == (3, 3, 64, 64)
    assert px.min() >= -1 and px.max() <= 255 * image.RESCALE - 1 + 1e-6


@pytest.mark.parametrize("img, message", [
    (np.zeros((64, 64), np.uint8), r"RGB of shape \(H, W, 3\).*grayscale"),
    (np.zeros((64, 64, 4), np.uint8), r"RGB of shape \(H, W, 3\).*4 channels"),
    (np.zeros((64, 64, 3), np.float32), "expected uint8 RGB pixels, got dtype torch.float32"),
    (np.zeros((0, 64, 3), np.uint8), "empty image"),
])
def test_bad_images_are_rejected_by_name(img, message):
    with pytest.raises(image.ImageInputError, match=message):
        image.preprocess([img], 64)


def test_a_prompt_longer_than_the_context_is_rejected(tiny, device):
    limit = tiny.config.max_position_embeddings
    with pytest.raises(ValueError, match=rf"exceeds the model's context of {limit} positions"):
        _batch(WL, tiny, "IT-T", [limit], 0, device)


def test_a_user_image_goes_through_the_tokenizer(tiny, device):
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, size=(100, 150, 3), dtype=np.uint8)
    b = _batch(GREEDY, tiny, "I-T", [3], 0, device, images=[photo])
    tokens, _ = _run(GREEDY, tiny, b, Plan())
    assert tokens.shape == (1, 30)


def test_text_head_is_the_library_forward(tiny, device):
    """The static decoder's I-T/IT-T head gives the library's last-position logits, image
    tokens masked to the dtype minimum."""
    b = _batch(GREEDY, tiny, "IT-T", [9, 14], 2, device)
    kw = dict(input_ids=b.input_ids, attention_mask=b.attention_mask, **b.extra_inputs)
    with torch.no_grad():
        want = tiny(**kw, logits_to_keep=1).logits[:, -1]
        got = chameleon.TextLogits(tiny)(tiny, **kw)
    codes = tiny.model.vocabulary_mapping.image_tokens
    assert torch.equal(got[:, codes], want[:, codes])   # the dtype minimum on both
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)   # one matmul shape apart


def test_case_matrix_marks():
    from workloads.suites.matrix import matrix

    levers = ("eager", "sdpa", "compile", "cuda_graph")
    tiny = matrix("chameleon", levers, "tiny")
    assert {c.task for c in tiny} == {"I-T", "IT-T", "T-I"} and {c.batch for c in tiny} == {1, WL.tiny_max_batch}
    assert [c.lever for c in tiny if "gpu" in c.marks] == ["cuda_graph"] * 6
    paper = {c.id: c for c in matrix("chameleon", levers, "paper")}
    assert "pr" in paper["chameleon-7b/T-I/cuda_graph/paper/bs1"].marks
    assert "large" in paper["chameleon-34b/T-I/cuda_graph/paper/bs1"].marks
    # The pull-request gate on a GPU of 100 GiB or more selects 7B alone, not the 34B cases too,
    # and one input per code path (IT-T runs I-T's).
    assert {c for c in paper if "pr" in paper[c].marks} == {
        f"chameleon-7b/{t}/cuda_graph/paper/bs1" for t in ("I-T", "T-I")}
    assert "slow" in paper["chameleon-7b/I-T/eager/paper/bs16"].marks
