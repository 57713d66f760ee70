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
