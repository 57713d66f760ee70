"""2D RoPE of q and k in one Triton kernel: what the attention kernels read, and the backward saves.

The forward rotates q and k once here instead of inside the attention loops, where every query
tile would turn every key tile again (and the backward's two passes would turn both once more);
the backward gets the rotated q and k and turns only its dq and dk back (``ROPE`` in
``triton_impl.bwd``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference import RopeTables
from triton_impl._common import load_tile, rope_tile
from triton_impl._config import block_d, cdiv, launch_jit

ROTATE_ROWS = 64


@triton.jit
def _rotate_rows(
    X, Y, stride_xb, stride_xh, stride_xn, H, N, tile, bh, Cos, Sin, N_POS, PREFIX,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
):
    """Rotate rows [tile * ROWS, tile * ROWS + ROWS) of head bh of X (B, H, N, D) into the
    contiguous Y."""
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    rows = tile * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    x = load_tile(X + b * stride_xb + h * stride_xh + rows[:, None] * stride_xn + offs_d[None, :],
                  rows, N, offs_d, HEAD_DIM, BLOCK_D, True)
    y = rope_tile(x.to(tl.float32), rows, Cos, Sin, N_POS, PREFIX,
                  ROWS, HEAD_DIM // 2, BLOCK_D, False)
    y_ptrs = Y + (bh.to(tl.int64) * N + rows[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(y_ptrs, y.to(Y.dtype.element_ty),
             mask=(rows[:, None] < N) & (offs_d[None, :] < HEAD_DIM))


@triton.jit(do_not_specialize=["NQ", "NK", "N_POS", "PREFIX"])
def _rotate_kernel(
    Q, K, QR, KR, Cos, Sin,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    HQ, HK, NQ, NK, N_POS, PREFIX,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
):
    # Axis 1 walks q's (batch, head) pairs, then k's; axis 0 their row tiles.
    tile = tl.program_id(0)
    bh = tl.program_id(1)
    n_q_heads = (tl.num_programs(1) // (HQ + HK)) * HQ
    if bh < n_q_heads:
        if tile * ROWS < NQ:
            _rotate_rows(Q, QR, stride_qb, stride_qh, stride_qn, HQ, NQ, tile, bh, Cos, Sin,
                         N_POS, PREFIX, HEAD_DIM, BLOCK_D, ROWS)
    elif tile * ROWS < NK:
        _rotate_rows(K, KR, stride_kb, stride_kh, stride_kn, HK, NK, tile, bh - n_q_heads,
                     Cos, Sin, N_POS, PREFIX, HEAD_DIM, BLOCK_D, ROWS)


def rotate_qk(q: torch.Tensor, k: torch.Tensor,
              rope: RopeTables) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B, Hq, Nq, D) and k (B, Hkv, Nk, D), last-dim stride 1, rotated by the 2D RoPE of
    ``rope`` = (cos, sin, num_prefix_tokens) (float32 contiguous (N_pos, D / 2) tables; semantics
    in ``reference.rope``): contiguous tensors of the same shapes and dtype, one launch."""
    b, hq, nq, d = q.shape
    hk, nk = k.shape[1], k.shape[2]
    qr = torch.empty((b, hq, nq, d), dtype=q.dtype, device=q.device)
    kr = torch.empty((b, hk, nk, d), dtype=k.dtype, device=k.device)
    cos, sin, prefix = rope
    grid = (cdiv(max(nq, nk), ROTATE_ROWS), b * (hq + hk))
    launch_jit(_rotate_kernel, grid, q, k, qr, kr, cos, sin, *q.stride()[:3], *k.stride()[:3],
               hq, hk, nq, nk, cos.shape[0], prefix,
               HEAD_DIM=d, BLOCK_D=block_d(d), ROWS=ROTATE_ROWS)
    return qr, kr
