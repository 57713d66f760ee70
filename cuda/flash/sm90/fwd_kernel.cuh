// FlashAttention forward for Hopper (sm_90a): TMA, wgmma and warp specialization.
//
// A block owns BM query rows of one (batch, query head): one producer and BM / 64 (two or three)
// consumer warpgroups (FwdTiles; the shipped shapes in FwdShape).
// - Warpgroup 0, the producer, keeps 24 registers per thread (setmaxnreg) and one of its threads
//   issues every TMA load: the Q tile once, then K and V tiles of BN rows into a ring of kStages
//   shared-memory stages. A stage has "K full" and "V full" mbarriers (TMA counts the bytes that
//   landed) and one "empty" mbarrier (every consumer warp is done with it).
// - The consumers share the registers the producer gave up and own 64 query rows each. Per key
//   tile j a consumer issues S_j = Q K_j^T (wgmma, both operands in shared memory) and, in the
//   same breath, O += P_{j-1} V_{j-1} (wgmma, P from registers), waits for S_j only, and runs the
//   online softmax of tile j while the tensor cores still work on P_{j-1} V_{j-1}. The consumers
//   take turns issuing their products (a named barrier per consumer, "ping-pong"), so one's
//   softmax (exp2 on the MUFU) runs under the others' matrix products.
// The epilogue normalizes O in registers and writes O and the natural-log lse to global memory.
// A block walks query tiles: one (a block per tile), every gridDim.x-th (static persistent), or
// the next untaken one from a global counter (dynamic persistent); the producer picks each and
// passes it to the other roles through shared memory, and the K/V ring runs on across tiles.
// With 2D RoPE, producer warps 1-3 rotate the Q tile and each K tile in shared memory once TMA
// has landed it, and the consumers wait for the rotated tile instead.
// Causal (top-left): key tiles past the block's last row are never loaded, only the tiles that
// cross the diagonal are masked, and the heaviest query tiles are scheduled first. Rows past Nq
// and keys past Nk arrive as zeros from TMA; the key tail is masked.
#pragma once

#include <cuda.h>

#include <cmath>

#include "../common.cuh"
#include "../params.h"
#include "ptx.cuh"
#include "rope.cuh"
#include "wgmma.cuh"

