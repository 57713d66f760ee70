// FlashAttention-2 forward on tensor cores (mma.sync m16n8k16, ldmatrix, cp.async).
//
// One block of W warps owns BM = 16 W query rows of one (batch, head); each warp owns 16 of them.
// W = 8 (BM = 128) halves the K/V traffic from L2 per FLOP against W = 4; see FwdConfig.
// Key/value tiles of BN = 64 rows stream through two shared-memory stages with cp.async, so the
// next tile loads while this one is used. Per tile and warp: S = Q K^T (16 x 64) in registers,
// masking (key tail, causal), online softmax in fp32 with exp2, then O += P V with P reused from
// the S accumulators as the A operand. Causal: tiles above the diagonal are never loaded.
// With 2D RoPE (p.rope), the Q tile and each K tile are rotated in shared memory once landed;
// their cos / sin are fetched ahead (Q: registers; K: a cp.async stage), so the rotation does not
// wait on memory. Short sequences: warps whose 16 rows lie past Nq skip the math, and the last key
// tile runs only the 16-key steps that hold keys.
#pragma once

#include <cmath>

#include "common.cuh"

namespace flashduo {

constexpr int kFwdBlockN = 64;

// The shipped shape per head dim: warps per block and the minimum resident blocks per SM that
// __launch_bounds__ asks the register allocator for. Measured on an H100 (check_flash, bf16,
// B*N = 16k): W = 8 is 4-9% faster than W = 4 at D = 128 and 11-18% slower at D = 64.
template <int D>
struct FwdConfig {
  static constexpr int kWarps = D >= 128 ? 8 : 4;
  static constexpr int kMinBlocks = D >= 128 ? 1 : 4;
};

// Q + two stages of K and V (16-bit elements), and with RoPE the cos / sin stage of a K tile.
template <int D, int W>
constexpr int fwd_smem_bytes(bool rope) {
  return (16 * W + 4 * kFwdBlockN) * D * 2 + (rope ? RopeStage<D, kFwdBlockN, 32 * W>::kBytes : 0);
}

// S (16 x BN) = Q K^T for a warp's 16 query rows: q_frag holds them, tK the key tile; only the
// 16-key steps below kv run (the rest of S stays zero and is masked by the caller).
template <typename T, int D, int BN>
__device__ __forceinline__ void qk_scores(float (&s)[BN / 8][4],
                                          const uint32_t (&q_frag)[D / 16][4],
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
      mma_16816<T>(s[2 * np], q_frag[kk], kf[0], kf[1]);
      mma_16816<T>(s[2 * np + 1], q_frag[kk], kf[2], kf[3]);
    }
  }
}

