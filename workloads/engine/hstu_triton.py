"""The fused HSTU attention kernel: jagged layout, relative bias built in the kernel.

One program per (query block, sequence x head). It reads its sequence's bounds from the
offsets, so padding is never stored or computed; it walks only the key blocks at or before its
query block (causal), and builds each tile's bias from the timestamps and the two bias weight
vectors in registers: no N x N tensor of scores or bias ever reaches memory. Without a softmax
there is no running maximum or rescaling: the tiles' products simply add up.

On CPU tensors the kernel runs under Triton's interpreter (the same source, executed with
NumPy), which is how the CPU tests check its arithmetic.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .hstu_attention import BUCKET_WIDTH


@triton.jit
def _approx(op: tl.constexpr, x, MUFU: tl.constexpr):
    """PTX's MUFU approximation of `op` (lg2, tanh) on fp32, one instruction each; without
    MUFU (Triton's interpreter runs no PTX) the exact function, so the CPU tests check the
    arithmetic around it."""
    if MUFU:
        return tl.inline_asm_elementwise(op + ".approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    elif op == "lg2":
        return tl.log2(x)
    else:
        return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _part_hi(rel):
    # Both parts fit int32 within the 2^35 s span: a 32-bit int-to-float conversion, where a
    # 64-bit one runs at a fraction of its rate.
    return (rel >> 12).to(tl.int32).to(tl.float32)


@triton.jit
def _part_lo(rel):
    return (rel & 4095).to(tl.int32).to(tl.float32)


@triton.jit
def _tile(acc, q, k_ptrs, v_ptrs, TS, POS_W, TS_W, start, base, tsn_hi, tsn_lo, offs_m, n0, hi, NUM_POS, NUM_BUCKETS,
          alpha: tl.constexpr, bucket_width: tl.constexpr, BLOCK_N: tl.constexpr, DIAG: tl.constexpr,
          FAST_MATH: tl.constexpr, MUFU: tl.constexpr, UPCAST_DOT: tl.constexpr, IEEE_DOT: tl.constexpr):
    """One (BLOCK_M x BLOCK_N) tile of scores into the accumulator. Off the diagonal (DIAG
    false) every key is in the sequence and before every query row, so nothing is masked."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    if DIAG:
        n_ok = offs_n < hi
        k = tl.load(k_ptrs, mask=n_ok[:, None], other=0.0)
        ts_k = tl.load(TS + start + offs_n, mask=n_ok, other=0) - base
        v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs)
        ts_k = tl.load(TS + start + offs_n) - base
        v = tl.load(v_ptrs)
    if UPCAST_DOT:
        s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
    elif IEEE_DOT:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    # The timestamp gap in fp32 without int64 or int-to-float work per score: each timestamp
    # (relative to the sequence's first) is hi * 4096 + lo, both parts exact in fp32, so
    # (hi_i - hi_j) * 4096 + (lo_i - lo_j) is one rounding of the exact gap: the fp32 value
    # eager's cast gives, for spans under 2^35 s (checked where the batch is).
    gap = (tsn_hi[:, None] - _part_hi(ts_k)[None, :]) * 4096.0 + (tsn_lo[:, None] - _part_lo(ts_k)[None, :])
    gap = tl.maximum(tl.abs(gap), 1.0)
    if FAST_MATH:
        # lg2.approx (one MUFU op) for libdevice's ~20-op logf, and the floor by the float
        # magic number for a float-to-int conversion (a quarter of the ALU rate): in
        # [2^23, 2^24) floats are the integers, so y - 0.5 + 1.5 * 2^23 rounds to
        # 1.5 * 2^23 + floor(y), read from its bits. Both move a bucket only for a gap within
        # ~1e-7 of a bucket edge.
        y = _approx("lg2", gap, MUFU) * (0.6931471805599453 / bucket_width) - 0.5
        bucket = (y + 12582912.0).to(tl.int32, bitcast=True) - 0x4B400000
        # lg2.approx(1) a hair under 0 would read bucket -1: clamp, as a gap of 1 s is common.
        bucket = tl.maximum(bucket, 0)
    else:
        bucket = (tl.log(gap) / bucket_width).to(tl.int32)
    bucket = tl.minimum(bucket, NUM_BUCKETS)
    dist = offs_m[:, None] - offs_n[None, :]
    if DIAG:
        pidx = tl.minimum(tl.maximum(dist, 0), NUM_POS - 1)
    else:   # every key precedes every row: dist >= 1
        pidx = tl.minimum(dist, NUM_POS - 1)
    # The indices are clamped into the tables, so the gathers need no mask.
    s = s * alpha + tl.load(TS_W + bucket).to(tl.float32) + tl.load(POS_W + pidx).to(tl.float32)
    if FAST_MATH:
        # SiLU(s) = h + h tanh(h), h = s / 2: one MUFU op (tanh.approx) where exp and a
        # division take two.
        h = s * 0.5
        p = h + h * _approx("tanh", h, MUFU)
    else:
        p = s / (1.0 + tl.exp(-s))
    if DIAG:
        p = tl.where((dist >= 0) & n_ok[None, :], p, 0.0)
    if UPCAST_DOT:
        acc += tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
    elif IEEE_DOT:
        acc += tl.dot(p, v, input_precision="ieee")
    else:
        acc += tl.dot(p.to(v.dtype), v)
    return acc


