"""HSTU's attention: the three implementations compute the same thing, and bad input is named.

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

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from workloads.engine import hstu_attention as ha
from workloads.engine.hstu_attention import Jagged, jagged_attention
from workloads.tasks.history import JaggedError, check_offsets, offsets_of

CPU = torch.device("cpu")
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
