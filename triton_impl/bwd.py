"""FlashAttention-2 backward in Triton: delta, dK/dV pass, dQ pass, launcher.

With ``P = exp(S - lse)`` rebuilt tile by tile from the saved log-sum-exp (never stored):
``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - delta)`` with ``delta = rowsum(dO * O)``,
``dK = scale dS^T Q``, ``dQ = scale dS K``.

Two passes and no atomics, so two runs give bit-identical gradients:

* dK/dV: a program keeps one BLOCK_N tile of K and V resident and loops over every query head
  of its GQA group and over their query tiles, summing the group's gradients in registers;
* dQ: a program keeps one BLOCK_M tile of Q, dO resident and loops over key tiles.

They run as two kernels (``_dq_kernel``, which also makes delta for its query tile, then
``_dkdv_kernel``) or as one (``_bwd_kernel``, after ``_preprocess_kernel`` has made delta), whose
grid holds the programs of both passes, so that one pass's last wave overlaps the other's.

A query row that sees a single key (every row when Nk = 1; row 0 under the causal mask) has
``dS = 0``: its dQ, and the dK of a key that only such rows see, come out exactly 0 (see
:func:`_one_key_rows`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference import RopeTables
from triton_impl import _traced
from triton_impl._common import (
    capped,
    dot,
    dot_acc,
    in_window,
    kept,
    key_ranges,
    load_tile,
    mask_tile,
    mask_tile_t,
    masked_scores,
    query_tile,
    rope_tile,
    row_tiles,
    rows_tile,
    sequence,
    window_keys,
    window_queries,
)
from triton_impl._config import (
    BWD_DKDV,
    BWD_DQ,
    BWD_ONE_LAUNCH,
    autotuned,
    block_d,
    bucket,
    cdiv,
    launch,
    launch_jit,
)
from triton_impl._plans import Plans, aligned
from triton_impl._tma import ensure_allocator, tma_usable
from triton_impl.fwd import LOG2E, _mask_args, attn_mask_args

PREPROCESS_BLOCK = 64
# A multiple of every query tile in the tuning tables: Nq % EVEN_ROWS == 0 lets the dK/dV loop
# drop its row masks (the kernels' EVEN_Q).
EVEN_ROWS = 128
_LOG2E = tl.constexpr(LOG2E)  # the kernels' lse (natural log) to base 2


@triton.jit
def _preprocess_kernel(
    O, DO, Delta,
    stride_ob, stride_oh, stride_om, stride_db, stride_dh, stride_dm,
    H, NQ,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """delta[b, h, i] = sum_d dO[b, h, i, d] * O[b, h, i, d] in float32."""
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
    do_ptrs = DO + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dm + offs_d[None, :]
    o = load_tile(o_ptrs, offs_m, NQ, offs_d, HEAD_DIM, BLOCK_D, True).to(tl.float32)
    do = load_tile(do_ptrs, offs_m, NQ, offs_d, HEAD_DIM, BLOCK_D, True).to(tl.float32)
    tl.store(Delta + bh.to(tl.int64) * NQ + offs_m, tl.sum(o * do, 1), mask=offs_m < NQ)


@triton.jit
def _one_key_rows(rows, NK, CAUSAL: tl.constexpr, WINDOW: tl.constexpr = False, LEFT=-1,
                  RIGHT=-1):
    """Which query rows see exactly one key: all of them when NK == 1 and, under the top-left
    causal mask (row i sees keys j <= i), row 0.

    A softmax over one score is constant (P = 1), so such a row's dS = P * (dP - delta) is 0 for
    any input, and so are its dQ and its share of dK. Computed, they are not: dP (a dot over the
    head dim) and delta (a sum over it in another kernel, off O, which equals that key's V) round
    the same number differently, and the lse's natural-log round trip and the FMA in the
    exponent leave P an ulp off 1. No way of forming P and delta from O cancels bit for bit on
    every GPU and dtype (the 3xTF32 float32 forward does not even give O == V exactly), so the
    kernels zero by this rule what it makes zero: a one-key row's dQ, and dK when every row is
    one. The rule is exact: it only zeroes what is zero in exact arithmetic. Under a window
    (LEFT, RIGHT as in the forward) a row is one-key where its band meets [0, NK) in one key.
    """
    if CAUSAL:
        one = tl.minimum(rows + 1, NK) == 1
    elif WINDOW:  # the band of row i within [0, NK) holds one key
        first = tl.where(LEFT < 0, 0, tl.maximum(rows - LEFT, 0))
        last = tl.where(RIGHT < 0, NK - 1, tl.minimum(rows + RIGHT, NK - 1))
        one = last == first
    else:
        one = (rows >= 0) & (NK == 1)  # rows >= 0 only gives the answer the shape of rows
    return one


@triton.jit
def _dkdv_inner(
    dk, dv, k, v, q_tiles, do_tiles, lse_base, delta_base, stride_qm, stride_dm,
    offs_n, offs_d, lo, hi, NQ, NK, qk_scale, LEFT, RIGHT, cap_in,
    mask_base, stride_mm, stride_mn, bias_in,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    CAUSAL_MASK: tl.constexpr, ROW_CHECK: tl.constexpr, TMA: tl.constexpr,
    WINDOW_MASK: tl.constexpr, CAPPED: tl.constexpr, EMPTY: tl.constexpr, MASK: tl.constexpr,
    MASK_ROWS: tl.constexpr,
):
    """Accumulate dK, dV of one key tile over query tiles [lo, hi) of one query head (q_tiles,
    do_tiles: ``row_tiles`` of its Q and dO). ROW_CHECK: tiles may hold rows past NQ (the masks
    cost registers, so only the tail tile and the diagonal's tiles have them). WINDOW_MASK
    applies the window's band, CAPPED differentiates through the softcap (dS on the raw scores
    is dS on the capped ones times 1 - tanh^2), MASK applies the attention mask (as in the
    forward); with EMPTY (a window or a mask) a row that saw no key (lse -inf) gets
    probabilities 0."""
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        q = rows_tile(q_tiles, start_m, NQ, stride_qm, offs_d, BLOCK_M, HEAD_DIM, BLOCK_D,
                      ROW_CHECK, TMA)
        do = rows_tile(do_tiles, start_m, NQ, stride_dm, offs_d, BLOCK_M, HEAD_DIM, BLOCK_D,
                       ROW_CHECK, TMA)
        if ROW_CHECK:  # rows past NQ get lse = +inf, so their probabilities are exactly 0
            lse2 = tl.load(lse_base + rows, mask=rows < NQ, other=float("inf")) * _LOG2E
            delta = tl.load(delta_base + rows, mask=rows < NQ, other=0.0)
        else:
            lse2 = tl.load(lse_base + rows) * _LOG2E
            delta = tl.load(delta_base + rows)
        if EMPTY:
            lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2)
        s_t = dot(k, tl.trans(q))
        if CAPPED:
            s_t = capped(s_t, cap_in)
        e_t = s_t
        if MASK != 0:
            am = mask_tile_t(mask_base, offs_n, rows, NQ, NK, stride_mm, stride_mn, MASK_ROWS)
            e_t = masked_scores(s_t, am, bias_in, MASK)
        p_t = tl.exp2(e_t * qk_scale - lse2[None, :])
        if CAUSAL_MASK:
            p_t = tl.where(rows[None, :] >= offs_n[:, None], p_t, 0.0)
        if WINDOW_MASK:  # the band seen from the keys: bounds swapped
            p_t = tl.where(in_window(offs_n, rows, RIGHT, LEFT), p_t, 0.0)
        dv = dot_acc(p_t.to(do.dtype), do, dv)
        dp_t = dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        if CAPPED:
            ds_t = ds_t * (1.0 - s_t * s_t)
        dk = dot_acc(ds_t.to(q.dtype), q, dk)
    return dk, dv


@triton.jit
def _dkdv_program(
    pid, Q, K, V, DO, Lse, Delta, DK, DV, Cos, Sin, CuQ, CuK,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_db, stride_dh, stride_dm,
    stride_gb, stride_gh, stride_gn,
    H, HKV, GROUP, NQ, NK, qk_scale, scale, N_POS, PREFIX, LEFT, RIGHT, cap_in,
    Mask, stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, ROPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_Q: tl.constexpr, TMA: tl.constexpr,
    WINDOW: tl.constexpr, CAPPED: tl.constexpr, MASK: tl.constexpr, MASK_ROWS: tl.constexpr,
    VARLEN: tl.constexpr,
):
    """dK, dV of key tile ``pid`` (key tiles fastest; with causal the first carry the most work):
    BLOCK_N keys resident, BLOCK_M query rows per step (through descriptors with TMA). EVEN_Q:
    NQ is a multiple of BLOCK_M, so no query tile needs row masks (which cost registers). With
    VARLEN, batch entry b is packed sequence b (see ``triton_impl.fwd._fwd_kernel``)."""
    qk_scale = tl.cast(qk_scale, tl.float32)  # float arguments Inductor would pass as float64
    scale = tl.cast(scale, tl.float32)
    num_n = tl.cdiv(NK, BLOCK_N)
    bh = pid // num_n
    start_n = (pid % num_n) * BLOCK_N
    b = (bh // HKV).to(tl.int64)
    hk = (bh % HKV).to(tl.int64)
    q0, nq, k0, nk = 0, NQ, 0, NK
    if VARLEN:
        q0, nq, k0, nk = sequence(b, CuQ, CuK)
        if start_n >= nk:
            return

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k_base = K + b * stride_kb + hk * stride_kh + k0 * stride_kn
    v_base = V + b * stride_vb + hk * stride_vh + k0 * stride_vn
    k = load_tile(k_base + offs_n[:, None] * stride_kn + offs_d[None, :], offs_n, nk, offs_d,
                  HEAD_DIM, BLOCK_D, True)
    v = load_tile(v_base + offs_n[:, None] * stride_vn + offs_d[None, :], offs_n, nk, offs_d,
                  HEAD_DIM, BLOCK_D, True)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    EMPTY: tl.constexpr = WINDOW or MASK != 0
    q_end = tl.cdiv(nq, BLOCK_M) * BLOCK_M
    if CAUSAL:
        # Query tiles before lo see none of these keys; tiles in [lo, mid) cross the diagonal.
        lo = (start_n // BLOCK_M) * BLOCK_M
        mid = tl.minimum(tl.cdiv(start_n + BLOCK_N, BLOCK_M) * BLOCK_M, q_end)
    elif WINDOW:  # masked [lo, mid) and [full_hi, q_end) around the rows that see every key
        lo, mid, full_hi, q_end = window_queries(start_n, nq, LEFT, RIGHT, BLOCK_M, BLOCK_N)
    else:
        lo = 0
        mid = 0
    for g in range(GROUP):
        h = hk * GROUP + g
        q_tiles = row_tiles(Q + b * stride_qb + h * stride_qh + q0 * stride_qm, nq, stride_qm,
                            HEAD_DIM, BLOCK_M, BLOCK_D, TMA)
        do_tiles = row_tiles(DO + b * stride_db + h * stride_dh + q0 * stride_dm, nq, stride_dm,
                             HEAD_DIM, BLOCK_M, BLOCK_D, TMA)
        if VARLEN:
            row_base = h * TOTAL_Q + q0
        else:
            row_base = (b * H + h) * NQ
        lse_base, delta_base = Lse + row_base, Delta + row_base
        mask_base = Mask + b * stride_mb + h * stride_mh
        if CAUSAL or WINDOW:
            dk, dv = _dkdv_inner(
                dk, dv, k, v, q_tiles, do_tiles, lse_base, delta_base, stride_qm, stride_dm,
                offs_n, offs_d, lo, mid, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base,
                stride_mm, stride_mn, bias_in, HEAD_DIM, BLOCK_D, BLOCK_M, CAUSAL, not EVEN_Q,
                TMA, WINDOW, CAPPED, EMPTY, MASK, MASK_ROWS,
            )
        if WINDOW:
            dk, dv = _dkdv_inner(
                dk, dv, k, v, q_tiles, do_tiles, lse_base, delta_base, stride_qm, stride_dm,
                offs_n, offs_d, mid, full_hi, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base,
                stride_mm, stride_mn, bias_in, HEAD_DIM, BLOCK_D, BLOCK_M, False, not EVEN_Q,
                TMA, False, CAPPED, EMPTY, MASK, MASK_ROWS,
            )
            dk, dv = _dkdv_inner(
                dk, dv, k, v, q_tiles, do_tiles, lse_base, delta_base, stride_qm, stride_dm,
                offs_n, offs_d, full_hi, q_end, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base,
                stride_mm, stride_mn, bias_in, HEAD_DIM, BLOCK_D, BLOCK_M, False, not EVEN_Q,
                TMA, True, CAPPED, EMPTY, MASK, MASK_ROWS,
            )
        else:
            dk, dv = _dkdv_inner(
                dk, dv, k, v, q_tiles, do_tiles, lse_base, delta_base, stride_qm, stride_dm,
                offs_n, offs_d, mid, q_end, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base,
                stride_mm, stride_mn, bias_in, HEAD_DIM, BLOCK_D, BLOCK_M, False, not EVEN_Q,
                TMA, False, CAPPED, EMPTY, MASK, MASK_ROWS,
            )

    # The last query row sees the most keys: when it is a one-key row, so is every row, and dK, a
    # sum of their dS, is exactly 0. Otherwise every key is seen by some row that sees several
    # (key 0 by all rows, key j > 0 only by rows that also see 0..j - 1); a one-key row's term is
    # then one of many, its residue far below dK's rounding, and is left in rather than tested for
    # in the loop.
    if WINDOW:  # every row sees one key (or none) only with a band of one key
        dk = tl.where((nk == 1) | ((LEFT == 0) & (RIGHT == 0)), 0.0, dk)
    else:  # (a mask only takes keys away: one-key rows stay at most one)
        dk = tl.where(_one_key_rows(nq - 1, nk, CAUSAL), 0.0, dk)
    out_off = (b * stride_gb + hk * stride_gh + k0 * stride_gn + offs_n[:, None] * stride_gn
               + offs_d[None, :])
    ok = (offs_n[:, None] < nk) & (offs_d[None, :] < HEAD_DIM)
    if ROPE:  # dK was taken against the rotated keys: turn it back to the unrotated ones
        dk = rope_tile(dk, k0 + offs_n, Cos, Sin, N_POS, PREFIX, BLOCK_N, HEAD_DIM // 2, BLOCK_D,
                       True)
    tl.store(DK + out_off, (dk * scale).to(DK.dtype.element_ty), mask=ok)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=ok)


@autotuned(BWD_DKDV, "n")
@triton.jit(do_not_specialize=["NQ", "NK", "Q_BUCKET", "K_BUCKET", "N_POS", "PREFIX"])
def _dkdv_kernel(
    Q, K, V, DO, Lse, Delta, DK, DV, Cos, Sin, Mask, CuQ, CuK,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_db, stride_dh, stride_dm,
    stride_gb, stride_gh, stride_gn,
    H, HKV, GROUP, NQ, NK, qk_scale, scale, Q_BUCKET, K_BUCKET, N_POS, PREFIX, PACK_STRIDE,
    LEFT, RIGHT, cap_in, stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, ROPE: tl.constexpr,
    EVEN_Q: tl.constexpr, TMA_OK: tl.constexpr, PACKED: tl.constexpr, WINDOW: tl.constexpr,
    CAPPED: tl.constexpr, MASK: tl.constexpr, MASK_ROWS: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TMA: tl.constexpr = False,
):
    tl.static_assert(TMA_OK or not TMA, "a TMA config for tensors a descriptor cannot describe")
    if PACKED:  # DK is the packed gradient (see _bwd_kernel); DV is not written through
        DV = DK + 2 * PACK_STRIDE
        DK = DK + PACK_STRIDE
    _dkdv_program(
        tl.program_id(0), Q, K, V, DO, Lse, Delta, DK, DV, Cos, Sin, CuQ, CuK,
        stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn, stride_db, stride_dh, stride_dm,
        stride_gb, stride_gh, stride_gn,
        H, HKV, GROUP, NQ, NK, qk_scale, scale, N_POS, PREFIX, LEFT, RIGHT, cap_in,
        Mask, stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
        HEAD_DIM, BLOCK_D, CAUSAL, ROPE, BLOCK_M, BLOCK_N, EVEN_Q, TMA, WINDOW, CAPPED, MASK,
        MASK_ROWS, VARLEN,
    )


@triton.jit
def _dq_inner(
    dq, q, do, lse2, delta, k_tiles, v_tiles, stride_kn, stride_vn,
    offs_m, offs_d, lo, hi, NQ, NK, qk_scale, LEFT, RIGHT, cap_in,
    mask_base, stride_mm, stride_mn, bias_in,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, TMA: tl.constexpr,
    WINDOW: tl.constexpr, CAPPED: tl.constexpr, MASK: tl.constexpr, MASK_ROWS: tl.constexpr,
):
    """Accumulate dQ of one query tile over key tiles [lo, hi) (k_tiles, v_tiles: ``row_tiles``
    of its head's K and V); MASKED applies the key-tail, causal and window masks, CAPPED
    differentiates through the softcap, MASK applies the attention mask."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k = rows_tile(k_tiles, start_n, NK, stride_kn, offs_d, BLOCK_N, HEAD_DIM, BLOCK_D, MASKED,
                      TMA)
        v = rows_tile(v_tiles, start_n, NK, stride_vn, offs_d, BLOCK_N, HEAD_DIM, BLOCK_D, MASKED,
                      TMA)
        s = dot(q, tl.trans(k))
        if CAPPED:
            s = capped(s, cap_in)
        e = s
        if MASK != 0:
            am = mask_tile(mask_base, offs_m, cols, NQ, NK, stride_mm, stride_mn, MASK_ROWS)
            e = masked_scores(s, am, bias_in, MASK)
        p = tl.exp2(e * qk_scale - lse2[:, None])
        if MASKED:
            p = tl.where(kept(offs_m, cols, NK, CAUSAL, WINDOW, LEFT, RIGHT), p, 0.0)
        dp = dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        if CAPPED:
            ds = ds * (1.0 - s * s)
        dq = dot_acc(ds.to(k.dtype), k, dq)
    return dq


@triton.jit
def _dq_program(
    pid, Q, K, V, DO, Lse, Delta, DQ, Cos, Sin, CuQ, CuK, O, stride_ob, stride_oh, stride_om,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_db, stride_dh, stride_dm,
    stride_gb, stride_gh, stride_gm,
    H, GROUP, NQ, NK, qk_scale, scale, N_POS, PREFIX, LEFT, RIGHT, cap_in,
    Mask, stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, ROPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TMA: tl.constexpr, WINDOW: tl.constexpr,
    CAPPED: tl.constexpr, MASK: tl.constexpr, MASK_ROWS: tl.constexpr, VARLEN: tl.constexpr,
    DELTA: tl.constexpr,
):
    """dQ of query tile ``pid`` (see ``query_tile``): BLOCK_M query rows resident, BLOCK_N keys
    per step (through descriptors with TMA); with VARLEN, of packed sequence b (see
    ``triton_impl.fwd._fwd_kernel``). DELTA: the tile's delta rows are made here from O (at
    (b, h, row) strides stride_o*) and stored for the dK/dV pass that runs after this one;
    otherwise they are read."""
    qk_scale = tl.cast(qk_scale, tl.float32)  # float arguments Inductor would pass as float64
    scale = tl.cast(scale, tl.float32)
    bh, b, h, hk, start_m = query_tile(pid, NQ, H, GROUP, BLOCK_M, CAUSAL)
    q0, nq, k0, nk = 0, NQ, 0, NK
    if VARLEN:
        q0, nq, k0, nk = sequence(b, CuQ, CuK)
        if start_m * BLOCK_M >= nq:
            return
        row0 = h * TOTAL_Q + q0
    else:
        row0 = bh.to(tl.int64) * NQ

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + b * stride_qb + h * stride_qh + q0 * stride_qm
    do_base = DO + b * stride_db + h * stride_dh + q0 * stride_dm
    q = load_tile(q_base + offs_m[:, None] * stride_qm + offs_d[None, :], offs_m, nq, offs_d,
                  HEAD_DIM, BLOCK_D, True)
    do = load_tile(do_base + offs_m[:, None] * stride_dm + offs_d[None, :], offs_m, nq, offs_d,
                   HEAD_DIM, BLOCK_D, True)
    row_ok = offs_m < nq
    lse2 = tl.load(Lse + row0 + offs_m, mask=row_ok, other=0.0) * _LOG2E
    if DELTA:
        o = load_tile(O + b * stride_ob + h * stride_oh + (q0 + offs_m[:, None]) * stride_om
                      + offs_d[None, :], offs_m, nq, offs_d, HEAD_DIM, BLOCK_D, True)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        tl.store(Delta + row0 + offs_m, delta, mask=row_ok)
    else:
        delta = tl.load(Delta + row0 + offs_m, mask=row_ok, other=0.0)
    k_tiles = row_tiles(K + b * stride_kb + hk * stride_kh + k0 * stride_kn, nk, stride_kn,
                        HEAD_DIM, BLOCK_N, BLOCK_D, TMA)
    v_tiles = row_tiles(V + b * stride_vb + hk * stride_vh + k0 * stride_vn, nk, stride_vn,
                        HEAD_DIM, BLOCK_N, BLOCK_D, TMA)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    if WINDOW or MASK != 0 or VARLEN:  # a row that saw no key (lse -inf) gets probabilities 0
        lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2)
    mask_base = Mask + b * stride_mb + h * stride_mh
    if WINDOW:
        lo, full_lo, full_hi, hi = window_keys(start_m, nk, LEFT, RIGHT, BLOCK_M, BLOCK_N)
        dq = _dq_inner(dq, q, do, lse2, delta, k_tiles, v_tiles, stride_kn, stride_vn, offs_m,
                       offs_d, lo, full_lo, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base,
                       stride_mm, stride_mn, bias_in, HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, True,
                       TMA, WINDOW, CAPPED, MASK, MASK_ROWS)
    else:
        full_lo = 0
        full_hi, hi = key_ranges(start_m, nk, BLOCK_M, BLOCK_N, CAUSAL)
    dq = _dq_inner(dq, q, do, lse2, delta, k_tiles, v_tiles, stride_kn, stride_vn, offs_m, offs_d,
                   full_lo, full_hi, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base, stride_mm,
                   stride_mn, bias_in, HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, False, TMA, WINDOW,
                   CAPPED, MASK, MASK_ROWS)
    dq = _dq_inner(dq, q, do, lse2, delta, k_tiles, v_tiles, stride_kn, stride_vn, offs_m, offs_d,
                   full_hi, hi, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base, stride_mm,
                   stride_mn, bias_in, HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, True, TMA, WINDOW,
                   CAPPED, MASK, MASK_ROWS)
    dq = tl.where(_one_key_rows(offs_m, nk, CAUSAL, WINDOW, LEFT, RIGHT)[:, None], 0.0, dq)

    if ROPE:  # dQ was taken against the rotated queries: turn it back to the unrotated ones
        dq = rope_tile(dq, q0 + offs_m, Cos, Sin, N_POS, PREFIX, BLOCK_M, HEAD_DIM // 2, BLOCK_D,
                       True)
    out_off = (b * stride_gb + h * stride_gh + q0 * stride_gm + offs_m[:, None] * stride_gm
               + offs_d[None, :])
    tl.store(DQ + out_off, (dq * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


@autotuned(BWD_DQ, "m")
@triton.jit(do_not_specialize=["NQ", "NK", "Q_BUCKET", "K_BUCKET", "N_POS", "PREFIX"])
def _dq_kernel(
    Q, K, V, DO, Lse, Delta, DQ, Cos, Sin, Mask, CuQ, CuK, O, stride_ob, stride_oh, stride_om,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_db, stride_dh, stride_dm,
    stride_gb, stride_gh, stride_gm,
    H, GROUP, NQ, NK, qk_scale, scale, Q_BUCKET, K_BUCKET, N_POS, PREFIX, LEFT, RIGHT, cap_in,
    stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, ROPE: tl.constexpr,
    EVEN_Q: tl.constexpr, TMA_OK: tl.constexpr, WINDOW: tl.constexpr, CAPPED: tl.constexpr,
    MASK: tl.constexpr, MASK_ROWS: tl.constexpr, VARLEN: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, TMA: tl.constexpr = False,
):
    tl.static_assert(TMA_OK or not TMA, "a TMA config for tensors a descriptor cannot describe")
    _dq_program(
        tl.program_id(0), Q, K, V, DO, Lse, Delta, DQ, Cos, Sin, CuQ, CuK, O, stride_ob,
        stride_oh, stride_om,
        stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn, stride_db, stride_dh, stride_dm,
        stride_gb, stride_gh, stride_gm,
        H, GROUP, NQ, NK, qk_scale, scale, N_POS, PREFIX, LEFT, RIGHT, cap_in,
        Mask, stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
        HEAD_DIM, BLOCK_D, CAUSAL, ROPE, BLOCK_M, BLOCK_N, TMA, WINDOW, CAPPED, MASK, MASK_ROWS,
        VARLEN, True,
    )


@autotuned(BWD_ONE_LAUNCH, "n")
@triton.jit(do_not_specialize=["NQ", "NK", "Q_BUCKET", "K_BUCKET", "N_POS", "PREFIX"])
def _bwd_kernel(
    Q, K, V, DO, Lse, Delta, DQ, DK, DV, Cos, Sin, Mask, CuQ, CuK,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_db, stride_dh, stride_dm,
    stride_gqb, stride_gqh, stride_gqm,
    stride_gkb, stride_gkh, stride_gkn,
    H, HKV, GROUP, NQ, NK, qk_scale, scale, Q_BUCKET, K_BUCKET, N_POS, PREFIX, PACK_STRIDE,
    LEFT, RIGHT, cap_in, stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, ROPE: tl.constexpr,
    EVEN_Q: tl.constexpr, TMA_OK: tl.constexpr, PACKED: tl.constexpr, WINDOW: tl.constexpr,
    CAPPED: tl.constexpr, MASK: tl.constexpr, MASK_ROWS: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TMA: tl.constexpr = False,
):
    tl.static_assert(TMA_OK or not TMA, "a TMA config for tensors a descriptor cannot describe")
    # PACKED: DQ is one (B, N, 3, H, D) gradient, dk and dv PACK_STRIDE and twice that elements
    # after dq in it; the kernel writes through DQ alone (DK and DV are the same tensor, unused),
    # so a recorded launch mutates one argument that is no view (no copies around it).
    if PACKED:
        DK = DQ + PACK_STRIDE
        DV = DQ + 2 * PACK_STRIDE
    # Both passes in one grid, in turns per K/V head: its dK/dV programs (the heavier ones) and
    # then the dQ programs of its query heads, with the tile roles swapped (BLOCK_N query rows
    # resident, BLOCK_M keys per step). Programs that run together read the same heads from L2,
    # and one pass's last wave overlaps the other instead of waiting at a kernel boundary.
    pid = tl.program_id(0)
    num_n = tl.cdiv(NK, BLOCK_N)
    per_head = num_n + GROUP * tl.cdiv(NQ, BLOCK_N)
    head = pid // per_head
    local = pid % per_head
    if local < num_n:
        _dkdv_program(
            head * num_n + local, Q, K, V, DO, Lse, Delta, DK, DV, Cos, Sin, CuQ, CuK,
            stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
            stride_vb, stride_vh, stride_vn, stride_db, stride_dh, stride_dm,
            stride_gkb, stride_gkh, stride_gkn,
            H, HKV, GROUP, NQ, NK, qk_scale, scale, N_POS, PREFIX, LEFT, RIGHT, cap_in,
            Mask, stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
            HEAD_DIM, BLOCK_D, CAUSAL, ROPE, BLOCK_M, BLOCK_N, EVEN_Q, TMA, WINDOW, CAPPED, MASK,
            MASK_ROWS, VARLEN,
        )
    else:
        _dq_program(
            head * (per_head - num_n) + local - num_n, Q, K, V, DO, Lse, Delta, DQ, Cos, Sin, CuQ,
            CuK, Delta, 0, 0, 0,
            stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
            stride_vb, stride_vh, stride_vn, stride_db, stride_dh, stride_dm,
            stride_gqb, stride_gqh, stride_gqm,
            H, GROUP, NQ, NK, qk_scale, scale, N_POS, PREFIX, LEFT, RIGHT, cap_in,
            Mask, stride_mb, stride_mh, stride_mm, stride_mn, bias_in, TOTAL_Q,
            HEAD_DIM, BLOCK_D, CAUSAL, ROPE, BLOCK_N, BLOCK_M, TMA, WINDOW, CAPPED, MASK,
            MASK_ROWS, VARLEN, False,
        )


def one_launch_bwd(head_dim: int, causal: bool) -> bool:
    """Whether the backward runs as one kernel (``_bwd_kernel``) by default: without the causal
    mask. Causal backwards run two kernels, whose separately tuned tiles suit the two passes'
    triangular loops better than one shared config (measured in docs/perf-notes.md)."""
    return not causal


def _rope_args(rope: RopeTables | None, like: torch.Tensor) -> tuple:
    """(Cos, Sin, N_POS, PREFIX) kernel arguments; placeholders when ``rope`` is None."""
    if rope is None:
        return like, like, 0, 0
    cos, sin, prefix = rope
    return cos, sin, cos.shape[0], prefix


def attention_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: float,
    rope: RopeTables | None = None,
    one_launch: bool | None = None,
    config: triton.Config | None = None,
    packed: torch.Tensor | None = None,
    window: tuple[int, int] | None = None,
    softcap: float | None = None,
    attn_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward: dQ (making delta) then dK/dV, or delta then both passes in one kernel.

    Args:
        dout, q, out: (B, Hq, Nq, D); k, v: (B, Hkv, Nk, D); last-dim stride 1.
        lse: (B, Hq, Nq) float32 from the forward. causal, scale: as in the forward.
        rope: optional (cos, sin, num_prefix_tokens) tables (``triton_impl.rope.rotate_qk``): q
            and k are then the rotated tensors the forward attended with, and dq, dk come back
            turned to the unrotated inputs.
        one_launch: run both passes as one kernel (``_bwd_kernel``) or as two; None: the
            default (``one_launch_bwd``).
        config: a ``triton.Config`` (BLOCK_M query rows, BLOCK_N keys, warps, stages, and
            ``TMA`` for descriptor loads where ``triton_impl._tma.tma_usable`` allows) for every
            backward kernel of this call instead of the tuned ones; the tuned choice is untouched.
        packed: a (B, N, 3, H, D) tensor in q's dtype with last-dim stride 1 (Hq == Hkv == H,
            Nq == Nk == N) to write dq, dk, dv into, as its slices 0, 1, 2 (the gradient of a
            packed qkv projection); None allocates them apart.
        window, softcap, attn_mask: the forward's (``triton_impl.fwd.attention_fwd``); a window
            or a mask runs the two-kernel backward, each pass visiting only the tiles of the
            band.

    Returns:
        dq (B, Hq, Nq, D), dk and dv (B, Hkv, Nk, D) in the inputs' dtype: contiguous, or the
        (B, H, N, D) views of ``packed``'s slices.
    """
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    lse = lse.contiguous()
    delta = torch.empty((b, h, nq), dtype=torch.float32, device=q.device)
    if packed is None:
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        grad_args, pack_stride = (dq, dk, dv), 0
    else:  # the kernels write through the packed tensor itself, with dq's strides
        dq, dk, dv = (t.transpose(1, 2) for t in packed.unbind(2))
        grad_args, pack_stride = (packed, packed, packed), packed.stride(2)
    # As in the forward: descriptor configs are candidates in eager launches, where the streamed
    # tensors allow them (a launch recorded for torch.compile keeps to pointer loads).
    tma = not _traced.active() and tma_usable(q, k, v, dout)
    if tma:
        ensure_allocator()
    one = (window is None and attn_mask is None
           and (one_launch_bwd(d, causal) if one_launch is None else one_launch))
    cos, sin = (None, None) if rope is None else rope[:2]

    def run() -> None:
        strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *dout.stride()[:3])
        _launch_passes((q, k, v, dout, lse, delta), (out, *out.stride()[:3]), grad_args,
                       pack_stride, strides, (*dq.stride()[:3], *dk.stride()[:3]), b, h, hkv,
                       nq, nk, causal, scale, rope, tma, nq % EVEN_ROWS == 0, one, window,
                       softcap, attn_mask, config)

    key = None
    if config is None and attn_mask is None and _PLANS.on():
        key = (q.shape, k.shape, q.stride(), k.stride(), v.stride(), dout.stride(), out.stride(),
               lse.shape, None if packed is None else packed.stride(), q.dtype, dout.dtype,
               out.dtype, causal, scale, window, softcap, one, tma,
               None if rope is None else (cos.shape, cos.stride(), sin.stride(), rope[2]),
               aligned(q, k, v, dout, out, lse, packed, cos, sin))
    _PLANS.launch(key, (q, k, v, dout, out, lse, delta, dq, dk, dv, packed, cos, sin), run)
    return dq, dk, dv


# The backward's launches, replayed per call key (``triton_impl._plans``).
_PLANS = Plans()


def _launch_passes(ins: tuple, out_rows: tuple, grad_args: tuple, pack_stride: int,
                   strides: tuple, grad_strides: tuple, batch: int, h: int, hkv: int, nq: int, nk: int,
                   causal: bool, scale: float, rope, tma: bool, even_q: bool, one: bool, window,
                   softcap, attn_mask, config,
                   cu_seqlens: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Launch the dK/dV and dQ passes over ``batch`` entries: ``ins`` (q, k, v, dout, lse, and
    delta to fill), ``out_rows`` (out and its (b, h, row) strides), the gradients to write
    (``grad_args``: dq, dk, dv, or the packed tensor three times), (b, h, row) strides of q, k,
    v, dout and of dq, dk; ``nq``, ``nk`` the lengths (with ``cu_seqlens`` the longest packed
    sequences). ``one``: the preprocess kernel makes delta, then one kernel runs both passes;
    otherwise the dQ pass makes delta as it goes and the dK/dV pass follows it (one launch
    fewer, and no separate read of dout)."""
    q = ins[0]
    d = q.shape[-1]
    causal, (qk_scale, *window_args), flags = _mask_args(causal, scale, window, softcap)
    am, am_strides, bias_in, am_flags = attn_mask_args(attn_mask, q, nk, qk_scale)
    flags.update(am_flags, VARLEN=cu_seqlens is not None)
    cu_q, cu_k = cu_seqlens if cu_seqlens is not None else (q, q)
    window_args = (*window_args, *am_strides, bias_in, ins[4].shape[-1])
    common = dict(HEAD_DIM=d, BLOCK_D=block_d(d), CAUSAL=causal, ROPE=rope is not None,
                  EVEN_Q=even_q, TMA_OK=tma, **flags)
    qb, kb = bucket(nq), bucket(nk)
    shape_class = (qb, kb, d, causal, q.dtype, rope is not None, tma, *flags.values())
    cos, sin, n_pos, prefix = _rope_args(rope, q)
    tail = (nq, nk, qk_scale, scale, qb, kb, n_pos, prefix)
    packed = pack_stride != 0
    if one:
        out, *out_strides = out_rows
        launch_jit(_preprocess_kernel, (cdiv(nq, PREPROCESS_BLOCK), batch * h), out, ins[3],
                   ins[5], *out_strides, *strides[9:12], h, nq, HEAD_DIM=d, BLOCK_D=block_d(d),
                   BLOCK_M=PREPROCESS_BLOCK)

        def grid(meta: dict) -> tuple[int]:
            return ((cdiv(nk, meta["BLOCK_N"]) * hkv
                     + cdiv(nq, meta["BLOCK_N"]) * h) * batch,)  # per K/V head, see the kernel

        launch(_bwd_kernel, grid, shape_class, *ins, *grad_args, cos, sin, am, cu_q, cu_k,
               *strides, *grad_strides, h, hkv, h // hkv, *tail, pack_stride, *window_args,
               config=config, PACKED=packed, **common)
        return
    launch(
        _dq_kernel, lambda meta: (cdiv(nq, meta["BLOCK_M"]) * batch * h,), shape_class,
        *ins, grad_args[0], cos, sin, am, cu_q, cu_k, *out_rows, *strides, *grad_strides[:3], h,
        h // hkv, *tail, *window_args, config=config, **common,
    )
    launch(
        _dkdv_kernel, lambda meta: (cdiv(nk, meta["BLOCK_N"]) * batch * hkv,), shape_class,
        *ins, *grad_args[1:], cos, sin, am, cu_q, cu_k, *strides, *grad_strides[3:], h, hkv,
        h // hkv, *tail, pack_stride, *window_args, config=config, PACKED=packed, **common,
    )


def attention_bwd_varlen(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int, max_seqlen_k: int, causal: bool, scale: float,
    window: tuple[int, int] | None = None, softcap: float | None = None,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward over packed sequences (``triton_impl.fwd.attention_fwd_varlen``'s forward):
    dout, q, out (total_q, Hq, D), k, v (total_k, Hkv, D), last-dim stride 1, lse (Hq, total_q)
    float32. Two passes with pointer loads. ``rope``: per-token float32 (total, D / 2) cos / sin
    tables (``CosSinTable.for_grids``) that q and k were rotated by (self-attention): dq and dk
    come back turned to the unrotated inputs. Returns contiguous dq like q, dk and dv like k."""
    total_q, h, d = q.shape
    hkv = k.shape[1]
    lse = lse.contiguous()
    delta = torch.empty((h, total_q), dtype=torch.float32, device=q.device)
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))

    def rows(*tensors: torch.Tensor) -> tuple[int, ...]:  # (b, h, row): b is the sequence
        return tuple(x for t in tensors for x in (0, t.stride(1), t.stride(0)))

    def run() -> None:
        _launch_passes((q, k, v, dout, lse, delta), (out, *rows(out)), (dq, dk, dv), 0,
                       rows(q, k, v, dout), rows(dq, dk), cu_seqlens_q.numel() - 1, h, hkv,
                       max_seqlen_q, max_seqlen_k, causal, scale,
                       None if rope is None else (*rope, 0), False, False, False, window,
                       softcap, None, None, (cu_seqlens_q, cu_seqlens_k))

    cos, sin = (None, None) if rope is None else rope
    key = None
    if _PLANS.on():
        key = ("varlen", q.shape, k.shape, q.stride(), k.stride(), v.stride(), dout.stride(),
               out.stride(), lse.shape, q.dtype, dout.dtype, out.dtype, cu_seqlens_q.shape,
               cu_seqlens_q.dtype, max_seqlen_q, max_seqlen_k, causal, scale, window, softcap,
               None if rope is None else (cos.shape, cos.stride(), sin.stride()),
               aligned(q, k, v, dout, out, lse, cu_seqlens_q, cu_seqlens_k, cos, sin))
    _PLANS.launch(key, (q, k, v, dout, out, lse, delta, dq, dk, dv, cu_seqlens_q, cu_seqlens_k,
                        cos, sin), run)
    return dq, dk, dv
