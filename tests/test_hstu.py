"""HSTU: the three attention implementations compute the same thing; the model and its inputs.

The reference is `eager` (pad to dense, materialize the N x N scores and bias). The blockwise
`memory_efficient` path runs on the CPU as is; the fused Triton kernel runs on a GPU, or on the
CPU under Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py where there is no
GPU), which executes the same kernel source with NumPy.

Tolerances. fp32: the paths add the same products in different orders (blocks of 64 or 256
keys against one matmul); over at most 128 keys that moves results by a few fp32 ulps of the
output scale (measured: <= 1e-7 on outputs of ~0.2), so atol 1e-5 + rtol 1e-4 holds with a wide
margin yet would catch any wrong bias entry (0.02 scale) or mask. bf16: eager rounds scores,
bias and SiLU to bf16 (8 bits of mantissa, relative step 2^-8) where the kernel keeps fp32,
then each output sums up to N such terms: atol 2e-2 x the output's largest magnitude.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from workloads.cases import matrix
from workloads.engine import hstu_attention as ha
from workloads.engine.hstu_attention import Jagged, jagged_attention
from workloads.engine.recommend import HSTURunner, StaticForward, jagged_of
from workloads.levers import Context, plan_for
from workloads.models import hstu
from workloads.models.common import parameter_count
from workloads.registry import WORKLOADS
from workloads.tasks import history
from workloads.tasks.history import JaggedError, check_offsets, offsets_of

CPU = torch.device("cpu")
WL = WORKLOADS["hstu"]
MAX_LEN = 96        # the longest sequence drawn: above one 64-row kernel block and near the tiny histories
NUM_POS = 80        # position table shorter than MAX_LEN: the clamp at the last distance is exercised
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.bfloat16: dict(atol=2e-2, rtol=0.0)}


def _fused_available(device) -> str | None:
    """None when the fused kernel can run on `device` here, else why not."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    from workloads.engine.hstu_triton import interpreting

    if device.type != "cuda" and not interpreting():
        return "no GPU and Triton's interpreter is off (TRITON_INTERPRET=1 before triton is imported)"
    return None


def _inputs(lengths, heads, dqk, dv, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    q, k, v = (torch.randn(T, heads, d, generator=g).to(dtype).to(device) for d in (dqk, dqk, dv))
    # Gaps from 1 s to ~1 month on a log scale: every time bucket in play, as in the task.
    gaps = torch.exp(torch.rand(T, generator=g) * 15).to(torch.int64)
    ts = (1_700_000_000 + torch.cumsum(gaps, 0)).to(device)
    pos_w = (torch.randn(NUM_POS, generator=g) * 0.02).to(dtype).to(device)
    ts_w = (torch.randn(129, generator=g) * 0.02).to(dtype).to(device)
    return q, k, v, ts, Jagged(offsets_of(lengths, device), tuple(lengths)), pos_w, ts_w


def _rows_at_a_bucket_edge(ts, lengths) -> torch.Tensor:
    """Rows with a key whose time gap to the row's next timestamp sits within float32 rounding
    of a bucket edge (log(gap) / BUCKET_WIDTH an integer to 1e-5), computed in float64."""
    from workloads.engine.hstu_attention import BUCKET_WIDTH

    ts = ts.cpu().to(torch.float64)
    edge = torch.zeros(ts.shape[0], dtype=torch.bool)
    start = 0
    for n in lengths:
        seq = ts[start:start + n]
        nxt = torch.cat([seq[1:], seq[-1:]]) if n else seq
        x = torch.log((nxt[:, None] - seq[None, :]).abs().clamp(min=1)) / BUCKET_WIDTH
        near = ((x - x.round()).abs() < 1e-5) & (x.round() >= 1)
        edge[start:start + n] = near.tril().any(dim=1)
        start += n
    return edge


def _close(a, b, dtype, what):
    tol = TOL[dtype]
    scale = b.float().abs().max().item() if b.numel() else 0.0
    atol = tol["atol"] * (max(scale, 1e-3) if dtype == torch.bfloat16 else 1.0)
    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=tol["rtol"], msg=lambda m: f"{what}: {m}")