def _hstu_fwd(Q, K, V, TS, OFF, POS_W, TS_W, OUT,
              stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
              H, INV_N, NUM_POS, NUM_BUCKETS,
              # Constants, not arguments: a float argument is fp32 from a plain launch but fp64
              # from a compiled graph (inductor types it so), which made every score tile fp64.
              alpha: tl.constexpr, bucket_width: tl.constexpr,
              DQK: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              FAST_MATH: tl.constexpr, MUFU: tl.constexpr, UPCAST_DOT: tl.constexpr, IEEE_DOT: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start = tl.load(OFF + b).to(tl.int64)
    L = (tl.load(OFF + b + 1) - start).to(tl.int32)
    m0 = pid_m * BLOCK_M
    if m0 < L:   # blocks past the sequence's end have nothing to do
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < L
        d_qk = tl.arange(0, DQK)
        d_v = tl.arange(0, DV)
        rows = start + offs_m
        q = tl.load(Q + rows[:, None] * stride_qt + h * stride_qh + d_qk[None, :], mask=m_ok[:, None], other=0.0)
        base = tl.load(TS + start)
        tsn = tl.load(TS + start + tl.minimum(offs_m + 1, L - 1), mask=m_ok, other=0) - base
        tsn_hi = _part_hi(tsn)
        tsn_lo = _part_lo(tsn)
        acc = tl.zeros([BLOCK_M, DV], dtype=tl.float32)
        cols = start + tl.arange(0, BLOCK_N)
        k_ptrs = K + cols[:, None] * stride_kt + h * stride_kh + d_qk[None, :]
        v_ptrs = V + cols[:, None] * stride_vt + h * stride_vh + d_v[None, :]
        # Causal: the key blocks wholly before this query block, then those on its diagonal
        # (BLOCK_N divides BLOCK_M, so no block straddles the two).
        for n0 in range(0, m0, BLOCK_N):
            acc = _tile(acc, q, k_ptrs + n0 * stride_kt, v_ptrs + n0 * stride_vt, TS, POS_W, TS_W, start, base,
                        tsn_hi, tsn_lo, offs_m, n0, L, NUM_POS, NUM_BUCKETS, alpha, bucket_width, BLOCK_N, False,
                        FAST_MATH, MUFU, UPCAST_DOT, IEEE_DOT)
        hi = tl.minimum(m0 + BLOCK_M, L)
        for n0 in range(m0, hi, BLOCK_N):
            acc = _tile(acc, q, k_ptrs + n0 * stride_kt, v_ptrs + n0 * stride_vt, TS, POS_W, TS_W, start, base,
                        tsn_hi, tsn_lo, offs_m, n0, hi, NUM_POS, NUM_BUCKETS, alpha, bucket_width, BLOCK_N, True,
                        FAST_MATH, MUFU, UPCAST_DOT, IEEE_DOT)
        # 1 / N scales every score alike: once on the sums rather than on each score.
        acc = acc * tl.load(INV_N)
        tl.store(OUT + rows[:, None] * stride_ot + h * stride_oh + d_v[None, :], acc.to(OUT.dtype.element_ty),
                 mask=m_ok[:, None])


def interpreting() -> bool:
    """Whether Triton runs kernels with its interpreter (TRITON_INTERPRET=1 when triton was
    first imported: it decorates its own library functions for one mode only)."""
    try:
        from triton import knobs
    except ImportError:   # triton before 3.4 read the variable directly
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return bool(knobs.runtime.interpret)


_INTERPRETING = interpreting()

# On a GPU the tile shape is tuned once per pair of head dims (the first call, which the
# suite's warm-up rounds make); the interpreter takes the first shape as it is.
_CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in ((64, 64, 4, 2), (128, 64, 8, 3), (64, 64, 8, 3), (128, 32, 4, 3))]


