"""Small Triton helpers shared by the forward and backward kernels."""

import triton
import triton.language as tl


@triton.jit
def load_tile(
    ptrs, rows, n_rows,
    offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CHECK_ROWS: tl.constexpr,
):
    """Load a (rows, BLOCK_D) tile, zero-filling rows >= n_rows (if CHECK_ROWS) and padded dims.

    Masks are only emitted where they can be false, so interior tiles of a power-of-two head dim
    are plain, fully vectorized loads.
    """
    if CHECK_ROWS:
        if BLOCK_D == HEAD_DIM:
            x = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
        else:
            x = tl.load(
                ptrs, mask=(rows[:, None] < n_rows) & (offs_d[None, :] < HEAD_DIM), other=0.0
            )
    else:
        if BLOCK_D == HEAD_DIM:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    return x


@triton.jit
def row_tiles(base, n_rows, stride, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr,
              BLOCK_D: tl.constexpr, TMA: tl.constexpr):
    """What loads (ROWS, BLOCK_D) tiles of one head's (n_rows, HEAD_DIM) matrix at ``base`` (row
    stride ``stride``, unit column stride): with TMA a tensor descriptor, whose loads zero-fill rows
    >= n_rows and columns >= HEAD_DIM; without, the base pointer itself (see :func:`rows_tile`)."""
    tiles = base
    if TMA:
        tiles = tl.make_tensor_descriptor(base, shape=[n_rows, HEAD_DIM], strides=[stride, 1],
                                          block_shape=[ROWS, BLOCK_D])
    return tiles


@triton.jit
def rows_tile(tiles, start, n_rows, stride, offs_d, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_D: tl.constexpr, CHECK_ROWS: tl.constexpr, TMA: tl.constexpr):
    """The (ROWS, BLOCK_D) tile of rows [start, start + ROWS) from :func:`row_tiles`' ``tiles``,
    zero outside the matrix (CHECK_ROWS says whether rows can fall outside it without TMA)."""
    if TMA:
        x = tiles.load([start, 0])
    else:
        rows = start + tl.arange(0, ROWS)
        x = load_tile(tiles + rows[:, None] * stride + offs_d[None, :], rows, n_rows, offs_d,
                      HEAD_DIM, BLOCK_D, CHECK_ROWS)
    return x


@triton.jit
def dot(a, b):
    """``a @ b`` in float32; float32 operands use 3xTF32 (near-float32 accuracy)."""
    if a.dtype == tl.float32:
        out = tl.dot(a, b, input_precision="tf32x3")
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def dot_acc(a, b, acc):
    """``acc + a @ b`` in float32, with the same precision rule as :func:`dot`."""
    if a.dtype == tl.float32:
        out = tl.dot(a, b, acc, input_precision="tf32x3")
    else:
        out = tl.dot(a, b, acc)
    return out