# Length sets: empty and length-1 sequences, one at the maximum, and anything between.
lengths_st = st.lists(st.sampled_from([0, 1, 2, 7, 63, 64, 65, MAX_LEN]) | st.integers(0, MAX_LEN), min_size=1, max_size=5)
shape_st = st.tuples(st.sampled_from([1, 2, 4]), st.sampled_from([16, 32]), st.sampled_from([16, 32]))


@given(lengths=lengths_st, shape=shape_st, dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 99))
@example(lengths=[0, 1, MAX_LEN], shape=(2, 16, 32), dtype=torch.float32, seed=0)
def test_memory_efficient_equals_eager(lengths, shape, dtype, seed, device):
    args = _inputs(lengths, *shape, dtype, device, seed)
    alpha = shape[1] ** -0.5
    ref = jagged_attention(*args, alpha=alpha, implementation="eager")
    # A block smaller than the sequences: several query blocks per sequence, as at paper scale.
    got = ha.memory_efficient(*args, alpha=alpha, block=32)
    _close(got, ref, dtype, f"memory_efficient vs eager, lengths {lengths}")


@given(lengths=lengths_st, shape=shape_st, dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 99))
@example(lengths=[0, 1, MAX_LEN], shape=(2, 16, 32), dtype=torch.float32, seed=0)
def test_fused_equals_eager(lengths, shape, dtype, seed, device):
    why = _fused_available(device)
    if why:
        pytest.skip(why)
    args = _inputs(lengths, *shape, dtype, device, seed)
    alpha = shape[1] ** -0.5
    ref = jagged_attention(*args, alpha=alpha, implementation="eager")
    got = jagged_attention(*args, alpha=alpha, implementation="fused")
    # The kernel's log (libdevice, or numpy's under the interpreter) and torch's may round a
    # time gap at a bucket edge to either side; such rows may differ, every other must match.
    keep = ~_rows_at_a_bucket_edge(args[3], lengths).to(got.device)
    _close(got[keep], ref[keep], dtype, f"fused vs eager, lengths {lengths}")


@pytest.mark.parametrize("implementation", ha.IMPLEMENTATIONS)
def test_attention_is_causal(implementation, device):
    """Changing item p (its query, key, value) changes no output before p.

    Timestamps are the exception by design: query i's time bias reads the next item's
    timestamp (generative-recommenders buckets ts(next item) - ts(item)), so item p's time
    reaches output p - 1 and no earlier one.
    """
    if implementation == "fused" and _fused_available(device):
        pytest.skip(_fused_available(device))
    lengths = (40, 70)
    q, k, v, ts, jag, pos_w, ts_w = _inputs(lengths, 2, 16, 16, torch.float32, device)
    base = jagged_attention(q, k, v, ts, jag, pos_w, ts_w, alpha=0.25, implementation=implementation)
    p = 40 + 33   # row 33 of the second sequence
    for t in (q, k, v):
        t2 = t.clone()
        t2[p] += 5.0
        args = [t2 if x is t else x for x in (q, k, v)]
        out = jagged_attention(*args, ts, jag, pos_w, ts_w, alpha=0.25, implementation=implementation)
        torch.testing.assert_close(out[:p], base[:p], atol=0, rtol=0)
        assert not torch.equal(out[p:], base[p:])
    ts2 = ts.clone()
    ts2[p:] += 10**6   # a later time for item p (and, to stay ordered, every later item)
    out = jagged_attention(q, k, v, ts2, jag, pos_w, ts_w, alpha=0.25, implementation=implementation)
    torch.testing.assert_close(out[:p - 1], base[:p - 1], atol=0, rtol=0)


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_efficient_never_makes_an_n_by_n_tensor():
    lengths = (1000, 3, 700)
    heads = 2
    args = _inputs(lengths, heads, 16, 16, torch.float32, CPU)
    nn = heads * max(lengths) ** 2
    with _LargestTensor() as eager:
        jagged_attention(*args, alpha=0.25, implementation="eager")
    with _LargestTensor() as blockwise:
        jagged_attention(*args, alpha=0.25, implementation="memory_efficient")
    assert eager.largest >= len(lengths) * nn   # the probe sees the reference's (B, H, N, N) scores
    # One block of every sequence at once: (B, H, block, N) at most, a block's share of N x N.
    assert blockwise.largest <= len(lengths) * heads * ha.QUERY_BLOCK * max(lengths) < eager.largest / 3


