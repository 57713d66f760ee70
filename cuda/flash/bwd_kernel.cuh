// FlashAttention-2 backward on tensor cores, in three kernels and without atomics:
//
// 1. preprocess: delta = rowsum(dO * O), D / 8 threads per query row (16 bytes each);
// 2. dK/dV: a block keeps 16 W keys of K and V in shared memory (16 per warp) and loops over every
//    query head of its GQA group and their query tiles, rebuilding P^T = exp(S^T - lse) and
//    accumulating dV += P^T dO and dK += dS^T Q with dS^T = P^T * (V dO^T - delta);
// 3. dQ: a block keeps 16 W query rows of Q and dO in shared memory and loops over key tiles,
//    accumulating dQ += dS K.
// A query row that sees a single key has dS = 0: its dQ, and the dK of a key that only such rows
// see, come out exactly 0 (one_key_row).
// Causal tiles that see nothing are skipped; rows past Nq / Nk are zero-filled and not stored.
// With 2D RoPE (p.rope), Q and K tiles are rotated in shared memory once landed (cos / sin fetched
// ahead: registers for a block's fixed tile, a cp.async stage for the streamed ones), and the dQ /
// dK accumulators are turned back (inverse rotation) in registers before the store. Short
// sequences: warps whose 16 rows lie past the end skip the math, and tail tiles run only the
// 16-wide steps that hold rows.
#pragma once

#include <cmath>

#include "common.cuh"

namespace flashduo {

constexpr int kBwdThreads = 128;  // the delta pass
constexpr int kDqKeys = 64;       // keys per step of the dQ loop

// The shipped shape per head dim: warps of the dK/dV kernel (16 keys each) and of the dQ kernel
// (16 query rows each). More warps per block mean fewer blocks re-reading the same Q, dO (dK/dV)
// or K, V (dQ) from L2, but on an H100 8 + 8 warps measured 0-20% slower than 4 + 4.
template <int D>
struct BwdConfig {
  static constexpr int kKeyWarps = 4;
  static constexpr int kRowWarps = 4;
};

// Query rows per step of the dK/dV loop: fewer at D = 128 to leave registers for dK and dV.
template <int D>
__host__ __device__ constexpr int dkdv_query_tile() { return D <= 64 ? 64 : 32; }

// K, V + two stages of Q and dO (16-bit) and of the tile's lse and delta (fp32), and with RoPE
// the cos / sin stage of a Q tile.
template <int D, int W>
constexpr int dkdv_smem_bytes(bool rope) {
  return (2 * 16 * W + 4 * dkdv_query_tile<D>()) * D * 2 + 2 * 2 * dkdv_query_tile<D>() * 4 +
         (rope ? RopeStage<D, dkdv_query_tile<D>(), 32 * W>::kBytes : 0);
}
// Q, dO + two stages of K and V (16-bit), and with RoPE the cos / sin stage of a K tile.
template <int D, int W>
constexpr int dq_smem_bytes(bool rope) {
  return (2 * 16 * W + 4 * kDqKeys) * D * 2 + (rope ? RopeStage<D, kDqKeys, 32 * W>::kBytes : 0);
}

// acc (16 x N) += A[a_row0 .. a_row0 + 16) (from a swizzled (rows, D) tile) * B^T, B being an
// (N, D) swizzled tile. A fragments are loaded per k-step, so only four registers of A are live.
// Only the first n_valid rows of B count (later 16-row steps are skipped, leaving acc alone).
template <typename T, int D, int N>
__device__ __forceinline__ void mma_a_bt(float (&acc)[N / 8][4], const T* a_tile, int a_row0,
                                         const T* b_tile, int n_valid = N) {
  const int lane = threadIdx.x % 32;
  const LdsmRows a_rows = ldsm_rows<D>(a_tile, lane % 16, lane / 16);
  const LdsmRows b_rows = ldsm_rows<D>(b_tile, (lane / 16) * 8 + lane % 8, (lane / 8) % 2);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t af[4];
    ldmatrix_x4(ldsm_at<D>(a_rows, a_row0, kk), af);
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      if (np * 16 >= n_valid) break;
      uint32_t bf[4];
      ldmatrix_x4(ldsm_at<D>(b_rows, np * 16, kk), bf);
      mma_16816<T>(acc[2 * np], af, bf[0], bf[1]);
      mma_16816<T>(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// Store a warp's 16 x D fp32 accumulator (times `mult`) to rows row0.. of a (N, D) matrix.
template <typename T, int D>
__device__ __forceinline__ void store_rows(T* g, int64_t stride, int row0, int n,
                                           const float (&acc)[D / 8][4], float mult) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + lane / 4 + i * 8;
    if (row >= n) continue;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) {
      *reinterpret_cast<uint32_t*>(g + row * stride + t * 8 + (lane % 4) * 2) =
          pack2<T>(acc[t][2 * i] * mult, acc[t][2 * i + 1] * mult);
    }
  }
}

