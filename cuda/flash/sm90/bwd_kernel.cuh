// FlashAttention backward for Hopper (sm_90a): TMA, wgmma, warp specialization; deterministic
// (no atomics), in three kernels like the mma.sync backward (../bwd_kernel.cuh):
//
// 1. delta = rowsum(dO * O), four threads per query row;
// 2. dK/dV: a block keeps 128 keys of K and V in shared memory (64 per consumer warpgroup; at
//    D = 256, 64 keys that both consumers share, each owning half of the dK / dV columns) and
//    streams, for every query head of its GQA group, 64-row tiles of Q and dO (TMA, two stages)
//    with their lse and delta (copied by producer warp 1). Per tile a consumer computes
//    S^T = K Q^T and dP^T = V dO^T (wgmma from shared memory), P^T and dS^T in registers, then
//    dV += P^T dO and dK += dS^T Q (wgmma, the A operand from registers);
// 3. dQ: a block keeps 128 query rows of Q and dO and streams K and V tiles: S = Q K^T,
//    dP = dO V^T, dS in registers, dQ += dS K.
// The atomic mode (launch_bwd_sm90_atomic) drops kernel 3: the dK/dV kernel also writes each
// tile's dS to shared memory, computes a share of dQ = dS K there (wgmma) and adds it to an fp32
// workspace, which a last pass scales into dq. Five N^2 D products instead of seven; the order of
// the additions, and so dq's last bits, vary from run to run. The product's atomic mode
// (AtomicMode, D = 64 and 128) gives each consumer a 64-row share of dQ over all 128 keys, staged
// in shared memory and added by one bulk reduction (cp.reduce.async.bulk) per tile, with dS stored
// by stmatrix and each step's dQ product issued behind the next step's dV and dK. At D = 128 the
// share is half the columns of a 64-row query tile and the consumers take turns on the tensor
// cores; at D = 64 the Q / dO tiles have 128 rows and the share is half of them. check_flash
// times the other DqModes beside it.
// The producer warpgroup keeps 24 registers (setmaxnreg), the two consumers 240. With RoPE the
// producer's idle warps rotate Q and K in shared memory as they land (rope.cuh) and release them
// on their own mbarriers (producer 40 registers, consumers 232); dQ and dK are turned back by the
// inverse rotation before they are stored. Causal tiles that see nothing are skipped; rows past
// Nq / Nk arrive as zeros and are not stored. One-key rows get exactly zero dQ, and dK when every
// row is one (../bwd_kernel.cuh, one_key_row).
#pragma once

#include <cuda.h>

#include <cmath>
#include <type_traits>

#include "../bwd_kernel.cuh"
#include "../params.h"
#include "fwd_launch.cuh"
#include "ptx.cuh"
#include "rope.cuh"
#include "wgmma.cuh"

namespace flashduo::sm90 {

// How the dK/dV kernel treats dQ. kAtomic: it adds dQ = dS K into BwdParams::dq_accum (the
// atomic mode); otherwise the dQ kernel computes dQ. kSplit (D = 64, 128): each consumer adds
// half of dQ's columns over both consumers' 128 keys (half the bytes), on dS tiles
// double-buffered by step parity with one 256-thread barrier a step; otherwise its own 64 keys
// over all its columns. kBulk (D = 64, 128): each consumer stages its fp32 dQ tile in shared
// memory and one thread adds it with a bulk reduction, in the tile layout of
// bwd_dq_convert_tiles_kernel; otherwise every thread adds its part with vector atomics.
// kStsm: dS goes to shared memory by stmatrix (four transposing 8 x 8 stores per 16 queries)
// instead of one 16-bit store per element. kDefer (with kSplit and kBulk): a step's dQ product
// runs one step later, behind the next step's dV and dK, and the consumers hand the dS tiles to
// each other on mbarriers instead of meeting at a barrier every step, so that neither waits for
// the other's softmax gradient of the same step. kPingPong (with kDefer): the consumers take
// turns issuing their products (S and dP; then dV, dK and the deferred dQ), handing over on
// named barriers as the forward's consumers do, so that one's softmax gradient runs under the
// other's products. kQTile: query rows per streamed Q / dO tile, 64 or 128 (D = 64); at 128 the
// split gives each consumer half of dQ's rows (all columns) instead of half its columns.
template <bool kAtomic_, bool kSplit_ = false, bool kBulk_ = false, bool kStsm_ = false,
          bool kDefer_ = false, bool kPingPong_ = false, int kQTile_ = 64>
struct DqMode {
  static constexpr bool kAtomic = kAtomic_, kSplit = kSplit_, kBulk = kBulk_, kStsm = kStsm_;
  static constexpr bool kDefer = kDefer_, kPingPong = kPingPong_;
  static constexpr int kQTile = kQTile_;
  static_assert(!kDefer || (kSplit && kBulk), "the deferred dQ takes the split and bulk");
  static_assert(!kPingPong || kDefer, "the ping-pong takes the deferred dQ");
  static_assert(kQTile == 64 || (kQTile == 128 && (!kAtomic || kSplit)),
                "128-row query tiles take the split dQ");
  static constexpr int kDsTiles = !kAtomic ? 0 : kSplit ? 4 : 2;  // kQTile x 64 dS tiles
  // dQ column blocks: one per consumer if the split is by columns.
  static constexpr int kBlocks = kSplit && kQTile == 64 ? 2 : 1;
};
using DqKernel = DqMode<false>;                    // deterministic: the separate dQ kernel
using DqOwnKeys = DqMode<true>;                    // atomic, each consumer its own keys
using DqSplitBulk = DqMode<true, true, true>;      // columns split, bulk reductions (v2.4's)
using DqSplitBulkStsm = DqMode<true, true, true, true>;  // and dS by stmatrix
using DqSplitBulkPingPong = DqMode<true, true, true, false, true, true>;  // dQ deferred, turns
using DqStsmDeferred = DqMode<true, true, true, true, true>;  // stmatrix dS, dQ deferred
using DqStsmPingPong = DqMode<true, true, true, true, true, true>;  // and turns
using DqTall = DqMode<true, true, true, true, false, false, 128>;   // 128-row Q tiles, stmatrix
using DqTallDeferred = DqMode<true, true, true, true, true, false, 128>;  // and dQ deferred
using DqTallKernel = DqMode<false, false, false, false, false, false, 128>;  // deterministic

template <int D>
struct BwdShape {
  static constexpr bool kSplitD = D > 128;  // dK/dV: the consumers share keys, split columns
  static constexpr int kKeys = kSplitD ? 64 : 128;     // dK/dV: keys per block
  static constexpr int kAccCols = kSplitD ? D / 2 : D;  // dK/dV: columns per consumer
  static constexpr int kRows = 128;                    // dQ: query rows per block
  static constexpr int kKeyTile = D > 128 ? 32 : D == 128 ? 64 : 128;  // dQ: keys per tile
  static constexpr int kStages = 2;
  template <bool kRope>
  static constexpr int kProducerRegs = kRope ? 40 : 24;
  template <bool kRope>
  static constexpr int kConsumerRegs = kRope ? 232 : 240;
  static constexpr int kSmemDq = (2 * kRows + 2 * kStages * kKeyTile) * D * 2 + 1024 + 16 * 8;
  static constexpr int kDsKeys = 64;  // atomic mode: each consumer's dS tile, kQTile x 64 keys
  // The dK/dV kernel's fp32 dQ tiles under DqMode Q (a 64 x D / kBlocks tile per consumer),
  // and its shared memory: K, V, the Q / dO stages, their lse and delta, the dS and dQ tiles.
  template <class Q>
  static constexpr int kDqFloats = Q::kBulk ? 2 * 64 * D / Q::kBlocks : 0;
  template <class Q>
  static constexpr int kSmemDkdv = (2 * kKeys + 2 * kStages * Q::kQTile) * D * 2 +
                                   2 * kStages * Q::kQTile * 4 + 1024 + 16 * 8 +
                                   Q::kDsTiles * Q::kQTile * kDsKeys * 2 + kDqFloats<Q> * 4;
  static_assert(D == 64 || D == 96 || D == 128 || D == 256,
                "the Hopper backward takes D = 64, 96, 128, 256");
  static_assert(kSmemDkdv<DqOwnKeys> <= 227 * 1024 && kSmemDq <= 227 * 1024, "tiles too large");
  static_assert(kProducerRegs<true> * 128 + kConsumerRegs<true> * 256 <= 65536, "registers");
};

// Descriptor of rows [16 kk, 16 kk + 16) of a `rows` x D tile read as an N-major B operand
// (K-dim = rows, N = D).
template <typename T, int D>
__device__ __forceinline__ uint64_t nmajor_desc(const T* tile, int rows, int kk) {
  using S = FwdShape<D>;
  return smem_desc(tile + kk * 16 * S::kChunk, rows * S::kChunk * 2, S::kGroup, S::kSwizzle);
}

// Sixteen-bit pairs of a 64 x N fp32 accumulator in the A-operand layout of wgmma (k-step kk).
template <typename T, int N>
__device__ __forceinline__ void pack_a(uint32_t (&a)[N / 16][4], const float (&x)[N / 2]) {
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
    a[kk][0] = pack2<T>(x[8 * kk + 0], x[8 * kk + 1]);
    a[kk][1] = pack2<T>(x[8 * kk + 2], x[8 * kk + 3]);
    a[kk][2] = pack2<T>(x[8 * kk + 4], x[8 * kk + 5]);
    a[kk][3] = pack2<T>(x[8 * kk + 6], x[8 * kk + 7]);
  }
}