def test_fused_kernel_compiles_for_an_h100():
    """Every tuning shape of the kernel compiles for sm_90 at the paper's head dims in bf16 (and
    the fp32 path the tests compare exactly), on
    any machine (Triton ships its compiler and ptxas): a kernel that would not build fails here,
    not on the GPU. In a child process: this one runs Triton in its interpreter mode."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("from workloads.engine.hstu_triton import compile_ahead; import json; "
            "print(json.dumps(compile_ahead(90) + compile_ahead(90, 32, 32, 'fp32')))")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    shapes = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(shapes) >= 1 and all(0 < s["shared"] <= 227 * 1024 for s in shapes)


def test_only_the_paper_head_dims_are_tuned():
    """Tiny models' head dims take the first tile shape untuned (each tuned shape is a compile);
    the paper's 128 tries every shape."""
    from workloads.engine.hstu_triton import _CONFIGS, _launcher, interpreting

    if interpreting():
        pytest.skip("the interpreter tunes nothing: every launch takes the first tile shape")
    assert _launcher(16, 32).configs == _CONFIGS[:1]
    assert _launcher(32, 64).configs == _CONFIGS
    assert _launcher(128, 128).configs == _CONFIGS
    assert _launcher(16, 32) is not _launcher(128, 128)


def test_fused_peak_memory_is_far_under_n_by_n(device):
    """Beyond its output the fused path allocates next to nothing (no scores, no bias), at 8K."""
    if device.type != "cuda":
        pytest.skip("GPU memory is what the fused kernel saves; the CPU interpreter works in NumPy copies")
    why = _fused_available(device)
    if why:
        pytest.skip(why)
    lengths = (8192, 8192)
    heads, d = 4, 128
    args = _inputs(lengths, heads, d, d, torch.bfloat16, device)
    jagged_attention(*args, alpha=d ** -0.5, implementation="fused")   # compile and tune outside the measurement
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    jagged_attention(*args, alpha=d ** -0.5, implementation="fused")
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    scores = len(lengths) * heads * max(lengths) ** 2 * 2   # the bf16 (B, H, N, N) eager materializes: 1 GiB
    out = sum(lengths) * heads * d * 2                      # the (T, H, D) output: 1/64 of that
    assert extra - out <= 2**20, f"fused allocated {extra - out} bytes beyond its {out}-byte output"
    assert extra < scores / 50, f"fused used {extra} bytes, the N x N scores take {scores}"


def test_fused_buckets_gaps_of_any_order_and_size_as_eager(device):
    """Timestamps out of order (negative gaps) spanning up to just under the 2^35 s limit: the
    kernel's two-part fp32 gap rounds as eager's cast of the exact int64 gap does."""
    why = _fused_available(device)
    if why:
        pytest.skip(why)
    q, k, v, ts, jag, pos_w, ts_w = _inputs((70, 33), 2, 16, 16, torch.float32, device, seed=3)
    g = torch.Generator().manual_seed(4)
    jitter = torch.randint(0, 2**35 - 1, (ts.numel(),), generator=g)
    jitter[0], jitter[1] = 0, 2**35 - 1   # the span at its limit
    ts = (1_700_000_000 + jitter).to(device)
    ref = jagged_attention(q, k, v, ts, jag, pos_w, ts_w, alpha=0.25, implementation="eager")
    got = jagged_attention(q, k, v, ts, jag, pos_w, ts_w, alpha=0.25, implementation="fused")
    _close(got, ref, torch.float32, "fused vs eager, unordered timestamps spanning 2^35 - 1 s")


