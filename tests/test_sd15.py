"""Stable Diffusion 1.5: the published sizes, the inputs (CLIP's token layout, seeded noise),
the pipeline run as the harness times it, sdpa against eager, bad input, and the cases."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from workloads.engine.cache import DecoderCache
from workloads.engine.diffusion import PipelineRunner
from workloads.engine.plan import Plan
from workloads.levers import Context, plan_for
from workloads.measure.timing import Stopwatch
from workloads.models import sd15
from workloads.models.common import CheckpointError, parameter_count
from workloads.models.diffusion import meta_unet_flops
from workloads.suites import WORKLOADS
from workloads.suites.matrix import matrix
from workloads.tasks import text_to_image

from .diffusion_helpers import (check_clip_layout_and_seeded_noise, check_graphed_step_matches_eager,
                               check_the_plan_selects_the_attention_processors, latent_batch, lean, run)

pytest.importorskip("diffusers", reason="sd15 runs diffusers' pipeline; install diffusers (pip install diffusers)")

CPU = torch.device("cpu")
WL = WORKLOADS["sd15"]

# sdpa against eager over a whole guided run on the tiny fp32 model: the largest difference of
# the final latents over their largest magnitude. One UNet evaluation differs by ~4e-6 of its
# output; after the guided steps (guidance multiplies a difference by 7.5) runs measured
# 1.4e-6 of the latents' scale at most.
LATENT_RTOL = 2e-5


@pytest.fixture(scope="module")
def tiny():
    return sd15.build(sd15.PRESETS["sd15-tiny"], CPU, dtype=torch.float32)


def _batch(pipe, lengths=(12,), steps=2, seed=0, size=64):
    return latent_batch(text_to_image, pipe, lengths, steps=steps, seed=seed, size=size)


def _run(pipe, batch, implementation, stopwatch=None, new_tokens=None):
    return run(PipelineRunner, pipe, batch, implementation, stopwatch, new_tokens)


# -- the published model ---------------------------------------------------------------------
def test_paper_preset_matches_the_published_parameter_counts():
    preset = sd15.PRESETS["sd15"]
    counts = {name: parameter_count(m) for name, m in sd15.meta_components(preset).items()}
    for name, published in sd15.PUBLISHED.items():
        assert counts[name] == pytest.approx(published, rel=1e-3), f"{name}: {counts[name] / 1e6:.2f}M"
    assert counts["unet"] == pytest.approx(859.5e6, rel=1e-3) and counts["vae"] == pytest.approx(83.7e6, rel=1e-3)
    assert counts["text_encoder"] == pytest.approx(123.1e6, rel=1e-3)
    assert sum(counts.values()) == pytest.approx(preset.published_params, rel=1e-3)


def test_every_scale_has_a_preset_with_the_published_layout():
    assert {p.scale for p in sd15.PRESETS.values()} == {"tiny", "small", "paper"}
    for p in sd15.PRESETS.values():
        u, v = p.config["unet"], p.config["vae"]
        assert u["down_block_types"] == sd15.PAPER_UNET["down_block_types"] and len(v["block_out_channels"]) == 4
        assert u["cross_attention_dim"] == p.config["text_encoder"]["hidden_size"]


# -- inputs ----------------------------------------------------------------------------------
def test_prompts_are_laid_out_as_clips_tokenizer_does_and_noise_is_seeded(tiny):
    check_clip_layout_and_seeded_noise(lambda seed: _batch(tiny, lengths=(3, 75), seed=seed), (2, 4, 8, 8))
    made = WL.inputs("T-I", "tiny", 4, tiny, CPU)
    assert made.batch == 4 and all(10 <= n <= 39 for n in made.prompt_lengths)
    assert (made.height, made.steps, made.new_tokens) == (64, 4, 5)


def test_pndm_makes_one_more_evaluation_than_steps_and_the_inverse_holds(tiny):
    sched = tiny.scheduler
    assert sd15.denoising_evaluations(sched, 50) == 51   # the paper scale's 50 steps
    for n in (1, 3, 4, 12):   # 4 and 12: the runs the harness counts kernels per step by
        assert sd15.denoising_evaluations(sched, sd15.steps_for(sched, n)) == n
    with pytest.raises(ValueError, match="no run of exactly 2 UNet evaluations"):
        sd15.steps_for(sched, 2)   # one step is one evaluation, two are three


def test_bad_input_names_the_limit(tiny):
    with pytest.raises(ValueError, match="76 tokens does not fit CLIP's 77-token context: at most 75 prompt tokens"):
        _batch(tiny, lengths=(5, 76))
    with pytest.raises(ValueError, match="height 60 px is not a positive multiple of the autoencoder's downsampling "
                                         "factor 8"):
        _batch(tiny, size=60)
    with pytest.raises(ValueError, match="denoising steps must be at least 1, got 0"):
        _batch(tiny, steps=0)
    with pytest.raises(ValueError, match="unknown Stable Diffusion attention implementation 'flash'"):
        sd15.set_attn_implementation(tiny, "flash")
    with pytest.raises(ValueError, match="unknown text-to-image task"):
        text_to_image.make_batch("T-T", "tiny", 1, evaluations_of=len)


# -- the run ---------------------------------------------------------------------------------
def test_a_run_marks_its_phases_and_counts_denoising_steps(tiny):
    calls = []
    handle = tiny.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        b = _batch(tiny, steps=3)
        sw = Stopwatch(CPU, spans=True)
        sw.start()
        runner = _run(tiny, b, "eager", sw)
        marks = sw.stop()
        assert len(calls) == b.new_tokens == 4
        assert 0 < marks["first_token"] < marks["decode_end"] < marks["end"]
        assert {"span:text_encoder", "span:unet", "span:vae"} <= set(marks)
        out = runner.outputs()
        assert out["latents"].shape == (1, 4, 8, 8) and out["image"].shape == (1, 3, 64, 64)
        assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1
        calls.clear()
        runner.count_steps(3)   # what the harness runs to count kernels per denoising step
        assert len(calls) == 3
    finally:
        handle.remove()


def test_attention_lengths_over_a_step_are_the_papers_u_and_grow_with_the_image():
    """Seed paper 2, Fig. 8 and 9: over one denoising step the self-attention length falls from
    the latent's pixel count by 4x a level to the middle block and rises back; cross-attention
    keys are the 77 text tokens. Four times the pixels, four times every length."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(sd15.PRESETS["sd15"].config["unet"]))
    calls = sd15.attention_calls(unet, 64, 64)   # 512 x 512
    assert meta_unet_flops(unet, (64, 64), context=77) == pytest.approx(1.6065e12, rel=1e-3)   # docs/workloads.md
    selfs = [q for kind, q, _ in calls if kind == "self"]
    assert len(calls) == 32 and [k for kind, _, k in calls if kind == "cross"] == [77] * 16
    assert selfs == [4096] * 2 + [1024] * 2 + [256] * 2 + [64] + [256] * 3 + [1024] * 3 + [4096] * 3
    assert [q for kind, q, _ in calls if kind == "cross"] == selfs   # each block's cross follows its self
    for size in (256, 768, 1024):
        scaled = [q for kind, q, _ in sd15.attention_calls(unet, size // 8, size // 8) if kind == "self"]
        assert scaled == [q * (size / 512) ** 2 for q in selfs]


def test_a_case_records_its_steps_attention_calls(tiny):
    runner = _run(tiny, _batch(tiny, steps=2), "sdpa")
    rec = runner.recorded()["attention_calls"]
    assert rec["per_step"] == 2 * len(rec["self_query"]) and rec["cross_key"] == [77]
    assert max(rec["self_query"]) == 8 * 8 and rec["self_query"] == rec["cross_query"]


def test_a_run_reports_its_unets_flops_for_its_tflops(tiny):
    """The UNet's FLOPs over a run (span `unet`), counted on its meta-device twin: the same for
    every lever; linear in the rows, and more than linear in the pixels (attention is quadratic)."""
    b = _batch(tiny, lengths=(12, 39), steps=3)
    per = meta_unet_flops(tiny.unet, (8, 8), context=77, rows=4)
    assert per > 0 and _run(tiny, b, "sdpa").work() == {"unet": per * b.new_tokens}
    lean = WL.runner(tiny, b, Plan(engine="static"), DecoderCache())
    assert lean.work() == {"unet": per * b.new_tokens}
    assert meta_unet_flops(tiny.unet, (8, 8), context=77, rows=8) == pytest.approx(2 * per)
    assert meta_unet_flops(tiny.unet, (16, 16), context=77, rows=4) > 4 * per


def test_the_plan_selects_the_attention_processors(tiny):
    ctx = check_the_plan_selects_the_attention_processors(WL, "T-I", tiny, sd15, _batch(tiny))
    plan, reason = plan_for("cuda_graph", ctx, WL.ladder)
    assert plan is None and "CUDA" in reason


# -- the lean denoising loop (compile, cuda_graph) ------------------------------------------
def _lean(model, b, plan, decoders=None):
    return lean(WL, model, b, plan, decoders)


@given(seed=st.sampled_from([0, 1, 2]), lengths=st.lists(st.sampled_from([0, 10, 75]), min_size=1, max_size=2),
       steps=st.sampled_from([1, 3]))
def test_the_lean_loop_is_the_pipelines_loop(tiny, seed, lengths, steps):
    """Written out over fixed buffers, the pipeline's loop gives its latents and image bit for
    bit: the compile and cuda_graph rungs differ from the pipeline by their levers alone."""
    b = _batch(tiny, lengths=lengths, steps=steps, seed=seed)
    ref = _run(tiny, b, "eager").outputs()
    got = _lean(tiny, b, Plan(engine="static")).outputs()
    assert torch.equal(got["latents"], ref["latents"]) and torch.equal(got["image"], ref["image"])


def test_compiled_step_matches_eager_and_leaves_the_shared_pipeline_alone(tiny):
    """compile: the noise prediction and the autoencoder's decode each one graph (fullgraph),
    on channels-last copies with fused QKV projections; latents within fp32 rounding of eager's.
    The pipeline the other rungs run keeps its processors and layout."""
    from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

    plan, reason = plan_for("compile", Context(CPU, WL.supports_for("T-I")), WL.ladder)
    assert reason is None and plan.compile and plan.attn_implementation == "sdpa"
    b = _batch(tiny, steps=3)   # the perf_tests case's shapes at bs1: its compile finds this one's cache
    ref = _run(tiny, b, "eager").outputs()
    runner = _lean(tiny, b, plan)
    got, den = runner.outputs(), runner.den
    assert float((got["latents"] - ref["latents"]).abs().max()) <= LATENT_RTOL * float(ref["latents"].abs().max())
    torch.testing.assert_close(got["image"], ref["image"], atol=1e-5, rtol=0)
    assert {type(p) for p in den.unet.attn_processors.values()} == {FusedAttnProcessor2_0}
    assert den.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    sd15.set_attn_implementation(tiny, "sdpa")
    assert {type(p) for p in tiny.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert tiny.unet.conv_in.weight.is_contiguous() and not hasattr(tiny.unet.mid_block.attentions[0].transformer_blocks[0].attn1, "to_qkv")
    runner.count_steps(3)   # what the harness runs to count kernels per denoising step: 2 PNDM steps
    short = _run(tiny, _batch(tiny, steps=2), "eager").outputs()["latents"]
    assert float((runner.outputs()["latents"] - short).abs().max()) <= LATENT_RTOL * float(short.abs().max())
    sw = Stopwatch(CPU, spans=True)
    sw.start()
    runner.run(sw)
    marks = sw.stop()
    assert 0 < marks["first_token"] < marks["decode_end"] < marks["end"]
    assert {"span:text_encoder", "span:unet", "span:vae"} <= set(marks)


# quant's quality bound against eager: the final latents' cosine similarity and the image's PSNR.
# int8 on the tiny fp32 model (CPU), two prompts, 1-4 steps: at least 0.99998 and 58 dB measured.
QUANT_MIN_COSINE = 0.999
QUANT_MIN_PSNR_DB = 40.0


def _quality(got: dict, ref: dict) -> tuple[float, float]:
    cos = torch.nn.functional.cosine_similarity(got["latents"].flatten(), ref["latents"].flatten(), dim=0)
    mse = float(((got["image"] - ref["image"]) ** 2).mean())
    return float(cos), (float("inf") if mse == 0 else 10 * math.log10(1 / mse))


@given(seed=st.sampled_from([0, 1, 2]), steps=st.sampled_from([1, 3]))
def test_quantized_unet_stays_within_the_quality_bound(tiny, seed, steps):
    """quant: the UNet's linear layers in int8 (on the CPU; float8 on a GPU that has it) on the
    engine's copy. Not exact: within the stated bound of eager's latents and image, and the
    shared pipeline keeps its float weights."""
    pytest.importorskip("torchao", reason="quant runs torchao")
    b = _batch(tiny, lengths=(12, 39), steps=steps, seed=seed)
    ref = _run(tiny, b, "eager").outputs()
    plan, reason = plan_for("sdpa+quant", Context(CPU, WL.supports_for("T-I")), WL.ladder)
    assert reason is None and plan.quant
    runner = _lean(tiny, b, plan)
    assert runner.den.quant == "int8"
    cos, psnr = _quality(runner.outputs(), ref)
    assert cos >= QUANT_MIN_COSINE and psnr >= QUANT_MIN_PSNR_DB, f"cosine {cos:.6f}, PSNR {psnr:.1f} dB"
    assert type(tiny.unet.conv_in.weight) is torch.nn.Parameter
    assert type(tiny.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q.weight) is torch.nn.Parameter


def test_graphed_step_matches_eager_on_the_gpu(device):
    """cuda_graph: the compiled noise prediction replayed as one graph, in fp32 without TF32,
    gives eager's latents within fp32 rounding, and the compile rung's, which shares the copy."""
    check_graphed_step_matches_eager(WL, "T-I", sd15, "sd15-tiny", device, _batch, _run, LATENT_RTOL)


@given(seed=st.sampled_from([0, 1, 2, 3]), lengths=st.lists(st.sampled_from([0, 10, 39, 75]), min_size=1, max_size=2),
       steps=st.sampled_from([1, 3]))
def test_sdpa_latents_equal_eagers_within_fp32_rounding(tiny, seed, lengths, steps):
    b = _batch(tiny, lengths=lengths, steps=steps, seed=seed)
    ref = _run(tiny, b, "eager").outputs()
    got = _run(tiny, b, "sdpa").outputs()
    scale = float(ref["latents"].abs().max())
    assert float((got["latents"] - ref["latents"]).abs().max()) <= LATENT_RTOL * scale
    torch.testing.assert_close(got["image"], ref["image"], atol=1e-5, rtol=0)


# -- checkpoints -----------------------------------------------------------------------------
def test_a_saved_pipeline_loads_back_and_a_bad_directory_is_named(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "sd")
    WL.check_checkpoint(str(tmp_path / "sd"))
    loaded = WL.build(WL.preset("sd15-tiny"), CPU, checkpoint=str(tmp_path / "sd"))
    for name in ("unet", "vae", "text_encoder"):
        for a, b in zip(getattr(loaded, name).parameters(), getattr(tiny, name).parameters()):
            assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="has no model_index.json"):
        WL.check_checkpoint(str(tmp_path))
    (tmp_path / "sd" / "vae" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no vae/config.json"):
        WL.check_checkpoint(str(tmp_path / "sd"))


# -- cases -----------------------------------------------------------------------------------
def test_matrix_ids_and_marks():
    levers = ("eager", "sdpa", "compile", "cuda_graph", "quant")
    tiny = {c.id: c for c in matrix("sd15", levers, "tiny") if c.task == "T-I"}
    assert list(tiny) == [f"sd15-tiny/T-I/{lv}/tiny/bs{bs}" for bs in (1, 4) for lv in levers]
    # quant stands on cuda_graph: both need a GPU; the rest run on the CPU.
    assert {c.lever for c in tiny.values() if c.marks == ()} == {"eager", "sdpa", "compile"}
    assert tiny["sd15-tiny/T-I/cuda_graph/tiny/bs1"].marks == tiny["sd15-tiny/T-I/quant/tiny/bs1"].marks == ("gpu",)
    paper = {c.id: c for c in matrix("sd15", levers, "paper") if c.task == "T-I"}
    top = WL.max_batch(WL.preset("sd15"), "T-I")
    assert top == 40 and set(paper) == {f"sd15/T-I/{lv}/paper/bs{bs}" for bs in (1, top) for lv in levers}
    assert paper["sd15/T-I/sdpa/paper/bs1"].marks == ("gpu",)
    assert paper[f"sd15/T-I/sdpa/paper/bs{top}"].marks == ("gpu", "slow")