// One 16-column step of d = A B^T over the head dim: the first step overwrites d.
template <typename T, int N>
__device__ __forceinline__ void mma_step(float (&d)[N], uint64_t a, uint64_t b, int kk) {
  if (kk == 0) {
    wgmma_ss_zero<T, 0>(d, a, b);
  } else {
    wgmma_ss<T, 0>(d, a, b, 1);
  }
}

// Write a warpgroup's 64 x D accumulator (times mult) to rows row0 + [0, 64) of a (N, D) matrix.
template <typename T, int D>
__device__ __forceinline__ void store_acc(T* g, int64_t stride, int row0, int n,
                                          const float (&acc)[D / 2], float mult) {
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + 16 * warp + lane / 4 + 8 * i;
    if (row >= n) continue;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) {
      *reinterpret_cast<uint32_t*>(g + row * stride + t * 8 + (lane % 4) * 2) =
          pack2<T>(acc[4 * t + 2 * i] * mult, acc[4 * t + 2 * i + 1] * mult);
    }
  }
}

// delta = rowsum(dO * O) in fp32, four threads per row (D / 32 16-byte chunks each).
template <typename T, int D>
__global__ void __launch_bounds__(128) bwd_delta_kernel(const BwdParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x / 4;
  const int64_t rows = static_cast<int64_t>(p.b) * p.hq * p.nq;
  float sum = 0.f;
  if (row < rows) {
    const int i = static_cast<int>(row % p.nq);
    const int64_t bh = row / p.nq;
    const int b = static_cast<int>(bh / p.hq), h = static_cast<int>(bh % p.hq);
    const T* o = static_cast<const T*>(p.o) + b * p.o_sb + h * p.o_sh + i * p.o_sn;
    const T* d = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh + i * p.do_sn;
#pragma unroll
    for (int c = 0; c < D / 32; ++c) {
      const int col = (c * 4 + threadIdx.x % 4) * 8;
      const uint4 ov = *reinterpret_cast<const uint4*>(o + col);
      const uint4 dv = *reinterpret_cast<const uint4*>(d + col);
      const uint32_t ow[4] = {ov.x, ov.y, ov.z, ov.w}, dw[4] = {dv.x, dv.y, dv.z, dv.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 x = unpack2<T>(ow[j]), y = unpack2<T>(dw[j]);
        sum += x.x * y.x + x.y * y.y;
      }
    }
  }
  sum += __shfl_xor_sync(0xffffffff, sum, 1);
  sum += __shfl_xor_sync(0xffffffff, sum, 2);
  if (row < rows && threadIdx.x % 4 == 0) p.delta[row] = sum;
}

// Tensor maps of the dK/dV kernel: q, dO (boxes of kQTile rows), k, v (kKeys rows).
struct DkdvMaps {
  CUtensorMap q, dout, k, v;
};

// The dS tile of the atomic mode: kQTile query rows x 64 keys, one 128-byte row per query under
// the 128-byte swizzle (the layout TMA gives a K-major operand), read as A of dQ = dS K.
using DsLayout = FwdShape<64>;

// Swizzled offset of (row, col) in a tile of 64-element (128-byte) rows.
__device__ __forceinline__ int ds_offset(int row, int col) {
  return row * 64 + (((col / 8) ^ (row % 8)) * 8) + col % 8;
}

// Store x, rounded to T, at element `offset` of the shared-memory tile (a shared-space store:
// the tile pointer is generic).
template <typename T>
__device__ __forceinline__ void store_shared(const T* tile, int offset, float x) {
  unsigned short bits;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    bits = __bfloat16_as_ushort(__float2bfloat16(x));
  } else {
    bits = __half_as_ushort(__float2half(x));
  }
  asm volatile("st.shared.b16 [%0], %1;" ::"r"(smem_u32(tile + offset)), "h"(bits) : "memory");
}