# -- bad input: a clear error before anything runs --------------------------------------------
@pytest.mark.parametrize("implementation", ha.IMPLEMENTATIONS)
@pytest.mark.parametrize("offsets, lengths, match", [
    ([0, 5, 3, 8], (5, -2, 5), "must not decrease: offsets\\[2\\] = 3 < offsets\\[1\\] = 5"),
    ([0, 3, 7], (3, 4), "offsets end at 7 but the values have 8 rows"),
    ([1, 3, 8], (2, 5), "must start at 0"),
    ([0, 3, 8], (4, 4), "lengths \\[4, 4\\] disagree with the offsets, which give \\[3, 5\\]"),
])
def test_bad_offsets_are_named_before_any_kernel(implementation, offsets, lengths, match, monkeypatch):
    q, k, v, ts, _, pos_w, ts_w = _inputs((3, 5), 2, 16, 16, torch.float32, CPU)
    monkeypatch.setitem(ha._IMPL, implementation, lambda *a, **k: pytest.fail("an implementation ran"))
    with pytest.raises(JaggedError, match=match):
        jagged_attention(q, k, v, ts, Jagged(torch.tensor(offsets), lengths), pos_w, ts_w, alpha=0.25,
                         implementation=implementation)


def test_bad_offset_tensors():
    with pytest.raises(JaggedError, match="1-D"):
        check_offsets(torch.zeros(2, 2, dtype=torch.long), 0)
    with pytest.raises(JaggedError, match="int32 or int64"):
        check_offsets(torch.tensor([0.0, 1.0]), 1)
    with pytest.raises(ValueError, match="unknown HSTU attention implementation 'sdpa'"):
        jagged_attention(*_inputs((2,), 1, 16, 16, torch.float32, CPU), alpha=1.0, implementation="sdpa")


@pytest.mark.parametrize("implementation", ha.IMPLEMENTATIONS)
def test_timestamps_beyond_the_span_limit_are_named_before_any_kernel(implementation, monkeypatch):
    q, k, v, ts, jag, pos_w, ts_w = _inputs((3, 5), 2, 16, 16, torch.float32, CPU)
    monkeypatch.setitem(ha._IMPL, implementation, lambda *a, **k: pytest.fail("an implementation ran"))
    far = ts.clone()
    far[-1] = far[0] + 2**35
    with pytest.raises(ValueError, match=r"timestamps span 34359738368 s; the limit is 2\^35"):
        jagged_attention(q, k, v, far, jag, pos_w, ts_w, alpha=0.25, implementation=implementation)
    with pytest.raises(ValueError, match="timestamps must be integer seconds, got torch.float32"):
        jagged_attention(q, k, v, ts.float(), jag, pos_w, ts_w, alpha=0.25, implementation=implementation)


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
    torch.testing.assert_close(runner.logits, ref.logits, atol=1e-5, rtol=1e-4)
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
    runner = WL.runner(tiny, b, Plan(attn_implementation="memory_efficient", engine="static", compile=True), {})
    with dynamo_delta() as d:
        for _, step in runner.setup_steps():
            step()
        runner.prepare()
        top = runner.run()
    assert (d.graphs, d.graph_breaks) == (1, 0)
    torch.testing.assert_close(runner.logits, ref.logits, atol=1e-5, rtol=1e-4)
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
    runner = WL.runner(model, b, Plan(attn_implementation="fused", engine="static", compile=True), {})

    def setup_and_run():
        for _, step in runner.setup_steps():
            step()
        runner.prepare()
        return runner.run()

    top, code = run_and_get_code(setup_and_run)
    signatures = [line for line in "\n".join(code).splitlines() if "'signature'" in line and "'Q':" in line]
    assert signatures, "the fused kernel is not in the compiled graph's code"
    assert not any("fp64" in line for line in signatures), signatures[0]
    torch.testing.assert_close(runner.logits, ref.logits, atol=1e-5, rtol=1e-4)
    assert torch.equal(top, top_ref)


