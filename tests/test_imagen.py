"""The Imagen-like pixel cascade (DeepFloyd IF's stages I and II): the published sizes, the inputs
(T5's token layout, seeded noise), the cascade run as the harness times it, sdpa against eager,
the attention calls of each stage, bad input, checkpoints, and the cases."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.engine.cache import DecoderCache
from workloads.engine.denoising import DenoiseRunner
from workloads.engine.pixel_cascade import CascadeDenoiser, CascadeRunner
from workloads.levers import Context, plan_for
from workloads.measure.timing import Stopwatch
from workloads.models import imagen
from workloads.models.common import CheckpointError, parameter_count
from workloads.suites import WORKLOADS
from workloads.suites.matrix import matrix
from workloads.tasks import pixel_cascade

from .diffusion_helpers import run

pytest.importorskip("diffusers", reason="imagen runs diffusers' UNets; install diffusers (pip install diffusers)")

CPU = torch.device("cpu")
WL = WORKLOADS["imagen"]

# sdpa against eager over a whole tiny fp32 cascade (4 + 2 guided steps): the largest difference
# of stage I's image and of the final image ([-1, 1] after thresholding, [0, 1]; about 70% of
# the pixels unsaturated). Runs measured 2.4e-5 at most (guidance multiplies a difference by 7,
# then 4, and stage II starts from stage I's image); the bound leaves a margin of about 8x.
IMAGE_ATOL = 2e-4


@pytest.fixture(scope="module")
def tiny():
    return imagen.build(imagen.PRESETS["imagen-tiny"], CPU, dtype=torch.float32)


@pytest.fixture(scope="module")
def paper_meta():
    return imagen.meta_components(imagen.PRESETS["imagen"])


def _factors(model):
    return tuple(imagen.downsampling_factor(u.config) for u in model.unets)


def _batch(model, lengths=(12,), steps=(2, 1), seed=0, sizes=(16, 32)):
    return pixel_cascade.batch_from_lengths(lengths, vocab_size=model.text_encoder.config.vocab_size,
                                            context=imagen.T5_CONTEXT, factors=_factors(model), sizes=sizes,
                                            steps=steps, seed=seed)


def _run(model, batch, implementation, stopwatch=None, new_tokens=None):
    return run(CascadeRunner, model, batch, implementation, stopwatch, new_tokens)


# -- the published model ---------------------------------------------------------------------
def test_paper_preset_matches_the_published_parameter_counts(paper_meta):
    counts = {name: parameter_count(m) for name, m in paper_meta.items()}
    for name, published in imagen.PUBLISHED.items():   # 4.8B, 4.3B, 1.2B: one decimal of a billion
        assert abs(counts[name] - published) <= imagen.PUBLISHED_PRECISION, f"{name}: {counts[name] / 1e9:.3f}B"
    assert sum(counts.values()) == pytest.approx(imagen.PRESETS["imagen"].published_params, rel=0.02)


def test_every_scale_has_a_preset_with_the_published_layout():
    assert {p.scale for p in imagen.PRESETS.values()} == {"tiny", "small", "paper"}
    for p in imagen.PRESETS.values():
        for stage, paper in (("unet_1", imagen.PAPER_STAGE_1), ("unet_2", imagen.PAPER_STAGE_2)):
            u = p.config[stage]
            assert u["down_block_types"] == paper["down_block_types"] and u["up_block_types"] == paper["up_block_types"]
            assert u["encoder_hid_dim"] == p.config["text_encoder"]["d_model"]   # T5's width, projected
            assert u["in_channels"] == paper["in_channels"] and u["out_channels"] == 6   # noise and variance
        assert len(p.config["unet_2"]["layers_per_block"]) == len(p.config["unet_2"]["block_out_channels"])


# -- inputs ----------------------------------------------------------------------------------
def test_prompts_are_laid_out_as_t5s_tokenizer_does_and_noise_is_seeded():
    facts = dict(vocab_size=1000, context=77, factors=(8, 16), sizes=(16, 32), steps=(4, 2))
    b = pixel_cascade.batch_from_lengths((3, 76), **facts)
    assert b.input_ids.shape == (4, 77) and b.noise_1.shape == (2, 3, 16, 16) and b.noise_2.shape == (2, 3, 32, 32)
    p, m = b.prompt_ids, b.attention_mask[:2]
    assert (p[0, :3] >= 3).all() and p[0, 3] == 1 and (p[0, 4:] == 0).all()   # pieces, end token, padding
    assert (p[1, :76] >= 3).all() and p[1, 76] == 1
    assert m[0].tolist() == [1] * 4 + [0] * 73 and m[1].tolist() == [1] * 77
    assert (b.empty_ids[:, 0] == 1).all() and (b.empty_ids[:, 1:] == 0).all()
    assert (b.attention_mask[2:].sum(1) == 1).all()
    again = pixel_cascade.batch_from_lengths((3, 76), **facts)
    for name in ("input_ids", "attention_mask", "noise_1", "noise_2", "aug_noise"):
        assert torch.equal(getattr(again, name), getattr(b, name))
    other = pixel_cascade.batch_from_lengths((3, 76), seed=1, **facts)
    assert not torch.equal(other.noise_1, b.noise_1) and not torch.equal(other.aug_noise, b.aug_noise)
    assert not torch.equal(b.noise_2[:, :, :16, :16], b.noise_1)


def test_the_tasks_steps_sizes_and_stage_ii_share(tiny):
    t = pixel_cascade.TASKS["T-I"]
    assert t.sizes["paper"] == (64, 256) and t.steps["paper"] == (100, 50)   # IF's pipelines' defaults
    assert t.guidance_scale == (7.0, 4.0) and t.noise_level == 250
    for scale, (s1, s2) in t.steps.items():
        assert 2 * s2 == s1, scale   # the harness's runs of 4 and 12 stage-I steps make exactly 2 and 6
        assert [pixel_cascade.stage_2_steps(n, (s1, s2)) for n in (4, 12, 1)] == [2, 6, 1]
    made = WL.inputs("T-I", "tiny", 4, tiny, CPU)
    assert made.batch == 4 and all(10 <= n <= 39 for n in made.prompt_lengths)
    assert (made.size_1, made.size_2, made.steps, made.new_tokens) == ((16, 16), (32, 32), (4, 2), 4)


def test_bad_input_names_the_limit(tiny):
    with pytest.raises(ValueError, match="77 tokens does not fit T5's 77-token context: at most 76 prompt tokens"):
        _batch(tiny, lengths=(5, 77))
    with pytest.raises(ValueError, match="stage I's image side 20 px is not a positive multiple of its UNet's "
                                         "downsampling factor 8"):
        _batch(tiny, sizes=(20, 32))
    with pytest.raises(ValueError, match="stage II's image side 40 px is not a positive multiple of its UNet's "
                                         "downsampling factor 16"):
        _batch(tiny, sizes=(16, 40))
    with pytest.raises(ValueError, match="denoising steps of stage I must be at least 1, got 0"):
        _batch(tiny, steps=(0, 1))
    with pytest.raises(ValueError, match="denoising steps of stage II must be at least 1, got 0"):
        _batch(tiny, steps=(2, 0))
    with pytest.raises(ValueError, match="unknown DeepFloyd IF attention implementation 'flash'"):
        imagen.set_attn_implementation(tiny, "flash")
    with pytest.raises(ValueError, match="unknown pixel-cascade task"):
        pixel_cascade.make_batch("T-T", "tiny", 1)


# -- the run ---------------------------------------------------------------------------------
def test_a_run_marks_its_phases_and_counts_denoising_steps(tiny):
    calls = {"unet_1": 0, "unet_2": 0}
    handles = [getattr(tiny, n).register_forward_hook(lambda *a, n=n: calls.__setitem__(n, calls[n] + 1))
               for n in calls]
    try:
        b = _batch(tiny, steps=(4, 2))
        sw = Stopwatch(CPU, spans=True)
        sw.start()
        runner = _run(tiny, b, "eager", sw)
        marks = sw.stop()
        assert calls == {"unet_1": 4, "unet_2": 2} and runner.decode_steps == b.new_tokens == 4
        assert 0 < marks["first_token"] < marks["decode_end"] <= marks["end"]
        assert {"span:text_encoder", "span:stage_1", "span:stage_2"} <= set(marks)
        assert marks["span:stage_1"] < marks["decode_end"] and marks["span:stage_2"] < marks["decode_end"]
        out = runner.outputs()
        assert out["stage_1"].shape == (1, 3, 16, 16) and out["image"].shape == (1, 3, 32, 32)
        assert float(out["stage_1"].abs().max()) <= 1   # thresholded x0 steps
        assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1
        calls.update(unet_1=0, unet_2=0)
        runner.count_steps(2)   # as the harness shortens a run to count kernels per step: n and n / 2
        assert calls == {"unet_1": 2, "unet_2": 1} and runner.evaluations == (2, 1)
    finally:
        for h in handles:
            h.remove()


def test_attention_lengths_over_a_step_of_each_stage_are_the_papers_u(paper_meta):
    """Seed paper 2, Table I and Figs. 8 and 9: Imagen's base model attends at 32, 16 and 8 px
    of its 64; IF's blocks attend over the pixels and the 77 text tokens together, so each key
    is the query's length plus 77. The super-resolution UNet attends only at its two deepest
    levels. Four times the pixels, four times every query."""
    one = imagen.attention_calls(paper_meta["unet_1"], 64, 64)
    q1 = [q for _, q, _, _ in one]
    assert q1 == [1024] * 3 + [256] * 3 + [64] * 3 + [64] + [64] * 4 + [256] * 4 + [1024] * 4
    assert [k for _, _, k, _ in one] == [q + 77 for q in q1] and {c[0] for c in one} == {"self+text"}
    two = imagen.attention_calls(paper_meta["unet_2"], 256, 256)
    q2 = [q for _, q, _, _ in two]
    assert q2 == [1024] * 5 + [256] * 5 + [256] + [256] * 6 + [1024] * 6
    assert {t for *_, t in two} == {77}
    bigger = [q for _, q, _, _ in imagen.attention_calls(paper_meta["unet_1"], 128, 128)]
    assert bigger == [4 * q for q in q1]


def test_a_case_records_each_stages_attention_calls(tiny):
    runner = CascadeRunner(tiny, _batch(tiny), "sdpa")
    rec = runner.recorded()["attention_calls"]
    s1, s2 = rec["stages"]["stage_1"], rec["stages"]["stage_2"]
    assert rec["per_step"] == s1["per_step"] == 10 and rec["self_query"] == s1["self_query"]
    assert max(s1["self_query"]) == 8 * 8 and max(s2["self_query"]) == 4 * 4   # 16 px / 2; 32 px / 8
    assert s1["cross_key"] == s2["cross_key"] == [77] and s1["kinds"] == ["self+text"]
    assert s2["key"] == [q + 77 for q in s2["self_query"]]


def test_the_plan_selects_the_attention_processors(tiny):
    from diffusers.models.attention_processor import AttnAddedKVProcessor, AttnAddedKVProcessor2_0

    ctx = Context(CPU, WL.supports_for("T-I"))
    for lever, cls in (("eager", AttnAddedKVProcessor), ("sdpa", AttnAddedKVProcessor2_0)):
        plan, reason = plan_for(lever, ctx, WL.ladder)
        assert reason is None
        WL.runner(tiny, _batch(tiny), plan, None).prepare()
        assert {type(p) for u in tiny.unets for p in u.attn_processors.values()} == {cls}
        assert tiny.text_encoder.config._attn_implementation == lever == imagen.attn_implementation(tiny)


def test_the_rungs_above_sdpa_run_the_lean_cascade(tiny):
    """compile, cuda_graph and quant run the lean loop (one shared CascadeDenoiser a batch);
    eager and sdpa the cascade as the pipelines run it. cuda_graph needs a GPU and says so."""
    ctx = Context(CPU, WL.supports_for("T-I"))
    b, decoders = _batch(tiny), DecoderCache()
    for lever in ("eager", "sdpa"):
        assert type(WL.runner(tiny, b, plan_for(lever, ctx, WL.ladder)[0], decoders)) is CascadeRunner
    plan, reason = plan_for("compile", ctx, WL.ladder)
    assert reason is None and (plan.engine, plan.compile, plan.cuda_graph, plan.attn_implementation) == (
        "static", True, False, "sdpa")
    runner = WL.runner(tiny, b, plan, decoders)
    assert type(runner) is DenoiseRunner and type(runner.den) is CascadeDenoiser and not runner.use_graph
    assert [name for name, _ in runner.setup_steps()] == ["compile_s"]   # nothing compiled yet: built lazily
    plan, reason = plan_for("cuda_graph", ctx, WL.ladder)
    assert plan is None and "CUDA" in reason
    gpu = Context(torch.device("cuda"), WL.supports_for("T-I"))
    for lever, graph, quant in (("cuda_graph", True, ""), ("quant", True, "dynamic")):
        plan = plan_for(lever, gpu, WL.ladder)[0]
        assert (plan.engine, plan.compile, plan.cuda_graph, plan.quant) == ("static", True, graph, quant)
    plan, reason = plan_for("sdpa+quant", ctx, WL.ladder)
    assert reason is None and (plan.engine, plan.compile, plan.quant) == ("static", False, "dynamic")
    assert len(decoders) == 1   # the compile rung's; nothing built for the others yet


@settings(max_examples=3)
@given(seed=st.sampled_from([0, 1, 2]), lengths=st.lists(st.sampled_from([0, 10, 39, 76]), min_size=1, max_size=2))
def test_sdpa_images_equal_eagers_within_fp32_rounding(tiny, seed, lengths):
    b = _batch(tiny, lengths=lengths, seed=seed)
    ref = _run(tiny, b, "eager").outputs()
    got = _run(tiny, b, "sdpa").outputs()
    for name in ("stage_1", "image"):
        assert float((got[name] - ref[name]).abs().max()) <= IMAGE_ATOL, name


# -- checkpoints -----------------------------------------------------------------------------
def test_a_saved_cascade_loads_back_and_a_bad_directory_is_named(tiny, tmp_path):
    imagen.save_pretrained(tiny, tmp_path / "if")
    WL.check_checkpoint(str(tmp_path / "if"))
    loaded = WL.build(WL.preset("imagen-tiny"), CPU, checkpoint=str(tmp_path / "if"))
    for name in imagen.COMPONENTS:
        for a, b in zip(getattr(loaded, name).parameters(), getattr(tiny, name).parameters()):
            assert torch.equal(a, b)
    assert loaded.scheduler_1.config.sample_max_value == 1.5 and loaded.scheduler_2.config.sample_max_value == 1.0
    with pytest.raises(CheckpointError, match="has no stage_1/ \\(one diffusers pipeline directory per stage"):
        WL.check_checkpoint(str(tmp_path))
    (tmp_path / "if" / "stage_2" / "image_noising_scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(CheckpointError, match="has no stage_2/image_noising_scheduler/scheduler_config.json"):
        WL.check_checkpoint(str(tmp_path / "if"))
    (tmp_path / "if" / "stage_1" / "unet" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no stage_1/unet/config.json"):
        WL.check_checkpoint(str(tmp_path / "if"))


# -- cases -----------------------------------------------------------------------------------
def test_a_steps_arithmetic_intensity_counts_stage_i_and_its_share_of_stage_ii(tiny):
    """Seed paper 2, Fig. 5: a decode step's FLOPs (a stage-I evaluation and half a stage-II one,
    each over the doubled batch, counted on the meta twins) over the bytes `decode_bytes` counts."""
    from workloads.models.diffusion import meta_unet_flops

    b = WL.inputs("T-I", "tiny", 2, tiny, CPU)
    one = meta_unet_flops(tiny.unet_1, tuple(b.size_1), context=77, rows=4)
    two = meta_unet_flops(tiny.unet_2, tuple(b.size_2), context=77, rows=4)
    assert b.stage_2_steps(b.new_tokens) * 2 == b.new_tokens
    assert WL.step_flops(tiny, b) == pytest.approx(one + two / 2) and one > 0 and two > 0


def test_matrix_ids_and_marks():
    levers = ("eager", "sdpa", "compile", "cuda_graph", "quant")
    assert WL.ladder == levers and WL.pr_levers == ()
    tiny = {c.id: c for c in matrix("imagen", levers, "tiny")}
    assert list(tiny) == [f"imagen-tiny/T-I/{lv}/tiny/bs{bs}" for bs in (1, 4) for lv in levers]
    # quant stands on cuda_graph: both need a GPU; the rest run on the CPU.
    assert {c.lever for c in tiny.values() if c.marks == ()} == {"eager", "sdpa", "compile"}
    assert tiny["imagen-tiny/T-I/cuda_graph/tiny/bs1"].marks == tiny["imagen-tiny/T-I/quant/tiny/bs1"].marks == ("gpu",)
    paper = {c.id: c for c in matrix("imagen", levers, "paper")}
    top = WL.max_batch(WL.preset("imagen"), "T-I")
    assert top == 80 and set(paper) == {f"imagen/T-I/{lv}/paper/bs{bs}" for bs in (1, top) for lv in levers}
    assert paper["imagen/T-I/sdpa/paper/bs1"].marks == ("gpu",)
    assert paper[f"imagen/T-I/sdpa/paper/bs{top}"].marks == ("gpu", "slow")