// The atomic mode's dq = dS K (a warpgroup's 64 queries x QC columns of dQ) over QK keys: query
// rows [r0, r0 + 64) of the dS tiles (BM queries x 64 keys each) from `tiles`, the one at `own`
// when QK = 64, and K's columns at tK (an N-major B operand of `rows` keys).
template <typename T, int D, int QC, int QK, int rows, int BM>
__device__ __forceinline__ void dq_product(float (&dq)[QC / 2], const T* tiles, int own, int r0,
                                           const T* tK) {
  constexpr int kSteps = 64 / 16;  // k-steps per dS tile
#pragma unroll
  for (int kk = 0; kk < QK / 16; ++kk) {
    const T* tDS = tiles + (QK > 64 ? kk / kSteps : own) * BM * 64;
    const uint64_t a = kmajor_desc<T, DsLayout>(tDS, BM, r0, kk % kSteps);
    const uint64_t bk = nmajor_desc<T, D>(tK, rows, kk);
    if (kk == 0) {
      wgmma_ss_zero<T, 1>(dq, a, bk);
    } else {
      wgmma_ss<T, 1>(dq, a, bk, 1);
    }
  }
  wgmma_commit();
}

// Stage warpgroup `cw`'s dq (64 x QC fp32) in its tile tDQ in accumulator order (float4
// t * 128 + thread: the thread's dq[4 t .. 4 t + 3]), then let its first thread add the tile
// into the workspace at offset at() of dq_accum with one bulk reduction, unless `add` is false
// (the tile is staged either way, so that no register read of dq depends on a branch, which
// would make ptxas serialize the warpgroup's wgmmas).
template <int QC, class At>
__device__ __forceinline__ void reduce_dq_tile(const float (&dq)[QC / 2], float* tDQ, int cw,
                                               float* dq_accum, At at, bool add = true) {
  const int tid = threadIdx.x % 128;
#pragma unroll
  for (int t = 0; t < QC / 8; ++t) {
    reinterpret_cast<float4*>(tDQ)[t * 128 + tid] =
        make_float4(dq[4 * t], dq[4 * t + 1], dq[4 * t + 2], dq[4 * t + 3]);
  }
  fence_proxy_async();
  bar_sync(1 + cw, 128);  // this consumer's dQ tile is whole
  if (tid == 0 && add) {
    bulk_reduce_add_f32(dq_accum + at(), tDQ, 64 * QC * 4);
    bulk_commit();
  }
}

// Q: a DqMode, how dQ is treated.
template <typename T, int D, bool kCausal, bool kRope, class Q = DqKernel>
__global__ void __launch_bounds__(384, 1)
    bwd_dkdv_sm90_kernel(const __grid_constant__ DkdvMaps maps, const BwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kAtomicDq = Q::kAtomic, kSplitDq = Q::kSplit, kBulkDq = Q::kBulk;
  static_assert(!(kSplitDq || kBulkDq) || D == 64 || D == 128,
                "the column split and the bulk reductions of dQ take D = 64, 128");
  static_assert(Q::kQTile == 64 || D == 64, "128-row query tiles take D = 64");
  using B = BwdShape<D>;
  using L = FwdShape<D>;  // the shared-memory layout (column blocks, swizzle) of the forward
  constexpr int BN = B::kKeys, BM = Q::kQTile, C = L::kChunk, kStages = B::kStages;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + BN * D;
  T* sQ = sV + BN * D;                 // kStages tiles
  T* sDO = sQ + kStages * BM * D;      // kStages tiles
  T* sDS = sDO + kStages * BM * D;     // atomic mode: Q::kDsTiles dS tiles
  float* sDQ = reinterpret_cast<float*>(sDS + Q::kDsTiles * BM * B::kDsKeys);  // bulk: dQ tiles
  // per stage: lse2[BM] (lse in log2 units), delta[BM]
  float* sStat = sDQ + B::template kDqFloats<Q>;
  uint64_t* kv_full = reinterpret_cast<uint64_t*>(sStat + kStages * 2 * BM);
  uint64_t* qd_full = kv_full + 1;
  uint64_t* stat_full = qd_full + kStages;
  uint64_t* empty = stat_full + kStages;
  uint64_t* k_ready = empty + kStages;  // RoPE: the rotated tiles
  uint64_t* q_ready = k_ready + 1;
  // kDefer: both consumers' dS tiles of a parity written (ds_full) and read by both dQ products
  // (ds_empty), every consumer thread arriving.
  uint64_t* ds_full = q_ready + kStages;
  uint64_t* ds_empty = ds_full + 2;

  const int num_n = (p.nk + BN - 1) / BN;
  const int bh = blockIdx.x / num_n;  // (batch, K/V head)
  const int b = bh / p.hkv, hk = bh % p.hkv;
  const int n0 = (blockIdx.x % num_n) * BN;
  const int group = p.hq / p.hkv;
  const int m_first = kCausal ? n0 / BM : 0;  // earlier query tiles see none of these keys
  const int m_tiles = (p.nq + BM - 1) / BM;
  const int per_head = max(m_tiles - m_first, 0);
  const int items = group * per_head;
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    mbar_init(kv_full, 1);
    mbar_init(k_ready, 64);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&qd_full[s], 1);
      mbar_init(&stat_full[s], 32);
      mbar_init(&empty[s], 8);
      mbar_init(&q_ready[s], 64);
    }
    if constexpr (Q::kDefer) {
      for (int i = 0; i < 2; ++i) {
        mbar_init(&ds_full[i], 256);
        mbar_init(&ds_empty[i], 256);
      }
    }
    mbar_fence_init();
  }
  __syncthreads();

  if (wg == 0) {  // producer: thread 0 issues TMA, warp 1 copies lse and delta, 2-3 rotate
    regs_dealloc<B::template kProducerRegs<kRope>>();
    if (threadIdx.x == 0) {
      mbar_expect_tx(kv_full, 2 * BN * D * 2);
#pragma unroll
      for (int c = 0; c < D / C; ++c) {
        tma_load_4d(sK + c * BN * C, &maps.k, kv_full, c * C, n0, hk, b);
        tma_load_4d(sV + c * BN * C, &maps.v, kv_full, c * C, n0, hk, b);
      }
      for (int it = 0; it < items; ++it) {
        const int s = it % kStages;
        const int h = hk * group + it / per_head, m0 = (m_first + it % per_head) * BM;
        if (it >= kStages) mbar_wait(&empty[s], (it / kStages - 1) & 1);
        mbar_expect_tx(&qd_full[s], 2 * BM * D * 2);
#pragma unroll
        for (int c = 0; c < D / C; ++c) {
          tma_load_4d(sQ + s * BM * D + c * BM * C, &maps.q, &qd_full[s], c * C, m0, h, b);
          tma_load_4d(sDO + s * BM * D + c * BM * C, &maps.dout, &qd_full[s], c * C, m0, h, b);
        }
      }
    } else if (threadIdx.x / 32 == 1) {
      const int lane = threadIdx.x % 32;
      for (int it = 0; it < items; ++it) {
        const int s = it % kStages;
        const int h = hk * group + it / per_head, m0 = (m_first + it % per_head) * BM;
        if (it >= kStages) mbar_wait(&empty[s], (it / kStages - 1) & 1);
        const int64_t base = (static_cast<int64_t>(b) * p.hq + h) * p.nq;
        float* st = sStat + s * 2 * BM;
#pragma unroll
        for (int r = lane; r < BM; r += 32) {
          const bool in = m0 + r < p.nq;
          st[r] = in ? p.lse[base + m0 + r] * kLog2eF : 0.f;
          st[BM + r] = in ? p.delta[base + m0 + r] : 0.f;
        }
        mbar_arrive(&stat_full[s]);
      }
    } else if (kRope && threadIdx.x >= 64) {
      const int rt = threadIdx.x - 64;
      mbar_wait(kv_full, 0);
      rope_tile<T, D, C, BN, 64>(sK, n0, p.rope, rt);
      fence_proxy_async();
      mbar_arrive(k_ready);
      for (int it = 0; it < items; ++it) {
        const int s = it % kStages;
        mbar_wait(&qd_full[s], (it / kStages) & 1);
        rope_tile<T, D, C, BM, 64>(sQ + s * BM * D, (m_first + it % per_head) * BM, p.rope, rt);
        fence_proxy_async();
        mbar_arrive(&q_ready[s]);
      }
    }
    return;
  }

  regs_alloc<B::template kConsumerRegs<kRope>>();
  constexpr int AC = B::kAccCols;
  const int cw = wg - 1;
  const int krow0 = B::kSplitD ? 0 : 64 * cw;  // keys [n0 + krow0, n0 + krow0 + 64)
  const int col0 = B::kSplitD ? AC * cw : 0;   // dK / dV columns [col0, col0 + AC)
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  const int key = n0 + krow0 + 16 * warp + lane / 4;  // this thread's first key
  // Atomic mode: this consumer adds dQ rows r0 + [0, 64) and columns qc0 + [0, QC) of a step's
  // query tile, over its own 64 keys or, split, over all BN (the rows split when BM = 128, the
  // columns when BM = 64); dq_at(h, m0) is that share's offset in the bulk workspace.
  constexpr int QC = kSplitDq ? D / Q::kBlocks : AC;
  const int qc0 = kSplitDq ? (Q::kBlocks == 2 ? QC * cw : 0) : col0;
  const int r0 = BM == 128 ? 64 * cw : 0;
  const int m64 = (p.nq + 63) / 64;  // 64-row tiles of the workspace per head
  auto dq_at = [&](int h, int m0) {
    const int64_t tile = (static_cast<int64_t>(b) * p.hq + h) * m64 + (m0 + r0) / 64;
    return Q::kBlocks == 2 ? (2 * tile + cw) * 64 * QC : tile * 64 * D;
  };
  // Bulk: add this consumer's share of the query tile at m0 of head h (a 128-row tile's second
  // half may lie wholly past Nq, and is not added).
  auto add_dq_share = [&](const float (&dq)[QC / 2], int h, int m0) {
    reduce_dq_tile<QC>(dq, sDQ + cw * 64 * QC, cw, p.dq_accum, [&] { return dq_at(h, m0); },
                       BM == 64 || m0 + r0 < p.nq);
  };
  float dk[AC / 2], dv[AC / 2];