def test_model_rejects_what_it_cannot_take(tiny):
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 128"):
        hstu.check_lengths(tiny.config, [5, 200])
    with pytest.raises(ValueError, match="unknown HSTU attention implementation"):
        tiny.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="no checkpoint format"):
        hstu.build(hstu.PRESETS["hstu-tiny"], CPU, checkpoint="/nowhere")


def test_a_case_reports_latency_and_the_attention_share_but_no_token_times():
    """HSTU generates nothing: its result has no TTFT or TPOT, and its breakdown gives the
    attention's share of the forward on both sides and where the time went per module."""
    from workloads.cases import Case
    from workloads.harness import Session, run_case

    r = run_case(Case("hstu", "hstu-tiny", "H-A", "memory_efficient", "tiny", 2), Session(CPU))
    assert r["ttft_ms"] is None and r["tpot_ms"] is None and r["new_tokens"] == 0
    assert r["latency_ms"]["median"] > 0 and r["speedup"]["median"] > 0
    assert len(r["prompt_lengths"]) == 2 and r["agreement"] == 1.0   # the same items retrieved
    for side in ("eager", "lever"):
        m = r["modules_ms"][side]
        assert {"embedding", "dense", "attention", "heads"} <= set(m) and 0 < m["attention_share"] < 1
        assert r["span_tflops"][side]["attention"] > 0
    assert set(r["module_speedup"]) == {"attention", "dense", "embedding", "heads"}
    assert r["counters"] == {"recompiles": 0}


def test_each_case_probes_its_host_before_each_timed_round(monkeypatch):
    """The host's speed is probed before each timed round, not once a session or once after the
    rounds: a job that starts on the same host between two cases shows in the second case's
    figure, which the gate's allowance uses, and a slow window inside a case shows in its rounds'."""
    from workloads.cases import Case
    from workloads.harness import Session, run_case
    from workloads.measure import device as md

    speed = {"us": 10.0, "calls": 0}

    def probe(device, ops=2000, repeats=7):
        speed["calls"] += 1
        return speed["us"] + speed["calls"] % 2   # alternates within a case: 10, 11, 10, ...

    monkeypatch.setattr(md, "launch_overhead_us", probe)
    session = Session(CPU)
    hosts = [run_case(Case("hstu", "hstu-tiny", "H-A", "eager", "tiny", 1), session)["host"]]
    speed["us"] = 25.0
    r = run_case(Case("hstu", "hstu-tiny", "H-A", "memory_efficient", "tiny", 1), session)
    hosts.append(r["host"])
    assert all(len(h["launch_us_rounds"]) >= 3 for h in hosts)      # one probe per timed round
    assert len(hosts[1]["launch_us_rounds"]) == r["rounds"]
    assert set(hosts[0]["launch_us_rounds"]) <= {10.0, 11.0} and set(hosts[1]["launch_us_rounds"]) <= {25.0, 26.0}
    assert 10.0 <= hosts[0]["launch_us"] <= 11.0 and 25.0 <= hosts[1]["launch_us"] <= 26.0   # their median
    assert all(h["other_cores"] >= 0 for h in hosts)   # other processes' load during the rounds
    assert all(0 < h["on_cpu"] <= 1 for h in hosts)    # the timing thread's time on a CPU
    assert all(h["gc_ms"] >= 0 and h["gc_full"] >= 0 for h in hosts)   # Python's collector in its rounds