namespace flashduo::sm90 {

// A tile shape: BM query rows per block (64 per consumer warpgroup), key tiles of BN rows, a ring
// of kStages K/V stages. kChunk: the column block of a shared-memory tile (64 elements under the
// 128-byte swizzle; 32 and the 64-byte swizzle for D = 96, which 64 does not divide). Registers
// per thread after setmaxnreg: the producer keeps 24 (56 when it rotates tiles for RoPE), the
// consumers share the rest. EARLY_Q: the consumers free the Q tile as soon as its last S is
// computed, so a persistent block's next Q tile lands during the last softmax, P V and epilogue;
// otherwise after the last P V.
template <int D, int BM, int BN, int STAGES, bool EARLY_Q = true>
struct FwdTiles {
  static constexpr int kBM = BM, kBN = BN, kStages = STAGES;
  static constexpr bool kEarlyQ = EARLY_Q;
  static constexpr int kConsumers = BM / 64;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  template <bool kRope>
  static constexpr int kProducerRegs = kRope ? 56 : 24;
  template <bool kRope>
  static constexpr int kConsumerRegs = kConsumers == 2 ? (kRope ? 224 : 240) : (kRope ? 152 : 160);
  static constexpr int kChunk = D % 64 == 0 ? 64 : 32;
  static constexpr uint32_t kSwizzle = kChunk == 64 ? 1 : 2;  // descriptor code
  static constexpr uint32_t kGroup = 8 * kChunk * 2;           // bytes of 8 rows of a block
  static constexpr int kSmemTiles = (kBM + 2 * kStages * kBN) * D * 2;
  // + alignment, barriers and the two query-tile slots
  static constexpr int kSmem = kSmemTiles + 1024 + (3 + 4 * kStages) * 8 + 8;
  static_assert(BM % 64 == 0 && (kConsumers == 2 || kConsumers == 3), "2 or 3 consumers");
  static_assert(BN % 16 == 0 && BN <= 256 && kSmem <= 227 * 1024, "tile too large");
  static_assert(kProducerRegs<true> * 128 + kConsumerRegs<true> * 128 * kConsumers <= 65536 &&
                    kProducerRegs<false> * 128 + kConsumerRegs<false> * 128 * kConsumers <= 65536,
                "registers");
};

// The shipped shape per head dim: three stages where they fit in shared memory (at D = 256 a
// stage is 80 KB). The backward borrows its column-block layout.
template <int D>
using FwdShape = FwdTiles<D, 128, D <= 128 ? 128 : 80, D <= 128 ? 3 : 2>;
// Non-causal D = 64 with at least 1024 query rows: 192 rows and three consumers per block.
using FwdShapeWide64 = FwdTiles<64, 192, 128, 3>;

// Descriptor of the 16 columns [16 kk, 16 kk + 16) of rows [r0, r0 + 8 m) of a K-major tile of
// `rows` rows stored as column blocks (ptx.cuh).
template <typename T, class S>
__device__ __forceinline__ uint64_t kmajor_desc(const T* tile, int rows, int r0, int kk) {
  const int col = kk * 16;
  const T* p = tile + (col / S::kChunk) * rows * S::kChunk + r0 * S::kChunk + col % S::kChunk;
  return smem_desc(p, 16, S::kGroup, S::kSwizzle);
}

// Descriptor of rows [16 kk, 16 kk + 16) of a V tile (BN x D) read as the N-major B operand of
// P V: 8-row groups kGroup bytes apart, column blocks BN rows apart.
template <typename T, class S>
__device__ __forceinline__ uint64_t v_desc(const T* tile, int kk) {
  return smem_desc(tile + kk * 16 * S::kChunk, S::kBN * S::kChunk * 2, S::kGroup, S::kSwizzle);
}

// Online softmax of one S tile (64 x BN per warpgroup, wgmma accumulator layout) in log2 units:
// masks keys >= nk and, with causal, keys after the row; updates the running max and sum of this
// thread's two rows, returns the rescale factors of O, and leaves P = exp2(S scale - max) in s.
template <int BN, bool kCausal>
__device__ __forceinline__ void softmax_tile(float (&s)[BN / 2], float (&row_max)[2],
                                             float (&row_sum)[2], float (&alpha)[2], int n0,
                                             int nk, int row, bool mask, float scale_log2) {
  const int lane = threadIdx.x % 32;
  if (mask) {
#pragma unroll
    for (int t = 0; t < BN / 8; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n0 + t * 8 + (lane % 4) * 2 + (e & 1);
        const int r = row + (e >> 1) * 8;
        if (col >= nk || (kCausal && col > r)) s[4 * t + e] = -INFINITY;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = -INFINITY;
#pragma unroll
    for (int t = 0; t < BN / 8; ++t) mx = fmaxf(mx, fmaxf(s[4 * t + 2 * i], s[4 * t + 2 * i + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
    mx = fmaxf(row_max[i], mx * scale_log2);
    const float m_use = mx == -INFINITY ? 0.f : mx;  // a row with nothing visible yet
    alpha[i] = exp2f(row_max[i] - m_use);
    row_max[i] = mx;
    float sum = 0.f;
#pragma unroll
    for (int t = 0; t < BN / 8; ++t) {
      s[4 * t + 2 * i] = exp2f(fmaf(s[4 * t + 2 * i], scale_log2, -m_use));
      s[4 * t + 2 * i + 1] = exp2f(fmaf(s[4 * t + 2 * i + 1], scale_log2, -m_use));
      sum += s[4 * t + 2 * i] + s[4 * t + 2 * i + 1];
    }
    row_sum[i] = row_sum[i] * alpha[i] + sum;
  }
}

template <typename T, int D, bool kCausal, bool kRope, class S>
__global__ void __launch_bounds__(S::kThreads, 1)
    flash_fwd_sm90_kernel(const __grid_constant__ CUtensorMap tq,
                          const __grid_constant__ CUtensorMap tk,
                          const __grid_constant__ CUtensorMap tv, const FwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int BM = S::kBM, BN = S::kBN, C = S::kChunk, kStages = S::kStages;
  constexpr int NC = S::kConsumers;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + BM * D;
  T* sV = sK + kStages * BN * D;
  uint64_t* q_full = reinterpret_cast<uint64_t*>(sV + kStages * BN * D);
  uint64_t* k_full = q_full + 1;
  uint64_t* v_full = k_full + kStages;
  uint64_t* empty = v_full + kStages;
  uint64_t* q_ready = empty + kStages;  // RoPE: the rotated tiles
  uint64_t* k_ready = q_ready + 1;
  uint64_t* q_empty = k_ready + kStages;  // the consumers are done with the Q tile
  // The block's query tiles, its lt-th in tile_slot[lt % 2]: blockIdx.x first, then the next
  // every gridDim.x-th (static) or the next one nobody has taken (dynamic: p.tile_counter counts
  // the tiles taken after the first gridDim.x). The producer writes the slot before it arrives on
  // q_full; a slot of `total` or more ends the walk. Key tiles are counted across query tiles
  // (g), so the ring's phases run on.
  int* tile_slot = reinterpret_cast<int*>(q_empty + 1);

  const int num_m = (p.nq + BM - 1) / BM;
  const int total = num_m * p.b * p.hq;
  auto key_tiles = [&](const QueryBlock& blk) {
    const int n_end = kCausal ? min(p.nk, blk.m0 + BM) : p.nk;
    return (n_end + BN - 1) / BN;
  };
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    mbar_init(q_empty, 4 * NC);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&k_full[s], 1);
      mbar_init(&v_full[s], 1);
      mbar_init(&empty[s], 4 * NC);  // one arrival per consumer warp
      mbar_init(&k_ready[s], 96);
    }
    mbar_init(q_ready, 96);
    mbar_fence_init();
  }
  __syncthreads();

  if (wg == 0) {  // producer: warp 0 loads; with RoPE, warps 1-3 rotate what landed
    regs_dealloc<S::template kProducerRegs<kRope>>();
    if (threadIdx.x == 0) {
      constexpr uint32_t kTileBytes = BN * D * 2;
      int g = 0;
      for (int tile = blockIdx.x, lt = 0;; ++lt) {
        if (lt > 0) mbar_wait(q_empty, (lt - 1) & 1);
        tile_slot[lt & 1] = tile;
        if (tile >= total) {
          mbar_arrive(q_full);
          break;
        }
        const QueryBlock blk = query_block_at<BM, kCausal>(tile, p.nq, p.hq, p.hkv);
        mbar_expect_tx(q_full, BM * D * 2);
#pragma unroll
        for (int c = 0; c < D / C; ++c)
          tma_load_4d(sQ + c * BM * C, &tq, q_full, c * C, blk.m0, blk.h, blk.b);
        // Taken now, used after this tile's loads: the atomic's round trip hides behind them.
        const int next = p.tile_counter != nullptr
                             ? static_cast<int>(gridDim.x) + atomicAdd(p.tile_counter, 1)
                             : tile + static_cast<int>(gridDim.x);
        const int n_tiles = key_tiles(blk);
        for (int j = 0; j < n_tiles; ++j, ++g) {
          const int s = g % kStages;
          if (g >= kStages) mbar_wait(&empty[s], (g / kStages - 1) & 1);
          T* k_dst = sK + s * BN * D;
          T* v_dst = sV + s * BN * D;
          mbar_expect_tx(&k_full[s], kTileBytes);
#pragma unroll
          for (int c = 0; c < D / C; ++c)
            tma_load_4d(k_dst + c * BN * C, &tk, &k_full[s], c * C, j * BN, blk.hk, blk.b);
          mbar_expect_tx(&v_full[s], kTileBytes);
#pragma unroll
          for (int c = 0; c < D / C; ++c)
            tma_load_4d(v_dst + c * BN * C, &tv, &v_full[s], c * C, j * BN, blk.hk, blk.b);
        }
        tile = next;
      }
    }
    if constexpr (kRope) {
      if (threadIdx.x >= 32) {
        const int rt = threadIdx.x - 32;
        int g = 0;
        for (int lt = 0;; ++lt) {
          mbar_wait(q_full, lt & 1);
          const int tile = tile_slot[lt & 1];
          if (tile >= total) {
            mbar_arrive(q_ready);  // passes the end on to the consumers
            break;
          }
          const QueryBlock blk = query_block_at<BM, kCausal>(tile, p.nq, p.hq, p.hkv);
          rope_tile<T, D, C, BM, 96>(sQ, blk.m0, p.rope, rt);
          fence_proxy_async();
          mbar_arrive(q_ready);
          const int n_tiles = key_tiles(blk);
          for (int j = 0; j < n_tiles; ++j, ++g) {
            const int s = g % kStages;
            mbar_wait(&k_full[s], (g / kStages) & 1);
            rope_tile<T, D, C, BN, 96>(sK + s * BN * D, j * BN, p.rope, rt);
            fence_proxy_async();
            mbar_arrive(&k_ready[s]);
          }
        }
      }
    }
    return;
  }

  regs_alloc<S::template kConsumerRegs<kRope>>();
  const int cw = wg - 1;  // consumer cw: rows [64 cw, 64 cw + 64) of the block
  const int next_bar = 1 + (cw + 1) % NC;  // named barrier 1 + c: consumer c's turn
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  uint32_t pf[BN / 16][4];  // P of the previous key tile, 16-bit pairs in the wgmma A layout
  int g0 = 0;               // the ring position of this query tile's key tile 0

  // Turns on the tensor cores run on across query tiles: consumer 0 first, then 1, ...; each
  // hands over to the next after issuing. One opening hand-over here and one closing take below
  // keep every named barrier's arrivals and waits paired (an unpaired second arrival would
  // complete a barrier without its waiter).
  if (cw == NC - 1) bar_arrive(1, 256);
  for (int lt = 0;; ++lt) {
    mbar_wait(kRope ? q_ready : q_full, lt & 1);
    // Through a warp reduction (which lands in a uniform register): ptxas then keeps the tile's
    // coordinates, trip counts and branches warp-uniform, as it does for blockIdx.x.
    const int tile = __reduce_max_sync(0xffffffffu, tile_slot[lt & 1]);
    if (tile >= total) break;
    const QueryBlock blk = query_block_at<BM, kCausal>(tile, p.nq, p.hq, p.hkv);
    const int n_tiles = key_tiles(blk);
    const int row = blk.m0 + 64 * cw + 16 * warp + lane / 4;  // this thread's first row
    const int first_row = blk.m0 + 64 * cw;
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

    // The products this consumer issues per step, and the softmax between them.
    auto issue_s = [&](float(&sc)[BN / 2], int j) {
      const int g = g0 + j, s = g % kStages;
      mbar_wait(kRope ? &k_ready[s] : &k_full[s], (g / kStages) & 1);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wgmma_ss<T, 0>(sc, kmajor_desc<T, S>(sQ, BM, 64 * cw, kk),
                       kmajor_desc<T, S>(sK + s * BN * D, BN, 0, kk), kk > 0);
      }
      wgmma_commit();
    };
    auto issue_pv = [&](int j) {
      const int g = g0 + j, s = g % kStages;
      mbar_wait(&v_full[s], (g / kStages) & 1);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        wgmma_rs<T, 1>(o, pf[kk], v_desc<T, S>(sV + s * BN * D, kk), 1);
      }
      wgmma_commit();
    };
    auto release = [&](int j) {
      if (lane == 0) mbar_arrive(&empty[(g0 + j) % kStages]);
    };
    auto release_q = [&] {  // every S of this tile is done: the Q tile may be replaced
      if (lane == 0) mbar_arrive(q_empty);
    };
    auto softmax = [&](float(&sc)[BN / 2], int j, float(&alpha)[2]) {
      const int n0 = j * BN;
      const bool mask = n0 + BN > p.nk || (kCausal && n0 + BN - 1 > first_row);
      softmax_tile<BN, kCausal>(sc, row_max, row_sum, alpha, n0, p.nk, row, mask, p.scale_log2);
    };
    // Hold P_j as 16-bit pairs for the next step's P V, and rescale o (P_{j-1} V_{j-1} is in it).
    auto hold_p = [&](const float(&sc)[BN / 2], const float(&alpha)[2]) {
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        pf[kk][0] = pack2<T>(sc[8 * kk + 0], sc[8 * kk + 1]);
        pf[kk][1] = pack2<T>(sc[8 * kk + 2], sc[8 * kk + 3]);
        pf[kk][2] = pack2<T>(sc[8 * kk + 4], sc[8 * kk + 5]);
        pf[kk][3] = pack2<T>(sc[8 * kk + 6], sc[8 * kk + 7]);
      }
#pragma unroll
      for (int t = 0; t < D / 8; ++t) {
        o[4 * t] *= alpha[0];
        o[4 * t + 1] *= alpha[0];
        o[4 * t + 2] *= alpha[1];
        o[4 * t + 3] *= alpha[1];
      }
    };

