// 2D RoPE for the Hopper kernels: rotate a Q or K tile in shared memory, in the swizzled column
// blocks TMA wrote (ptx.cuh), with the per-pair cos / sin tables of reference/rope.py.
#pragma once

#include "../common.cuh"
#include "../params.h"

namespace flashduo::sm90 {

// Rotate rows [0, ROWS) of `tile` (ROWS x D in D / C column blocks of C elements, 128-byte swizzle
// for C = 64, 64-byte for C = 32), which hold tokens row0 + [0, ROWS); tokens outside
// [prefix, prefix + n_pos) stay as they are. THREADS threads share the work (tid: this one's
// index); each 16-byte chunk (four channel pairs) is read, turned and written back.
template <typename T, int D, int C, int ROWS, int THREADS>
__device__ __forceinline__ void rope_tile(T* tile, int row0, const RopeParams& r, int tid) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
#pragma unroll 4
  for (int idx = tid; idx < ROWS * kChunks; idx += THREADS) {
    const int row = idx / kChunks, chunk = idx % kChunks;
    const int pos = row0 + row - r.prefix;
    if (pos < 0 || pos >= r.n_pos) continue;
    const int col = chunk * 8;
    const int in_block = (col % C) / 8;  // logical chunk within the block's row
    const int phys = C == 64 ? in_block ^ (row & 7) : in_block ^ ((row >> 1) & 3);
    T* at = tile + (col / C) * ROWS * C + row * C + phys * 8;
    const int pair = pos * (D / 2) + col / 2;
    const float4 c = *reinterpret_cast<const float4*>(r.cos + pair);
    const float4 s = *reinterpret_cast<const float4*>(r.sin + pair);
    rope_chunk(at, c, s);
  }
}

// Turn a warpgroup's 64 x N fp32 accumulator back by the inverse rotation: the gradient against
// rotated q or k becomes the gradient against the unrotated one. wgmma layout: acc[4 t + 2 i] and
// acc[4 t + 2 i + 1] are columns col0 + 8 t + 2 (lane % 4) + {0, 1} (one channel pair) of row
// row_lo + 8 i, row_lo being this thread's first row; rows at or past n_rows are left alone.
template <int D, int N>
__device__ __forceinline__ void rope_acc_inverse_wg(float (&acc)[N / 2], int row_lo, int n_rows,
                                                    int col0, const RopeParams& r) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row_lo + 8 * i, pos = row - r.prefix;
    if (pos < 0 || pos >= r.n_pos || row >= n_rows) continue;
#pragma unroll
    for (int t = 0; t < N / 8; ++t) {
      const int pair = pos * (D / 2) + col0 / 2 + t * 4 + lane % 4;
      rope_turn_back(acc[4 * t + 2 * i], acc[4 * t + 2 * i + 1], __ldg(r.cos + pair),
                     __ldg(r.sin + pair));
    }
  }
}

}  // namespace flashduo::sm90