@triton.jit
def query_tile(pid, NQ, H, GROUP, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """Map program ``pid`` to (bh, b, h, hk, start_m) for kernels with a query tile resident.

    1-D grid with query tiles fastest, so programs running together share one head's K/V in L2;
    with CAUSAL the heaviest (last) query tiles of a head start first. b, h, hk are int64.
    """
    num_m = tl.cdiv(NQ, BLOCK_M)
    bh = pid // num_m
    start_m = pid % num_m
    if CAUSAL:
        start_m = num_m - 1 - start_m
    h = (bh % H).to(tl.int64)
    return bh, (bh // H).to(tl.int64), h, h // GROUP, start_m


@triton.jit
def key_ranges(start_m, NK, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """Key bounds (full_hi, hi) for query tile start_m: tiles in [0, full_hi) need no mask, tiles
    in [full_hi, hi) cross the causal diagonal or the key tail, keys from hi on are never seen."""
    if CAUSAL:
        full_hi = tl.minimum(start_m * BLOCK_M, NK)
        hi = tl.minimum((start_m + 1) * BLOCK_M, NK)
    else:
        full_hi = NK
        hi = NK
    return (full_hi // BLOCK_N) * BLOCK_N, hi


@triton.jit
def rope_tile(
    x, rows, Cos, Sin, N_POS, PREFIX,
    ROWS: tl.constexpr, HALF_D: tl.constexpr, BLOCK_D: tl.constexpr, INVERSE: tl.constexpr,
):
    """Rotate the channel pairs (2i, 2i + 1) of a float32 (ROWS, BLOCK_D) tile by 2D RoPE.

    Token ``rows[r]`` sits at grid position rows[r] - PREFIX of the (N_POS, HALF_D) float32 Cos /
    Sin tables; prefix tokens, rows past the grid and padded channels are left as they are.
    INVERSE turns by the opposite angle: the transpose, which maps gradients back.
    """
    pos = rows - PREFIX
    offs = tl.arange(0, BLOCK_D // 2)
    ok = (pos[:, None] >= 0) & (pos[:, None] < N_POS) & (offs[None, :] < HALF_D)
    table = pos[:, None] * HALF_D + offs[None, :]
    c = tl.load(Cos + table, mask=ok, other=1.0)
    s = tl.load(Sin + table, mask=ok, other=0.0)
    if INVERSE:
        s = -s
    even, odd = tl.split(tl.reshape(x, (ROWS, BLOCK_D // 2, 2)))
    return tl.reshape(tl.join(even * c - odd * s, odd * c + even * s), (ROWS, BLOCK_D))


@triton.jit
def in_window(rows, cols, LEFT, RIGHT):
    """Which (row, col) pairs of the ``rows`` x ``cols`` tile lie in the band of the sliding
    window: query i sees key j iff i - LEFT <= j <= i + RIGHT, a negative bound unbounded."""
    r = rows[:, None]
    c = cols[None, :]
    return ((LEFT < 0) | (c >= r - LEFT)) & ((RIGHT < 0) | (c <= r + RIGHT))


@triton.jit
def kept(rows, cols, NK, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, LEFT, RIGHT):
    """Which (row, col) pairs of a ``rows`` x ``cols`` score tile take part: keys inside
    [0, NK), and under CAUSAL / WINDOW inside the mask."""
    keep = cols[None, :] < NK
    if CAUSAL:
        keep = keep & (cols[None, :] <= rows[:, None])
    if WINDOW:
        keep = keep & in_window(rows, cols, LEFT, RIGHT)
    return keep


@triton.jit
def _band(first, SIZE: tl.constexpr, N, BEFORE, AFTER, GRAIN: tl.constexpr):
    """(lo, full_lo, full_hi, hi) of the positions [0, N) that the tile of SIZE positions from
    ``first`` reaches when position i reaches i - BEFORE .. i + AFTER (negative: unbounded), in
    multiples of GRAIN but hi: [full_lo, full_hi) is reached by every position of the tile,
    [lo, full_lo) and [full_hi, hi) by some, nothing outside [lo, hi)."""
    last = first + SIZE - 1
    lo_pos = tl.where(BEFORE < 0, 0, tl.maximum(first - BEFORE, 0))
    hi_pos = tl.where(AFTER < 0, N, tl.minimum(last + AFTER + 1, N))
    full_lo_pos = tl.where(BEFORE < 0, 0, tl.maximum(last - BEFORE, 0))
    full_hi_pos = tl.where(AFTER < 0, N, tl.minimum(first + AFTER + 1, N))
    lo = (lo_pos // GRAIN) * GRAIN
    hi = tl.maximum(hi_pos, lo)
    hi_tiles = tl.cdiv(hi, GRAIN) * GRAIN
    full_lo = tl.minimum(tl.maximum(tl.cdiv(full_lo_pos, GRAIN) * GRAIN, lo), hi_tiles)
    full_hi = tl.minimum(tl.maximum((full_hi_pos // GRAIN) * GRAIN, full_lo), hi_tiles)
    return lo, full_lo, full_hi, hi


@triton.jit
def window_keys(start_m, NK, LEFT, RIGHT, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key bounds (lo, full_lo, full_hi, hi) of query tile start_m under the window: key tiles
    in [full_lo, full_hi) are seen by every row of the tile and lie inside [0, NK) (no mask);
    [lo, full_lo) and [full_hi, hi) need the mask; keys outside [lo, hi) are never visited."""
    return _band(start_m * BLOCK_M, BLOCK_M, NK, LEFT, RIGHT, BLOCK_N)


@triton.jit
def window_queries(start_n, NQ, LEFT, RIGHT, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query bounds (lo, full_lo, full_hi, hi), multiples of BLOCK_M but hi, for the key tile
    from start_n under the window (key j is seen by rows j - RIGHT .. j + LEFT): query tiles in
    [full_lo, full_hi) see every key of the tile, [lo, full_lo) and [full_hi, hi) need the
    mask, rows outside [lo, hi) see none of these keys."""
    return _band(start_n, BLOCK_N, NQ, RIGHT, LEFT, BLOCK_M)


@triton.jit
def capped(qk, cap_in):
    """tanh(qk * cap_in) in float32 (the softcap's tanh(s / c) of raw scores qk, cap_in = scale
    / c), as 2 sigmoid(2x) - 1."""
    return 2.0 * tl.sigmoid(2.0 * cap_in * qk) - 1.0


@triton.jit
def mask_tile(mask_base, rows, cols, NQ, NK, stride_mm, stride_mn, MASK_ROWS: tl.constexpr):
    """The attention mask on the (rows, cols) tile, 0 (bool: left out) past NQ or NK: a full
    tile where the mask varies over query rows (MASK_ROWS), else one (1, cols) row of it."""
    if MASK_ROWS:
        ok = (rows[:, None] < NQ) & (cols[None, :] < NK)
        m = tl.load(mask_base + rows[:, None] * stride_mm + cols[None, :] * stride_mn, mask=ok,
                    other=0)
    else:
        m = tl.load(mask_base + cols * stride_mn, mask=cols < NK, other=0)[None, :]
    return m


@triton.jit
def mask_tile_t(mask_base, keys, rows, NQ, NK, stride_mm, stride_mn, MASK_ROWS: tl.constexpr):
    """:func:`mask_tile` transposed, on the (keys, rows) tile of the backward's dK/dV pass."""
    if MASK_ROWS:
        ok = (keys[:, None] < NK) & (rows[None, :] < NQ)
        m = tl.load(mask_base + rows[None, :] * stride_mm + keys[:, None] * stride_mn, mask=ok,
                    other=0)
    else:
        m = tl.load(mask_base + keys * stride_mn, mask=keys < NK, other=0)[:, None]
    return m


@triton.jit
def masked_scores(s, m, bias_in, MASK: tl.constexpr):
    """Scores s with the attention mask tile m applied: MASK 1 (bool) sets left-out pairs to
    -inf, MASK 2 (float) adds m * bias_in (the mask in units of s); MASK 0 leaves s."""
    if MASK == 1:
        s = tl.where(m != 0, s, float("-inf"))
    elif MASK == 2:
        s = s + m.to(tl.float32) * bias_in
    return s


@triton.jit
def any_kept(m, MASK: tl.constexpr):
    """Whether a bool mask tile keeps any pair (a tile it leaves out whole is skipped); True for
    the other kinds."""
    keep = True
    if MASK == 1:
        keep = tl.max(tl.max(m.to(tl.int32), 1), 0) != 0
    return keep


@triton.jit
def sequence(b, CuQ, CuK):
    """(q0, nq, k0, nk): the first row (int64) and the length of packed sequence b's queries and
    keys, from the cumulative lengths CuQ, CuK (int32, batch + 1). Kernels call it under their
    VARLEN only: torch.compile's analysis of a kernel's writes counts pointers handed to a
    called function as written, so in a batch of equal lengths they are not passed."""
    q0 = tl.load(CuQ + b).to(tl.int64)
    nq = (tl.load(CuQ + b + 1) - q0).to(tl.int32)
    k0 = tl.load(CuK + b).to(tl.int64)
    nk = (tl.load(CuK + b + 1) - k0).to(tl.int32)
    return q0, nq, k0, nk