def test_a_lever_case_records_its_eager_references_host_share(monkeypatch):
    """The speedup floor's host allowance needs the reference's host-bound share beside the
    lever's: taken from the eager case where the session ran it, else counted once."""
    from workloads import harness
    from workloads.cases import Case

    counted = []

    def count(fn, device):
        fn()
        counted.append(1)
        return {"kernels": 4, "launches": 4, "gpu_ms": 0.0}   # all idle: share 1.0

    monkeypatch.setattr(harness.mc, "count_kernels", count)

    def case(lever, session):
        counted.clear()
        r = harness.run_case(Case("hstu", "hstu-tiny", "H-A", lever, "tiny", 1), session)
        return r["host"], len(counted)

    session = harness.Session(CPU)
    assert case("eager", session) == ({"launch_us": ANY, "launch_us_rounds": ANY, "share": 1.0, "other_cores": ANY, "on_cpu": ANY,
                                       "throttled_ms": ANY, "own_threads": ANY, "gc_ms": ANY, "gc_full": ANY}, 1)
    host, n = case("memory_efficient", session)
    assert host["reference_share"] == 1.0 and n == 1            # the eager case's figure
    host, n = case("memory_efficient", harness.Session(CPU))
    assert host["reference_share"] == 1.0 and n == 2            # counted once here


def test_the_planned_rungs_of_one_reference_are_timed_in_one_loop(monkeypatch):
    """With the session's cases planned (pytest's selection), the first case of a reference
    times every planned rung of it in one interleaved loop; each later case returns its own
    result, paired with the eager rounds it shared, and a rung that fails to set up fails in its
    own case, not in the one that timed the group. Another batch is another reference."""
    from workloads import harness
    from workloads.cases import Case

    loops = []
    real = harness.interleave
    monkeypatch.setattr(harness, "interleave", lambda vs, *a: loops.append([v.name for v in vs]) or real(vs, *a))
    real_setup = harness._setup

    def setup(runner, device):
        if runner.attn_implementation == "memory_efficient" and runner.batch.batch == 2:
            raise RuntimeError("setup failed")
        return real_setup(runner, device)

    monkeypatch.setattr(harness, "_setup", setup)
    cases = [Case("hstu", "hstu-tiny", "H-A", lever, "tiny", bs) for bs in (1, 2) for lever in ("eager", "memory_efficient")]
    session = harness.Session(CPU)
    session.plan(cases)
    eager = harness.run_case(cases[0], session)
    assert loops == [["eager", "memory_efficient"]]
    lever = harness.run_case(cases[1], session)
    assert loops == [["eager", "memory_efficient"]]                       # nothing timed again
    assert lever["case"] == cases[1].id and lever["speedup"] is not None
    n = lever["rounds"]
    assert lever["reference_latency_ms"]["samples"] == eager["latency_ms"]["samples"][:n]
    assert harness.run_case(cases[2], session)["case"] == cases[2].id   # batch 2: its own loop
    assert loops[1:] == [["eager"]]
    with pytest.raises(RuntimeError, match="setup failed"):
        harness.run_case(cases[3], session)