// Whether query row `row` sees exactly one key: every row when nk == 1 and, under the top-left
// causal mask (row i sees keys j <= i), row 0. A softmax over one score is constant (P = 1), so
// such a row's dS = P (dP - delta) is 0 for any input, and so are its dQ and its share of dK.
// Computed, they are not: dP (an MMA over the head dim) and delta (a sum over it in the delta pass,
// off O, which equals that key's V) round the same number differently, and P comes out an ulp off
// 1 (the FFMA in the exponent, the lse's natural-log round trip). The kernels zero by this rule
// what it makes zero, a one-key row's dQ and dK when every row is one; the rule is exact: it only
// zeroes what is zero in exact arithmetic.
template <bool kCausal>
__device__ __forceinline__ bool one_key_row(int row, int nk) {
  return nk == 1 || (kCausal && row == 0);
}

// Threads per query row in the delta pass: each reads 16 bytes of O and of dO.
template <int D>
__host__ __device__ constexpr int delta_threads_per_row() { return D / 8; }

template <typename T, int D>
__global__ void __launch_bounds__(kBwdThreads) flash_bwd_preprocess_kernel(const BwdParams p) {
  constexpr int kPer = delta_threads_per_row<D>(), kRows = kBwdThreads / kPer;
  static_assert(32 % kPer == 0, "a row's threads must sit in one warp");
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.x / kPer;
  const int64_t rows = static_cast<int64_t>(p.b) * p.hq * p.nq;
  const int c = (threadIdx.x % kPer) * 8;
  float sum = 0.f;
  if (row < rows) {
    const int i = static_cast<int>(row % p.nq);
    const int64_t bh = row / p.nq;
    const int b = static_cast<int>(bh / p.hq), h = static_cast<int>(bh % p.hq);
    const uint4 o = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.o) + b * p.o_sb +
                                                    h * p.o_sh + i * p.o_sn + c);
    const uint4 d = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.dout) + b * p.do_sb +
                                                    h * p.do_sh + i * p.do_sn + c);
    const uint32_t ow[4] = {o.x, o.y, o.z, o.w}, dw[4] = {d.x, d.y, d.z, d.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 x = unpack2<T>(ow[j]), y = unpack2<T>(dw[j]);
      sum += x.x * y.x + x.y * y.y;
    }
  }
#pragma unroll
  for (int off = kPer / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffff, sum, off);
  if (row < rows && threadIdx.x % kPer == 0) p.delta[row] = sum;
}

