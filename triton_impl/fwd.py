"""FlashAttention-2 forward in Triton: inner loop, kernel, launcher.

Each program owns BLOCK_M query rows of one (batch, head) and streams the keys and values of the
matching K/V head in BLOCK_N tiles, keeping a running row max ``m``, row sum ``l`` and output
accumulator in float32 (online softmax). Scores are scaled by ``scale * log2(e)`` so the
exponentials are ``exp2``. With ``causal``, key tiles entirely visible to the query tile run
without mask arithmetic, the tiles crossing the diagonal (and the key tail) run masked, and tiles
entirely above the diagonal are never visited.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from triton_impl import _traced, gluon_fwd
from triton_impl._common import (
    any_kept,
    capped,
    dot,
    dot_acc,
    kept,
    key_ranges,
    mask_tile,
    masked_scores,
    query_tile,
    row_tiles,
    rows_tile,
    sequence,
    window_keys,
)
from triton_impl._config import (
    FWD,
    autotuned,
    autotuning,
    block_d,
    bucket,
    cdiv,
    launch,
    record_launch,
    time_candidate,
)
from triton_impl._plans import Plans, aligned
from triton_impl._tma import ensure_allocator, tma_usable

LOG2E = 1.4426950408889634


@triton.jit
def _fwd_tile(
    acc, l_i, m_i, q, k_tiles, v_tiles, stride_kn, stride_vn, offs_m, offs_d, start_n, cols,
    NK, qk_scale, LEFT, RIGHT, cap_in, am, bias_in,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, TMA: tl.constexpr, WINDOW: tl.constexpr,
    CAPPED: tl.constexpr, MASK: tl.constexpr, EMPTY: tl.constexpr,
):
    """Fold the key tile from start_n into (acc, l_i, m_i) (see ``_fwd_inner``)."""
    k = rows_tile(k_tiles, start_n, NK, stride_kn, offs_d, BLOCK_N, HEAD_DIM, BLOCK_D,
                  MASKED, TMA)
    qk = dot(q, tl.trans(k))
    if CAPPED:
        qk = capped(qk, cap_in)
    qk = masked_scores(qk, am, bias_in, MASK)
    if MASKED:
        qk = tl.where(kept(offs_m, cols, NK, CAUSAL, WINDOW, LEFT, RIGHT), qk,
                      float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    m_use = m_new
    if EMPTY:
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(qk * qk_scale - m_use[:, None])
    alpha = tl.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = rows_tile(v_tiles, start_n, NK, stride_vn, offs_d, BLOCK_N, HEAD_DIM, BLOCK_D,
                  MASKED, TMA)
    acc = dot_acc(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, l_i, m_new


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q, k_tiles, v_tiles, stride_kn, stride_vn,
    offs_m, offs_d, lo, hi, NQ, NK, qk_scale, LEFT, RIGHT, cap_in,
    mask_base, stride_mm, stride_mn, bias_in,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, MASKED: tl.constexpr, TMA: tl.constexpr, WINDOW: tl.constexpr,
    CAPPED: tl.constexpr, MASK: tl.constexpr, MASK_ROWS: tl.constexpr,
):
    """Fold key tiles [lo, hi) into (acc, l_i, m_i); MASKED applies the key-tail, causal and
    window masks, TMA loads through tensor descriptors, CAPPED turns raw scores into
    tanh(qk * cap_in) (qk_scale then holds softcap * log2(e)), MASK applies the attention mask
    at ``mask_base`` (1 bool, 2 float added as m * bias_in; a key tile a bool mask leaves out
    whole is skipped).

    The running max is taken over the unscaled scores (qk_scale > 0), so the scaling and the
    subtraction of the max are one multiply-add per score. Under a window or a mask a row may see
    no key of a tile, or none at all: its max stays -inf and is read as 0 in the exponents."""
    EMPTY: tl.constexpr = WINDOW or MASK != 0
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        am = 0.0
        if MASK != 0:
            am = mask_tile(mask_base, offs_m, cols, NQ, NK, stride_mm, stride_mn, MASK_ROWS)
        if MASK == 1:
            if any_kept(am, MASK):
                acc, l_i, m_i = _fwd_tile(
                    acc, l_i, m_i, q, k_tiles, v_tiles, stride_kn, stride_vn, offs_m, offs_d,
                    start_n, cols, NK, qk_scale, LEFT, RIGHT, cap_in, am, bias_in, HEAD_DIM,
                    BLOCK_D, BLOCK_N, CAUSAL, MASKED, TMA, WINDOW, CAPPED, MASK, EMPTY)
        else:
            acc, l_i, m_i = _fwd_tile(
                acc, l_i, m_i, q, k_tiles, v_tiles, stride_kn, stride_vn, offs_m, offs_d,
                start_n, cols, NK, qk_scale, LEFT, RIGHT, cap_in, am, bias_in, HEAD_DIM,
                BLOCK_D, BLOCK_N, CAUSAL, MASKED, TMA, WINDOW, CAPPED, MASK, EMPTY)
    return acc, l_i, m_i


@autotuned(FWD, "m")
@triton.jit(do_not_specialize=["NQ", "NK", "Q_BUCKET", "K_BUCKET", "LEFT", "RIGHT", "TOTAL_Q"])
def _fwd_kernel(
    Q, K, V, Out, Lse, Mask, CuQ, CuK,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    stride_mb, stride_mh, stride_mm, stride_mn,
    H, GROUP, NQ, NK, qk_scale, Q_BUCKET, K_BUCKET, LEFT, RIGHT, cap_in, bias_in, TOTAL_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, TMA_OK: tl.constexpr,
    WINDOW: tl.constexpr, CAPPED: tl.constexpr, MASK: tl.constexpr, MASK_ROWS: tl.constexpr,
    VARLEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    TMA: tl.constexpr = False,
):
    """One BLOCK_M query tile of one (batch entry, head). With VARLEN, batch entry b is packed
    sequence b (rows CuQ[b]:CuQ[b + 1] of q, out and of each head's lse row of TOTAL_Q, keys
    CuK[b]:CuK[b + 1]), NQ and NK are the longest lengths, and tiles past a sequence's end
    exit at once."""
    tl.static_assert(TMA_OK or not TMA, "a TMA config for tensors a descriptor cannot describe")
    qk_scale = tl.cast(qk_scale, tl.float32)  # a float argument Inductor would pass as float64
    bh, b, h, hk, start_m = query_tile(tl.program_id(0), NQ, H, GROUP, BLOCK_M, CAUSAL)
    q0, nq, k0, nk = 0, NQ, 0, NK
    if VARLEN:
        q0, nq, k0, nk = sequence(b, CuQ, CuK)
        if start_m * BLOCK_M >= nq:
            return
        lse_row0 = h * TOTAL_Q + q0
    else:
        lse_row0 = bh.to(tl.int64) * NQ

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_tiles = row_tiles(Q + b * stride_qb + h * stride_qh + q0 * stride_qm, nq, stride_qm,
                        HEAD_DIM, BLOCK_M, BLOCK_D, TMA)
    q = rows_tile(q_tiles, start_m * BLOCK_M, nq, stride_qm, offs_d, BLOCK_M, HEAD_DIM, BLOCK_D,
                  True, TMA)
    k_tiles = row_tiles(K + b * stride_kb + hk * stride_kh + k0 * stride_kn, nk, stride_kn,
                        HEAD_DIM, BLOCK_N, BLOCK_D, TMA)
    v_tiles = row_tiles(V + b * stride_vb + hk * stride_vh + k0 * stride_vn, nk, stride_vn,
                        HEAD_DIM, BLOCK_N, BLOCK_D, TMA)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    mask_base = Mask + b * stride_mb + h * stride_mh
    if WINDOW:  # the band's masked edges around the tiles every row sees in full
        lo, full_lo, full_hi, hi = window_keys(start_m, nk, LEFT, RIGHT, BLOCK_M, BLOCK_N)
        acc, l_i, m_i = _fwd_inner(
            acc, l_i, m_i, q, k_tiles, v_tiles, stride_kn, stride_vn, offs_m, offs_d, lo,
            full_lo, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base, stride_mm, stride_mn,
            bias_in, HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, True, TMA, WINDOW, CAPPED, MASK,
            MASK_ROWS,
        )
    else:
        full_lo = 0
        full_hi, hi = key_ranges(start_m, nk, BLOCK_M, BLOCK_N, CAUSAL)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_tiles, v_tiles, stride_kn, stride_vn, offs_m, offs_d, full_lo,
        full_hi, nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base, stride_mm, stride_mn, bias_in,
        HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, False, TMA, WINDOW, CAPPED, MASK, MASK_ROWS,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_tiles, v_tiles, stride_kn, stride_vn, offs_m, offs_d, full_hi, hi,
        nq, nk, qk_scale, LEFT, RIGHT, cap_in, mask_base, stride_mm, stride_mn, bias_in,
        HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, True, TMA, WINDOW, CAPPED, MASK, MASK_ROWS,
    )

    if WINDOW or MASK != 0 or VARLEN:  # a row that saw no key: out 0, lse -inf
        seen = l_i > 0
        l_i = tl.where(seen, l_i, 1.0)
        m_i = tl.where(seen, m_i, float("-inf"))
    out = (acc / l_i[:, None]).to(Out.dtype.element_ty)
    o_base = Out + b * stride_ob + h * stride_oh + q0 * stride_om
    if TMA:
        o_tiles = row_tiles(o_base, nq, stride_om, HEAD_DIM, BLOCK_M, BLOCK_D, TMA)
        o_tiles.store([start_m * BLOCK_M, 0], out)
    else:
        o_ptrs = o_base + offs_m[:, None] * stride_om + offs_d[None, :]
        tl.store(o_ptrs, out, mask=(offs_m[:, None] < nq) & (offs_d[None, :] < HEAD_DIM))
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453
    tl.store(Lse + lse_row0 + offs_m, lse, mask=offs_m < nq)


# The Gluon kernel as ``launched_configs`` names it: 128 query rows by 128 keys, three warpgroups;
# PERSISTENT: one program an SM.
GLUON_CONFIG = triton.Config({"BLOCK_M": gluon_fwd.CTA_M, "BLOCK_N": gluon_fwd.BLOCK_N,
                              "GLUON": True}, num_warps=12, num_stages=gluon_fwd.STAGES)
GLUON_PERSISTENT_CONFIG = triton.Config({**GLUON_CONFIG.kwargs, "PERSISTENT": True},
                                        num_warps=12, num_stages=gluon_fwd.STAGES)
CHOICE_ROUNDS = 2  # timings of each candidate kernel, its fastest counted (``_gluon_chosen``)
# (Nq bucket, D, causal, dtype) -> the kernel that runs that shape class: None (the Triton
# kernel), "tiles" (the Gluon kernel, one program a query tile) or "persistent"
_GLUON_CHOSEN: dict[tuple, str | None] = {}


def _gluon_chosen(shape_class: tuple, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  causal: bool, scale: float) -> str | None:
    """Which kernel runs a call that ``gluon_fwd.usable`` allows: decided once per shape class
    by timing the Gluon kernel, with one program a query tile and persistent, against the tuned
    Triton kernel (the persistent Gluon kernel when not tuning). Where each wins is measured in
    docs/perf-notes.md (Triton v1.7 to v1.9)."""
    if shape_class not in _GLUON_CHOSEN:
        chosen = "persistent"
        if autotuning():
            def triton_fwd() -> None:
                attention_fwd(q, k, v, causal, scale, gluon=False)

            triton_fwd()  # tunes the Triton kernel's shape class first
            calls = {mode: lambda p=mode == "persistent": gluon_fwd.attention_fwd(
                q, k, v, causal, scale, p) for mode in ("tiles", "persistent")}
            calls[None] = triton_fwd
            times = {mode: math.inf for mode in calls}
            for _ in range(CHOICE_ROUNDS):  # rounds in turn, so that a clock dip hits every kernel
                for mode, call in calls.items():
                    times[mode] = min(times[mode], time_candidate(call))
            chosen = min(times, key=times.get)
        _GLUON_CHOSEN[shape_class] = chosen
    return _GLUON_CHOSEN[shape_class]


def _mask_args(causal: bool, scale: float, window: tuple[int, int] | None,
               softcap: float | None) -> tuple[bool, tuple, dict]:
    """The kernels' view of the window and softcap: (causal, (qk_scale, LEFT, RIGHT, cap_in),
    constexprs WINDOW and CAPPED). A window takes the causal mask in as its right bound 0;
    with softcap c the raw scores become tanh(qk * scale / c), scaled by c * log2(e)."""
    left = right = -1
    if window is not None:
        left, right = window
        if causal:
            right, causal = 0, False
    cap_in = 0.0 if softcap is None else scale / softcap
    qk_scale = (scale if softcap is None else softcap) * LOG2E
    flags = {"WINDOW": window is not None, "CAPPED": softcap is not None}
    return causal, (qk_scale, left, right, cap_in), flags


def attn_mask_args(attn_mask: torch.Tensor | None, q: torch.Tensor, nk: int,
                   qk_scale: float) -> tuple[torch.Tensor, tuple, float, dict]:
    """The kernels' view of an attention mask broadcastable to (B, Hq, Nq, Nk): (tensor, its
    (b, h, m, n) strides, 0 where it broadcasts, bias_in, constexprs MASK and MASK_ROWS). A bool
    mask is read as bytes (MASK 1); a float one (MASK 2) is added to the raw scores times
    bias_in = log2(e) / qk_scale, which is the mask in their units. MASK_ROWS: it varies over
    query rows (else each key tile reads one row of it)."""
    if attn_mask is None:
        return q, (0, 0, 0, 0), 0.0, {"MASK": 0, "MASK_ROWS": False}
    b, h, nq = q.shape[:3]
    m = attn_mask.expand(b, h, nq, nk)
    kind = 1 if m.dtype == torch.bool else 2
    if kind == 1:
        m = m.view(torch.uint8)
    rows = nq > 1 and m.stride(2) != 0
    return m, m.stride(), LOG2E / qk_scale, {"MASK": kind, "MASK_ROWS": rows}


def attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
    config: triton.Config | None = None, gluon: bool | None = None,
    window: tuple[int, int] | None = None, softcap: float | None = None,
    attn_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel: the Triton one below, or at head dims 64 and 128 on Hopper the
    Gluon one (``triton_impl.gluon_fwd``) where it is usable and faster.

    Args:
        q: (B, Hq, Nq, D); k, v: (B, Hkv, Nk, D); last-dim stride 1, other strides free. Where
            ``triton_impl._tma.tma_usable`` allows, the tuning space also holds configs that load
            through TMA tensor descriptors (``TMA`` in a config's kwargs).
        causal: top-left aligned causal mask. scale: score scale.
        config: a ``triton.Config`` with BLOCK_M and BLOCK_N (and num_warps, num_stages) to launch
            instead of the tuned one, e.g. ``triton.Config({"BLOCK_M": 64, "BLOCK_N": 32},
            num_warps=4, num_stages=3)`` (the benchmark's tile sweep); the tuned choice is untouched.
        gluon: True runs the persistent Gluon kernel (a ValueError where ``gluon_fwd.usable``
            says no, or with a masking argument), False the Triton kernel; None chooses (the
            Triton kernel with a ``config``, with a masking argument, inside torch.compile and
            wherever the Gluon kernel is not usable).
        window: (left, right), query i sees key j iff i - left <= j <= i + right (-1
            unbounded), top-left aligned; key tiles outside the band are never visited.
        softcap: c > 0: each scaled score s becomes c * tanh(s / c) before the masks.
        attn_mask: bool (True: the key takes part) or float (added to the scaled scores),
            broadcastable to (B, Hq, Nq, Nk); one that varies over keys only is read a row a key
            tile, and key tiles a bool mask leaves out whole are skipped.

    Returns:
        out (B, Hq, Nq, D) in q's dtype, laid out in memory as (B, Nq, Hq, D) like SDPA's output
        (so ``out.transpose(1, 2).reshape(B, Nq, Hq * D)`` is a view); lse (B, Hq, Nq) float32,
        natural log; a row that sees no key gets out 0 and lse -inf.
    """
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    qb = bucket(nq)
    masked = window is not None or softcap is not None or attn_mask is not None
    if gluon and (masked or not gluon_fwd.usable(q, k, v)):
        raise ValueError("gluon=True: the Gluon forward cannot take these inputs "
                         "(see triton_impl.gluon_fwd.usable; it takes no masking arguments)")
    mode = "persistent" if gluon else None
    if (gluon is None and config is None and not masked and not _traced.active()
            and gluon_fwd.usable(q, k, v)):
        mode = _gluon_chosen((qb, d, causal, q.dtype), q, k, v, causal, scale)
    if mode is not None:
        persistent = mode == "persistent"
        record_launch("fwd", GLUON_PERSISTENT_CONFIG if persistent else GLUON_CONFIG)
        return gluon_fwd.attention_fwd(q, k, v, causal, scale, persistent)
    out_bnhd = torch.empty((b, nq, h, d), dtype=q.dtype, device=q.device)
    out = out_bnhd.transpose(1, 2)
    lse = torch.empty((b, h, nq), dtype=torch.float32, device=q.device)
    # Recorded for torch.compile, the kernel keeps to pointer loads: descriptor scratch memory
    # would have to come from Inductor's allocator.
    tma = not _traced.active() and tma_usable(q, k, v, out)
    if tma:  # the tuner may pick a TMA config, whose descriptors need scratch memory
        ensure_allocator()

    def run() -> None:
        _launch(q, k, v, out_bnhd, lse, q.stride()[:3], k.stride()[:3], v.stride()[:3],
                out.stride()[:3], b, h, h // hkv, nq, nk, causal, scale, tma, window, softcap,
                attn_mask, config)

    key = None
    if config is None and attn_mask is None and _PLANS.on():
        key = (q.shape, k.shape, q.stride(), k.stride(), v.stride(), q.dtype, causal, scale,
               window, softcap, tma, aligned(q, k, v))
    _PLANS.launch(key, (q, k, v, out_bnhd, lse), run)
    return out, lse