#pragma unroll
  for (int i = 0; i < AC / 2; ++i) dk[i] = dv[i] = 0.f;
  // kDefer: step j's dQ[:, QC cw + QC) = dS_j K over all 128 keys, issued behind the current
  // step's dV and dK (one commit group each; the current stage is freed when they are done),
  // then added into the workspace.
  // kPingPong: named barrier 4 + c is consumer c's turn on the tensor cores.
  auto take_turn = [&] {
    if constexpr (Q::kPingPong) bar_sync(4 + cw, 256);
  };
  auto pass_turn = [&] {
    if constexpr (Q::kPingPong) bar_arrive(5 - cw, 256);
  };
  auto deferred_dq = [&](int j) {
    if constexpr (Q::kDefer) {
      const int s = (j + 1) % kStages, h = hk * group + j / per_head;
      const int mj = (m_first + j % per_head) * BM;
      const T* tK = sK + (qc0 / C) * BN * C + qc0 % C;
      float dq[QC / 2];
      mbar_wait(&ds_full[j & 1], (j / 2) & 1);  // both consumers' dS tiles of step j
      wgmma_fence();  // dq's registers were last read by step j - 1's staging
      dq_product<T, D, QC, BN, BN, BM>(dq, sDS + 2 * (j & 1) * BM * B::kDsKeys, 0, r0, tK);
      pass_turn();
      wgmma_wait<1>();  // this step's dV and dK have read its Q and dO
      if (lane == 0 && j + 1 < items) mbar_arrive(&empty[s]);
      wgmma_wait<0>();
      mbar_arrive(&ds_empty[j & 1]);
      if (threadIdx.x % 128 == 0) bulk_wait_read<0>();  // the last reduction has read sDQ
      bar_sync(1 + cw, 128);
      add_dq_share(dq, h, mj);
    }
  };
  mbar_wait(kRope ? k_ready : kv_full, 0);
  // The opening hand-over (consumer 0 goes first) and, after the loop, the closing take keep
  // every turn barrier's arrivals and waits paired.
  if (Q::kPingPong && cw == 1) bar_arrive(4, 256);
  for (int it = 0; it < items; ++it) {
    const int s = it % kStages, ph = (it / kStages) & 1;
    const int m0 = (m_first + it % per_head) * BM;
    const T* tQ = sQ + s * BM * D;
    const T* tDO = sDO + s * BM * D;
    float st[BM / 2], dpt[BM / 2];
    mbar_wait(&qd_full[s], ph);
    if constexpr (kRope) mbar_wait(&q_ready[s], ph);
    take_turn();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {  // S^T = K Q^T
      mma_step<T>(st, kmajor_desc<T, L>(sK, BN, krow0, kk), kmajor_desc<T, L>(tQ, BM, 0, kk), kk);
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {  // dP^T = V dO^T
      mma_step<T>(dpt, kmajor_desc<T, L>(sV, BN, krow0, kk),
                  kmajor_desc<T, L>(tDO, BM, 0, kk), kk);
    }
    wgmma_commit();
    pass_turn();
    mbar_wait(&stat_full[s], ph);
    wgmma_wait<0>();
    const float* lse2 = sStat + s * 2 * BM;
    const float* dl = lse2 + BM;
#pragma unroll
    for (int t = 0; t < BM / 8; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = t * 8 + (lane % 4) * 2 + (e & 1), qi = m0 + col;
        const int kj = key + (e >> 1) * 8;
        float pv = 0.f, ds = 0.f;
        if (qi < p.nq && (!kCausal || qi >= kj)) {
          pv = exp2f(st[4 * t + e] * p.scale_log2 - lse2[col]);
          ds = pv * (dpt[4 * t + e] - dl[col]);
        }
        st[4 * t + e] = pv;
        dpt[4 * t + e] = ds;
      }
    }
    uint32_t pa[BM / 16][4], da[BM / 16][4];
    pack_a<T, BM>(pa, st);
    pack_a<T, BM>(da, dpt);
    // This step's dS tiles: consumer c's is tile ds0 + c.
    const int ds0 = kSplitDq ? 2 * (it & 1) : 0;
    if constexpr (kAtomicDq) {  // dS^T (keys x queries) goes in as dS (queries x keys)
      T* tDS = sDS + (ds0 + cw) * BM * B::kDsKeys;
      if constexpr (Q::kDefer) {  // both dQ products of step it - 2 have read these tiles
        if (it >= 2) mbar_wait(&ds_empty[it & 1], ((it - 2) / 2) & 1);
      }
      if constexpr (Q::kStsm) {
        // da[kk][m] holds the 8 x 8 block of keys 16 warp + 8 (m % 2) + [0, 8) and queries
        // 16 kk + 8 (m / 2) + [0, 8) in the mma fragment layout; stored transposed, lane
        // 8 m + c addresses query row c of block m.
        const int m = lane / 8, q = 8 * (m / 2) + lane % 8, kr = 16 * warp + 8 * (m % 2);
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) {
          stmatrix_x4_trans(tDS + ds_offset(16 * kk + q, kr), da[kk]);
        }
      } else {
#pragma unroll
        for (int t = 0; t < BM / 8; ++t) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int q = t * 8 + (lane % 4) * 2 + (e & 1);
            const int kr = 16 * warp + lane / 4 + (e >> 1) * 8;
            store_shared<T>(tDS, ds_offset(q, kr), dpt[4 * t + e]);
          }
        }
      }
      fence_proxy_async();
      // Past the barrier below, the last step's bulk reduction has read this consumer's dQ tile.
      if (kBulkDq && !Q::kDefer && threadIdx.x % 128 == 0) bulk_wait_read<0>();
      if constexpr (Q::kDefer) {
        mbar_arrive(&ds_full[it & 1]);
      } else if constexpr (kSplitDq) {
        // Both consumers' dS tiles of this step are whole. Passing also means the other
        // consumer's dQ of step it - 1 is complete, so the tiles step it + 1 writes are free.
        bar_sync(3, 256);
      } else {
        bar_sync(1 + cw, 128);  // this consumer's dS tile is whole
      }
    }
    take_turn();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      wgmma_rs<T, 1>(dv, pa[kk], nmajor_desc<T, D>(tDO + col0 * BM, BM, kk), 1);  // dV += P^T dO
      wgmma_rs<T, 1>(dk, da[kk], nmajor_desc<T, D>(tQ + col0 * BM, BM, kk), 1);   // dK += dS^T Q
    }
    wgmma_commit();
    if constexpr (Q::kDefer) {
      if (it > 0) {
        deferred_dq(it - 1);
      } else {
        pass_turn();
        wgmma_wait<0>();
        if (lane == 0) mbar_arrive(&empty[s]);
      }
    } else if constexpr (!kAtomicDq) {
      wgmma_wait<0>();
      if (lane == 0) mbar_arrive(&empty[s]);
    } else {
      // This consumer's share of dQ (rows r0 + [0, 64), columns qc0 + [0, QC)) += dS K over its
      // own 64 keys or, split, over all 128, issued behind dV and dK so that the tensor cores run
      // them back to back.
      constexpr int QK = kSplitDq ? BN : B::kDsKeys;  // keys it sums over
      const int h = hk * group + it / per_head;
      float dq[QC / 2];
      const T* tK = kSplitDq ? sK + (qc0 / C) * BN * C + qc0 % C : sK + col0 * BN + krow0 * C;
      dq_product<T, D, QC, QK, BN, BM>(dq, sDS + ds0 * BM * B::kDsKeys, cw, r0, tK);
      wgmma_wait<1>();  // dV and dK have read this stage's Q and dO
      if (lane == 0) mbar_arrive(&empty[s]);
      wgmma_wait<0>();
      if constexpr (kBulkDq) {
        add_dq_share(dq, h, m0);
      } else {
        float* acc = p.dq_accum + (static_cast<int64_t>(b) * p.hq + h) * p.nq * D + qc0;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int r = m0 + r0 + 16 * warp + lane / 4 + 8 * i;
          if (r >= p.nq) continue;
#pragma unroll
          for (int t = 0; t < QC / 8; ++t) {
            atomicAdd(reinterpret_cast<float2*>(acc + static_cast<int64_t>(r) * D + t * 8 +
                                                (lane % 4) * 2),
                      make_float2(dq[4 * t + 2 * i], dq[4 * t + 2 * i + 1]));
          }
        }
      }
    }
  }
  if constexpr (Q::kDefer) {
    if (items > 0) {
      take_turn();
      deferred_dq(items - 1);
    }
  }
  if (Q::kPingPong && cw == 0) bar_sync(4, 256);
  if constexpr (kBulkDq) {
    if (threadIdx.x % 128 == 0) bulk_wait<0>();  // the last reductions are done with sDQ
  }
  T* gdk = static_cast<T*>(p.dk) + b * p.dk_sb + hk * p.dk_sh;
  T* gdv = static_cast<T*>(p.dv) + b * p.dk_sb + hk * p.dk_sh;
  const bool all_one_key = one_key_row<kCausal>(p.nq - 1, p.nk);
  if constexpr (kRope) rope_acc_inverse_wg<D, AC>(dk, key, p.nk, col0, p.rope);
  store_acc<T, AC>(gdk + col0, p.dk_sn, n0 + krow0, p.nk, dk, all_one_key ? 0.f : p.scale);
  store_acc<T, AC>(gdv + col0, p.dk_sn, n0 + krow0, p.nk, dv, 1.f);
