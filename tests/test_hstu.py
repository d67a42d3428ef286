"""HSTU: its inputs (Table II's histories), the model on each attention implementation, its
compiled forward, and its cases. The attention itself: tests/test_hstu_attention.py."""
import numpy as np
import pytest
import torch

from workloads.engine.cache import DecoderCache
from workloads.engine.recommend import HSTURunner, StaticForward, jagged_of
from workloads.levers import Context, plan_for
from workloads.models import hstu
from workloads.suites import WORKLOADS
from workloads.suites.matrix import matrix
from workloads.tasks import history
from workloads.tasks.history import check_offsets

from .test_hstu_attention import _fused_available

CPU = torch.device("cpu")
WL = WORKLOADS["hstu"]


# -- inputs ----------------------------------------------------------------------------------
def test_histories_follow_table_ii():
    rng = np.random.default_rng(0)
    draws = history.HISTORY.draw(4000, rng)
    assert draws.min() >= 4507 and draws.max() <= 5121
    assert abs(draws.mean() - 4813.9) < 10
    b = history.make_batch("H-A", "paper", 32, num_items=6001, num_actions=8, max_len=8192, limit=1024)
    assert b.batch == 32 and all(4507 <= n <= 5121 for n in b.lengths)
    check_offsets(b.offsets, b.total, b.lengths)
    assert b.kept_lengths == (1024,) * 32 and len(b.keep_index) == 32 * 1024
    sweep = history.make_batch("H-A-8K", "paper", 2, num_items=6001, num_actions=8, max_len=8192, limit=1024)
    assert sweep.lengths == (8192, 8192)


def test_batches_are_seeded_ordered_and_keep_the_latest_items():
    kw = dict(num_items=6001, num_actions=8, max_len=128, limit=32)
    a, b = (history.make_batch("H-A", "tiny", 4, **kw) for _ in range(2))
    assert a.lengths == b.lengths and torch.equal(a.item_ids, b.item_ids) and torch.equal(a.timestamps, b.timestamps)
    for s, e, ks, ke in zip(a.offsets[:-1], a.offsets[1:], a.kept_offsets[:-1], a.kept_offsets[1:]):
        ts = a.timestamps[s:e]
        assert bool((ts[1:] >= ts[:-1]).all())
        assert a.actions[e - 1] == 8   # the candidate's engagement is unknown
        assert torch.equal(a.keep_index[ks:ke], torch.arange(max(s, e - 32), e))
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        history.batch_from_lengths([3, 0], num_items=10, num_actions=2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="draws histories up to 8192 items; the model takes 128"):
        history.make_batch("H-A-8K", "paper", 1, **kw)


# -- the model -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return hstu.build(hstu.PRESETS["hstu-tiny"], CPU, dtype=torch.float32)


def _batch(model, task="H-A", n=4):
    return WL.inputs(task, "tiny", n, model, CPU)


@pytest.mark.parametrize("implementation", ["memory_efficient", "fused"])
def test_model_outputs_match_eager(tiny, implementation):
    if implementation == "fused" and _fused_available(CPU):
        pytest.skip(_fused_available(CPU))
    b = _batch(tiny)
    jag, kept = jagged_of(b)
    outs = {}
    for impl in ("eager", implementation):
        tiny.set_attn_implementation(impl)
        with torch.no_grad():
            outs[impl] = tiny.hidden(b.item_ids, b.actions, b.timestamps, jag, b.keep_index, kept)[0]
    tiny.set_attn_implementation("eager")
    # Fourteen-fold (here three-fold) compounding of the attention's fp32 rounding through layers.
    torch.testing.assert_close(outs[implementation], outs["eager"], atol=1e-4, rtol=1e-4)


def test_model_is_causal_in_the_items(tiny):
    b = _batch(tiny, n=2)
    jag, kept = jagged_of(b)
    with torch.no_grad():
        base = tiny.hidden(b.item_ids, b.actions, b.timestamps, jag)[0]
        p = b.lengths[0] + 20
        ids = b.item_ids.clone()
        ids[p] = (ids[p] + 1) % tiny.config.num_items
        out = tiny.hidden(ids, b.actions, b.timestamps, jag)[0]
    torch.testing.assert_close(out[:p], base[:p], atol=0, rtol=0)
    assert not torch.equal(out[p], base[p])


def test_bucketed_static_inputs_compute_what_the_batch_does(tiny):
    """The cuda_graph rung's static buffers (rows and grids rounded up to buckets) change nothing."""
    b = _batch(tiny)
    impl = "fused" if not _fused_available(CPU) else "memory_efficient"
    ref = HSTURunner(tiny, b, attn_implementation=impl)
    ref.prepare()
    top_ref = ref.run()
    static = StaticForward(tiny, b, attn_implementation=impl, bucketed=True)
    static.load(b)
    assert static.rows > b.total and static.jag.grid_len > b.max_len
    runner = HSTURunner(tiny, b, attn_implementation=impl, static=static)
    runner.prepare()
    top = runner.run()
    torch.testing.assert_close(runner.outputs()["logits"], ref.outputs()["logits"], atol=1e-5, rtol=1e-4)
    assert torch.equal(top, top_ref)


