"""Text to video (ModelScope's Make-A-Video-like model): the published sizes, the inputs (CLIP's
token layout, seeded noise of every frame), the loop run as the harness times it, sdpa against
eager, the attention calls by kind (seed paper 2, Figs. 11, 12 and 14), bad input, the cases."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.engine.cache import DecoderCache
from workloads.engine.denoising import DenoiseRunner
from workloads.engine.video_diffusion import VideoDenoiser, VideoRunner
from workloads.levers import Context, plan_for
from workloads.measure.timing import Stopwatch
from workloads.models import video
from workloads.models.common import CheckpointError, parameter_count
from workloads.suites import WORKLOADS
from workloads.suites.matrix import matrix
from workloads.tasks import text_to_video

from .diffusion_helpers import (check_clip_layout_and_seeded_noise,
                               check_the_plan_selects_the_attention_processors, latent_batch, run)

pytest.importorskip("diffusers", reason="video runs diffusers' UNet3D; install diffusers (pip install diffusers)")

CPU = torch.device("cpu")
WL = WORKLOADS["video"]

# sdpa against eager over a whole guided run on the tiny fp32 model: the largest difference of
# the final latents over their largest magnitude, and of the decoded frames in [0, 1]. Measured
# over 48 runs (4 seeds, 3 prompt sets, 1 and 3 steps, 2 and 4 frames): at most 2.1e-6 and 3.4e-6.
LATENT_RTOL = 2e-5
VIDEO_ATOL = 2e-5


@pytest.fixture(scope="module")
def tiny():
    return video.build(video.PRESETS["video-tiny"], CPU, dtype=torch.float32)


@pytest.fixture(scope="module")
def paper_unet():
    from diffusers import UNet3DConditionModel

    with torch.device("meta"):
        return UNet3DConditionModel.from_config(dict(video.PAPER_UNET))


def _batch(pipe, lengths=(12,), steps=2, seed=0, size=64, frames=4):
    return latent_batch(text_to_video, pipe, lengths, steps=steps, seed=seed, size=size, frames=frames)


def _run(pipe, batch, implementation, stopwatch=None, new_tokens=None):
    return run(VideoRunner, pipe, batch, implementation, stopwatch, new_tokens)


# -- the published model ---------------------------------------------------------------------
def test_paper_preset_matches_the_published_parameter_counts():
    preset = video.PRESETS["video"]
    nets = video.meta_components(preset)
    counts = {name: parameter_count(m) for name, m in nets.items()}
    # The UNet's fp32 checkpoint is 5.65 GB: three figures, so 0.1% either way.
    assert counts["unet"] == pytest.approx(video.PUBLISHED["unet"], rel=2e-3), f"{counts['unet'] / 1e9:.4f}B"
    # "0.5 billion" temporal parameters and "about 1.7 billion" in all: one and two figures, and
    # the total rounded low (the networks hold 1.835B), so these check the order of magnitude.
    assert video.temporal_parameters(nets["unet"]) == pytest.approx(video.PUBLISHED["temporal"], rel=0.1)
    assert sum(counts.values()) == pytest.approx(preset.published_params, rel=0.1)
    assert sum(counts.values()) <= video.PARAMS_BOUND
    # The autoencoder is Stable Diffusion's, whose checkpoint holds 83,653,863 parameters.
    assert counts["vae"] == 83_653_863


def test_every_scale_has_a_preset_with_the_published_layout():
    assert {p.scale for p in video.PRESETS.values()} == {"tiny", "small", "paper"}
    for p in video.PRESETS.values():
        u, v = p.config["unet"], p.config["vae"]
        assert u["down_block_types"] == video.PAPER_UNET["down_block_types"] and len(v["block_out_channels"]) == 4
        assert u["cross_attention_dim"] == p.config["text_encoder"]["hidden_size"]
        assert all(c % u["attention_head_dim"] == 0 for c in u["block_out_channels"])   # whole heads


# -- inputs ----------------------------------------------------------------------------------
def test_prompts_are_laid_out_as_clips_tokenizer_does_and_noise_is_seeded(tiny):
    b = check_clip_layout_and_seeded_noise(lambda seed: _batch(tiny, lengths=(3, 75), frames=5, seed=seed),
                                           (2, 4, 5, 8, 8))
    assert b.frames == 5
    made = WL.inputs("T-V", "tiny", 2, tiny, CPU)
    assert made.batch == 2 and all(10 <= n <= 39 for n in made.prompt_lengths)
    assert (made.frames, made.height, made.steps, made.new_tokens) == (4, 64, 3, 3)
    t = text_to_video.TASKS["T-V"]
    assert (t.frames["paper"], t.frame_size["paper"], t.steps["paper"]) == (16, 256, 50)


def test_ddim_makes_one_evaluation_a_step(tiny):
    sched = tiny.scheduler
    assert type(sched).__name__ == "DDIMScheduler"
    assert video.denoising_evaluations(sched, 50) == 50
    for n in (1, 4, 12):   # 4 and 12: the runs the harness counts kernels per step by
        assert video.steps_for(sched, n) == n


def test_bad_input_names_the_limit(tiny):
    for frames in (0, -3):
        with pytest.raises(ValueError, match=f"a video needs at least 1 frame, got {frames}"):
            _batch(tiny, frames=frames)
    for size in (60, 0):
        with pytest.raises(ValueError, match=f"frame height {size} px is not a positive multiple of the "
                                             "autoencoder's downsampling factor 8"):
            _batch(tiny, size=size)
    with pytest.raises(ValueError, match="denoising steps must be at least 1, got 0"):
        _batch(tiny, steps=0)
    with pytest.raises(ValueError, match="76 tokens does not fit CLIP's 77-token context: at most 75 prompt tokens"):
        _batch(tiny, lengths=(5, 76))
    with pytest.raises(ValueError, match="unknown text-to-video attention implementation 'flash'"):
        video.set_attn_implementation(tiny, "flash")
    with pytest.raises(ValueError, match="unknown text-to-video task"):
        text_to_video.make_batch("T-I", "tiny", 1, evaluations_of=len)
    with pytest.raises(ValueError, match="a video needs at least 1 frame, got 0"):
        video.attention_calls(tiny.unet, 0, 8, 8)
    with pytest.raises(ValueError, match="starts at 1 frame or more"):
        text_to_video.frame_sweep(0, 8)
    assert text_to_video.frame_sweep() == text_to_video.FRAME_SWEEP == (8, 16, 32, 64)


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
        assert len(calls) == b.new_tokens == runner.decode_steps == 3
        assert 0 < marks["first_token"] < marks["decode_end"] < marks["end"]
        assert {"span:text_encoder", "span:unet", "span:vae"} <= set(marks)
        out = runner.outputs()
        assert out["latents"].shape == (1, 4, 4, 8, 8) and out["video"].shape == (1, 4, 3, 64, 64)
        assert 0 <= float(out["video"].min()) and float(out["video"].max()) <= 1
        for n in (4, 1):   # what the harness runs to count kernels per denoising step
            calls.clear()
            runner.count_steps(n)
            assert len(calls) == n
    finally:
        handle.remove()


def test_spatial_cross_and_temporal_attention_calls_at_two_frame_counts(paper_unet):
    """Seed paper 2, Fig. 11: spatial attention runs over (rows x frames) images of H*W tokens,
    temporal attention over (rows x H*W) pixels of `frames` tokens. At 256 x 256 (32 x 32
    latents) each level's spatial length is the latent's pixel count (the U of Fig. 8), and
    every temporal length is the frame count; doubling the frames doubles spatial attention's
    rows and its FLOPs and quadruples temporal attention's FLOPs (Fig. 14)."""
    by_frames = {f: video.attention_calls(paper_unet, f, 32, 32) for f in (16, 32)}
    for frames, calls in by_frames.items():
        spatial = [c for c in calls if c.kind == "spatial"]
        cross = [c for c in calls if c.kind == "cross"]
        temporal = [c for c in calls if c.kind == "temporal"]
        assert (len(calls), len(spatial), len(cross), len(temporal)) == (66, 16, 16, 34)
        assert [c.query for c in spatial] == [1024] * 2 + [256] * 2 + [64] * 2 + [16] + [64] * 3 + [256] * 3 + [1024] * 3
        assert all(c.key == c.query and c.batch == 2 * frames for c in spatial)
        assert [c.query for c in cross] == [c.query for c in spatial] and {c.key for c in cross} == {77}
        assert all(c.query == c.key == frames for c in temporal)
        # transformer_in and the first level's temporal attention run over every latent pixel
        assert temporal[0].batch == 2 * 32 * 32 and min(c.batch for c in temporal) == 2 * 4 * 4
        # 64-wide heads, channels / 64 of them (5 at 320 channels); transformer_in 8 of 64
        assert {c.head_dim for c in calls} == {64} and (spatial[0].heads, temporal[0].heads) == (5, 8)
    f16, f32 = (video.attention_flops(by_frames[f]) for f in (16, 32))
    assert f32["spatial"] == 2 * f16["spatial"] and f32["cross"] == 2 * f16["cross"]
    assert f32["temporal"] == 4 * f16["temporal"]
    assert f16["temporal"] < f16["spatial"]   # Fig. 12b: fewer FLOPs than spatial at 16 frames
    c = by_frames[16][0]
    assert video.call_flops(c) == 4 * c.batch * c.heads * c.query * c.key * c.head_dim


