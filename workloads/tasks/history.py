"""H-A inputs: synthetic jagged user histories (item ids, timestamps, actions) for HSTU.

Seed paper 1, Table II: the synthetic histories are 4507-5121 items long, 4813.9 on average;
Table III: batch 32. The sequence-length sweep (1K-8K, "up to 15x on 8K sequences") fixes
every history of a batch at one length. Histories are jagged: values of all sequences packed
as (sum of lengths, ...) with `offsets` (B + 1, starting at 0) marking where each one starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .lengths import LengthDist

HISTORY = LengthDist(4507, 5121, 4813.9, "seed paper 1, Table II, HSTU synthetic history")
MAX_BATCH = 32   # seed paper 1, Table III
SWEEP = (1024, 2048, 4096, 8192)

# Histories shrink by this factor below paper scale, the sweep with them: the tiny model runs
# the same code paths over ~75-item histories in milliseconds on one CPU thread.
LENGTH_DIVISOR = {"tiny": 64, "small": 4, "paper": 1}

# Gaps between a user's consecutive actions: log-uniform from one second to about a month,
# so the time bias's log buckets (0.301 wide in natural log) are all visited.
_GAP_RANGE_S = (1.0, 3e6)
_T0 = 1_700_000_000   # an epoch second: absolute timestamps as a logging system writes them


class JaggedError(ValueError):
    """Offsets that do not describe the values they index; the message says what is wrong."""


@dataclass(frozen=True)
class HistoryTask:
    name: str
    lengths: LengthDist

    def lengths_for(self, scale: str) -> LengthDist:
        k = LENGTH_DIVISOR[scale]
        if k == 1:
            return self.lengths
        d = self.lengths
        return LengthDist(max(1, d.lo // k), max(1, d.hi // k), max(1.0, d.mean / k), f"{d.source}, divided by {k}")


def _sweep_task(n: int) -> HistoryTask:
    # "H-A-8K", not "H-A@8K": pytest's -k takes letters, digits and "-", so `-k H-A-8K` selects it.
    return HistoryTask(f"H-A-{n // 1024}K", LengthDist(n, n, float(n), f"seed paper 1, Section V sweep at {n}"))


TASKS: dict[str, HistoryTask] = {
    "H-A": HistoryTask("H-A", HISTORY),
    **{t.name: t for t in (_sweep_task(n) for n in SWEEP)},
}


def check_offsets(offsets: torch.Tensor, total: int, lengths: list[int] | tuple[int, ...] | None = None) -> None:
    """Raise JaggedError unless `offsets` is a 1-D integer tensor that starts at 0, never
    decreases, and ends at `total` (the number of packed rows), and agrees with `lengths`
    (the host copy the engines plan their work by) when given. Reads offsets on the host: call it
    where a batch is made or enters a public entry point, never inside a timed loop."""
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise JaggedError(f"offsets must be a 1-D tensor of batch + 1 entries, got shape {tuple(offsets.shape)}")
    if offsets.dtype not in (torch.int32, torch.int64):
        raise JaggedError(f"offsets must be int32 or int64, got {offsets.dtype}")
    off = offsets.detach().cpu().tolist()
    if off[0] != 0:
        raise JaggedError(f"offsets must start at 0, got offsets[0] = {off[0]}")
    drops = [i for i in range(1, len(off)) if off[i] < off[i - 1]]
    if drops:
        i = drops[0]
        raise JaggedError(f"offsets must not decrease: offsets[{i}] = {off[i]} < offsets[{i - 1}] = {off[i - 1]}")
    if off[-1] != total:
        raise JaggedError(f"offsets end at {off[-1]} but the values have {total} rows")
    if lengths is not None:
        got = [b - a for a, b in zip(off, off[1:])]
        if list(lengths) != got:
            raise JaggedError(f"lengths {list(lengths)} disagree with the offsets, which give {got}")


TIMESTAMP_SPAN = 2**35   # seconds (~1089 years): the fused kernel splits each gap into two fp32-exact parts


def check_timestamps(timestamps: torch.Tensor) -> None:
    """Raise ValueError unless `timestamps` is an integer tensor whose values span less than
    TIMESTAMP_SPAN, within which every gap the kernels bucket is exact. Reads on the host."""
    if timestamps.dtype.is_floating_point or timestamps.dtype == torch.bool:
        raise ValueError(f"timestamps must be integer seconds, got {timestamps.dtype}")
    if timestamps.numel():
        span = int(timestamps.max() - timestamps.min())
        if span >= TIMESTAMP_SPAN:
            raise ValueError(f"timestamps span {span} s; the limit is 2^35 = {TIMESTAMP_SPAN} s")


def offsets_of(lengths, device=None) -> torch.Tensor:
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=off[1:])
    return torch.from_numpy(off).to(device)


@dataclass
class HistoryBatch:
    """A jagged batch of user histories; the last item of each is the candidate to rank."""

    item_ids: torch.Tensor      # (T,) int64
    actions: torch.Tensor       # (T,) int64; the candidate's is `num_actions` (unknown yet)
    timestamps: torch.Tensor    # (T,) int64 seconds, non-decreasing within each history
    offsets: torch.Tensor       # (B + 1,) int64
    lengths: tuple[int, ...]    # host copy of the offsets' differences: engines plan by it without a sync
    task: str
    # The later layers see each history's most recent `limit` items: rows kept, and their offsets.
    keep_index: torch.Tensor | None = None
    kept_offsets: torch.Tensor | None = None
    kept_lengths: tuple[int, ...] | None = None

    new_tokens = 0   # nothing is generated: one forward pass ranks and retrieves

    @property
    def batch(self) -> int:
        return len(self.lengths)

    @property
    def max_len(self) -> int:
        return max(self.lengths, default=0)

    @property
    def prompt_lengths(self) -> list[int]:
        """The input lengths, under the name results report for every workload."""
        return list(self.lengths)

    @property
    def total(self) -> int:
        return int(sum(self.lengths))

    def to(self, device) -> "HistoryBatch":
        mv = lambda t: None if t is None else t.to(device)
        return HistoryBatch(mv(self.item_ids), mv(self.actions), mv(self.timestamps), mv(self.offsets), self.lengths,
                            self.task, mv(self.keep_index), mv(self.kept_offsets), self.kept_lengths)


def truncation(lengths, limit: int):
    """Rows (in the packed layout) of each history's last `limit` items, and their lengths."""
    kept = [min(n, limit) for n in lengths]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else np.zeros(0, np.int64)
    index = np.concatenate([np.arange(s + n - k, s + n) for s, n, k in zip(starts, lengths, kept)]) if kept else np.zeros(0)
    return torch.from_numpy(index.astype(np.int64)), tuple(int(k) for k in kept)