template <typename T, int D, bool kCausal, int W>
__global__ void __launch_bounds__(32 * W, D <= 64 && W <= 4 ? 3 : 1)
    flash_bwd_dkdv_kernel(const BwdParams p) {
  constexpr int BN = 16 * W, BM = dkdv_query_tile<D>(), NT = 32 * W;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + BN * D;
  T* sQ = sV + BN * D;    // two stages
  T* sDO = sQ + 2 * BM * D;  // two stages
  float* sStat = reinterpret_cast<float*>(sDO + 2 * BM * D);  // two stages of [lse; delta]
  float* sCS = sStat + 2 * 2 * BM;                            // RoPE only
  using QRope = RopeStage<D, BM, NT>;
  const bool rope = p.rope.cos != nullptr;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int num_n = (p.nk + BN - 1) / BN;
  const int bh = blockIdx.x / num_n;  // over B * Hkv
  const int n0 = static_cast<int>(blockIdx.x % num_n) * BN;
  const int b = bh / p.hkv, hk = bh % p.hkv, group = p.hq / p.hkv;
  const T* k = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* v = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;

  // Work items: (query head in the group, query tile), flattened; causal starts at the first
  // query tile holding a row >= n0 (earlier rows see none of these keys).
  const int num_m = (p.nq + BM - 1) / BM;
  const int m_first = kCausal ? min(n0 / BM, num_m) : 0;
  const int per_head = num_m - m_first;
  const int items = group * per_head;

  auto item_ptrs = [&](int it, const T*& q, const T*& dout, int& h, int& m0) {
    h = hk * group + it / per_head;
    m0 = (m_first + it % per_head) * BM;
    q = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
    dout = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh;
  };
  // The tile's lse and delta into stage `st`: rows past Nq become zeros (they are masked).
  auto load_stats = [&](int st, int h, int m0) {
    const int64_t base = (static_cast<int64_t>(b) * p.hq + h) * p.nq + m0;
    for (int idx = threadIdx.x; idx < 2 * BM; idx += NT) {
      const int r = idx % BM;
      const float* src = (idx < BM ? p.lse : p.delta) + base + r;
      cp_async_4(smem_addr(sStat + st * 2 * BM + idx), m0 + r < p.nq ? src : p.lse,
                 m0 + r < p.nq);
    }
  };

  load_rows_async<T, D, BN, NT>(sK, k, p.k_sn, n0, p.nk);
  cp_async_commit();
  load_rows_async<T, D, BN, NT>(sV, v, p.v_sn, n0, p.nk);
  if (items > 0) {
    const T *q, *dout;
    int h, m0;
    item_ptrs(0, q, dout, h, m0);
    load_rows_async<T, D, BM, NT>(sQ, q, p.q_sn, m0, p.nq);
    load_rows_async<T, D, BM, NT>(sDO, dout, p.do_sn, m0, p.nq);
    load_stats(0, h, m0);
    if (rope) QRope::load_async(sCS, m0, p.nq, p.rope);
  }
  cp_async_commit();
  if (rope) {  // rotate K while the first Q/dO tile is still on its way (the loop syncs before use)
    RopeRegs<D, BN, NT> k_rope;
    k_rope.fetch(n0, p.nk, p.rope);
    cp_async_wait<1>();
    __syncthreads();
    k_rope.apply(sK);
  }
  const bool active = n0 + warp * 16 < p.nk;  // a warp with no keys only helps load and rotate

  float acc_dk[D / 8][4] = {}, acc_dv[D / 8][4] = {};
  const int key_lo = n0 + warp * 16 + lane / 4;  // keys key_lo and key_lo + 8
  for (int it = 0; it < items; ++it) {
    const int stage = it & 1;
    if (it + 1 < items) {
      const T *q, *dout;
      int h, m0;
      item_ptrs(it + 1, q, dout, h, m0);
      load_rows_async<T, D, BM, NT>(sQ + (stage ^ 1) * BM * D, q, p.q_sn, m0, p.nq);
      load_rows_async<T, D, BM, NT>(sDO + (stage ^ 1) * BM * D, dout, p.do_sn, m0, p.nq);
      load_stats(stage ^ 1, h, m0);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T *q_unused, *do_unused;
    int h, m0;
    item_ptrs(it, q_unused, do_unused, h, m0);
    if (rope) {  // 2D RoPE: rotate K once and each Q tile, in shared memory
      QRope::apply(sQ + stage * BM * D, sCS, m0, p.nq, p.rope);
      __syncthreads();
      if (it + 1 < items) {  // the stage is free again: the next Q tile's cos / sin
        const T *q_next, *do_next;
        int h_next, m_next;
        item_ptrs(it + 1, q_next, do_next, h_next, m_next);
        QRope::load_async(sCS, m_next, p.nq, p.rope);
        cp_async_commit();
      }
    }
    if (!active) {
      __syncthreads();
      continue;
    }
    const T* tQ = sQ + stage * BM * D;
    const T* tDO = sDO + stage * BM * D;
    const float* tL = sStat + stage * 2 * BM;  // lse; delta follows at + BM
    const int qv = min(BM, p.nq - m0);        // query rows of this tile

    // P^T (16 keys x BM queries) = exp2(S^T * scale_log2 - lse_log2), masked.
    float pt[BM / 8][4] = {}, dpt[BM / 8][4] = {};
    if (qv == BM) {
      mma_a_bt<T, D, BM>(pt, sK, warp * 16, tQ);    // S^T = K Q^T
      mma_a_bt<T, D, BM>(dpt, sV, warp * 16, tDO);  // dP^T = V dO^T
    } else {
      mma_a_bt<T, D, BM>(pt, sK, warp * 16, tQ, qv);
      mma_a_bt<T, D, BM>(dpt, sV, warp * 16, tDO, qv);
    }
#pragma unroll
    for (int t = 0; t < BM / 8; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = t * 8 + (lane % 4) * 2 + (e & 1), qi = m0 + r;
        const int kj = key_lo + (e >> 1) * 8;
        float pv = 0.f, dl = 0.f;
        if (qi < p.nq && (!kCausal || qi >= kj)) {
          pv = exp2f(pt[t][e] * p.scale_log2 - tL[r] * kLog2eF);
          dl = tL[BM + r];
        }
        pt[t][e] = pv;
        dpt[t][e] = pv * (dpt[t][e] - dl);  // dS^T
      }
    }
    if (qv == BM) {
      mma_acc_b<T, D, BM>(acc_dv, pt, tDO);  // dV += P^T dO
      mma_acc_b<T, D, BM>(acc_dk, dpt, tQ);  // dK += dS^T Q
    } else {
      mma_acc_b<T, D, BM>(acc_dv, pt, tDO, qv);
      mma_acc_b<T, D, BM>(acc_dk, dpt, tQ, qv);
    }
    __syncthreads();
  }
  T* dk = static_cast<T*>(p.dk) + b * p.dk_sb + hk * p.dk_sh;
  T* dv = static_cast<T*>(p.dv) + b * p.dk_sb + hk * p.dk_sh;
  if (rope) rope_acc_inverse<D>(acc_dk, key_lo, p.nk, p.rope);
  // The last query row sees the most keys: when it is a one-key row, so is every row, and dK,
  // a sum of their dS, is exactly 0. Otherwise every key is seen by some row that sees several
  // (key 0 by all rows, key j > 0 only by rows that also see 0..j - 1); a one-key row's term is
  // then one of many, its residue far below dK's rounding, and is left in rather than tested for
  // in the loop.
  const bool all_one_key = one_key_row<kCausal>(p.nq - 1, p.nk);
  store_rows<T, D>(dk, p.dk_sn, n0 + warp * 16, p.nk, acc_dk, all_one_key ? 0.f : p.scale);
  store_rows<T, D>(dv, p.dk_sn, n0 + warp * 16, p.nk, acc_dv, 1.f);
}

