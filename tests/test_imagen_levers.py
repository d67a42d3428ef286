"""The pixel cascade's lean rungs (compile, cuda_graph, quant) against the pipelines' cascade:
the loop bit for bit, each stage's compiled and graph-replayed noise prediction step for step,
the quantized UNets within a stated quality bound."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.engine.cache import DecoderCache
from workloads.engine.pixel_cascade import _guided
from workloads.engine.plan import Plan
from workloads.levers import Context, plan_for
from workloads.measure.timing import Stopwatch
from workloads.models import imagen

from .diffusion_helpers import lean
from .test_imagen import CPU, WL, _batch, _run

pytest.importorskip("diffusers", reason="imagen runs diffusers' UNets; install diffusers (pip install diffusers)")


@pytest.fixture(scope="module")
def tiny():
    return imagen.build(imagen.PRESETS["imagen-tiny"], CPU, dtype=torch.float32)


def _lean(model, b, plan, decoders=None):
    return lean(WL, model, b, plan, decoders)


@settings(max_examples=4)
@given(seed=st.sampled_from([0, 1, 2]), lengths=st.lists(st.sampled_from([0, 10, 76]), min_size=1, max_size=2),
       steps=st.sampled_from([(2, 1), (4, 2)]))
def test_the_lean_cascade_is_the_pipelines_cascade(tiny, seed, lengths, steps):
    """Written out over fixed buffers on copies of the UNets, the cascade gives the pipelines'
    stage-I image and final image bit for bit, both stages' DDPM updates (dynamic thresholding,
    the generator's variance noise) and the re-noising included: the compile, cuda_graph and
    quant rungs differ from eager by their levers alone."""
    b = _batch(tiny, lengths=lengths, seed=seed, steps=steps)
    ref = _run(tiny, b, "eager").outputs()
    got = _lean(tiny, b, Plan(engine="static")).outputs()
    assert torch.equal(got["stage_1"], ref["stage_1"]) and torch.equal(got["image"], ref["image"])


def _recording(den):
    """Every noise prediction of the lean loop's runs: (stage, input, timestep, guided output)."""
    calls, predict = [], den._predict

    def recorded(stage, model_input, t, channels):
        out = predict(stage, model_input, t, channels)
        calls.append((stage, model_input.clone(), t, out.clone()))
        return out

    den._predict = recorded
    return calls


def _reference_steps(model, den, calls, implementation):
    """The shared (float) UNets' guided predictions on the lean run's own inputs, text states
    and noise level: what each step computes without the lever, and the scale of a rounding of
    the UNet's output after the mix."""
    imagen.set_attn_implementation(model, implementation)
    for stage, x, t, got in calls:
        step = den.steps[stage]
        eps = model.unets[stage](x, t, encoder_hidden_states=step.embeds, return_dict=False, **step.extra)[0]
        scale = (1 + 2 * step.scale) * float(eps.abs().max())
        yield stage, got, _guided(eps, step.scale, den.batch.noise_1.shape[1]), scale


# compile against eager, step for step: each stage's guided noise prediction on the same input,
# over what the mix makes of the UNet's output (uncond + w (text - uncond): up to 1 + 2w times
# its largest magnitude). Inductor's kernels and channels-last convolutions reorder fp32 sums:
# one UNet evaluation on random inputs measured 1.8e-6 and 2.4e-6 of its output, the guided
# steps along a run on real text states up to 3.8e-5 of that scale (bf16 would be ~4e-3). The
# cascade's images are not compared end to end: the guidance mix multiplies a step's rounding
# by up to w + 1 (8, then 5) against a random UNet's small text-minus-empty difference, and
# dynamic thresholding divides all of x0 by its 95th percentile, so a rounding that moves the
# percentile moves every pixel. Steps that agree to 2e-6 gave images 1e-3 apart (two prompts,
# 4 + 2 steps).
STEP_RTOL = 2e-4


@pytest.fixture(scope="module")
def compiled_cascade(tiny):
    """The compile rung's engine at the perf case's bs1 shapes (its compile finds this one's
    cache): compiled once, its batch swapped between examples (same shapes, same graphs)."""
    plan, reason = plan_for("compile", Context(CPU, WL.supports_for("T-I")), WL.ladder)
    assert reason is None
    runner = WL.runner(tiny, WL.inputs("T-I", "tiny", 1, tiny, CPU), plan, DecoderCache())
    for _, step in runner.setup_steps():
        step()
    return runner


@settings(max_examples=3)
@given(seed=st.sampled_from([0, 1, 2]), length=st.sampled_from([0, 12, 39, 76]))
def test_compiled_stages_match_eager_step_for_step(tiny, compiled_cascade, seed, length):
    """compile: each stage's noise prediction (its UNet over the doubled batch and the guidance
    mix) one graph (fullgraph), on channels-last copies, every step within fp32 rounding of the
    eager UNet on the same input. IF's added-KV attention has no fused QKV form; the shared
    cascade keeps its processors and layout."""
    from diffusers.models.attention_processor import AttnAddedKVProcessor, AttnAddedKVProcessor2_0

    runner, den = compiled_cascade, compiled_cascade.den
    den.batch = _batch(tiny, lengths=(length,), seed=seed, steps=(4, 2))
    calls = _recording(den)
    try:
        sw = Stopwatch(CPU, spans=True)
        sw.start()
        runner.prepare()
        runner.run(sw)
        marks = sw.stop()
    finally:
        del den._predict
    assert [c[0] for c in calls] == [0] * 4 + [1] * 2 and den.evaluations == (4, 2)
    assert 0 < marks["first_token"] < marks["decode_end"] < marks["end"]
    assert {"span:text_encoder", "span:stage_1", "span:stage_2"} <= set(marks)
    for stage, got, ref, scale in _reference_steps(tiny, den, calls, "eager"):
        assert float((got - ref).abs().max()) <= STEP_RTOL * scale, stage
    for unet in den.unets:
        assert {type(p) for p in unet.attn_processors.values()} == {AttnAddedKVProcessor2_0}
        assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    imagen.set_attn_implementation(tiny, "sdpa")
    assert {type(p) for u in tiny.unets for p in u.attn_processors.values()} == {AttnAddedKVProcessor2_0}
    imagen.set_attn_implementation(tiny, "eager")
    assert {type(p) for u in tiny.unets for p in u.attn_processors.values()} == {AttnAddedKVProcessor}
    assert all(u.conv_in.weight.is_contiguous() for u in tiny.unets)