#endif
}

// The atomic mode's last pass: dq = scale * dq_accum, four elements (two channel pairs) a thread,
// exactly 0 in rows that see one key. With RoPE, dq_accum holds the gradient against the rotated
// q (the dK/dV kernel multiplies dS by the rotated K), turned back here by the inverse rotation.
template <typename T, int D, bool kCausal>
__global__ void __launch_bounds__(256) bwd_dq_convert_kernel(const BwdParams p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x;  // of 4 elements
  if (idx >= static_cast<int64_t>(p.b) * p.hq * p.nq * (D / 4)) return;
  const int64_t row = idx / (D / 4);
  const int col = static_cast<int>(idx % (D / 4)) * 4, i = static_cast<int>(row % p.nq);
  const int64_t bh = row / p.nq;
  const int b = static_cast<int>(bh / p.hq), h = static_cast<int>(bh % p.hq);
  float4 x = reinterpret_cast<const float4*>(p.dq_accum)[idx];
  const int pos = i - p.rope.prefix;
  if (p.rope.cos != nullptr && pos >= 0 && pos < p.rope.n_pos) {
    const int pair = pos * (D / 2) + col / 2;
    const float2 c = *reinterpret_cast<const float2*>(p.rope.cos + pair);
    const float2 sn = *reinterpret_cast<const float2*>(p.rope.sin + pair);
    rope_turn_back(x.x, x.y, c.x, sn.x);
    rope_turn_back(x.z, x.w, c.y, sn.y);
  }
  const float m = one_key_row<kCausal>(i, p.nk) ? 0.f : p.scale;
  T* dq = static_cast<T*>(p.dq) + b * p.dq_sb + h * p.dq_sh + i * p.dq_sn + col;
  *reinterpret_cast<uint2*>(dq) = make_uint2(pack2<T>(x.x * m, x.y * m), pack2<T>(x.z * m, x.w * m));
}

