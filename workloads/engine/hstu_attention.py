"""HSTU attention over jagged sequences, three ways: materialized, blockwise, fused.

For each sequence of length n in a batch whose longest is N, per head,
    out_i = sum_{j <= i} SiLU(alpha * q_i . k_j + rab(i, j)) / N * v_j
with the relative bias rab(i, j) = pos_w[min(i - j, P - 1)] + ts_w[bucket(ts_{i+1} - ts_j)],
bucket(d) = min(floor(ln(max(|d|, 1)) / 0.301), B) and ts_{i+1} the next item's timestamp
(the query's own for the last item). This is generative-recommenders' bucketed time and
position bias; its position table is indexed by j - i over 2N - 1 entries, of which the causal
mask reads only i - j >= 0, so one entry per distance is the same function.

SDPA does not apply: it computes softmax(QK^T)V, and HSTU's pointwise SiLU has no softmax
(nor its row normalization), so no SDPA backend computes it.

- `eager`: pad to (B, N), materialize the (B, H, N, N) scores and the bias: the reference.
- `memory_efficient`: query blocks against their causal keys, the same block of every sequence
  at once; never an N x N tensor (padding only within a block), plain PyTorch, so it runs on
  the CPU.
- `fused`: one Triton kernel over the jagged layout; the bias is computed in the kernel from
  the timestamps and the two weight vectors (see hstu_triton.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..tasks.history import JaggedError, check_offsets, check_timestamps

IMPLEMENTATIONS = ("eager", "memory_efficient", "fused")
BUCKET_WIDTH = 0.301   # natural-log width of a time bucket, as generative-recommenders' default
QUERY_BLOCK = 256      # memory_efficient: rows per block; its scores are (H, 256, <= N)


@dataclass(frozen=True)
class Jagged:
    """Where the sequences of a packed tensor start, with a host copy of their lengths."""

    offsets: torch.Tensor        # (B + 1,) int64 on the device
    lengths: tuple[int, ...]     # host copy: block counts and the grid come from it, without a sync
    # Static buffers for graph replay: the fused kernel's grid covers `grid_len` rows per
    # sequence (a length bucket) and reads 1 / N from `inv_n`, so one captured graph serves
    # every batch of the bucket.
    grid_len: int | None = None
    inv_n: torch.Tensor | None = None

    @property
    def max_len(self) -> int:
        return max(self.lengths, default=0)


def time_buckets(diff: torch.Tensor, num_buckets: int) -> torch.Tensor:
    d = diff.abs().clamp(min=1).to(torch.float32)
    return (torch.log(d) / BUCKET_WIDTH).to(torch.int64).clamp(0, num_buckets)


def relative_bias(ts_next: torch.Tensor, ts: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                  pos_w: torch.Tensor, ts_w: torch.Tensor) -> torch.Tensor:
    """rab for queries at positions `rows` (with next timestamps `ts_next`) and keys at `cols`."""
    dist = (rows[:, None] - cols[None, :]).clamp(0, pos_w.numel() - 1)
    return pos_w[dist] + ts_w[time_buckets(ts_next[:, None] - ts[None, :], ts_w.numel() - 1)]


def next_timestamps(ts: torch.Tensor, jag: Jagged) -> torch.Tensor:
    """Each row's next timestamp within its sequence; the last row of a sequence keeps its own."""
    T = ts.shape[0]
    nxt = torch.arange(1, T + 1, device=ts.device)
    ends = jag.offsets[1:]
    last = torch.zeros(T + 1, dtype=torch.bool, device=ts.device)
    last[ends] = True   # rows at a sequence end (empty sequences mark a row that is not theirs, harmlessly)
    nxt = torch.where(last[1:], nxt - 1, nxt).clamp(max=max(T - 1, 0))
    return ts[nxt] if T else ts


def _check(q, k, v, ts, jag: Jagged, pos_w, ts_w) -> None:
    T = q.shape[0]
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"expected q, k (T, H, Dqk) and v (T, H, Dv) of one T and H, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if ts.shape != (T,):
        raise ValueError(f"timestamps must be (T,) = ({T},), got {tuple(ts.shape)}")
    if pos_w.dim() != 1 or ts_w.dim() != 1 or pos_w.numel() < 1 or ts_w.numel() < 1:
        raise ValueError("position and time bias weights must be non-empty 1-D tensors")
    check_offsets(jag.offsets, T, jag.lengths)
    check_timestamps(ts)


def eager(q, k, v, ts, jag: Jagged, pos_w, ts_w, alpha: float) -> torch.Tensor:
    """Pad to dense, materialize the scores and the bias, mask, and multiply."""
    T, H, _ = q.shape
    B, N = len(jag.lengths), jag.max_len
    out = q.new_zeros(T, H, v.shape[-1])
    if T == 0 or B == 0:
        return out
    pos = torch.arange(N, device=q.device)
    lens = (jag.offsets[1:] - jag.offsets[:-1])
    valid = pos[None, :] < lens[:, None]                               # (B, N)
    idx = (jag.offsets[:-1, None] + pos[None, :]).clamp(max=T - 1)      # (B, N), padding reads any row
    pad = lambda x: torch.where(valid[..., None, None], x[idx], 0).transpose(1, 2)   # (B, H, N, D)
    qp, kp, vp = pad(q), pad(k), pad(v)
    scores = torch.matmul(qp, kp.transpose(-1, -2))                     # (B, H, N, N)
    scores.mul_(alpha)
    tsn = next_timestamps(ts, jag)[idx]
    tsp = ts[idx]
    for b in range(B):   # the bias is (N, N) per sequence: built one sequence at a time to bound its int64 temporaries
        scores[b] += relative_bias(tsn[b], tsp[b], pos, pos, pos_w, ts_w).to(scores.dtype)
    F.silu(scores, inplace=True)
    scores.mul_(1.0 / N)
    keep = (pos[:, None] >= pos[None, :])[None] & valid[:, None, :] & valid[:, :, None]   # (B, N, N)
    scores.masked_fill_(~keep[:, None], 0)
    o = torch.matmul(scores, vp).transpose(1, 2)                        # (B, N, H, Dv)
    return o[valid]