# quant's quality bound, per evaluation: cosine similarity and PSNR (over the float output's
# peak) of each stage's UNet over the doubled batch against the float UNet on the same input,
# along the quantized run. Not of the guided mix: a random UNet's text and empty-prompt halves
# nearly agree, so uncond + w (text - uncond) multiplies the int8 rounding by up to w + 1 (8 for
# stage I) against a small difference (cosine 0.96-0.999 measured there). Nor of the images:
# see STEP_RTOL. Looser than Stable Diffusion's bound on its final latents (0.999, 40 dB), a
# quantity the starting noise dominates: the tiny stages are 16-32 channels wide, so each
# per-token int8 scale covers few values. int8 on the tiny fp32 stages (CPU, one thread, the
# text path in float: engine/pixel_cascade.py, TEXT_PATH), seeds 0-2 and both step counts:
# at least 0.99868 and 40.1 dB measured (stage II), stage I at least 0.9997 and 45.8 dB.
QUANT_MIN_COSINE = 0.998
QUANT_MIN_PSNR_DB = 38.0


def _quality(got, ref) -> tuple[float, float]:
    cos = torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0)
    mse = float(((got - ref) ** 2).mean())
    return float(cos), (float("inf") if mse == 0 else 10 * math.log10(float(ref.abs().max()) ** 2 / mse))


@settings(max_examples=3)
@given(seed=st.sampled_from([0, 1, 2]), steps=st.sampled_from([(2, 1), (4, 2)]))
def test_quantized_unets_stay_within_the_quality_bound(tiny, seed, steps):
    """quant: both UNets' linear layers in int8 (on the CPU; float8 on a GPU that has it) on
    the engine's copies, T5 left as it is. Every evaluation of both stages along the quantized
    run within the stated bound of the float UNet on the same input; the shared cascade keeps
    its float weights."""
    pytest.importorskip("torchao", reason="quant runs torchao")
    plan, reason = plan_for("sdpa+quant", Context(CPU, WL.supports_for("T-I")), WL.ladder)
    assert reason is None and plan.quant
    runner = WL.runner(tiny, _batch(tiny, lengths=(12, 39), seed=seed, steps=steps), plan, DecoderCache())
    den = runner.den
    calls = _recording(den)
    runner.prepare()
    runner.run()
    assert den.quant == "int8" and len(calls) == sum(steps)
    imagen.set_attn_implementation(tiny, "sdpa")
    for stage, x, t, guided in calls:
        step = den.steps[stage]
        args = dict(encoder_hidden_states=step.embeds, return_dict=False, **step.extra)
        got = den.unets[stage](x, t, **args)[0]
        assert torch.equal(_guided(got, step.scale, 3), guided)   # the step ran the quantized copy
        cos, psnr = _quality(got, tiny.unets[stage](x, t, **args)[0])
        assert cos >= QUANT_MIN_COSINE and psnr >= QUANT_MIN_PSNR_DB, \
            f"stage {stage}: cosine {cos:.6f}, PSNR {psnr:.1f} dB"
    assert all(type(u.time_embedding.linear_1.weight) is torch.nn.Parameter for u in tiny.unets)
    assert type(tiny.text_encoder.encoder.block[0].layer[0].SelfAttention.q.weight) is torch.nn.Parameter


def test_graphed_stages_match_eager_on_the_gpu(device):
    """cuda_graph: each stage's compiled noise prediction captured once and replayed at its
    fixed shape, in fp32 without TF32: the compile rung's images exactly (the same kernels on
    the same inputs, one engine for both rungs), and every step within fp32 rounding of eager."""
    if device.type != "cuda":
        pytest.skip("CUDA graphs need a GPU; on the CPU the compile rung's test covers the steps")
    model = imagen.build(imagen.PRESETS["imagen-tiny"], device, dtype=torch.float32)
    b = _batch(model, steps=(4, 2)).to(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        decoders = DecoderCache()
        ctx = Context(device, WL.supports_for("T-I"), tuning=False)
        compiled = _lean(model, b, plan_for("compile", ctx, WL.ladder)[0], decoders).outputs()
        compiled = {k: v.clone() for k, v in compiled.items()}
        graphed = WL.runner(model, b, plan_for("cuda_graph", ctx, WL.ladder)[0], decoders)
        for _, step in graphed.setup_steps():
            step()
        den = graphed.den
        assert den.captured and len(den.steps) == 2 and len(decoders) == 1
        calls = _recording(den)
        graphed.prepare()
        graphed.run()
        del den._predict
        got = graphed.outputs()
        assert torch.equal(got["stage_1"], compiled["stage_1"]) and torch.equal(got["image"], compiled["image"])
        for stage, step_out, ref, scale in _reference_steps(model, den, calls, "eager"):
            assert float((step_out - ref).abs().max()) <= STEP_RTOL * scale, stage
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
