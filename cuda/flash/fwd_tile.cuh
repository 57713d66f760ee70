// The forward's per-warp work, shared by the streaming kernel (fwd_kernel.cuh) and the
// short-sequence kernel (fwd_short_kernel.cuh): a warp owns MT tiles of 16 query rows (their Q
// fragments in registers) and folds key tiles of BN rows, sitting in shared memory, into its
// output with the online softmax; at the end it normalizes and writes O and the lse. With MT = 2
// every K and V fragment read from shared memory feeds twice the MMAs, and the two tiles' chains
// of dependent MMAs interleave.
#pragma once

#include <cmath>

#include "common.cuh"

namespace flashduo {

// A warp's running state for its 16 query rows (this lane: rows lane / 4 and lane / 4 + 8).
template <int D>
struct RowState {
  float acc[D / 8][4] = {};                // unnormalized O, mma C layout
  float max[2] = {-INFINITY, -INFINITY};   // log2 units
  float sum[2] = {0.f, 0.f};               // this thread's share; reduced over the quad at the end
};

// The warp's MT x 16 x D Q fragments, read with ldmatrix from rows [r0, r0 + 16 MT) of a
// swizzled tile.
template <typename T, int D, int MT>
__device__ __forceinline__ void load_q_frag(uint32_t (&q_frag)[MT][D / 16][4], const T* sQ,
                                            int r0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int r = r0 + 16 * m + lane % 16, c = kk * 16 + (lane / 16) * 8;
      ldmatrix_x4(smem_addr(sQ + swizzle<D>(r, c)), q_frag[m][kk]);
    }
  }
}

// S (16 MT x BN) = Q K^T for a warp's MT 16-row query tiles (q_frag) against the key tile tK;
// each K fragment feeds all MT tiles. Only the 16-key steps below kv run (the rest of S stays
// zero and is masked by the caller).
template <typename T, int D, int BN, int MT>
__device__ __forceinline__ void qk_scores(float (&s)[MT][BN / 8][4],
                                          const uint32_t (&q_frag)[MT][D / 16][4],
                                          const T* tK, int kv) {
  const int lane = threadIdx.x % 32;
  const LdsmRows k_rows = ldsm_rows<D>(tK, (lane / 16) * 8 + lane % 8, (lane / 8) % 2);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < BN / 16; ++np) {
      if (np * 16 >= kv) break;
      uint32_t kf[4];
      ldmatrix_x4(ldsm_at<D>(k_rows, np * 16, kk), kf);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        mma_16816<T>(s[m][2 * np], q_frag[m][kk], kf[0], kf[1]);
        mma_16816<T>(s[m][2 * np + 1], q_frag[m][kk], kf[2], kf[3]);
      }
    }
  }
}

// acc[m] (16 x D) += P[m] (16 x BN, fp32) V for the warp's MT tiles; each V fragment feeds all of
// them. Only the first kv keys count.
template <typename T, int D, int BN, int MT>
__device__ __forceinline__ void pv_acc(RowState<D> (&st)[MT], const float (&s)[MT][BN / 8][4],
                                       const T* tV, int kv) {
  const int lane = threadIdx.x % 32;
  const LdsmRows rows = ldsm_rows<D>(tV, ((lane / 8) % 2) * 8 + lane % 8, lane / 16);
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    if (kk * 16 >= kv) break;
    uint32_t a[MT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      a[m][0] = pack2<T>(s[m][2 * kk][0], s[m][2 * kk][1]);
      a[m][1] = pack2<T>(s[m][2 * kk][2], s[m][2 * kk][3]);
      a[m][2] = pack2<T>(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
      a[m][3] = pack2<T>(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t bf[4];
      ldmatrix_x4_trans(ldsm_at<D>(rows, kk * 16, dp), bf);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        mma_16816<T>(st[m].acc[2 * dp], a[m], bf[0], bf[1]);
        mma_16816<T>(st[m].acc[2 * dp + 1], a[m], bf[2], bf[3]);
      }
    }
  }
}