def memory_efficient(q, k, v, ts, jag: Jagged, pos_w, ts_w, alpha: float, block: int = QUERY_BLOCK) -> torch.Tensor:
    """Blockwise: the i-th query block of every sequence long enough to have one, at once,
    against its causal keys. Scores are (sequences, H, block, keys up to the block's end), never
    N x N. One pass per block index, not per sequence and block: looping per sequence launched
    tens of thousands of kernels a run at batch 32, and the rung ran at the host's pace
    (docs/measured.md, "The whole HSTU gate in one process at 64ad460")."""
    T, H, _ = q.shape
    out = q.new_zeros(T, H, v.shape[-1])
    N = jag.max_len
    if T == 0:
        return out
    tsn = next_timestamps(ts, jag)
    # Gather indices are built from the host's copy of the lengths and uploaded: no device sync.
    lengths = torch.tensor(jag.lengths, dtype=torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    for m0 in range(0, N, block):
        seqs = (lengths > m0).nonzero().flatten()
        n, s0 = lengths[seqs], starts[seqs]
        m1 = min(m0 + block, N)
        rows, cols = torch.arange(m0, m1), torch.arange(0, m1)      # this block's query and key positions
        row_ok = rows[None, :] < n[:, None]                          # (S, R): a padded row is not written
        r_idx = (s0[:, None] + rows[None, :]).clamp(max=T - 1)       # padding reads any row
        c_idx = s0[:, None] + torch.minimum(cols[None, :], n[:, None] - 1)   # a key past the end: causal-masked
        keep = row_ok.flatten().nonzero().flatten()
        r_dev, c_dev = r_idx.to(q.device), c_idx.to(q.device)
        s = torch.einsum("sqhd,skhd->shqk", q[r_dev], k[c_dev]) * alpha
        rows_d, cols_d = torch.arange(m0, m1, device=q.device), torch.arange(0, m1, device=q.device)
        bias = pos_w[(rows_d[:, None] - cols_d[None, :]).clamp(0, pos_w.numel() - 1)]          # (R, K)
        bias = bias + ts_w[time_buckets(tsn[r_dev][:, :, None] - ts[c_dev][:, None, :], ts_w.numel() - 1)]
        s = s + bias[:, None].to(s.dtype)
        s = F.silu(s) * (1.0 / N)
        s = s.masked_fill(rows_d[:, None] < cols_d[None, :], 0)
        o = torch.einsum("shqk,skhd->sqhd", s, v[c_dev])             # (S, R, H, Dv)
        keep_d = keep.to(q.device)
        out.index_copy_(0, r_dev.flatten()[keep_d], o.flatten(0, 1)[keep_d])
    return out


_FUSED = None


def load_fused():
    """Import the Triton kernel (Triton is needed only for it), or say why it cannot run."""
    global _FUSED
    if _FUSED is None:
        try:
            from .hstu_triton import hstu_attention_fwd
        except ImportError as e:
            raise RuntimeError(f"the fused HSTU attention needs Triton, which does not import here: {e}") from None
        _FUSED = hstu_attention_fwd
    return _FUSED


def fused(q, k, v, ts, jag: Jagged, pos_w, ts_w, alpha: float) -> torch.Tensor:
    fwd = _FUSED or load_fused()   # a global, not an import: compiled callers trace through it
    inv_n = jag.inv_n if jag.inv_n is not None else torch.full((1,), 1.0 / max(jag.max_len, 1), device=q.device)
    return fwd(q, k, v, ts, jag.offsets, jag.grid_len or jag.max_len, inv_n, pos_w, ts_w, alpha)


_IMPL = {"eager": eager, "memory_efficient": memory_efficient, "fused": fused}


def jagged_attention(q, k, v, ts, jag: Jagged, pos_w, ts_w, *, alpha: float, implementation: str = "eager",
                     validate: bool = True) -> torch.Tensor:
    """(T, H, Dv) HSTU attention of packed q, k (T, H, Dqk), v (T, H, Dv) and timestamps (T,).

    With `validate`, the offsets are checked on the host first (a clear JaggedError before any
    kernel runs); a model that checked its batch once passes validate=False.
    """
    if implementation not in _IMPL:
        raise ValueError(f"unknown HSTU attention implementation {implementation!r}; known: {IMPLEMENTATIONS}")
    if validate:
        _check(q, k, v, ts, jag, pos_w, ts_w)
    return _IMPL[implementation](q, k, v, ts, jag, pos_w, ts_w, alpha)


def attention_flops(lengths, heads: int, qk_dim: int, v_dim: int) -> float:
    """Multiply-adds of the causal QK^T and AV products, counted twice (FLOPs): what a kernel
    that skips padding and the upper triangle must do."""
    pairs = sum(n * (n + 1) // 2 for n in lengths)
    return 2.0 * heads * pairs * (qk_dim + v_dim)


__all__ = ["IMPLEMENTATIONS", "Jagged", "JaggedError", "attention_flops", "jagged_attention", "load_fused", "next_timestamps",
           "relative_bias", "time_buckets"]