template <typename T, int D, bool kCausal, int W, int MB>
__global__ void __launch_bounds__(32 * W, MB) flash_fwd_kernel(const FwdParams p) {
  static_assert(D % 16 == 0 && D <= 256, "head dim must be a multiple of 16");
  constexpr int BM = 16 * W, BN = kFwdBlockN, NT = 32 * W;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + BM * D;
  T* sV = sK + 2 * BN * D;
  float* sCS = reinterpret_cast<float*>(sV + 2 * BN * D);  // RoPE only
  using KRope = RopeStage<D, BN, NT>;
  const bool rope = p.rope.cos != nullptr;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const QueryBlock blk = query_block<BM, kCausal>(p.nq, p.hq, p.hkv);
  const int bh = blk.bh, b = blk.b, h = blk.h, hk = blk.hk, m0 = blk.m0;
  const T* q = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* k = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* v = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;
  const int n_end = kCausal ? min(p.nk, m0 + BM) : p.nk;
  const int n_tiles = (n_end + BN - 1) / BN;

  load_rows_async<T, D, BM, NT>(sQ, q, p.q_sn, m0, p.nq);
  cp_async_commit();
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

  float acc_o[D / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY};  // log2 units; rows lane/4 and lane/4 + 8
  float row_sum[2] = {0.f, 0.f};              // this thread's share; reduced over the quad at the end
  uint32_t q_frag[D / 16][4];
  const int row_lo = m0 + warp * 16 + lane / 4;

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
    if (rope) {  // 2D RoPE: rotate the tiles in place before any warp reads them
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
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const int r = warp * 16 + lane % 16, c = kk * 16 + (lane / 16) * 8;
        ldmatrix_x4(smem_addr(sQ + swizzle<D>(r, c)), q_frag[kk]);
      }
    }
    const T* tK = sK + stage * BN * D;
    const T* tV = sV + stage * BN * D;

    // S = Q K^T for this warp's 16 rows and the tile's keys (a full tile without tests).
    const int n0 = j * BN, kv = min(BN, p.nk - n0);
    float s[BN / 8][4] = {};
    if (kv == BN) {
      qk_scores<T, D, BN>(s, q_frag, tK, BN);
    } else {
      qk_scores<T, D, BN>(s, q_frag, tK, kv);
    }

    // Mask the key tail and, with causal, keys after the row (raw scores; the scale is applied
    // inside the exponent's FFMA below).
    if (n0 + BN > p.nk || (kCausal && n0 + BN - 1 > m0)) {
#pragma unroll
      for (int t = 0; t < BN / 8; ++t) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = n0 + t * 8 + (lane % 4) * 2 + (e & 1);
          const int row = row_lo + (e >> 1) * 8;
          if (col >= p.nk || (kCausal && col > row)) s[t][e] = -INFINITY;
        }
      }
    }

    // Online softmax in log2 units: new row max over the quad, rescale the running sum and the
    // output. The scale is positive, so the max of raw scores scales to the max of scaled ones.
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int t = 0; t < BN / 8; ++t) mx = fmaxf(mx, fmaxf(s[t][2 * i], s[t][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      mx = fmaxf(row_max[i], mx * p.scale_log2);
      const float m_use = mx == -INFINITY ? 0.f : mx;  // a row with nothing visible yet
      const float alpha = exp2f(row_max[i] - m_use);
      row_max[i] = mx;
      float sum = 0.f;
#pragma unroll
      for (int t = 0; t < BN / 8; ++t) {
        s[t][2 * i] = exp2f(fmaf(s[t][2 * i], p.scale_log2, -m_use));
        s[t][2 * i + 1] = exp2f(fmaf(s[t][2 * i + 1], p.scale_log2, -m_use));
        sum += s[t][2 * i] + s[t][2 * i + 1];
      }
      row_sum[i] = row_sum[i] * alpha + sum;
#pragma unroll
      for (int t = 0; t < D / 8; ++t) {
        acc_o[t][2 * i] *= alpha;
        acc_o[t][2 * i + 1] *= alpha;
      }
    }

    if (kv == BN) {  // O += P V, P taken from the S accumulators
      mma_acc_b<T, D, BN>(acc_o, s, tV);
    } else {
      mma_acc_b<T, D, BN>(acc_o, s, tV, kv);
    }
    __syncthreads();  // this stage is refilled two tiles from now
  }

  // Normalize, write O (two 16-bit values per store) and the natural-log lse.
  T* o = static_cast<T*>(p.o) + b * p.o_sb + h * p.o_sh;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float l = row_sum[i];
    l += __shfl_xor_sync(0xffffffff, l, 1);
    l += __shfl_xor_sync(0xffffffff, l, 2);
    const int row = row_lo + i * 8;
    if (row >= p.nq) continue;
    const float inv = 1.f / l;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) {
      const uint32_t pair = pack2<T>(acc_o[t][2 * i] * inv, acc_o[t][2 * i + 1] * inv);
      *reinterpret_cast<uint32_t*>(o + row * p.o_sn + t * 8 + (lane % 4) * 2) = pair;
    }
    if (lane % 4 == 0) {
      p.lse[static_cast<int64_t>(bh) * p.nq + row] = (row_max[i] + log2f(l)) * 0.69314718f;
    }
  }
}

// Launch with W warps per block on `stream`; requires nq, nk >= 1 and hq % hkv == 0.
template <typename T, int D, int W, int MB>
cudaError_t launch_flash_fwd_cfg(const FwdParams& p, bool causal, cudaStream_t stream) {
  constexpr int smem_max = fwd_smem_bytes<D, W>(true);
  const int smem = fwd_smem_bytes<D, W>(p.rope.cos != nullptr);
  const int num_m = (p.nq + 16 * W - 1) / (16 * W);
  const dim3 grid(static_cast<unsigned>(num_m) * p.b * p.hq);
  if (causal) {
    cudaFuncSetAttribute(flash_fwd_kernel<T, D, true, W, MB>,
                         cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max);
    flash_fwd_kernel<T, D, true, W, MB><<<grid, 32 * W, smem, stream>>>(p);
  } else {
    cudaFuncSetAttribute(flash_fwd_kernel<T, D, false, W, MB>,
                         cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max);
    flash_fwd_kernel<T, D, false, W, MB><<<grid, 32 * W, smem, stream>>>(p);
  }
  return cudaGetLastError();
}

// Launch the shipped configuration (FwdConfig) on `stream`.
template <typename T, int D>
cudaError_t launch_flash_fwd(const FwdParams& p, bool causal, cudaStream_t stream) {
  return launch_flash_fwd_cfg<T, D, FwdConfig<D>::kWarps, FwdConfig<D>::kMinBlocks>(p, causal,
                                                                                     stream);
}

}  // namespace flashduo
