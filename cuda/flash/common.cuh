// Building blocks of the CUDA FlashAttention kernels: PTX wrappers for cp.async,
// ldmatrix and mma.sync m16n8k16, and the XOR swizzle of shared-memory tiles.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "params.h"

namespace flashduo {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
// 4-byte global -> shared copy (through L1); zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, bool valid) {
  const int bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, and register i
// receives matrix i with lane l holding row l/4, columns 2(l%4), 2(l%4)+1.
__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// Same, each matrix transposed on the way into registers.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a (16x16, row) * b (16x8, col) with fp32 accumulation, on fp16 or bf16 operands.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> one register of two 16-bit values, x in the low half (the lower column).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float x, float y);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float x, float y) {
  __half2 h = __floats2half2_rn(x, y);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float x, float y) {
  __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
  return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

// Element offset of (row, col) in a [rows][D] tile whose 16-byte chunks are XOR-swizzled by
// row % 8: the 8 rows an ldmatrix phase reads at one logical chunk land in 8 different bank
// groups. col must be a multiple of 8.
template <int D>
__device__ __forceinline__ int swizzle(int row, int col) {
  return row * D + ((((col >> 3) ^ (row & 7))) << 3);
}

// A lane's ldmatrix source addresses in a swizzled [rows][D] tile (D a multiple of 64), computed
// once per tile so that the unrolled loops issue LDSM with a register + immediate address and no
// integer work. The lane reads row r_lane (+ any multiple of 8) and 16-byte chunk 2 kk + h_lane of
// the 16-column step kk. Because r % 8 only flips the low three chunk bits, that chunk sits at
// byte a[kk % 4] + 128 (kk / 4) of the row: four registers cover every kk.
struct LdsmRows {
  uint32_t a[4];
};

template <int D>
__device__ __forceinline__ LdsmRows ldsm_rows(const void* tile, int r_lane, int h_lane) {
  static_assert(D % 64 == 0, "ldsm_rows needs at least 8 chunks per row");
  LdsmRows rows;
  const uint32_t base = smem_addr(tile) + static_cast<uint32_t>(r_lane * D * 2);
#pragma unroll
  for (int m = 0; m < 4; ++m) rows.a[m] = base + ((((2 * m) | h_lane) ^ (r_lane & 7)) << 4);
  return rows;
}

// Address of 16-column step kk at row offset `row0` (a multiple of 8) for a lane of `rows`.
template <int D>
__device__ __forceinline__ uint32_t ldsm_at(const LdsmRows& rows, int row0, int kk) {
  return rows.a[kk % 4] + (kk / 4) * 128 + row0 * D * 2;
}

// Which (batch, query head, K/V head, query tile) tile `idx` of a query-resident kernel is: a 1-D
// order with query tiles fastest (blocks running together share a head's K/V in L2); causal runs
// the heaviest (last) query tiles of a head first.
struct QueryBlock {
  int bh, b, h, hk, m0;
};

template <int BM, bool kCausal>
__device__ __forceinline__ QueryBlock query_block_at(int idx, int nq, int hq, int hkv) {
  const int num_m = (nq + BM - 1) / BM;
  const int bh = idx / num_m;
  const int m_blk = kCausal ? num_m - 1 - idx % num_m : idx % num_m;
  const int h = bh % hq;
  return {bh, bh / hq, h, h / (hq / hkv), m_blk * BM};
}

// The block's own tile (1-D grid, one tile per block).
template <int BM, bool kCausal>
__device__ __forceinline__ QueryBlock query_block(int nq, int hq, int hkv) {
  return query_block_at<BM, kCausal>(static_cast<int>(blockIdx.x), nq, hq, hkv);
}

// Copy rows [row0, row0 + ROWS) of a (N, D) matrix into a swizzled tile; rows >= n become zeros.
// THREADS is the block size. Each thread copies one fixed 16-byte column chunk in every pass of
// THREADS / (D / 8) rows (a multiple of 8, so the swizzle is the same in every pass): the passes
// unroll into cp.async with immediate shared-memory offsets and one pointer step each.
template <typename T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_rows_async(T* tile, const T* g, int64_t stride, int row0,
                                                int n) {
  constexpr int kChunks = D / 8, kRowsPerPass = THREADS / kChunks;
  static_assert(THREADS % kChunks == 0 && kRowsPerPass % 8 == 0 && ROWS % kRowsPerPass == 0,
                "tile rows must split into passes of a multiple of 8 rows");
  const int r = threadIdx.x / kChunks, col = (threadIdx.x % kChunks) * 8;
  const uint32_t dst = smem_addr(tile + swizzle<D>(r, col));
  const T* src = g + static_cast<int64_t>(row0 + r) * stride + col;
#pragma unroll
  for (int i = 0; i < ROWS / kRowsPerPass; ++i) {
    const bool ok = row0 + r + i * kRowsPerPass < n;
    cp_async_16(dst + i * kRowsPerPass * D * 2, ok ? src + i * kRowsPerPass * stride : g, ok);
  }
}

// 2D RoPE of a swizzled [ROWS][D] tile in shared memory, in place. Tile row r holds token
// row0 + r of a sequence of n_rows; token t turns by table row t - prefix when that lies in
// [0, n_pos), and is left alone otherwise (prefix tokens, padding). Each thread owns the same
// 16-byte chunks (four channel pairs) as in load_rows_async: chunk `lane_chunk` of rows
// r0 + i * kPass. Its cos / sin come either from registers fetched ahead (RopeRegs, for a tile
// rotated once per block) or from a per-thread shared-memory stage filled by cp.async (RopeStage,
// for the tiles a block streams), so the rotation itself never waits on global memory.
template <int D, int ROWS, int THREADS>
struct RopeChunks {
  static constexpr int kChunks = D / 8, kPass = THREADS / kChunks, kPer = ROWS / kPass;
  static_assert(THREADS % kChunks == 0 && ROWS % kPass == 0, "tile rows must split into passes");
  static __device__ __forceinline__ int r0() { return threadIdx.x / kChunks; }
  static __device__ __forceinline__ int chunk() { return threadIdx.x % kChunks; }
  // Table row of tile row r0 + i * kPass, or -1 when that token is not rotated.
  static __device__ __forceinline__ int pos(int i, int row0, int n_rows, const RopeParams& r) {
    const int row = row0 + r0() + i * kPass, t = row - r.prefix;
    return row < n_rows && t >= 0 && t < r.n_pos ? t : -1;
  }
  // This thread's chunk i in a swizzled [ROWS][D] tile.
  template <typename T>
  static __device__ __forceinline__ T* at(T* tile, int i) {
    return tile + swizzle<D>(r0() + i * kPass, chunk() * 8);
  }
};

template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t x);
template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t x) {
  return __half22float2(*reinterpret_cast<__half2*>(&x));
}
template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t x) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x));
}