def batch_from_lengths(lengths, *, num_items: int, num_actions: int, rng: np.random.Generator,
                       task: str = "custom", limit: int | None = None, device=None) -> HistoryBatch:
    lengths = tuple(int(n) for n in lengths)
    if not lengths or min(lengths) < 1:
        raise ValueError(f"history lengths must be >= 1 (the last item is the candidate), got {list(lengths)}")
    T = sum(lengths)
    items = rng.integers(0, num_items, size=T)
    actions = rng.integers(0, num_actions, size=T)
    gaps = np.exp(rng.uniform(np.log(_GAP_RANGE_S[0]), np.log(_GAP_RANGE_S[1]), size=T)).astype(np.int64)
    ts = np.empty(T, dtype=np.int64)
    s = 0
    for n in lengths:
        ts[s:s + n] = _T0 + rng.integers(0, 10**7) + np.cumsum(gaps[s:s + n])
        s += n
        actions[s - 1] = num_actions   # the candidate's engagement is what ranking predicts
    b = HistoryBatch(torch.from_numpy(items), torch.from_numpy(actions), torch.from_numpy(ts), offsets_of(lengths),
                     lengths, task)
    if limit is not None:
        b.keep_index, b.kept_lengths = truncation(lengths, limit)
        b.kept_offsets = offsets_of(b.kept_lengths)
    check_offsets(b.offsets, T, lengths)
    return b.to(device) if device is not None else b


def make_batch(task: str, scale: str, batch: int, *, num_items: int, num_actions: int, max_len: int,
               limit: int | None, device=None, seed: int = 0) -> HistoryBatch:
    """A seeded batch of `batch` histories with lengths drawn from the task's distribution."""
    if task not in TASKS:
        raise ValueError(f"unknown HSTU task {task!r}; known: {sorted(TASKS)}")
    if batch < 1:
        raise ValueError(f"batch size must be >= 1, got {batch}")
    dist = TASKS[task].lengths_for(scale)
    if dist.hi > max_len:
        raise ValueError(f"{task} at {scale} scale draws histories up to {dist.hi} items; the model takes {max_len}")
    rng = np.random.default_rng([seed, batch, dist.hi])
    return batch_from_lengths(dist.draw(batch, rng), num_items=num_items, num_actions=num_actions, rng=rng,
                              task=task, limit=limit, device=device)