_kernel = triton.jit(_hstu_fwd)
# Head dims under 64 are the tiny test models': tuning them would compile every shape for each of
# their many (dims, dtype) keys, and no figure is measured at them. They take the first shape from
# a one-shape tuner (a second kernel object, not an early-prune hook: torch 2.11's compiler fails
# to trace a tuner that has one, "ListVariable ... already tracked for mutation").
_small = _kernel
if not _INTERPRETING:
    _small = triton.autotune(_CONFIGS[:1], key=["DQK", "DV"])(triton.jit(_hstu_fwd))
    _kernel = triton.autotune(_CONFIGS, key=["DQK", "DV"])(_kernel)


def _launcher(dqk: int, dv: int):
    return _kernel if max(dqk, dv) >= 64 else _small


def _pow2(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


def hstu_attention_fwd(q, k, v, ts, offsets, grid_len: int, inv_n: torch.Tensor, pos_w, ts_w, alpha: float) -> torch.Tensor:
    """`grid_len`: query rows each sequence may have (the batch's longest, or its bucket);
    `inv_n`: (1,) float32, 1 / the batch's longest length, the output's scale."""
    T, H, DQK = q.shape
    DV = v.shape[-1]
    if not (_pow2(DQK) and _pow2(DV)):
        raise ValueError(f"the fused kernel takes head dims that are powers of two >= 16, got qk {DQK}, v {DV}")
    # Row and head strides are the kernel's arguments (q, k, v are views into one projection);
    # only the head dim must be dense.
    q, k, v = [t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v)]
    out = torch.empty(T, H, DV, dtype=v.dtype, device=v.device)
    B = offsets.numel() - 1
    if T == 0 or B == 0 or grid_len == 0:
        return out.zero_()
    grid = lambda meta: (triton.cdiv(grid_len, meta["BLOCK_M"]), B * H)   # noqa: E731
    tiles = {} if not _INTERPRETING else dict(_CONFIGS[0].kwargs)
    if q.device.type != "cuda" and not _INTERPRETING:
        raise RuntimeError("the fused HSTU kernel runs on CUDA tensors, or on CPU tensors under Triton's "
                           "interpreter (TRITON_INTERPRET=1 before triton is imported)")
    _launcher(DQK, DV)[grid](
        q, k, v, ts, offsets, pos_w, ts_w, out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        H, inv_n, pos_w.numel(), ts_w.numel() - 1,
        alpha=float(alpha), bucket_width=float(BUCKET_WIDTH), DQK=DQK, DV=DV, **tiles,
        # Half-precision tiles take the fast arithmetic (its error is far under bf16's rounding
        # of P); fp32 keeps libdevice's log and an exact SiLU, as eager computes them.
        FAST_MATH=v.dtype != torch.float32, MUFU=not _INTERPRETING,
        # Triton 3.9's interpreter multiplies bf16 tiles wrongly (errors of 1e10 on a 16 x 16
        # product); there the tiles go up to fp32 first, exactly, after the same rounding of P.
        UPCAST_DOT=_INTERPRETING and v.dtype != torch.float32,
        # fp32 tiles multiply in fp32, as eager's matmuls do: Triton's default for them is TF32
        # (10-bit mantissa), which moves outputs by ~1e-3 relative.
        IEEE_DOT=v.dtype == torch.float32,
    )
    return out


def compile_ahead(arch: int = 90, dqk: int = 128, dv: int = 128, dtype: str = "bf16") -> list[dict]:
    """Compile the kernel for a CUDA architecture (90: H100) in every tuning shape, without a
    GPU: Triton's bundled compiler and ptxas catch type, shape and lowering errors on any
    machine. Needs the compiling mode (TRITON_INTERPRET unset). Returns each shape's shared
    memory in bytes, which must fit the architecture's (228 KB per SM on an H100)."""
    import inspect

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if _INTERPRETING:
        raise RuntimeError("compile_ahead needs Triton in its compiling mode (TRITON_INTERPRET unset)")
    names = list(inspect.signature(_hstu_fwd).parameters)
    types = {"Q": f"*{dtype}", "K": f"*{dtype}", "V": f"*{dtype}", "OUT": f"*{dtype}", "POS_W": f"*{dtype}",
             "TS_W": f"*{dtype}", "TS": "*i64", "OFF": "*i64", "INV_N": "*fp32"}
    out = []
    for cfg in _CONFIGS:
        const = {"alpha": dqk ** -0.5, "bucket_width": BUCKET_WIDTH, "DQK": dqk, "DV": dv, "UPCAST_DOT": False,
                 "FAST_MATH": dtype != "fp32", "MUFU": True,
                 "IEEE_DOT": dtype == "fp32", **cfg.kwargs}
        sig = {n: "constexpr" if n in const else types.get(n, "i32") for n in names}
        src = ASTSource(triton.jit(_hstu_fwd), sig, constexprs={(names.index(k),): v for k, v in const.items()})
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
        out.append({**cfg.kwargs, "num_warps": cfg.num_warps, "shared": k.metadata.shared})
    return out
