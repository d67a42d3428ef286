"""Text to video's lean rungs (compile, cuda_graph, quant) against the pipeline's loop: the loop
bit for bit, the compiled noise prediction and decode and the graph-replayed step within fp32
rounding, the quantized UNet3D within a stated quality bound."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.engine.cache import DecoderCache
from workloads.engine.plan import Plan
from workloads.levers import Context, plan_for
from workloads.measure.timing import Stopwatch
from workloads.models import video

from .diffusion_helpers import check_graphed_step_matches_eager, lean
from .test_video import CPU, LATENT_RTOL, VIDEO_ATOL, WL, _batch, _run

pytest.importorskip("diffusers", reason="video runs diffusers' UNet3D; install diffusers (pip install diffusers)")


@pytest.fixture(scope="module")
def tiny():
    return video.build(video.PRESETS["video-tiny"], CPU, dtype=torch.float32)


def _lean(model, b, plan, decoders=None):
    return lean(WL, model, b, plan, decoders)


@settings(max_examples=4)
@given(seed=st.sampled_from([0, 1, 2]), lengths=st.lists(st.sampled_from([0, 10, 75]), min_size=1, max_size=2),
       steps=st.sampled_from([1, 3]), frames=st.sampled_from([2, 4]))
def test_the_lean_loop_is_the_pipelines_loop(tiny, seed, lengths, steps, frames):
    """Written out over fixed buffers of the frame-stacked latents, on copies of the UNet3D and
    the autoencoder, the loop gives the pipeline's latents and frames bit for bit: the compile,
    cuda_graph and quant rungs differ from eager by their levers alone."""
    b = _batch(tiny, lengths=lengths, steps=steps, seed=seed, frames=frames)
    ref = _run(tiny, b, "eager").outputs()
    got = _lean(tiny, b, Plan(engine="static")).outputs()
    assert torch.equal(got["latents"], ref["latents"]) and torch.equal(got["video"], ref["video"])


@pytest.fixture(scope="module")
def compiled_video(tiny):
    """The compile rung's engine at the perf case's bs1 shapes (its compile finds this one's
    cache): compiled once, its batch swapped between examples (same shapes, same graphs)."""
    plan, reason = plan_for("compile", Context(CPU, WL.supports_for("T-V")), WL.ladder)
    assert reason is None
    runner = WL.runner(tiny, WL.inputs("T-V", "tiny", 1, tiny, CPU), plan, DecoderCache())
    for _, step in runner.setup_steps():
        step()
    return runner


@settings(max_examples=3)
@given(seed=st.sampled_from([0, 1, 2, 3]), length=st.sampled_from([0, 12, 39, 75]))
def test_compiled_step_and_decode_match_eager(tiny, compiled_video, seed, length):
    """compile: the noise prediction (the UNet3D over the doubled batch of every frame, and the
    guidance mix) and the decode of every frame each one graph (fullgraph), on channels-last
    copies with fused QKV projections in spatial, cross and temporal attention; latents and
    frames within fp32 rounding of eager's. The shared pipeline keeps its processors and layout."""
    from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

    runner, den = compiled_video, compiled_video.den
    den.batch = _batch(tiny, lengths=(length,), seed=seed, steps=3)   # the perf case's shapes: 4 frames of 64 px
    ref = _run(tiny, den.batch, "eager").outputs()
    sw = Stopwatch(CPU, spans=True)
    sw.start()
    runner.prepare()
    runner.run(sw)
    marks = sw.stop()
    got = runner.outputs()
    scale = float(ref["latents"].abs().max())
    assert float((got["latents"] - ref["latents"]).abs().max()) <= LATENT_RTOL * scale
    torch.testing.assert_close(got["video"], ref["video"], atol=VIDEO_ATOL, rtol=0)
    assert 0 < marks["first_token"] < marks["decode_end"] < marks["end"]
    assert {"span:text_encoder", "span:unet", "span:vae"} <= set(marks)
    assert {type(p) for p in den.unet.attn_processors.values()} == {FusedAttnProcessor2_0}
    assert den.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    temporal = den.unet.down_blocks[0].temp_convs[0].conv1[-1].weight   # a Conv3d: (out, in, 3, 1, 1)
    assert temporal.dim() == 5 and temporal.is_contiguous(memory_format=torch.channels_last_3d)
    video.set_attn_implementation(tiny, "sdpa")
    assert {type(p) for p in tiny.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert tiny.unet.conv_in.weight.is_contiguous()
    assert not hasattr(tiny.unet.transformer_in.transformer_blocks[0].attn1, "to_qkv")


# quant's quality bound against eager, as for Stable Diffusion: the final latents' cosine
# similarity and the frames' PSNR. int8 on the tiny fp32 UNet3D (CPU), two prompts, 1-3 steps:
# at least 0.99961 and 44.4 dB measured (seeds 0-2, one thread).
QUANT_MIN_COSINE = 0.999
QUANT_MIN_PSNR_DB = 40.0


def _quality(got: dict, ref: dict) -> tuple[float, float]:
    cos = torch.nn.functional.cosine_similarity(got["latents"].flatten(), ref["latents"].flatten(), dim=0)
    mse = float(((got["video"] - ref["video"]) ** 2).mean())
    return float(cos), (float("inf") if mse == 0 else 10 * math.log10(1 / mse))


@settings(max_examples=3)
@given(seed=st.sampled_from([0, 1, 2]), steps=st.sampled_from([1, 3]))
def test_quantized_unet_stays_within_the_quality_bound(tiny, seed, steps):
    """quant: the UNet3D's linear layers (spatial, cross and temporal attention, feed-forwards,
    time embedding) in int8 on the CPU, float8 on a GPU that has it, on the engine's copy. Not
    exact: within the stated bound of eager's latents and frames; the shared pipeline keeps its
    float weights."""
    pytest.importorskip("torchao", reason="quant runs torchao")
    b = _batch(tiny, lengths=(12, 39), steps=steps, seed=seed)
    ref = _run(tiny, b, "eager").outputs()
    plan, reason = plan_for("sdpa+quant", Context(CPU, WL.supports_for("T-V")), WL.ladder)
    assert reason is None and plan.quant
    runner = _lean(tiny, b, plan)
    assert runner.den.quant == "int8"
    cos, psnr = _quality(runner.outputs(), ref)
    assert cos >= QUANT_MIN_COSINE and psnr >= QUANT_MIN_PSNR_DB, f"cosine {cos:.6f}, PSNR {psnr:.1f} dB"
    assert type(tiny.unet.transformer_in.transformer_blocks[0].attn1.to_q.weight) is torch.nn.Parameter


def test_graphed_step_matches_eager_on_the_gpu(device):
    """cuda_graph: the compiled noise prediction over every frame replayed as one graph, in fp32
    without TF32, gives eager's latents within fp32 rounding, and the compile rung's exactly
    (one engine for both rungs)."""
    check_graphed_step_matches_eager(WL, "T-V", video, "video-tiny", device, _batch, _run, LATENT_RTOL)