    {  // key tile 0: S only
      float sc[BN / 2], alpha[2];
      bar_sync(1 + cw, 256);  // this consumer's turn on the tensor cores
      issue_s(sc, 0);
      bar_arrive(next_bar, 256);  // the next consumer's turn
      wgmma_wait<0>();
      if (S::kEarlyQ && n_tiles == 1) release_q();
      softmax(sc, 0, alpha);
      hold_p(sc, alpha);
    }
    for (int j = 1; j < n_tiles; ++j) {  // S_j with P_{j-1} V_{j-1} behind it
      float sc[BN / 2], alpha[2];
      bar_sync(1 + cw, 256);
      issue_s(sc, j);
      issue_pv(j - 1);
      bar_arrive(next_bar, 256);
      wgmma_wait<1>();  // S_j is ready; P_{j-1} V_{j-1} may still run
      if (S::kEarlyQ && j == n_tiles - 1) release_q();
      softmax(sc, j, alpha);
      wgmma_wait<0>();  // P_{j-1} V_{j-1} is done reading its stage and pf
      release(j - 1);
      hold_p(sc, alpha);
    }
    bar_sync(1 + cw, 256);  // the last key tile's P V
    issue_pv(n_tiles - 1);
    bar_arrive(next_bar, 256);
    wgmma_wait<0>();
    release(n_tiles - 1);
    if (!S::kEarlyQ) release_q();
    g0 += n_tiles;

    T* out = static_cast<T*>(p.o) + blk.b * p.o_sb + blk.h * p.o_sh;
    float* lse = p.lse + static_cast<int64_t>(blk.bh) * p.nq;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float l = row_sum[i];
      l += __shfl_xor_sync(0xffffffff, l, 1);
      l += __shfl_xor_sync(0xffffffff, l, 2);
      const int r = row + 8 * i;
      if (r >= p.nq) continue;
      const float inv = 1.f / l;
#pragma unroll
      for (int t = 0; t < D / 8; ++t) {
        const uint32_t pair = pack2<T>(o[4 * t + 2 * i] * inv, o[4 * t + 2 * i + 1] * inv);
        *reinterpret_cast<uint32_t*>(out + r * p.o_sn + t * 8 + (lane % 4) * 2) = pair;
      }
      if (lane % 4 == 0) lse[r] = (row_max[i] + log2f(l)) * 0.69314718f;
    }
  }
  if (cw == 0) bar_sync(1, 256);  // takes the last consumer's last hand-over
#endif
}

}  // namespace flashduo::sm90