// The last pass of the atomic mode with bulk reductions (DqMode::kBulk): dq = scale * dq_accum,
// where dq_accum holds, for each (batch, query head, 64-row query tile) and column block c of
// kBlocks (2 when the consumers split the columns, else 1), the 64 x D / kBlocks fp32 block of
// dQ's columns [QC c, QC c + QC) in a consumer's accumulator order: float4 t * 128 + thread is
// that thread's rows r, r + 8 (r = 16 warp + lane / 4) at columns 8 t + 2 (lane % 4) + {0, 1}.
// One float4 a thread; RoPE and one-key rows as in bwd_dq_convert_kernel.
template <typename T, int D, bool kCausal, int kBlocks>
__global__ void __launch_bounds__(256) bwd_dq_convert_tiles_kernel(const BwdParams p) {
  constexpr int QC = D / kBlocks, kBlock = 16 * QC;  // float4s in a 64 x QC block
  const int m_tiles = (p.nq + 63) / 64;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x;
  if (idx >= static_cast<int64_t>(p.b) * p.hq * m_tiles * kBlocks * kBlock) return;
  const int64_t block = idx / kBlock, tile = block / kBlocks;
  const int w4 = static_cast<int>(idx % kBlock), t = w4 / 128, tid = w4 % 128;
  const int lane = tid % 32, warp = tid / 32, cw = static_cast<int>(block % kBlocks);
  const int mt = static_cast<int>(tile % m_tiles);
  const int64_t bh = tile / m_tiles;
  const int b = static_cast<int>(bh / p.hq), h = static_cast<int>(bh % p.hq);
  const int col = QC * cw + 8 * t + 2 * (lane % 4);
  const float4 x = reinterpret_cast<const float4*>(p.dq_accum)[idx];
  float v[2][2] = {{x.x, x.y}, {x.z, x.w}};
  T* dq = static_cast<T*>(p.dq) + b * p.dq_sb + h * p.dq_sh + col;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = mt * 64 + 16 * warp + lane / 4 + 8 * i;
    if (row >= p.nq) continue;
    const int pos = row - p.rope.prefix;
    if (p.rope.cos != nullptr && pos >= 0 && pos < p.rope.n_pos) {
      const int pair = pos * (D / 2) + col / 2;
      rope_turn_back(v[i][0], v[i][1], p.rope.cos[pair], p.rope.sin[pair]);
    }
    const float m = one_key_row<kCausal>(row, p.nk) ? 0.f : p.scale;
    *reinterpret_cast<uint32_t*>(dq + row * p.dq_sn) = pack2<T>(v[i][0] * m, v[i][1] * m);
  }
}

// Tensor maps of the dQ kernel: q, dO (kRows rows), k, v (kKeyTile rows).
struct DqMaps {
  CUtensorMap q, dout, k, v;
};