def test_compiled_forward_is_one_graph_and_matches_eager(tiny):
    """The compile rung's mechanics on the CPU: the whole forward over the bucketed static
    inputs compiles as one graph (fullgraph) and ranks and retrieves as eager does. The CPU
    runs it with the blockwise attention (the fused kernel compiles only for a GPU)."""
    from workloads.engine.plan import Plan
    from workloads.measure.counters import dynamo_delta

    b = _batch(tiny)
    ref = HSTURunner(tiny, b, attn_implementation="eager")
    ref.prepare()
    top_ref = ref.run()
    runner = WL.runner(tiny, b, Plan(attn_implementation="memory_efficient", engine="static", compile=True), DecoderCache())
    with dynamo_delta() as d:
        for _, step in runner.setup_steps():
            step()
        runner.prepare()
        top = runner.run()
    assert (d.graphs, d.graph_breaks) == (1, 0)
    torch.testing.assert_close(runner.outputs()["logits"], ref.outputs()["logits"], atol=1e-5, rtol=1e-4)
    assert torch.equal(top, top_ref)


def test_compiled_fused_forward_matches_eager_and_does_no_fp64(device):
    """On a GPU, the compile rung with the fused kernel inside: it ranks and retrieves as eager
    does, and inductor's signature for the kernel holds no fp64 argument. Inductor types a
    Python float argument of a user Triton kernel as fp64, which once turned every score tile
    into fp64 arithmetic: 498 us a kernel call in the graph against 196 us launched plainly, on
    an H200."""
    if device.type != "cuda":
        pytest.skip("the fused kernel compiles inside a graph only for a GPU")
    from torch._inductor.utils import run_and_get_code

    from workloads.engine.plan import Plan

    model = hstu.build(hstu.PRESETS["hstu-tiny"], device, dtype=torch.float32)
    b = WL.inputs("H-A", "tiny", 4, model, device)
    ref = HSTURunner(model, b, attn_implementation="eager")
    ref.prepare()
    top_ref = ref.run()
    runner = WL.runner(model, b, Plan(attn_implementation="fused", engine="static", compile=True), DecoderCache())

    def setup_and_run():
        for _, step in runner.setup_steps():
            step()
        runner.prepare()
        return runner.run()

    top, code = run_and_get_code(setup_and_run)
    signatures = [line for line in "\n".join(code).splitlines() if "'signature'" in line and "'Q':" in line]
    assert signatures, "the fused kernel is not in the compiled graph's code"
    assert not any("fp64" in line for line in signatures), signatures[0]
    torch.testing.assert_close(runner.outputs()["logits"], ref.outputs()["logits"], atol=1e-5, rtol=1e-4)
    assert torch.equal(top, top_ref)


def test_model_rejects_what_it_cannot_take(tiny):
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 128"):
        hstu.check_lengths(tiny.config, [5, 200])
    with pytest.raises(ValueError, match="unknown HSTU attention implementation"):
        tiny.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="no checkpoint format"):
        hstu.build(hstu.PRESETS["hstu-tiny"], CPU, checkpoint="/nowhere")


# -- cases -----------------------------------------------------------------------------------
def test_matrix_ids_sweep_and_marks():
    paper = {c.id: c for c in matrix("hstu", WL.ladder, "paper")}
    for task in ("H-A", "H-A-1K", "H-A-2K", "H-A-4K", "H-A-8K"):
        for bs in (1, 32):
            assert f"hstu-paper/{task}/fused/paper/bs{bs}" in paper
    assert {"gpu", "pr"} <= set(paper["hstu-paper/H-A/fused/paper/bs1"].marks)
    # The pull-request gate takes the sweep's two ends, at batch 1.
    assert {c.id for c in paper.values() if "pr" in c.marks} == {
        f"hstu-paper/{t}/{lv}/paper/bs1" for t in ("H-A", "H-A-8K") for lv in ("eager", "fused", "cuda_graph")}
    tiny = matrix("hstu", WL.ladder, "tiny")
    gpu = {c.lever for c in tiny if "gpu" in c.marks}
    assert gpu == {"fused", "compile", "cuda_graph"}   # each stands on the fused kernel


def test_levers_say_why_they_do_not_apply():
    ctx = Context(CPU, WL.supports_for("H-A"))
    assert plan_for("memory_efficient", ctx, WL.ladder)[0].attn_implementation == "memory_efficient"
    plan, reason = plan_for("fused", ctx, WL.ladder)
    assert plan is None and "CUDA" in reason and "Triton" in reason
    plan, reason = plan_for("memory_efficient", Context(CPU, WORKLOADS["llama"].supports))
    assert plan is None and "HSTU" in reason
    gpu = Context(torch.device("cuda"), WL.supports_for("H-A"))
    plan, _ = plan_for("cuda_graph", gpu, WL.ladder)
    assert (plan.attn_implementation, plan.compile, plan.cuda_graph) == ("fused", True, True)
