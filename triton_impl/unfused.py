"""Unfused attention in Triton: scores, softmax and P·V as separate kernels (the teaching baseline).

The textbook pipeline, one kernel per stage, every intermediate written to memory::

    S = scale · Q Kᵀ          (B, Hq, Nq, Nk) float32, causal entries -inf   _bmm_kernel
    P = exp(S - lse)          in place of S; lse = log Σ_j exp(S_ij)        _softmax_kernel
    O = P V                   (B, Hq, Nq, D)                                 _bmm_kernel

and the backward through the same stages, P rebuilt from the saved lse::

    dP = dO Vᵀ                (B, Hq, Nq, Nk) float32                        _bmm_kernel
    dS = P ∘ (dP - δ),  δ_i = Σ_d dO_id O_id    in place of dP              _softmax_bwd_kernel
    dQ = scale · dS K,  dK = scale · dSᵀ Q,  dV = Pᵀ dO                      _bmm_kernel

One batched matmul kernel serves all six products: transposes are views (swapped strides), GQA
is read from the head counts of its operands (a K/V head broadcast over its query heads, or dK/dV
summed over them inside the reduction, so no atomics), and with causal it skips the blocks of a
triangular operand that are known zeros. Compared with the fused kernels (``fwd.py``, ``bwd.py``)
this reads and writes Nq·Nk float32 values per head several times over: memory grows as O(N²)
and time is bound by those writes. The front door refuses sizes whose score buffers would not fit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton_impl._common import dot_acc
from triton_impl._config import interpreting

# What the rows of a matmul's A operand look like under a causal mask (top-left aligned).
DENSE, ZERO_RIGHT, ZERO_LEFT = 0, 1, 2  # A[i, j] = 0 for j > i (P, dS) / for j < i (Pᵀ, dSᵀ)


@triton.jit(do_not_specialize=["M", "N", "K"])
def _bmm_kernel(
    A, B, C,
    stride_ab, stride_ah, stride_am, stride_ak,
    stride_bb, stride_bh, stride_bk, stride_bn,
    stride_cb, stride_ch, stride_cm, stride_cn,
    H, M, N, K, REDUCE, B_DIV, alpha,
    A_ZEROS: tl.constexpr, MASK_UPPER: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """C[b, h] = alpha · Σ_{r < REDUCE} A[b, ha] @ B[b, ha // B_DIV] with ha = h · REDUCE + r.

    One program computes one (BLOCK_M, BLOCK_N) tile of one (b, h) in float32, A's tile cast to
    B's dtype before each dot. MASK_UPPER writes -inf where column > row (causal scores) and skips
    the dots of tiles entirely above the diagonal; A_ZEROS (``DENSE``, ``ZERO_RIGHT``,
    ``ZERO_LEFT``) limits the reduction to the columns where the tile's rows of A can be non-zero.
    """
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    pid = tl.program_id(0)
    bh = pid // (num_m * num_n)
    pid_m = (pid // num_n) % num_m
    pid_n = pid % num_n
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)

    lo = 0
    hi = K
    if A_ZEROS == 1:
        hi = tl.minimum(K, (pid_m + 1) * BLOCK_M)
    if A_ZEROS == 2:
        lo = pid_m * BLOCK_M
    if MASK_UPPER:
        hi = tl.where(pid_n * BLOCK_N > pid_m * BLOCK_M + BLOCK_M - 1, lo, hi)

    # One head's score matrix may pass 2**31 entries: row and reduction offsets in int64.
    rows = offs_m.to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for r in range(REDUCE):
        ha = h * REDUCE + r
        a_base = A + b * stride_ab + ha * stride_ah + rows[:, None] * stride_am
        b_base = B + b * stride_bb + (ha // B_DIV) * stride_bh + offs_n[None, :] * stride_bn
        for start_k in range(lo, hi, BLOCK_K):
            ks = start_k + offs_k
            a = tl.load(a_base + ks.to(tl.int64)[None, :] * stride_ak,
                        mask=(offs_m[:, None] < M) & (ks[None, :] < K), other=0.0)
            bt = tl.load(b_base + ks[:, None] * stride_bk,
                         mask=(ks[:, None] < K) & (offs_n[None, :] < N), other=0.0)
            acc = dot_acc(a.to(bt.dtype), bt, acc)

    acc = acc * alpha
    if MASK_UPPER:
        acc = tl.where(offs_n[None, :] > offs_m[:, None], float("-inf"), acc)
    c_ptrs = C + b * stride_cb + h * stride_ch + rows[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit(do_not_specialize=["N_ROWS", "N_COLS"])
def _softmax_kernel(
    S, Lse, N_ROWS, N_COLS,
    HAVE_LSE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Rows of the contiguous float32 (N_ROWS, N_COLS) S become P = exp(S - lse), in place.

    Without HAVE_LSE a first sweep over the row computes lse = m + log(l) with a running max m
    and sum l (the online softmax, stable for any row length) and stores it; with HAVE_LSE (the
    backward) the saved lse is read instead. A row with no visible key gets lse = -inf and P = 0.
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N_ROWS
    base = S + rows.to(tl.int64)[:, None] * N_COLS
    offs_n = tl.arange(0, BLOCK_N)
    if HAVE_LSE:
        lse = tl.load(Lse + rows, mask=row_ok, other=0.0)
    else:
        m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l = tl.zeros([BLOCK_M], dtype=tl.float32)
        for start_n in range(0, N_COLS, BLOCK_N):
            cols = start_n + offs_n
            s = tl.load(base + cols[None, :], mask=row_ok[:, None] & (cols[None, :] < N_COLS),
                        other=float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: add zeros
            l = l * tl.exp(m - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), 1)
            m = m_new
        lse = m + tl.log(tl.where(row_ok, l, 1.0))  # rows past the end: no log(0)
        tl.store(Lse + rows, lse, mask=row_ok)
    lse_safe = tl.where(lse == float("-inf"), 0.0, lse)
    for start_n in range(0, N_COLS, BLOCK_N):
        cols = start_n + offs_n
        ok = row_ok[:, None] & (cols[None, :] < N_COLS)
        s = tl.load(base + cols[None, :], mask=ok, other=float("-inf"))
        tl.store(base + cols[None, :], tl.exp(s - lse_safe[:, None]), mask=ok)


@triton.jit(do_not_specialize=["N_ROWS", "NQ", "N_COLS"])
def _softmax_bwd_kernel(
    P, DS, O, DO,
    stride_ob, stride_oh, stride_om, stride_db, stride_dh, stride_dm,
    N_ROWS, H, NQ, N_COLS,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dS = P ∘ (dP - δ) in place of dP (DS), δ_i = Σ_d dO_id O_id; P, DS (N_ROWS, N_COLS) float32.

    Row ``i`` of the flattened (B · H · NQ) rows is query ``i % NQ`` of head ``(i // NQ) % H``
    of batch ``i // (H · NQ)`` in O and dO (B, H, NQ, HEAD_DIM).
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N_ROWS
    b = (rows // (H * NQ)).to(tl.int64)
    h = ((rows // NQ) % H).to(tl.int64)
    i = (rows % NQ).to(tl.int64)
    o_rows = O + b * stride_ob + h * stride_oh + i * stride_om
    do_rows = DO + b * stride_db + h * stride_dh + i * stride_dm
    delta = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_d in range(0, HEAD_DIM, BLOCK_D):
        ds = start_d + tl.arange(0, BLOCK_D)
        ok = row_ok[:, None] & (ds[None, :] < HEAD_DIM)
        o = tl.load(o_rows[:, None] + ds[None, :], mask=ok, other=0.0).to(tl.float32)
        do = tl.load(do_rows[:, None] + ds[None, :], mask=ok, other=0.0).to(tl.float32)
        delta += tl.sum(o * do, 1)

    offset = rows.to(tl.int64)[:, None] * N_COLS
    for start_n in range(0, N_COLS, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        ok = row_ok[:, None] & (cols[None, :] < N_COLS)
        p = tl.load(P + offset + cols[None, :], mask=ok, other=0.0)
        dp = tl.load(DS + offset + cols[None, :], mask=ok, other=0.0)
        tl.store(DS + offset + cols[None, :], p * (dp - delta[:, None]), mask=ok)


def _bmm(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha: float = 1.0,
    a_zeros: int = DENSE, mask_upper: bool = False,
) -> torch.Tensor:
    """c[b, h] = alpha · Σ_r a[b, h · R + r] @ b[b, (h · R + r) // (Ha / Hb)], written into c.

    a: (B, Ha, M, K), b: (B, Hb, K, N), c: (B, Hc, M, N), any strides (a transpose is a view).
    R = Ha / Hc: with Ha = Hc each c head reads its own a head and b's head is shared by
    Ha / Hb of them (GQA broadcast); with Hc < Ha each c head sums R consecutive a heads (GQA
    gradients of K and V). ``a_zeros`` and ``mask_upper`` as in :func:`_bmm_kernel`.
    """
    batch, ha, m, k = a.shape
    hb, n, hc = b.shape[1], b.shape[3], c.shape[1]
    if interpreting():
        bm, bn, bk, warps, stages = 64, 64, 64, 4, 1
    else:
        bm = 128 if m >= 128 else 64
        bn = min(128, max(16, triton.next_power_of_2(n)))
        bk, warps, stages = 32, 8 if bm * bn >= 128 * 128 else 4, 3
    grid = (batch * hc * triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _bmm_kernel[grid](
        a, b, c, *a.stride(), *b.stride(), *c.stride(),
        hc, m, n, k, ha // hc, ha // hb, alpha,
        A_ZEROS=a_zeros, MASK_UPPER=mask_upper,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
    )
    return c


def _row_blocks(n_cols: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the row kernels: up to 1024 columns a step, 4096 elements a tile."""
    bn = min(max(triton.next_power_of_2(n_cols), 16), 1024)
    return max(4096 // bn, 1), bn


def softmax_(s: torch.Tensor, lse: torch.Tensor, have_lse: bool) -> None:
    """Scores s (B, H, Nq, Nk) float32 contiguous -> P in place; lse (B, H, Nq) read or written."""
    n_rows, n_cols = s.numel() // s.shape[-1], s.shape[-1]
    bm, bn = _row_blocks(n_cols)
    _softmax_kernel[(triton.cdiv(n_rows, bm),)](
        s, lse, n_rows, n_cols, HAVE_LSE=have_lse, BLOCK_M=bm, BLOCK_N=bn,
    )


def _scores_to_probs(
    q: torch.Tensor, k: torch.Tensor, causal: bool, scale: float, lse: torch.Tensor, have_lse: bool,
) -> torch.Tensor:
    """P (B, Hq, Nq, Nk) float32 from scores scale · q kᵀ; lse read (have_lse) or written."""
    b, h, nq, _ = q.shape
    s = torch.empty((b, h, nq, k.shape[2]), dtype=torch.float32, device=q.device)
    _bmm(q, k.transpose(-2, -1), s, scale, mask_upper=causal)
    softmax_(s, lse, have_lse)
    return s


def unfused_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward: scores, softmax, P·V.

    Args:
        q: (B, Hq, Nq, D); k, v: (B, Hkv, Nk, D), Hq % Hkv == 0; last-dim stride 1, other strides
            free. causal: top-left aligned causal mask. scale: score scale.

    Returns:
        out (B, Hq, Nq, D) contiguous in q's dtype; lse (B, Hq, Nq) float32, natural log.
    """
    b, h, nq, d = q.shape
    lse = torch.empty((b, h, nq), dtype=torch.float32, device=q.device)
    p = _scores_to_probs(q, k, causal, scale, lse, have_lse=False)
    out = torch.empty((b, h, nq, d), dtype=q.dtype, device=q.device)
    _bmm(p, v, out, a_zeros=ZERO_RIGHT if causal else DENSE)
    return out, lse


def unfused_bwd(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, causal: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward: P rebuilt from lse, then dP, dS and the three gradient products.

    Args:
        dout, q, out: (B, Hq, Nq, D); k, v: (B, Hkv, Nk, D); last-dim stride 1.
        lse: (B, Hq, Nq) float32 from the forward. causal, scale: as in the forward.

    Returns:
        dq (B, Hq, Nq, D), dk and dv (B, Hkv, Nk, D), contiguous, in the inputs' dtype; dk and dv
        summed over the query heads of each GQA group.
    """
    b, h, nq, d = q.shape
    p = _scores_to_probs(q, k, causal, scale, lse.contiguous(), have_lse=True)
    ds = torch.empty_like(p)
    _bmm(dout, v.transpose(-2, -1), ds)
    n_rows, n_cols = p.numel() // p.shape[-1], p.shape[-1]
    bm, bn = _row_blocks(n_cols)
    _softmax_bwd_kernel[(triton.cdiv(n_rows, bm),)](
        p, ds, out, dout, *out.stride()[:3], *dout.stride()[:3], n_rows, h, nq, n_cols,
        HEAD_DIM=d, BLOCK_D=min(triton.next_power_of_2(d), max(4096 // bm, 16)), BLOCK_M=bm,
        BLOCK_N=bn,
    )
    lower, upper = (ZERO_RIGHT, ZERO_LEFT) if causal else (DENSE, DENSE)
    dq = _bmm(ds, k, torch.empty(q.shape, dtype=q.dtype, device=q.device), scale, lower)
    dk = _bmm(ds.transpose(-2, -1), q, torch.empty(k.shape, dtype=k.dtype, device=k.device),
              scale, upper)
    dv = _bmm(p.transpose(-2, -1), dout, torch.empty(v.shape, dtype=v.dtype, device=v.device),
              1.0, upper)
    return dq, dk, dv
