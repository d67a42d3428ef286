"""What the diffusion workloads' tests share: a batch of a latent-diffusion task at the tiny
model's facts, a runner run once as the harness runs it, and the check of CLIP's token layout
and of seeded noise."""
import torch

from workloads.models.diffusion import batch_facts


def latent_batch(task_module, pipe, lengths, *, steps, seed, size, **extra):
    """`task_module.batch_from_lengths` at `pipe`'s vocabulary, context, latent channels and
    factor, `size` x `size`, with the evaluations its scheduler makes of `steps`."""
    facts = batch_facts(pipe)
    evaluations = facts.pop("evaluations_of")(steps)
    return task_module.batch_from_lengths(lengths, height=size, width=size, steps=steps, evaluations=evaluations,
                                          seed=seed, **facts, **extra)


def run(runner_class, model, batch, implementation, stopwatch=None, new_tokens=None):
    runner = runner_class(model, batch, implementation)
    runner.prepare()
    runner.run(stopwatch, new_tokens)
    return runner


def check_clip_layout_and_seeded_noise(make, latent_shape):
    """`make(seed)` makes a batch of two prompts of 3 and 75 tokens with a 1000-token vocabulary:
    begin, prompt, end padding, then the empty prompts; the same seed the same ids and noise,
    another seed other noise."""
    b = make(0)
    bos, eos = 998, 999
    assert b.input_ids.shape == (4, 77) and b.latents.shape == latent_shape
    p = b.prompt_ids
    assert (p[:, 0] == bos).all() and (p[0, 4:] == eos).all() and (p[0, 1:4] < bos).all()
    assert (p[1, 1:76] < bos).all() and p[1, 76] == eos
    assert (b.empty_ids[:, 0] == bos).all() and (b.empty_ids[:, 1:] == eos).all()
    again = make(0)
    assert torch.equal(again.input_ids, b.input_ids) and torch.equal(again.latents, b.latents)
    assert not torch.equal(make(1).latents, b.latents)
    return b


def check_the_plan_selects_the_attention_processors(wl, task: str, pipe, family, batch):
    """eager and sdpa set diffusers' classic and sdpa processors on the UNet and the autoencoder
    and the text encoder's implementation; returns the context, for the rungs above."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from workloads.levers import Context, plan_for

    ctx = Context(torch.device("cpu"), wl.supports_for(task))
    for lever, cls in (("eager", AttnProcessor), ("sdpa", AttnProcessor2_0)):
        plan, reason = plan_for(lever, ctx, wl.ladder)
        assert reason is None
        wl.runner(pipe, batch, plan, None).prepare()
        assert {type(p) for net in (pipe.unet, pipe.vae) for p in net.attn_processors.values()} == {cls}
        assert pipe.text_encoder.config._attn_implementation == lever == family.attn_implementation(pipe)
    return ctx


def lean(wl, model, batch, plan, decoders=None):
    """A lean-engine runner of `plan` over `model`, set up (compiled, captured) and run once."""
    from workloads.engine.cache import DecoderCache

    runner = wl.runner(model, batch, plan, DecoderCache() if decoders is None else decoders)
    for _, step in runner.setup_steps():
        step()
    runner.prepare()
    runner.run()
    return runner


def check_graphed_step_matches_eager(wl, task: str, family, preset: str, device, make_batch, run_eager, rtol: float):
    """cuda_graph in fp32 without TF32: the replayed noise prediction gives eager's latents
    within `rtol` of their scale, and the compile rung's exactly (one engine for both rungs)."""
    import pytest

    from workloads.engine.cache import DecoderCache
    from workloads.levers import Context, plan_for

    if device.type != "cuda":
        pytest.skip("CUDA graphs need a GPU; on the CPU the compile rung's test covers the step")
    pipe = family.build(family.PRESETS[preset], device, dtype=torch.float32)
    b = make_batch(pipe, steps=3).to(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        ref = run_eager(pipe, b, "eager").outputs()
        decoders = DecoderCache()
        ctx = Context(device, wl.supports_for(task), tuning=False)
        compiled = lean(wl, pipe, b, plan_for("compile", ctx, wl.ladder)[0], decoders).outputs()["latents"].clone()
        graphed = lean(wl, pipe, b, plan_for("cuda_graph", ctx, wl.ladder)[0], decoders)
        assert graphed.den.captured and len(decoders) == 1
        got = graphed.outputs()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    scale = float(ref["latents"].abs().max())
    assert float((got["latents"] - ref["latents"]).abs().max()) <= rtol * scale
    assert torch.equal(got["latents"], compiled)
