"""FlashAttention-2 forward in Triton: inner loop, kernel, launcher.

Each program owns BLOCK_M query rows of one (batch, head) and streams the keys and values of the
matching K/V head in BLOCK_N tiles, keeping a running row max ``m``, row sum ``l`` and output
accumulator in float32 (online softmax). Scores are scaled by ``scale * log2(e)`` so the
exponentials are ``exp2``. With ``causal``, key tiles entirely visible to the query tile run
without mask arithmetic, the tiles crossing the diagonal (and the key tail) run masked, and tiles
entirely above the diagonal are never visited.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference import RopeTables
from triton_impl._common import dot, dot_acc, key_ranges, load_tile, query_tile, rope_tile
from triton_impl._config import FWD, autotuned, block_d, bucket, launch

LOG2E = 1.4426950408889634


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
    offs_m, offs_d, lo, hi, NK, qk_scale, Cos, Sin, N_POS, PREFIX,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, ROPE: tl.constexpr,
):
    """Fold key tiles [lo, hi) into (acc, l_i, m_i); MASKED applies the key-tail and causal masks,
    ROPE rotates each key tile right after loading it."""
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :]
        k = load_tile(k_ptrs, cols, NK, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        if ROPE:
            k = rope_tile(k.to(tl.float32), cols, Cos, Sin, N_POS, PREFIX,
                          BLOCK_N, HEAD_DIM // 2, BLOCK_D, False).to(q.dtype)
        qk = dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            keep = cols[None, :] < NK
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :]
        v = load_tile(v_ptrs, cols, NK, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        acc = dot_acc(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@autotuned(FWD, "m")
@triton.jit(do_not_specialize=["NQ", "NK", "Q_BUCKET", "K_BUCKET", "N_POS", "PREFIX"])
def _fwd_kernel(
    Q, K, V, Out, Lse, Cos, Sin,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    H, GROUP, NQ, NK, qk_scale, Q_BUCKET, K_BUCKET, N_POS, PREFIX,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, ROPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bh, b, h, hk, start_m = query_tile(NQ, H, GROUP, BLOCK_M, CAUSAL)

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m[:, None] < NQ
    d_ok = offs_d[None, :] < HEAD_DIM
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :]
    q = load_tile(q_ptrs, offs_m, NQ, offs_d, HEAD_DIM, BLOCK_D, True)
    if ROPE:
        q = rope_tile(q.to(tl.float32), offs_m, Cos, Sin, N_POS, PREFIX,
                      BLOCK_M, HEAD_DIM // 2, BLOCK_D, False).to(Q.dtype.element_ty)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    full_hi, hi = key_ranges(start_m, NK, BLOCK_M, BLOCK_N, CAUSAL)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
        0, full_hi, NK, qk_scale, Cos, Sin, N_POS, PREFIX,
        HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, False, ROPE,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
        full_hi, hi, NK, qk_scale, Cos, Sin, N_POS, PREFIX,
        HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, True, ROPE,
    )

    out = acc / l_i[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok & d_ok)
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453
    tl.store(Lse + bh.to(tl.int64) * NQ + offs_m, lse, mask=offs_m < NQ)


def rope_args(rope: RopeTables | None, like: torch.Tensor) -> tuple:
    """(Cos, Sin, N_POS, PREFIX) kernel arguments; placeholders when ``rope`` is None."""
    if rope is None:
        return like, like, 0, 0
    cos, sin, prefix = rope
    return cos, sin, cos.shape[0], prefix


def attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
    rope: RopeTables | None = None, config: triton.Config | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel.

    Args:
        q: (B, Hq, Nq, D); k, v: (B, Hkv, Nk, D); last-dim stride 1, other strides free.
        causal: top-left aligned causal mask. scale: score scale.
        rope: optional (cos, sin, num_prefix_tokens): float32 contiguous (N_pos, D / 2) per-pair
            tables; q and k tiles are rotated (2D RoPE, ``reference.rope``) right after loading.
        config: a ``triton.Config`` with BLOCK_M and BLOCK_N (and num_warps, num_stages) to launch
            instead of the tuned one, e.g. ``triton.Config({"BLOCK_M": 64, "BLOCK_N": 32},
            num_warps=4, num_stages=3)`` (the benchmark's tile sweep); the tuned choice is untouched.

    Returns:
        out (B, Hq, Nq, D) contiguous in q's dtype; lse (B, Hq, Nq) float32, natural log.
    """
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    out = torch.empty((b, h, nq, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, nq), dtype=torch.float32, device=q.device)

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(nq, meta["BLOCK_M"]) * b * h,)

    qb, kb = bucket(nq), bucket(nk)
    launch(
        _fwd_kernel, grid, (qb, kb, d, causal, q.dtype, rope is not None),
        q, k, v, out, lse, *rope_args(rope, q)[:2],
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        h, h // hkv, nq, nk, scale * LOG2E, qb, kb, *rope_args(rope, q)[2:],
        HEAD_DIM=d, BLOCK_D=block_d(d), CAUSAL=causal, ROPE=rope is not None, config=config,
    )
    return out, lse