# The Triton forward's launches, replayed per call key (``triton_impl._plans``).
_PLANS = Plans()


def _launch(q, k, v, out, lse, q_strides: tuple, k_strides: tuple, v_strides: tuple,
            o_strides: tuple, batch: int, h: int, group: int, nq: int, nk: int, causal: bool,
            scale: float, tma: bool, window, softcap, attn_mask, config,
            cu_seqlens: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Launch ``_fwd_kernel`` over ``batch`` entries of ``h`` heads (``nq``, ``nk``: their
    lengths, or with ``cu_seqlens`` the longest of the packed sequences), strides (b, h, row)."""
    d = q.shape[-1]
    causal, mask_args, flags = _mask_args(causal, scale, window, softcap)
    am, am_strides, bias_in, am_flags = attn_mask_args(attn_mask, q, nk, mask_args[0])
    flags.update(am_flags, VARLEN=cu_seqlens is not None)
    cu_q, cu_k = cu_seqlens if cu_seqlens is not None else (q, q)
    qb, kb = bucket(nq), bucket(nk)

    def grid(meta: dict) -> tuple[int]:
        return (cdiv(nq, meta["BLOCK_M"]) * batch * h,)

    launch(
        _fwd_kernel, grid, (qb, kb, d, causal, q.dtype, tma, *flags.values()),
        q, k, v, out, lse, am, cu_q, cu_k, *q_strides, *k_strides, *v_strides, *o_strides,
        *am_strides, h, group, nq, nk, mask_args[0], qb, kb, *mask_args[1:], bias_in,
        lse.shape[-1], HEAD_DIM=d, BLOCK_D=block_d(d), CAUSAL=causal, TMA_OK=tma, **flags,
        config=config,
    )


def attention_fwd_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool,
    scale: float, window: tuple[int, int] | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward over packed sequences (FlashAttention's varlen layout, ``reference.varlen``):
    q (total_q, Hq, D), k, v (total_k, Hkv, D), last-dim stride 1; cu_seqlens_q / _k int32
    (batch + 1,) on q's device; max_seqlen_q / _k at least the longest sequence. causal,
    window, softcap top-left aligned per sequence. Pointer loads (no TMA), the Triton kernel.

    Returns out (total_q, Hq, D) contiguous in q's dtype, lse (Hq, total_q) float32."""
    total_q, h, _ = q.shape
    hkv = k.shape[1]
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((h, total_q), dtype=torch.float32, device=q.device)

    def strides(t: torch.Tensor) -> tuple[int, int, int]:  # (b, h, row): b is the sequence
        return 0, t.stride(1), t.stride(0)

    def run() -> None:
        _launch(q, k, v, out, lse, strides(q), strides(k), strides(v), strides(out),
                cu_seqlens_q.numel() - 1, h, h // hkv, max_seqlen_q, max_seqlen_k, causal, scale,
                False, window, softcap, None, None, (cu_seqlens_q, cu_seqlens_k))

    key = None
    if _PLANS.on():
        key = ("varlen", q.shape, k.shape, q.stride(), k.stride(), v.stride(), q.dtype,
               cu_seqlens_q.shape, cu_seqlens_q.dtype, max_seqlen_q, max_seqlen_k, causal, scale,
               window, softcap, aligned(q, k, v, cu_seqlens_q, cu_seqlens_k))
    _PLANS.launch(key, (q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k), run)
    return out, lse