template <typename T, int D, bool kCausal, bool kRope>
__global__ void __launch_bounds__(384, 1)
    bwd_dq_sm90_kernel(const __grid_constant__ DqMaps maps, const BwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using B = BwdShape<D>;
  using L = FwdShape<D>;
  constexpr int BM = B::kRows, BN = B::kKeyTile, C = L::kChunk, kStages = B::kStages;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  T* sQ = reinterpret_cast<T*>(smem);
  T* sDO = sQ + BM * D;
  T* sK = sDO + BM * D;             // kStages tiles
  T* sV = sK + kStages * BN * D;    // kStages tiles
  uint64_t* qd_full = reinterpret_cast<uint64_t*>(sV + kStages * BN * D);
  uint64_t* kv_full = qd_full + 1;
  uint64_t* empty = kv_full + kStages;
  uint64_t* q_ready = empty + kStages;  // RoPE: the rotated tiles
  uint64_t* k_ready = q_ready + 1;

  const int num_m = (p.nq + BM - 1) / BM;
  const int bh = blockIdx.x / num_m;
  const int m_blk = kCausal ? num_m - 1 - static_cast<int>(blockIdx.x % num_m)
                            : static_cast<int>(blockIdx.x % num_m);
  const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv), m0 = m_blk * BM;
  const int n_end = kCausal ? min(p.nk, m0 + BM) : p.nk;
  const int n_tiles = (n_end + BN - 1) / BN;
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    mbar_init(qd_full, 1);
    mbar_init(q_ready, 96);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&kv_full[s], 1);
      mbar_init(&empty[s], 8);
      mbar_init(&k_ready[s], 96);
    }
    mbar_fence_init();
  }
  __syncthreads();

  if (wg == 0) {  // producer: thread 0 issues TMA; with RoPE, warps 1-3 rotate
    regs_dealloc<B::template kProducerRegs<kRope>>();
    if (threadIdx.x == 0) {
      mbar_expect_tx(qd_full, 2 * BM * D * 2);
#pragma unroll
      for (int c = 0; c < D / C; ++c) {
        tma_load_4d(sQ + c * BM * C, &maps.q, qd_full, c * C, m0, h, b);
        tma_load_4d(sDO + c * BM * C, &maps.dout, qd_full, c * C, m0, h, b);
      }
      for (int j = 0; j < n_tiles; ++j) {
        const int s = j % kStages;
        if (j >= kStages) mbar_wait(&empty[s], (j / kStages - 1) & 1);
        mbar_expect_tx(&kv_full[s], 2 * BN * D * 2);
#pragma unroll
        for (int c = 0; c < D / C; ++c) {
          tma_load_4d(sK + s * BN * D + c * BN * C, &maps.k, &kv_full[s], c * C, j * BN, hk, b);
          tma_load_4d(sV + s * BN * D + c * BN * C, &maps.v, &kv_full[s], c * C, j * BN, hk, b);
        }
      }
    } else if (kRope && threadIdx.x >= 32) {
      const int rt = threadIdx.x - 32;
      mbar_wait(qd_full, 0);
      rope_tile<T, D, C, BM, 96>(sQ, m0, p.rope, rt);
      fence_proxy_async();
      mbar_arrive(q_ready);
      for (int j = 0; j < n_tiles; ++j) {
        const int s = j % kStages;
        mbar_wait(&kv_full[s], (j / kStages) & 1);
        rope_tile<T, D, C, BN, 96>(sK + s * BN * D, j * BN, p.rope, rt);
        fence_proxy_async();
        mbar_arrive(&k_ready[s]);
      }
    }
    return;
  }

  regs_alloc<B::template kConsumerRegs<kRope>>();
  const int cw = wg - 1;
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  const int row = m0 + 64 * cw + 16 * warp + lane / 4;
  const int64_t stat = static_cast<int64_t>(bh) * p.nq;
  float lse2[2], dl[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const bool in = row + 8 * i < p.nq;
    lse2[i] = in ? p.lse[stat + row + 8 * i] * kLog2eF : 0.f;
    dl[i] = in ? p.delta[stat + row + 8 * i] : 0.f;
  }
  float dq[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dq[i] = 0.f;
  mbar_wait(kRope ? q_ready : qd_full, 0);
  for (int j = 0; j < n_tiles; ++j) {
    const int s = j % kStages;
    const T* tK = sK + s * BN * D;
    const T* tV = sV + s * BN * D;
    float sc[BN / 2], dp[BN / 2];
    mbar_wait(&kv_full[s], (j / kStages) & 1);
    if constexpr (kRope) mbar_wait(&k_ready[s], (j / kStages) & 1);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {  // S = Q K^T
      mma_step<T>(sc, kmajor_desc<T, L>(sQ, BM, 64 * cw, kk), kmajor_desc<T, L>(tK, BN, 0, kk), kk);
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {  // dP = dO V^T
      mma_step<T>(dp, kmajor_desc<T, L>(sDO, BM, 64 * cw, kk),
                  kmajor_desc<T, L>(tV, BN, 0, kk), kk);
    }
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int t = 0; t < BN / 8; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = j * BN + t * 8 + (lane % 4) * 2 + (e & 1);
        const int r = row + (e >> 1) * 8;
        float ds = 0.f;
        if (col < p.nk && (!kCausal || col <= r)) {
          ds = exp2f(sc[4 * t + e] * p.scale_log2 - lse2[e >> 1]) * (dp[4 * t + e] - dl[e >> 1]);
        }
        sc[4 * t + e] = ds;
      }
    }
    uint32_t da[BN / 16][4];
    pack_a<T, BN>(da, sc);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      wgmma_rs<T, 1>(dq, da[kk], nmajor_desc<T, D>(tK, BN, kk), 1);  // dQ += dS K
    }
    wgmma_commit();
    wgmma_wait<0>();
    if (lane == 0) mbar_arrive(&empty[s]);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {  // a one-key row's dQ is exactly 0
    if (!one_key_row<kCausal>(row + 8 * i, p.nk)) continue;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) dq[4 * t + 2 * i] = dq[4 * t + 2 * i + 1] = 0.f;
  }
  if constexpr (kRope) rope_acc_inverse_wg<D, D>(dq, row, p.nq, 0, p.rope);
  T* gdq = static_cast<T*>(p.dq) + b * p.dq_sb + h * p.dq_sh;
  store_acc<T, D>(gdq, p.dq_sn, m0 + 64 * cw, p.nq, dq, p.scale);
#endif
}

// A tensor map of one of p's (B, H, N, D) tensors with boxes of `rows` rows, in the forward's
// column-block layout; false when TMA cannot address it.
template <typename T, int D>
bool bwd_map(CUtensorMap* m, const BwdParams& p, const void* base, int h, int n, int64_t sb,
             int64_t sh, int64_t sn, int rows) {
  using F = FwdShape<D>;
  constexpr int64_t bf16 = std::is_same_v<T, __nv_bfloat16> ? 1 : 0;
  const CUtensorMapSwizzle sw =
      F::kChunk == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
  return bhnd_map(m, {base, p.b, h, n, sb, sh, sn, D, rows, bf16}, F::kChunk, sw);
}

// The dK/dV kernel's tensor maps of p's q, dO, k, v; false when one cannot be mapped for TMA.
template <typename T, int D, class Q>
bool dkdv_maps(const BwdParams& p, DkdvMaps* mk) {
  using B = BwdShape<D>;
  return bwd_map<T, D>(&mk->q, p, p.q, p.hq, p.nq, p.q_sb, p.q_sh, p.q_sn, Q::kQTile) &&
         bwd_map<T, D>(&mk->dout, p, p.dout, p.hq, p.nq, p.do_sb, p.do_sh, p.do_sn, Q::kQTile) &&
         bwd_map<T, D>(&mk->k, p, p.k, p.hkv, p.nk, p.k_sb, p.k_sh, p.k_sn, B::kKeys) &&
         bwd_map<T, D>(&mk->v, p, p.v, p.hkv, p.nk, p.v_sb, p.v_sh, p.v_sn, B::kKeys);
}

