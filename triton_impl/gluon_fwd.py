"""The Hopper forward at head dims 64 and 128, in Gluon (Triton's explicit-layout dialect): warp
specialization, TMA rings and ping-ponged wgmma, which stock Triton 3.6 does not apply to the
FlashAttention loop on sm_90 (docs/perf-notes.md, Triton v1.7).

One CTA per 128 query rows of one (batch, head), three warpgroups:

* the producer (4 warps, registers cut to 24 with ``setmaxnreg``) issues the TMA loads: the two
  64-row Q tiles, then K_0, K_1, V_0, K_2, V_1, ... into two-slot rings, each slot with a
  ``ready`` mbarrier (the copy's bytes arrived) and an ``empty`` one (both consumers are done);
* two consumers (one warpgroup each, 240 registers) own 64 query rows apiece and run the online
  softmax. In iteration j a consumer issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} as async
  wgmma, waits for S_j only, and runs the softmax of S_j while P_{j-1} V_{j-1} finishes. A pair
  of ``turn`` mbarriers makes the two consumers issue their GEMMs in alternation, so that one's
  softmax overlaps the other's GEMMs (FlashAttention-3's ping-pong).

There is no CTA-wide barrier in the loop. Causal grids run the longest query tiles first,
across a section of heads whose K and V fit L2 together (``_section``). A program runs one query
tile, or (``persistent``) one of every SM count of them: the K / V rings run on from tile to tile and the
Q tiles alternate between two slot pairs, so the next tile's loads overlap this one's end.
``usable`` says which calls it takes: head dim 64 or 128, float16 / bfloat16, Nq == Nk a
multiple of 128, each of q, k, v laid out so that one 2-D descriptor covers it (``_rows_view``);
the Triton kernel in ``triton_impl.fwd`` takes the rest.
"""

from __future__ import annotations

import functools
import os

import torch

from triton_impl._config import launch_jit
from triton_impl._env import interpreting
from triton_impl._plans import Plans, aligned

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except ImportError:  # a Triton without Gluon's Hopper API: the Triton kernel runs everywhere
    gluon = None

HEAD_DIMS = (64, 128)
SECTION_CTAS = 128  # causal: about one wave of CTAs a section of heads (``_section``)
PERSISTENT_SECTION_CTAS = 16  # the same for persistent programs (``_section``)
WG_M = 64  # query rows of one consumer warpgroup
CTA_M = 2 * WG_M  # query rows of one CTA
BLOCK_N = 128  # keys of one K / V tile
STAGES = 2  # slots of the K ring and of the V ring
# Three warpgroups share the 64K registers (168 a thread at launch); setmaxnreg moves them to
# 24 a thread in the producer and 240 in each consumer (24 + 2 * 240 = 3 * 168).
LAUNCH_REGS, CONSUMER_REGS = 168, 240
_LOG2E = 1.4426950408889634