// The inverse rotation of one channel pair of a gradient, (e, o) -> (e c + o s, o c - e s): the
// gradient against a rotated q or k becomes the gradient against the unrotated one.
__device__ __forceinline__ void rope_turn_back(float& e, float& o, float c, float s) {
  const float e0 = e;
  e = e0 * c + o * s;
  o = o * c - e0 * s;
}

// Four channel pairs (one 16-byte chunk) turned by cos c and sin s:
// (e, o) -> (e c - o s, o c + e s).
template <typename T>
__device__ __forceinline__ void rope_chunk(T* at, const float4& c, const float4& s) {
  uint4 x = *reinterpret_cast<const uint4*>(at);
  const float cc[4] = {c.x, c.y, c.z, c.w}, ss[4] = {s.x, s.y, s.z, s.w};
  uint32_t w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 eo = unpack2<T>(w[i]);
    w[i] = pack2<T>(eo.x * cc[i] - eo.y * ss[i], eo.y * cc[i] + eo.x * ss[i]);
  }
  *reinterpret_cast<uint4*>(at) = make_uint4(w[0], w[1], w[2], w[3]);
}

// cos / sin of one thread's chunks, fetched into registers ahead of the tile landing; rows that
// are not rotated get the identity (cos 1, sin 0).
template <int D, int ROWS, int THREADS>
struct RopeRegs {
  using C = RopeChunks<D, ROWS, THREADS>;
  float4 c[C::kPer], s[C::kPer];