// The deterministic mode on `stream`: the delta pass, then the dK/dV and dQ kernels.
template <typename T, int D, class Q = DqKernel>
cudaError_t launch_bwd_sm90_deterministic(const BwdParams& p, bool causal, cudaStream_t stream) {
  static_assert(!Q::kAtomic, "a deterministic DqMode");
  using B = BwdShape<D>;
  constexpr int kSmem = B::template kSmemDkdv<Q>;
  DkdvMaps mk;
  DqMaps mq;
  const bool ok =
      dkdv_maps<T, D, Q>(p, &mk) &&
      bwd_map<T, D>(&mq.q, p, p.q, p.hq, p.nq, p.q_sb, p.q_sh, p.q_sn, B::kRows) &&
      bwd_map<T, D>(&mq.dout, p, p.dout, p.hq, p.nq, p.do_sb, p.do_sh, p.do_sn, B::kRows) &&
      bwd_map<T, D>(&mq.k, p, p.k, p.hkv, p.nk, p.k_sb, p.k_sh, p.k_sn, B::kKeyTile) &&
      bwd_map<T, D>(&mq.v, p, p.v, p.hkv, p.nk, p.v_sb, p.v_sh, p.v_sn, B::kKeyTile);
  if (!ok) return cudaErrorNotSupported;
  using Dkdv = void (*)(DkdvMaps, BwdParams);
  using Dq = void (*)(DqMaps, BwdParams);
  static const Dkdv dkdv_kernels[4] = {
      bwd_dkdv_sm90_kernel<T, D, false, false, Q>, bwd_dkdv_sm90_kernel<T, D, true, false, Q>,
      bwd_dkdv_sm90_kernel<T, D, false, true, Q>, bwd_dkdv_sm90_kernel<T, D, true, true, Q>};
  static const Dq dq_kernels[4] = {
      bwd_dq_sm90_kernel<T, D, false, false>, bwd_dq_sm90_kernel<T, D, true, false>,
      bwd_dq_sm90_kernel<T, D, false, true>, bwd_dq_sm90_kernel<T, D, true, true>};
  static const bool configured = [] {
    for (int i = 0; i < 4; ++i) {
      cudaFuncSetAttribute(dkdv_kernels[i], cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
      cudaFuncSetAttribute(dq_kernels[i], cudaFuncAttributeMaxDynamicSharedMemorySize,
                           B::kSmemDq);
    }
    return true;
  }();
  (void)configured;
  const int variant = (causal ? 1 : 0) + (p.rope.cos != nullptr ? 2 : 0);
  const int64_t rows = static_cast<int64_t>(p.b) * p.hq * p.nq;
  bwd_delta_kernel<T, D><<<static_cast<unsigned>((rows + 31) / 32), 128, 0, stream>>>(p);
  const unsigned grid_kv = static_cast<unsigned>((p.nk + B::kKeys - 1) / B::kKeys) * p.b * p.hkv;
  dkdv_kernels[variant]<<<grid_kv, 384, kSmem, stream>>>(mk, p);
  const unsigned grid_q = static_cast<unsigned>((p.nq + B::kRows - 1) / B::kRows) * p.b * p.hq;
  dq_kernels[variant]<<<grid_q, 384, B::kSmemDq, stream>>>(mq, p);
  return cudaGetLastError();
}

// The atomic mode's last pass under DqMode Q: per row, or per tile after bulk reductions.
template <typename T, int D, bool kCausal, class Q>
constexpr auto dq_convert() {
  if constexpr (Q::kBulk) {
    return bwd_dq_convert_tiles_kernel<T, D, kCausal, Q::kBlocks>;
  } else {
    return bwd_dq_convert_kernel<T, D, kCausal>;
  }
}

// The atomic mode on `stream`: delta, the dK/dV kernel adding dQ into p.dq_accum (zeroed here
// first; Q an atomic DqMode), and the pass that scales it into dq.
template <typename T, int D, class Q>
cudaError_t launch_bwd_sm90_atomic(const BwdParams& p, bool causal, cudaStream_t stream) {
  static_assert(Q::kAtomic, "an atomic DqMode");
  constexpr int kSmem = BwdShape<D>::template kSmemDkdv<Q>;
  static_assert(kSmem <= 227 * 1024, "tiles too large");
  using B = BwdShape<D>;
  DkdvMaps mk;
  if (!dkdv_maps<T, D, Q>(p, &mk)) return cudaErrorNotSupported;
  using Dkdv = void (*)(DkdvMaps, BwdParams);
  using Convert = void (*)(BwdParams);
  static const Dkdv dkdv_kernels[4] = {
      bwd_dkdv_sm90_kernel<T, D, false, false, Q>, bwd_dkdv_sm90_kernel<T, D, true, false, Q>,
      bwd_dkdv_sm90_kernel<T, D, false, true, Q>, bwd_dkdv_sm90_kernel<T, D, true, true, Q>};
  static const Convert convert_kernels[2] = {dq_convert<T, D, false, Q>(),
                                             dq_convert<T, D, true, Q>()};
  static const bool configured = [] {
    for (Dkdv k : dkdv_kernels) {
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    }
    return true;
  }();
  (void)configured;
  const int64_t rows = static_cast<int64_t>(p.b) * p.hq * p.nq;
  const int64_t accum_rows =
      static_cast<int64_t>(p.b) * p.hq * (Q::kBulk ? dq_accum_rows(p.nq) : p.nq);
  const cudaError_t err = cudaMemsetAsync(p.dq_accum, 0, accum_rows * D * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  bwd_delta_kernel<T, D><<<static_cast<unsigned>((rows + 31) / 32), 128, 0, stream>>>(p);
  const unsigned grid_kv = static_cast<unsigned>((p.nk + B::kKeys - 1) / B::kKeys) * p.b * p.hkv;
  const int variant = (causal ? 1 : 0) + (p.rope.cos != nullptr ? 2 : 0);
  dkdv_kernels[variant]<<<grid_kv, 384, kSmem, stream>>>(mk, p);
  const int64_t quads = accum_rows * (D / 4);
  convert_kernels[causal ? 1 : 0]<<<static_cast<unsigned>((quads + 255) / 256), 256, 0, stream>>>(
      p);
  return cudaGetLastError();
}

// The product's atomic mode: 128-row query tiles with the deferred dQ at D = 64; at D = 128 the
// deferred dQ with consumer turns, dS stored by stmatrix (docs/perf-notes.md, CUDA v2.5).
template <int D>
using AtomicMode = std::conditional_t<D == 64, DqTallDeferred, DqStsmPingPong>;
// The product's deterministic dK/dV kernel: 128-row query tiles at D = 64 (CUDA v2.6).
template <int D>
using DeterministicMode = std::conditional_t<D == 64, DqTallKernel, DqKernel>;

// Launch the Hopper backward on `stream`: at D = 64 and 128 with p.dq_accum set (the scratch
// that BwdParams describes), the atomic mode (AtomicMode); otherwise the deterministic dK/dV
// and dQ kernels (DeterministicMode). Requires an sm_90 device, nq, nk >= 1, hq % hkv == 0, and
// RoPE tables (when p.rope.cos is set) starting on 16-byte boundaries.
// cudaErrorNotSupported, launching nothing, when an input cannot be mapped for TMA.
template <typename T, int D>
cudaError_t launch_flash_bwd_sm90(const BwdParams& p, bool causal, cudaStream_t stream) {
  if constexpr (D == 64 || D == 128) {
    if (p.dq_accum != nullptr) {
      return launch_bwd_sm90_atomic<T, D, AtomicMode<D>>(p, causal, stream);
    }
  }
  return launch_bwd_sm90_deterministic<T, D, DeterministicMode<D>>(p, causal, stream);
}

}  // namespace flashduo::sm90