def test_temporal_flops_grow_with_the_square_of_the_frame_count_over_the_sweep(tiny):
    flops = {f: video.attention_flops(video.attention_calls(tiny.unet, f, 8, 8)) for f in text_to_video.frame_sweep()}
    base = flops[8]
    for f, got in flops.items():
        assert got["temporal"] == base["temporal"] * (f // 8) ** 2 and got["spatial"] == base["spatial"] * (f // 8)


def test_a_case_records_its_steps_attention_calls(tiny):
    runner = _run(tiny, _batch(tiny, steps=1, lengths=(12, 20), frames=3), "sdpa")
    rec = runner.recorded()["attention_calls"]
    assert rec["frames"] == 3 and rec["temporal_query"] == [3] and rec["cross_key"] == [77]
    assert rec["per_step"] == 2 * len(rec["self_query"]) + len(rec["temporal_rows"])
    assert max(rec["self_query"]) == 8 * 8 and rec["self_query"] == rec["cross_query"]
    assert max(rec["temporal_rows"]) == 2 * 2 * 8 * 8   # 2 prompts, guidance, 8 x 8 latent pixels
    assert set(rec["flops"]) == {"spatial", "cross", "temporal"} and all(v > 0 for v in rec["flops"].values())


def test_the_plan_selects_the_attention_processors(tiny):
    ctx = check_the_plan_selects_the_attention_processors(WL, "T-V", tiny, video, _batch(tiny))
    # The operator breakdown tells temporal attention apart: the attention inside temporal blocks.
    from workloads.measure.operators import operator_ms

    b = _batch(tiny, steps=1)
    runner = WL.runner(tiny, b, plan_for("sdpa", ctx, WL.ladder)[0], None)
    runner.prepare()
    out = operator_ms(lambda: runner.run(), tiny, WL.operator_groups, CPU)
    assert out["temporal_attention"] > 0 and out["attention"] > 0


def test_the_rungs_above_sdpa_run_the_lean_loop(tiny):
    """compile, cuda_graph and quant run the lean loop (one shared VideoDenoiser a batch); eager
    and sdpa the pipeline's loop. cuda_graph needs a GPU and says so."""
    ctx = Context(CPU, WL.supports_for("T-V"))
    b, decoders = _batch(tiny), DecoderCache()
    for lever in ("eager", "sdpa"):
        assert type(WL.runner(tiny, b, plan_for(lever, ctx, WL.ladder)[0], decoders)) is VideoRunner
    plan, reason = plan_for("compile", ctx, WL.ladder)
    assert reason is None and (plan.engine, plan.compile, plan.cuda_graph, plan.attn_implementation) == (
        "static", True, False, "sdpa")
    runner = WL.runner(tiny, b, plan, decoders)
    assert type(runner) is DenoiseRunner and type(runner.den) is VideoDenoiser and not runner.use_graph
    assert [name for name, _ in runner.setup_steps()] == ["compile_s"]
    plan, reason = plan_for("cuda_graph", ctx, WL.ladder)
    assert plan is None and "CUDA" in reason
    gpu = Context(torch.device("cuda"), WL.supports_for("T-V"))
    for lever, quant in (("cuda_graph", ""), ("quant", "dynamic")):
        plan = plan_for(lever, gpu, WL.ladder)[0]
        assert (plan.engine, plan.compile, plan.cuda_graph, plan.quant) == ("static", True, True, quant)
    plan, reason = plan_for("sdpa+quant", ctx, WL.ladder)
    assert reason is None and (plan.engine, plan.compile, plan.quant) == ("static", False, "dynamic")
    assert len(decoders) == 1


@settings(max_examples=5)
@given(seed=st.sampled_from([0, 1, 2, 3]), lengths=st.lists(st.sampled_from([0, 10, 39, 75]), min_size=1, max_size=2),
       steps=st.sampled_from([1, 3]), frames=st.sampled_from([2, 4]))
def test_sdpa_video_equals_eagers_within_fp32_rounding(tiny, seed, lengths, steps, frames):
    b = _batch(tiny, lengths=lengths, steps=steps, seed=seed, frames=frames)
    ref = _run(tiny, b, "eager").outputs()
    got = _run(tiny, b, "sdpa").outputs()
    scale = float(ref["latents"].abs().max())
    assert float((got["latents"] - ref["latents"]).abs().max()) <= LATENT_RTOL * scale
    torch.testing.assert_close(got["video"], ref["video"], atol=VIDEO_ATOL, rtol=0)


# -- checkpoints -----------------------------------------------------------------------------
def test_a_saved_pipeline_loads_back_and_a_bad_directory_is_named(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "t2v")
    WL.check_checkpoint(str(tmp_path / "t2v"))
    loaded = WL.build(WL.preset("video-tiny"), CPU, checkpoint=str(tmp_path / "t2v"))
    for name in ("unet", "vae", "text_encoder"):
        for a, b in zip(getattr(loaded, name).parameters(), getattr(tiny, name).parameters()):
            assert torch.equal(a, b)
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(CheckpointError, match="has no model_index.json"):
        WL.check_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="is not a directory"):
        WL.check_checkpoint(str(tmp_path / "missing"))
    (tmp_path / "t2v" / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(CheckpointError, match="unet/ is a UNet2DConditionModel, not the UNet3DConditionModel"):
        WL.check_checkpoint(str(tmp_path / "t2v"))
    (tmp_path / "t2v" / "vae" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no vae/config.json"):
        WL.check_checkpoint(str(tmp_path / "t2v"))


# -- the frame sweep (seed paper 2, Figs. 12 and 14) -----------------------------------------
def test_the_score_tensor_is_spatial_attentions_over_the_whole_latent(paper_unet):
    """The largest self-attention scores of a step: the first level's spatial attention, 2 rows x
    16 frames images, 5 heads, (32 x 32)^2; linear in the frames, where temporal attention's
    grow with their square and stay far smaller up to 64 frames."""
    from workloads.models.diffusion import largest_scores

    top = largest_scores(paper_unet, (16, 32, 32), context=77, rows=2)
    assert top == {"rows": 32, "heads": 5, "query": 1024, "key": 1024, "elements": 32 * 5 * 1024 * 1024}
    assert largest_scores(paper_unet, (64, 32, 32), context=77, rows=2)["elements"] == 4 * top["elements"]


def test_a_sweep_case_records_temporal_and_spatial_time_and_flops_and_gates_its_call_count(tiny):
    """One frame-sweep case through the harness on the CPU: the result holds the spatial and
    temporal attention's ms (operators_ms) and FLOPs (attention_calls), the call count among the
    gated counters, the score formula and the step's arithmetic intensity."""
    from workloads.result import METRICS
    from workloads.run.schedule import run_case
    from workloads.run.session import Session

    cases = [c for c in matrix("video", ("eager", "sdpa"), "tiny") if c.task == "T-V-2frames"]
    session = Session(CPU)
    session.plan(cases)
    eager, sdpa = (run_case(c, session) for c in cases)
    for r in (eager, sdpa):
        ops, calls = r["operators_ms"]["eager"], r["attention_calls"]
        assert ops["temporal_attention"] > 0 and ops["attention"] > 0
        assert calls["frames"] == 2 and calls["flops"]["temporal"] > 0 and calls["flops"]["spatial"] > 0
        assert r["counters"]["attention_calls_per_step"] == calls["per_step"]
        assert METRICS["counters"].gate == "exact"
        assert r["attention_scores"]["formula_bytes"] == 4 * r["attention_scores"]["elements"]
        assert "measured_bytes" not in r["attention_scores"]   # the CPU's peaks are a process's RSS
        i = r["intensity"]
        assert i["flops_per_byte"] == i["flops_per_step"] / i["bytes_per_step"] and "ridge_flops_per_byte" not in i
    assert "temporal_attention" in sdpa["operators_ms"]["lever"]
    assert sdpa["intensity"] == eager["intensity"] and sdpa["attention_scores"] == eager["attention_scores"]


def test_the_sweep_runs_one_loop_at_fixed_frame_counts_before_and_after_flash_attention():
    for scale, counts in text_to_video.FRAME_SWEEPS.items():
        cases = [c for c in matrix("video", ("eager", "sdpa"), scale) if c.task != "T-V"]
        assert [(c.task, c.lever, c.batch) for c in cases] == [(f"T-V-{n}frames", lv, 1) for n in counts
                                                               for lv in ("eager", "sdpa")]
        assert all("pr" not in c.marks for c in cases)
        for n in counts:
            t = text_to_video.TASKS[f"T-V-{n}frames"]
            assert t.frames[scale] == n and t.frame_size == {scale: text_to_video.TASKS["T-V"].frame_size[scale]
                                                               for scale in t.frames}
            assert t.steps[scale] >= 2 and t.sweep
    assert text_to_video.FRAME_SWEEPS["paper"] == text_to_video.frame_sweep() == (8, 16, 32, 64)


# -- cases -----------------------------------------------------------------------------------
def test_matrix_ids_and_marks():
    levers = ("eager", "sdpa", "compile", "cuda_graph", "quant")
    assert WL.ladder == levers and WL.pr_levers == ()
    tiny = {c.id: c for c in matrix("video", levers, "tiny") if c.task == "T-V"}
    assert list(tiny) == [f"video-tiny/T-V/{lv}/tiny/bs{bs}" for bs in (1, 2) for lv in levers]
    # quant stands on cuda_graph: both need a GPU; the rest run on the CPU.
    assert {c.lever for c in tiny.values() if c.marks == ()} == {"eager", "sdpa", "compile"}
    assert tiny["video-tiny/T-V/cuda_graph/tiny/bs1"].marks == tiny["video-tiny/T-V/quant/tiny/bs1"].marks == ("gpu",)
    paper = {c.id: c for c in matrix("video", levers, "paper") if c.task == "T-V"}
    top = WL.max_batch(WL.preset("video"), "T-V")
    assert 8 <= top <= 64 and top % 8 == 0
    assert set(paper) == {f"video/T-V/{lv}/paper/bs{bs}" for bs in (1, top) for lv in levers}
    assert paper["video/T-V/sdpa/paper/bs1"].marks == ("gpu",)
    assert paper[f"video/T-V/sdpa/paper/bs{top}"].marks == ("gpu", "slow")
    assert WL.max_batch(WL.preset("video-small"), "T-V") <= text_to_video.TASKS["T-V"].samples