if gluon is not None:
    _REGS = gl.constexpr(CONSUMER_REGS)

    @gluon.jit
    def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bars, q_empty, k_ready,
                  k_empty, v_ready, v_empty, H, GROUP, N, BH, SECTION, q_rows_b, q_rows_h,
                  q_cols_h, k_rows_b, k_rows_h, k_cols_h, v_rows_b, v_rows_h, v_cols_h,
                  CAUSAL: gl.constexpr, STAGES: gl.constexpr, BLOCK_N: gl.constexpr,
                  WG_M: gl.constexpr):
        """TMA loads for each query tile of this program: both Q tiles into the tile's Q slot
        pair, then K_j ahead of V_{j-1} (a consumer needs them together, and a V slot frees
        later than a K slot). The K and V rings run on across tiles (g counts the K / V tiles
        loaded so far), so the next tile's Q and first K load while the consumers finish this
        one. A fresh mbarrier reads as having completed the phase before phase 0, so the first
        pass over a ring waits on parity 1 and falls through."""
        g = 0
        t = 0
        tiles = BH * (N // (2 * WG_M))
        for r in range(gl.cdiv(tiles, gl.num_programs(0))):
            lin = _snake(r)
            if lin < tiles:
                b, h, hk, bh, q_pos0, n_iters = _tile(lin, N, H, GROUP, BH, SECTION, CAUSAL,
                                                      BLOCK_N, WG_M)
                qb = t % 2
                mbarrier.wait(q_empty.index(qb), ((t // 2) & 1) ^ 1)
                for w in gl.static_range(2):
                    mbarrier.expect(q_bars.index(2 * qb + w), q_desc.block_type.nbytes)
                    tma.async_copy_global_to_shared(
                        q_desc, [b * q_rows_b + h * q_rows_h + q_pos0 + w * WG_M, h * q_cols_h],
                        q_bars.index(2 * qb + w), q_smem.index(2 * qb + w))
                k_row = b * k_rows_b + hk * k_rows_h
                v_row = b * v_rows_b + hk * v_rows_h
                for j in range(n_iters + 1):
                    if j < n_iters:
                        s = (g + j) % STAGES
                        mbarrier.wait(k_empty.index(s), (((g + j) // STAGES) & 1) ^ 1)
                        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
                        tma.async_copy_global_to_shared(k_desc, [k_row + j * BLOCK_N, hk * k_cols_h],
                                                        k_ready.index(s), k_smem.index(s))
                    if j >= 1:
                        s = (g + j - 1) % STAGES
                        mbarrier.wait(v_empty.index(s), (((g + j - 1) // STAGES) & 1) ^ 1)
                        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
                        tma.async_copy_global_to_shared(v_desc,
                                                        [v_row + (j - 1) * BLOCK_N, hk * v_cols_h],
                                                        v_ready.index(s), v_smem.index(s))
                g += n_iters
                t += 1

    @gluon.jit
    def _snake(r):
        """The tile this program runs in round r: rounds of one tile a program, every other one
        in reverse program order, so that under the causal grid's longest-first order no
        program takes the longest tile of every round."""
        p = gl.program_id(0)
        if r % 2 == 1:
            p = gl.num_programs(0) - 1 - p
        return r * gl.num_programs(0) + p

    @gluon.jit
    def _tile(lin, N, H, GROUP, BH, SECTION, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
              WG_M: gl.constexpr):
        """Query tile ``lin`` of the grid's order: (b, h, hk, bh, first query row, key tiles).
        Without the mask, tile i is query tile i % (N / 128) of head i // (N / 128). With it,
        the heads go in sections of SECTION, and a section's longest query tiles come first,
        one of each head in turn."""
        n_tiles = N // (2 * WG_M)
        if CAUSAL:
            first = lin // (SECTION * n_tiles) * SECTION
            r = lin % (SECTION * n_tiles)
            heads = gl.minimum(SECTION, BH - first)
            pid_m = n_tiles - 1 - r // heads
            bh = first + r % heads
        else:
            pid_m = lin % n_tiles
            bh = lin // n_tiles
        h = bh % H
        q_pos0 = pid_m * 2 * WG_M
        if CAUSAL:
            n_iters = gl.cdiv(q_pos0 + 2 * WG_M, BLOCK_N)
        else:
            n_iters = N // BLOCK_N
        return bh // H, h, h // GROUP, bh, q_pos0, n_iters

    @gluon.jit
    def _softmax_step(s, m_i, l_i, qk_scale, rows, col0, MASK: gl.constexpr,
                      BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
        """Fold one tile of raw scores into (m_i, l_i), m_i in scaled base-2 units: scale and
        max subtraction are one FMA a score. Returns (p float32, alpha, m_i, l_i)."""
        if MASK:  # top-left causal: query position rows[r] sees keys <= rows[r]
            cols = col0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
            s = gl.where(gl.expand_dims(cols, 0) <= gl.expand_dims(rows, 1), s, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
        alpha = gl.exp2(m_i - m_new)
        return p, alpha, m_new, l_i * alpha + gl.sum(p, axis=1)

    @gluon.jit
    def _turn_wait(turn_bars, it, WG: gl.constexpr):
        """Wait for this warpgroup's turn to issue GEMMs (warpgroup 0 goes first: its first wait
        is on parity 1 of a fresh barrier)."""
        mbarrier.wait(turn_bars.index(WG), (it & 1) ^ (1 - WG))

    @gluon.jit
    def _consumer_step(j, g0, it, acc, p, m_i, l_i, q_s, k_smem, v_smem, k_ready, k_empty,
                       v_ready, v_empty, turn_bars, qk_scale, rows, WG: gl.constexpr,
                       MASK: gl.constexpr,
                       STAGES: gl.constexpr, BLOCK_N: gl.constexpr, WG_M: gl.constexpr,
                       s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr,
                       dtype: gl.constexpr):
        """Iteration j >= 1 of a tile whose K_0 is ring entry g0 (turn ``it``): S_j and
        O += P_{j-1} V_{j-1} in flight together, the softmax of S_j under the second GEMM.
        ``p`` is P_{j-1} in float32. P is packed to 16 bits only after the barrier waits, and a
        warpgroup barrier follows the softmax: where the wgmma waits land is ptxas's choice, and
        these keep the P V wait below the exponentials (SASS read in docs/perf-notes.md)."""
        sk = (g0 + j) % STAGES
        sv = (g0 + j - 1) % STAGES
        mbarrier.wait(k_ready.index(sk), ((g0 + j) // STAGES) & 1)
        mbarrier.wait(v_ready.index(sv), ((g0 + j - 1) // STAGES) & 1)
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        _turn_wait(turn_bars, it, WG)
        s_tok = warpgroup_mma(q_s, k_smem.index(sk).permute((1, 0)),
                              gl.zeros([WG_M, BLOCK_N], gl.float32, s_layout), use_acc=False,
                              is_async=True)
        o_tok = warpgroup_mma(p_op, v_smem.index(sv), acc, is_async=True)
        mbarrier.arrive(turn_bars.index(1 - WG))
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok,))
        mbarrier.arrive(k_empty.index(sk))
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, rows, j * BLOCK_N, MASK,
                                           BLOCK_N, s_layout)
        gl.thread_barrier()
        # p_op is a dependency so that its registers stay untouched until the wgmma reading them
        # is done.
        acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p_op))
        mbarrier.arrive(v_empty.index(sv))
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
        return acc, p, m_i, l_i

    @gluon.jit
    def _consumer(WG: gl.constexpr, o_desc, q_smem, k_smem, v_smem, q_bars, q_empty, k_ready,
                  k_empty, v_ready, v_empty, turn_bars, lse_ptr, H, GROUP, N, BH, SECTION,
                  qk_scale, CAUSAL: gl.constexpr, STAGES: gl.constexpr, BLOCK_N: gl.constexpr,
                  WG_M: gl.constexpr, HEAD_DIM: gl.constexpr):
        """Query rows [q_pos0 + 64 WG, + 64) of each of this program's tiles: prologue (S_0 and
        its softmax), the key tiles without a mask, those crossing the causal diagonal, the last
        P V, then out by TMA (through this warpgroup's Q buffer, freed for the producer once the
        store has read it) and lse. Both consumers take n_iters + 1 turns a tile."""
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, BLOCK_N, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, HEAD_DIM, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
        dtype: gl.constexpr = o_desc.dtype

        g = 0
        t = 0
        it = 0
        tiles = BH * (N // (2 * WG_M))
        for r in range(gl.cdiv(tiles, gl.num_programs(0))):
            lin = _snake(r)
            if lin < tiles:
                b, h, hk, bh, q_pos0, n_iters = _tile(lin, N, H, GROUP, BH, SECTION, CAUSAL,
                                                      BLOCK_N, WG_M)
                qb = t % 2
                q_s = q_smem.index(2 * qb + WG)
                pos0 = q_pos0 + WG * WG_M
                rows = pos0 + gl.arange(0, WG_M, layout=row_layout)
                if CAUSAL:  # tiles [0, n_full) lie left of this warpgroup's diagonal
                    n_full = gl.minimum((pos0 + 1) // BLOCK_N, n_iters)
                else:
                    n_full = n_iters

                mbarrier.wait(q_bars.index(2 * qb + WG), (t // 2) & 1)
                mbarrier.wait(k_ready.index(g % STAGES), (g // STAGES) & 1)
                _turn_wait(turn_bars, it, WG)
                s_tok = warpgroup_mma(q_s, k_smem.index(g % STAGES).permute((1, 0)),
                                      gl.zeros([WG_M, BLOCK_N], gl.float32, s_layout),
                                      use_acc=False, is_async=True)
                mbarrier.arrive(turn_bars.index(1 - WG))
                s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok,))
                mbarrier.arrive(k_empty.index(g % STAGES))
                m_i = gl.full([WG_M], float("-inf"), gl.float32, row_layout)
                l_i = gl.zeros([WG_M], gl.float32, row_layout)
                # Key 0 is seen by every row, so m_i is finite from here on (no -inf - -inf).
                p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, rows, 0, CAUSAL, BLOCK_N,
                                                   s_layout)
                acc = gl.zeros([WG_M, HEAD_DIM], gl.float32, o_layout)

                for j in range(1, n_full):
                    it += 1
                    acc, p, m_i, l_i = _consumer_step(
                        j, g, it, acc, p, m_i, l_i, q_s, k_smem, v_smem, k_ready, k_empty, v_ready,
                        v_empty, turn_bars, qk_scale, rows, WG, False, STAGES, BLOCK_N, WG_M,
                        s_layout, o_layout, p_layout, dtype)
                if CAUSAL:
                    for j in range(gl.maximum(n_full, 1), n_iters):
                        it += 1
                        acc, p, m_i, l_i = _consumer_step(
                            j, g, it, acc, p, m_i, l_i, q_s, k_smem, v_smem, k_ready, k_empty,
                            v_ready, v_empty, turn_bars, qk_scale, rows, WG, True, STAGES, BLOCK_N,
                            WG_M, s_layout, o_layout, p_layout, dtype)

                it += 1
                sv = (g + n_iters - 1) % STAGES
                mbarrier.wait(v_ready.index(sv), ((g + n_iters - 1) // STAGES) & 1)
                p_op = gl.convert_layout(p.to(dtype), p_layout)
                _turn_wait(turn_bars, it, WG)
                o_tok = warpgroup_mma(p_op, v_smem.index(sv), acc, is_async=True)
                mbarrier.arrive(turn_bars.index(1 - WG))
                acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p_op))
                mbarrier.arrive(v_empty.index(sv))

                l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
                q_s.store((acc / gl.expand_dims(l_o, 1)).to(dtype))
                fence_async_shared()
                tma.async_copy_shared_to_global(o_desc, [b * N + pos0, h * HEAD_DIM], q_s)
                lse = (m_i + gl.log2(l_i)) * 0.6931471805599453
                gl.store(lse_ptr + bh * N + pos0 + gl.arange(0, WG_M, layout=row_layout), lse)
                tma.store_wait(0)
                mbarrier.arrive(q_empty.index(qb))
                it += 1
                g += n_iters
                t += 1

    @gluon.jit
    def _fwd_kernel(q_desc, k_desc, v_desc, o_desc, Lse, H, GROUP, N, BH, qk_scale,
                    q_rows_b, q_rows_h, q_cols_h, k_rows_b, k_rows_h, k_cols_h,
                    v_rows_b, v_rows_h, v_cols_h, SECTION, CAUSAL: gl.constexpr):
        """Grid (programs,), one program a tile or fewer, persistent ones: in round r each
        program runs one of tiles [r * programs, (r + 1) * programs) of the N / 128 * BH
        (``_snake``; ``_tile`` orders them). Head h of
        batch b, position n of tensor t sits at row b * t_rows_b + h * t_rows_h + n, columns
        from h * t_cols_h, of t's 2-D descriptor (K, V with the GQA head h // GROUP); out is
        (B, N, H, D) memory seen as (B * N, H * D)."""
        HEAD_DIM: gl.constexpr = q_desc.block_type.shape[1]
        WG_M: gl.constexpr = q_desc.block_type.shape[0]
        BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
        STAGES: gl.constexpr = 2
        dtype: gl.constexpr = q_desc.dtype

        # two Q slot pairs (tile parity), each one 64-row tile a consumer
        q_smem = gl.allocate_shared_memory(dtype, [4, WG_M, HEAD_DIM], q_desc.layout)
        k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
        q_bars = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        turn_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(4):
            mbarrier.init(q_bars.index(i), count=1)
        for i in gl.static_range(2):
            mbarrier.init(q_empty.index(i), count=2)  # one arrival from each consumer
            mbarrier.init(turn_bars.index(i), count=1)
        for i in gl.static_range(STAGES):
            mbarrier.init(k_ready.index(i), count=1)
            mbarrier.init(k_empty.index(i), count=2)
            mbarrier.init(v_ready.index(i), count=1)
            mbarrier.init(v_empty.index(i), count=2)
        fence_async_shared()

        gl.warp_specialize([
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bars, q_empty,
                         k_ready, k_empty, v_ready, v_empty, H, GROUP, N, BH, SECTION,
                         q_rows_b, q_rows_h, q_cols_h, k_rows_b, k_rows_h, k_cols_h, v_rows_b,
                         v_rows_h, v_cols_h, CAUSAL, STAGES, BLOCK_N, WG_M)),
            (_consumer, (0, o_desc, q_smem, k_smem, v_smem, q_bars, q_empty, k_ready, k_empty,
                         v_ready, v_empty, turn_bars, Lse, H, GROUP, N, BH, SECTION, qk_scale,
                         CAUSAL, STAGES, BLOCK_N, WG_M, HEAD_DIM)),
            (_consumer, (1, o_desc, q_smem, k_smem, v_smem, q_bars, q_empty, k_ready, k_empty,
                         v_ready, v_empty, turn_bars, Lse, H, GROUP, N, BH, SECTION, qk_scale,
                         CAUSAL, STAGES, BLOCK_N, WG_M, HEAD_DIM)),
        ], [4, 4], [_REGS, _REGS])


@functools.cache
def _hopper(index: int) -> bool:
    return torch.cuda.get_device_capability(index) == (9, 0)


def _rows_view(t: torch.Tensor) -> tuple[int, int, int, int, int, int] | None:
    """How (B, H, N, D) tensor t reads as one 2-D matrix of rows: (rows, cols, row stride,
    rows_b, rows_h, cols_h) with (b, h, n) at row b * rows_b + h * rows_h + n, columns from
    h * cols_h; None when neither layout fits. (B, H, N, D) memory: rows b * H * N + h * N + n;
    (B, N, H, D) memory, or any view with the heads inside a row (timm's packed qkv): rows
    b * N + n."""
    b, h, n, d = t.shape
    sb, sh, sn, sd = t.stride()
    if sd != 1:
        return None
    if sh == n * sn and sb == h * sh:
        return b * h * n, d, sn, h * n, n, 0
    if h == 1:
        sh = d  # the head stride of a single head is arbitrary: read it as packed
    if sb == n * sn and sh >= d and (h - 1) * sh + d <= sn:
        return b * n, (h - 1) * sh + d, sn, n, 0, sh
    return None


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether this kernel can take the call: Gluon's Hopper API present, not the interpreter nor
    ``FLASHDUO_GLUON=0``, a GPU of compute capability 9.0, float16 / bfloat16, head dim 64 or
    128, Nq == Nk a multiple of 128, and q, k, v each in a layout of ``_rows_view`` with 16-byte
    aligned base and row stride."""
    n = q.shape[2]
    if gluon is None or q.shape[3] not in HEAD_DIMS or k.shape[2] != n or n % CTA_M:
        return False
    if (not q.is_cuda or q.dtype not in _GL_DTYPES or interpreting()
            or os.environ.get("FLASHDUO_GLUON", "1") == "0" or not _hopper(q.device.index or 0)):
        return False
    for t in (q, k, v):
        view = _rows_view(t)
        if view is None or t.data_ptr() % 16 or (view[2] * t.element_size()) % 16:
            return False
    return True


_GL_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _section(n: int, heads: int, persistent: bool) -> int:
    """Heads of one section of a causal grid: about ``SECTION_CTAS`` query tiles, so that the
    tiles running at once share the K and V of a few heads in L2 (16 heads of 8 tiles at N =
    1024, one head from N = 16384 on) while the longest of them start first. Persistent programs
    take ``PERSISTENT_SECTION_CTAS``: their static rounds then mix long and short tiles in every
    program (measured in docs/perf-notes.md, Triton v1.11)."""
    ctas = PERSISTENT_SECTION_CTAS if persistent else SECTION_CTAS
    return max(1, min(heads, ctas // (n // CTA_M)))


@functools.cache
def _smem_layout(block: tuple[int, int], dtype: torch.dtype):
    return gl.NVMMASharedLayout.get_default_for(list(block), getattr(gl, _GL_DTYPES[dtype]))


_DESCRIPTOR_FIELDS = ("base", "shape", "strides", "block_shape", "layout", "padding")


@functools.cache
def _bare_descriptors() -> bool:
    """Whether ``_descriptor`` may fill a TensorDescriptor without its constructor's checks: its
    fields are the ones this module knows, and its instances keep them in ``__dict__``."""
    fields = getattr(TensorDescriptor, "__dataclass_fields__", {})
    return tuple(fields) == _DESCRIPTOR_FIELDS and not hasattr(TensorDescriptor, "__slots__")


def _descriptor(t: torch.Tensor, rows: int, cols: int, stride: int, block: tuple[int, int]):
    """A host descriptor of t as a (rows, cols) matrix with row stride ``stride``, loaded in
    ``block`` tiles. ``usable`` has checked what the constructor would (16-byte aligned base and
    row stride, a block shape of powers of two), so where the fields allow it they are set
    without the checks, microseconds of host time a call for four descriptors."""
    layout = _smem_layout(block, t.dtype)
    if not _bare_descriptors():
        return TensorDescriptor(t, [rows, cols], [stride, 1], list(block), layout)
    desc = TensorDescriptor.__new__(TensorDescriptor)
    desc.__dict__.update(base=t, shape=[rows, cols], strides=[stride, 1],
                         block_shape=list(block), layout=layout, padding="zero")
    return desc


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
    persistent: bool | int = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward where ``usable(q, k, v)``: q (B, Hq, N, D), k, v (B, Hkv, N, D), D 64 or 128.

    ``persistent``: True runs one program an SM, each taking every SM-count-th query tile (the
    producer loads a tile's Q and first keys while the consumers finish the one before); an int
    runs that many programs (at most one a tile); False one program a tile.

    Returns out (B, Hq, N, D) in q's dtype, in (B, N, Hq, D) memory like ``triton_impl.fwd``'s,
    and lse (B, Hq, N) float32, natural log.
    """
    b, h, n, d = q.shape
    hkv = k.shape[1]
    out_bnhd = torch.empty((b, n, h, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, n), dtype=torch.float32, device=q.device)

    def run() -> None:
        descs, maps = [], []
        for t, block in ((q, (WG_M, d)), (k, (BLOCK_N, d)), (v, (BLOCK_N, d))):
            rows, cols, stride, rows_b, rows_h, cols_h = _rows_view(t)
            descs.append(_descriptor(t, rows, cols, stride, block))
            maps += [rows_b, rows_h, cols_h]
        descs.append(_descriptor(out_bnhd, b * n, h * d, h * d, (WG_M, d)))
        tiles = n // CTA_M * b * h
        programs = tiles
        if persistent is not False:
            programs = min(tiles, _sm_count(q.device.index or 0) if persistent is True
                           else persistent)
        launch_jit(_fwd_kernel, (programs,), *descs, lse, h, h // hkv, n, b * h,
                   scale * _LOG2E, *maps, _section(n, b * h, programs < tiles), CAUSAL=causal,
                   num_warps=4, maxnreg=LAUNCH_REGS)

    key = None
    if _PLANS.on():
        key = (q.shape, k.shape, q.stride(), k.stride(), v.stride(), q.dtype, causal, scale,
               type(persistent), persistent, aligned(q, k, v))
    _PLANS.launch(key, (q, k, v, out_bnhd, lse), run)
    return out_bnhd.transpose(1, 2), lse


# The forward's launches, replayed per call key (``triton_impl._plans``).
_PLANS = Plans()