  __device__ __forceinline__ void fetch(int row0, int n_rows, const RopeParams& r) {
#pragma unroll
    for (int i = 0; i < C::kPer; ++i) {
      const int t = C::pos(i, row0, n_rows, r);
      const int off = t * (D / 2) + C::chunk() * 4;
      c[i] = t >= 0 ? __ldg(reinterpret_cast<const float4*>(r.cos + off)) : make_float4(1, 1, 1, 1);
      s[i] = t >= 0 ? __ldg(reinterpret_cast<const float4*>(r.sin + off)) : make_float4(0, 0, 0, 0);
    }
  }
  template <typename T>
  __device__ __forceinline__ void apply(T* tile) const {
#pragma unroll
    for (int i = 0; i < C::kPer; ++i) rope_chunk(C::at(tile, i), c[i], s[i]);
  }
};

// A per-thread shared-memory stage of cos / sin for a streamed tile: thread t's chunk i sits at
// float4 index i * THREADS + t (cos) and kPer * THREADS + i * THREADS + t (sin), conflict-free.
// Only the thread that loads an entry reads it, so cp.async_wait alone makes it visible.
template <int D, int ROWS, int THREADS>
struct RopeStage {
  using C = RopeChunks<D, ROWS, THREADS>;
  static constexpr int kBytes = 2 * C::kPer * THREADS * 16;

  static __device__ __forceinline__ void load_async(float* stage, int row0, int n_rows,
                                                    const RopeParams& r) {
    const uint32_t dst = smem_addr(stage) + threadIdx.x * 16;
#pragma unroll
    for (int i = 0; i < C::kPer; ++i) {
      const int t = C::pos(i, row0, n_rows, r);
      const int off = max(t, 0) * (D / 2) + C::chunk() * 4;
      cp_async_16(dst + i * THREADS * 16, r.cos + off, t >= 0);
      cp_async_16(dst + (C::kPer + i) * THREADS * 16, r.sin + off, t >= 0);
    }
  }
  template <typename T>
  static __device__ __forceinline__ void apply(T* tile, const float* stage, int row0, int n_rows,
                                               const RopeParams& r) {
    const float4* st = reinterpret_cast<const float4*>(stage) + threadIdx.x;
#pragma unroll
    for (int i = 0; i < C::kPer; ++i) {
      if (C::pos(i, row0, n_rows, r) < 0) continue;
      rope_chunk(C::at(tile, i), st[i * THREADS], st[(C::kPer + i) * THREADS]);
    }
  }
};

// Turn a warp's 16 x D fp32 accumulator (rows row_lo and row_lo + 8 of this lane, mma C layout:
// acc[t][2i], acc[t][2i + 1] are the pair t * 4 + lane % 4) back by the inverse rotation: the
// gradient against rotated q or k becomes the gradient against the unrotated one.
template <int D>
__device__ __forceinline__ void rope_acc_inverse(float (&acc)[D / 8][4], int row_lo, int n_rows,
                                                 const RopeParams& r) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row_lo + 8 * i, pos = row - r.prefix;
    if (pos < 0 || pos >= r.n_pos || row >= n_rows) continue;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) {
      const int pair = pos * (D / 2) + t * 4 + lane % 4;
      rope_turn_back(acc[t][2 * i], acc[t][2 * i + 1], r.cos[pair], r.sin[pair]);
    }
  }
}

// acc (16 x D) += X (16 x K, fp32 accumulators) * tile, tile being (K, D) row-major in shared memory.
// Only the first k_valid rows of the tile count (steps of 16 past them are skipped: X is zero
// there); pass K for a full tile so the test folds away.
template <typename T, int D, int K>
__device__ __forceinline__ void mma_acc_b(float (&acc)[D / 8][4], const float (&x)[K / 8][4],
                                          const T* tile, int k_valid = K) {
  const int lane = threadIdx.x % 32;
  const LdsmRows rows = ldsm_rows<D>(tile, ((lane / 8) % 2) * 8 + lane % 8, lane / 16);
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    if (kk * 16 >= k_valid) break;
    const uint32_t a[4] = {pack2<T>(x[2 * kk][0], x[2 * kk][1]),
                           pack2<T>(x[2 * kk][2], x[2 * kk][3]),
                           pack2<T>(x[2 * kk + 1][0], x[2 * kk + 1][1]),
                           pack2<T>(x[2 * kk + 1][2], x[2 * kk + 1][3])};
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t bf[4];
      ldmatrix_x4_trans(ldsm_at<D>(rows, kk * 16, dp), bf);
      mma_16816<T>(acc[2 * dp], a, bf[0], bf[1]);
      mma_16816<T>(acc[2 * dp + 1], a, bf[2], bf[3]);
    }
  }
}

}  // namespace flashduo