def test_rungs_that_run_out_of_memory_together_are_timed_one_by_one_beside_eager(monkeypatch):
    """At max batch a loop keeps every selected rung's graphs and caches alive at once: where
    that runs out of the device's memory, the case is timed again in a loop of its own beside
    eager, and so is every later rung of that input, each result saying so; the decoders the
    crowded loop built, and those each loop of one rung built, are released before the next.
    A rung that ran out of memory in its setup within someone else's loop gets its own loop
    too. One that runs out alone fails as it did."""
    from workloads import harness
    from workloads.cases import Case

    loops = []
    real = harness.interleave

    def crowded(vs, *a):   # the first loop, with every rung in it, does not fit
        loops.append([v.name for v in vs])
        if len(loops) == 1:
            session._decoders["built by the crowded loop"] = object()
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        assert not session._decoders   # released before each loop of one rung
        session._decoders[f"built by loop {len(loops)}"] = object()
        return real(vs, *a)

    monkeypatch.setattr(harness, "interleave", crowded)
    cases = [Case("hstu", "hstu-tiny", "H-A", lever, "tiny", 1) for lever in ("eager", "memory_efficient")]
    session = harness.Session(CPU)
    session.plan(cases)
    with pytest.warns(UserWarning, match="ran out of the device's memory together"):
        eager = harness.run_case(cases[0], session)
    assert loops == [["eager", "memory_efficient"], ["eager"]]
    lever = harness.run_case(cases[1], session)
    assert loops[2:] == [["eager", "memory_efficient"]]
    assert [eager["case"], lever["case"]] == [c.id for c in cases]
    assert eager["timed_alone_after_oom"] and lever["timed_alone_after_oom"]
    assert lever["speedup"] is not None

    # Out of memory in a rung's own setup, inside a loop that otherwise fits.
    loops.clear()
    real_setup = harness._setup
    failed = []

    def setup(runner, device):
        if runner.attn_implementation == "memory_efficient" and not failed:
            failed.append(runner)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_setup(runner, device)

    monkeypatch.setattr(harness, "_setup", setup)
    monkeypatch.setattr(harness, "interleave", lambda vs, *a: loops.append([v.name for v in vs]) or real(vs, *a))
    cases = [Case("hstu", "hstu-tiny", "H-A", lever, "tiny", 2) for lever in ("eager", "memory_efficient")]
    session.plan(cases)
    assert "timed_alone_after_oom" not in harness.run_case(cases[0], session)
    assert loops == [["eager"]]
    with pytest.warns(UserWarning, match="ran out of the device's memory together"):
        assert harness.run_case(cases[1], session)["timed_alone_after_oom"]
    assert loops == [["eager"], ["eager", "memory_efficient"]]

    # Alone, it is the case's own failure.
    def out_of_memory(vs, *a):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(harness, "interleave", out_of_memory)
    case = Case("hstu", "hstu-tiny", "H-A", "eager", "tiny", 3)
    session.plan([case])
    with pytest.raises(torch.OutOfMemoryError):
        harness.run_case(case, session)


def test_a_session_runs_the_eager_references_untimed_rounds_once_per_input(monkeypatch):
    """The eager reference's warm-up (its peak memory) and breakdown round run once per model,
    task, scale and batch in a session; each later rung of that key reuses them and still times
    eager beside itself. A different batch is a different reference."""
    from workloads import harness
    from workloads.cases import Case

    calls = []
    real_modules = harness.breakdown.modules
    monkeypatch.setattr(harness.breakdown, "modules", lambda marks, **kw: calls.append("modules") or real_modules(marks, **kw))
    real_peak = harness.peak_memory
    monkeypatch.setattr(harness, "peak_memory", lambda fn, device: calls.append("peak") or real_peak(fn, device))
    session = harness.Session(CPU)

    def case(lever, bs):
        calls.clear()
        r = harness.run_case(Case("hstu", "hstu-tiny", "H-A", lever, "tiny", bs), session)
        return r, list(calls)

    eager, first = case("eager", 1)
    lever, again = case("memory_efficient", 1)
    other, new_batch = case("memory_efficient", 2)
    assert first == ["peak", "modules"] and again == ["peak", "modules"] and new_batch == ["peak"] * 2 + ["modules"] * 2
    assert lever["reference_peak_memory"] == eager["peak_memory"]
    assert lever["modules_ms"]["eager"] == eager["modules_ms"]["eager"]
    assert len(lever["reference_latency_ms"]["samples"]) == lever["rounds"] >= 3   # eager still timed beside it


# -- cases -----------------------------------------------------------------------------------
def test_matrix_ids_sweep_and_marks():
    paper = {c.id: c for c in matrix("hstu", WL.ladder, "paper")}
    for task in ("H-A", "H-A-1K", "H-A-2K", "H-A-4K", "H-A-8K"):
        for bs in (1, 32):
            assert f"hstu-paper/{task}/fused/paper/bs{bs}" in paper
    assert {"gpu", "pr"} <= set(paper["hstu-paper/H-A/fused/paper/bs1"].marks)
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