template <typename T, int D, bool kCausal, int W>
__global__ void __launch_bounds__(32 * W) flash_bwd_dq_kernel(const BwdParams p) {
  constexpr int BM = 16 * W, BN = kDqKeys, NT = 32 * W;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sDO = sQ + BM * D;
  T* sK = sDO + BM * D;      // two stages
  T* sV = sK + 2 * BN * D;   // two stages
  float* sCS = reinterpret_cast<float*>(sV + 2 * BN * D);  // RoPE only
  using KRope = RopeStage<D, BN, NT>;
  const bool rope = p.rope.cos != nullptr;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const QueryBlock blk = query_block<BM, kCausal>(p.nq, p.hq, p.hkv);
  const int bh = blk.bh, b = blk.b, h = blk.h, hk = blk.hk, m0 = blk.m0;
  const T* q = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* dout = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh;
  const T* k = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* v = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;
  const int n_end = kCausal ? min(p.nk, m0 + BM) : p.nk;
  const int n_tiles = (n_end + BN - 1) / BN;

  load_rows_async<T, D, BM, NT>(sQ, q, p.q_sn, m0, p.nq);
  cp_async_commit();
  load_rows_async<T, D, BM, NT>(sDO, dout, p.do_sn, m0, p.nq);
  load_rows_async<T, D, BN, NT>(sK, k, p.k_sn, 0, p.nk);
  load_rows_async<T, D, BN, NT>(sV, v, p.v_sn, 0, p.nk);
  if (rope) KRope::load_async(sCS, 0, p.nk, p.rope);
  cp_async_commit();
  if (rope) {  // rotate Q while the first K/V tile is still on its way (the loop syncs before use)
    RopeRegs<D, BM, NT> q_rope;
    q_rope.fetch(m0, p.nq, p.rope);
    cp_async_wait<1>();
    __syncthreads();
    q_rope.apply(sQ);
  }
  const bool active = m0 + warp * 16 < p.nq;  // a warp with no rows only helps load and rotate

  const int row_lo = m0 + warp * 16 + lane / 4;
  const int64_t row_base = static_cast<int64_t>(bh) * p.nq;
  float lse2[2], dl[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row_lo + i * 8;
    lse2[i] = r < p.nq ? p.lse[row_base + r] * kLog2eF : 0.f;
    dl[i] = r < p.nq ? p.delta[row_base + r] : 0.f;
  }
  float acc_dq[D / 8][4] = {};
  for (int j = 0; j < n_tiles; ++j) {
    const int stage = j & 1;
    if (j + 1 < n_tiles) {
      load_rows_async<T, D, BN, NT>(sK + (stage ^ 1) * BN * D, k, p.k_sn, (j + 1) * BN, p.nk);
      load_rows_async<T, D, BN, NT>(sV + (stage ^ 1) * BN * D, v, p.v_sn, (j + 1) * BN, p.nk);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (rope) {  // 2D RoPE: rotate Q once and each K tile, in shared memory
      KRope::apply(sK + stage * BN * D, sCS, j * BN, p.nk, p.rope);
      __syncthreads();
      if (j + 1 < n_tiles) {  // the stage is free again: the next K tile's cos / sin
        KRope::load_async(sCS, (j + 1) * BN, p.nk, p.rope);
        cp_async_commit();
      }
    }
    if (!active) {
      __syncthreads();
      continue;
    }
    const T* tK = sK + stage * BN * D;
    const T* tV = sV + stage * BN * D;
    const int n0 = j * BN, kv = min(BN, p.nk - n0);  // keys of this tile
    float s[BN / 8][4] = {}, dp[BN / 8][4] = {};
    if (kv == BN) {
      mma_a_bt<T, D, BN>(s, sQ, warp * 16, tK);    // S = Q K^T
      mma_a_bt<T, D, BN>(dp, sDO, warp * 16, tV);  // dP = dO V^T
    } else {
      mma_a_bt<T, D, BN>(s, sQ, warp * 16, tK, kv);
      mma_a_bt<T, D, BN>(dp, sDO, warp * 16, tV, kv);
    }
#pragma unroll
    for (int t = 0; t < BN / 8; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n0 + t * 8 + (lane % 4) * 2 + (e & 1);
        const int row = row_lo + (e >> 1) * 8;
        float pv = 0.f;
        if (col < p.nk && (!kCausal || col <= row)) pv = exp2f(s[t][e] * p.scale_log2 - lse2[e >> 1]);
        s[t][e] = pv * (dp[t][e] - dl[e >> 1]);  // dS
      }
    }
    if (kv == BN) {
      mma_acc_b<T, D, BN>(acc_dq, s, tK);  // dQ += dS K
    } else {
      mma_acc_b<T, D, BN>(acc_dq, s, tK, kv);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {  // rows row_lo and row_lo + 8: a one-key row's dQ is exactly 0
    if (!one_key_row<kCausal>(row_lo + 8 * i, p.nk)) continue;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) acc_dq[t][2 * i] = acc_dq[t][2 * i + 1] = 0.f;
  }
  T* dq = static_cast<T*>(p.dq) + b * p.dq_sb + h * p.dq_sh;
  if (rope) rope_acc_inverse<D>(acc_dq, row_lo, p.nq, p.rope);
  store_rows<T, D>(dq, p.dq_sn, m0 + warp * 16, p.nq, acc_dq, p.scale);
}

template <typename T, int D, bool kCausal, int KW, int QW>
cudaError_t launch_flash_bwd_impl(const BwdParams& p, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.b) * p.hq * p.nq;
  const int per_block = kBwdThreads / delta_threads_per_row<D>();
  flash_bwd_preprocess_kernel<T, D>
      <<<static_cast<unsigned>((rows + per_block - 1) / per_block), kBwdThreads, 0, stream>>>(p);
  const bool rope = p.rope.cos != nullptr;
  const int smem_kv = dkdv_smem_bytes<D, KW>(rope), smem_q = dq_smem_bytes<D, QW>(rope);
  cudaFuncSetAttribute(flash_bwd_dkdv_kernel<T, D, kCausal, KW>,
                       cudaFuncAttributeMaxDynamicSharedMemorySize, dkdv_smem_bytes<D, KW>(true));
  const unsigned grid_kv = static_cast<unsigned>((p.nk + 16 * KW - 1) / (16 * KW)) * p.b * p.hkv;
  flash_bwd_dkdv_kernel<T, D, kCausal, KW><<<grid_kv, 32 * KW, smem_kv, stream>>>(p);
  cudaFuncSetAttribute(flash_bwd_dq_kernel<T, D, kCausal, QW>,
                       cudaFuncAttributeMaxDynamicSharedMemorySize, dq_smem_bytes<D, QW>(true));
  const unsigned grid_q = static_cast<unsigned>((p.nq + 16 * QW - 1) / (16 * QW)) * p.b * p.hq;
  flash_bwd_dq_kernel<T, D, kCausal, QW><<<grid_q, 32 * QW, smem_q, stream>>>(p);
  return cudaGetLastError();
}

// The three backward kernels with KW warps (dK/dV) and QW warps (dQ) on `stream`.
template <typename T, int D, int KW, int QW>
cudaError_t launch_flash_bwd_cfg(const BwdParams& p, bool causal, cudaStream_t stream) {
  return causal ? launch_flash_bwd_impl<T, D, true, KW, QW>(p, stream)
                : launch_flash_bwd_impl<T, D, false, KW, QW>(p, stream);
}

// Launch the shipped configuration (BwdConfig) on `stream`; nq, nk >= 1 (checked by the caller).
template <typename T, int D>
cudaError_t launch_flash_bwd(const BwdParams& p, bool causal, cudaStream_t stream) {
  return launch_flash_bwd_cfg<T, D, BwdConfig<D>::kKeyWarps, BwdConfig<D>::kRowWarps>(p, causal,
                                                                                      stream);
}

}  // namespace flashduo