// Fold the key tile [n0, n0 + BN) (tK, tV: its K and V rows in swizzled shared memory) into the
// states of the warp's MT query tiles (rows row_first + 16 m + [0, 16)). row_lo: this lane's
// first row in tile 0; keys at or past n_end (<= nk) are known to be masked for all the warp's
// rows and are skipped in steps of 16.
template <typename T, int D, int BN, int MT, bool kCausal>
__device__ __forceinline__ void attend_tile(RowState<D> (&st)[MT],
                                            const uint32_t (&q_frag)[MT][D / 16][4], const T* tK,
                                            const T* tV, int n0, int nk, int n_end, int row_lo,
                                            int row_first, float scale_log2) {
  const int lane = threadIdx.x % 32;
  const int kv = min(BN, n_end - n0);
  float s[MT][BN / 8][4] = {};
  if (kv == BN) {  // a full tile without tests
    qk_scores<T, D, BN, MT>(s, q_frag, tK, BN);
  } else {
    qk_scores<T, D, BN, MT>(s, q_frag, tK, kv);
  }

  // Mask the key tail and, with causal, keys after the row (raw scores; the scale is applied
  // inside the exponent's FFMA below).
  if (n0 + BN > nk || (kCausal && n0 + BN - 1 > row_first)) {
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int t = 0; t < BN / 8; ++t) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = n0 + t * 8 + (lane % 4) * 2 + (e & 1);
          const int row = row_lo + 16 * m + (e >> 1) * 8;
          if (col >= nk || (kCausal && col > row)) s[m][t][e] = -INFINITY;
        }
      }
    }
  }

  // Online softmax in log2 units: new row max over the quad, rescale the running sum and the
  // output. The scale is positive, so the max of raw scores scales to the max of scaled ones.
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int t = 0; t < BN / 8; ++t) mx = fmaxf(mx, fmaxf(s[m][t][2 * i], s[m][t][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      mx = fmaxf(st[m].max[i], mx * scale_log2);
      const float m_use = mx == -INFINITY ? 0.f : mx;  // a row with nothing visible yet
      const float alpha = exp2f(st[m].max[i] - m_use);
      st[m].max[i] = mx;
      float sum = 0.f;
#pragma unroll
      for (int t = 0; t < BN / 8; ++t) {
        s[m][t][2 * i] = exp2f(fmaf(s[m][t][2 * i], scale_log2, -m_use));
        s[m][t][2 * i + 1] = exp2f(fmaf(s[m][t][2 * i + 1], scale_log2, -m_use));
        sum += s[m][t][2 * i] + s[m][t][2 * i + 1];
      }
      st[m].sum[i] = st[m].sum[i] * alpha + sum;
#pragma unroll
      for (int t = 0; t < D / 8; ++t) {
        st[m].acc[t][2 * i] *= alpha;
        st[m].acc[t][2 * i + 1] *= alpha;
      }
    }
  }

  if (kv == BN) {  // O += P V, P taken from the S accumulators
    pv_acc<T, D, BN, MT>(st, s, tV, BN);
  } else {
    pv_acc<T, D, BN, MT>(st, s, tV, kv);
  }
}

// Normalize and write the warp's rows below nq (row_lo: this lane's first row of tile 0): O (o: the
// head's first row, row stride o_sn; two 16-bit values per store) and the natural-log lse (lse:
// the head's first row).
template <typename T, int D, int MT>
__device__ __forceinline__ void store_rows(const RowState<D> (&st)[MT], T* o, int64_t o_sn,
                                           float* lse, int row_lo, int nq) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float l = st[m].sum[i];
      l += __shfl_xor_sync(0xffffffff, l, 1);
      l += __shfl_xor_sync(0xffffffff, l, 2);
      const int row = row_lo + 16 * m + i * 8;
      if (row >= nq) continue;
      const float inv = 1.f / l;
#pragma unroll
      for (int t = 0; t < D / 8; ++t) {
        const uint32_t pair = pack2<T>(st[m].acc[t][2 * i] * inv, st[m].acc[t][2 * i + 1] * inv);
        *reinterpret_cast<uint32_t*>(o + row * o_sn + t * 8 + (lane % 4) * 2) = pair;
      }
      if (lane % 4 == 0) lse[row] = (st[m].max[i] + log2f(l)) * 0.69314718f;
    }
  }
}

}  // namespace flashduo
