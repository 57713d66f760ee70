// FlashAttention-2 forward on tensor cores (mma.sync m16n8k16, ldmatrix, cp.async).
//
// One block of W warps owns BM = 16 MT W query rows of one (batch, head); each warp owns MT tiles
// of 16 rows (FwdConfig). Key/value tiles of BN = 64 rows stream through two shared-memory stages
// with cp.async, so the next tile loads while this one is used. Per tile and warp (fwd_tile.cuh):
// S = Q K^T in registers, masking (key tail, causal), online softmax in fp32 with exp2, then
// O += P V with P reused from the S accumulators as the A operand. Causal: tiles above the
// diagonal are never loaded. With 2D RoPE (p.rope), the Q tile and each K tile are rotated in
// shared memory once landed; their cos / sin are fetched ahead (Q: registers; K: a cp.async
// stage), so the rotation does not wait on memory. Short sequences: warps whose rows lie past Nq
// skip the math, the last key tile runs only the 16-key steps that hold keys, and at ViT sizes
// with many heads launch_flash_fwd hands the problem to the short-sequence kernel.
#pragma once

#include "fwd_short_kernel.cuh"
#include "fwd_tile.cuh"

namespace flashduo {

constexpr int kFwdBlockN = 64;

// The shipped shape per head dim: warps per block, the minimum resident blocks per SM that
// __launch_bounds__ asks the register allocator for, and 16-row query tiles per warp. Two tiles
// per warp win at D = 64 and spill at D = 128, where 8 warps beat 4 (see docs/perf-notes.md,
// CUDA v1.1 and v1.3).
template <int D>
struct FwdConfig {
  static constexpr int kWarps = D >= 128 ? 8 : 4;
  static constexpr int kMinBlocks = D >= 128 ? 1 : 2;
  static constexpr int kTiles = D >= 128 ? 1 : 2;
};

// Q + two stages of K and V (16-bit elements), and with RoPE the cos / sin stage of a K tile.
template <int D, int W, int MT>
constexpr int fwd_smem_bytes(bool rope) {
  return (16 * MT * W + 4 * kFwdBlockN) * D * 2 +
         (rope ? RopeStage<D, kFwdBlockN, 32 * W>::kBytes : 0);
}

template <typename T, int D, bool kCausal, int W, int MB, int MT>
__global__ void __launch_bounds__(32 * W, MB) flash_fwd_kernel(const FwdParams p) {
  static_assert(D % 16 == 0 && D <= 256, "head dim must be a multiple of 16");
  constexpr int BM = 16 * MT * W, BN = kFwdBlockN, NT = 32 * W;
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
  const bool active = m0 + warp * 16 * MT < p.nq;  // a warp with no rows only loads and rotates

  RowState<D> st[MT];
  uint32_t q_frag[MT][D / 16][4];
  const int row_lo = m0 + warp * 16 * MT + lane / 4;

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
    if (j == 0) load_q_frag<T, D, MT>(q_frag, sQ, warp * 16 * MT);
    attend_tile<T, D, BN, MT, kCausal>(st, q_frag, sK + stage * BN * D, sV + stage * BN * D,
                                       j * BN, p.nk, p.nk, row_lo, m0, p.scale_log2);
    __syncthreads();  // this stage is refilled two tiles from now
  }

  T* o = static_cast<T*>(p.o) + b * p.o_sb + h * p.o_sh;
  store_rows<T, D, MT>(st, o, p.o_sn, p.lse + static_cast<int64_t>(bh) * p.nq, row_lo, p.nq);
}

// Launch with W warps per block and MT query tiles per warp on `stream`; requires nq, nk >= 1 and
// hq % hkv == 0.
template <typename T, int D, int W, int MB, int MT>
cudaError_t launch_flash_fwd_cfg(const FwdParams& p, bool causal, cudaStream_t stream) {
  constexpr int smem_max = fwd_smem_bytes<D, W, MT>(true);
  const int smem = fwd_smem_bytes<D, W, MT>(p.rope.cos != nullptr);
  constexpr int BM = 16 * MT * W;
  const int num_m = (p.nq + BM - 1) / BM;
  const dim3 grid(static_cast<unsigned>(num_m) * p.b * p.hq);
  auto kernel = causal ? flash_fwd_kernel<T, D, true, W, MB, MT>
                       : flash_fwd_kernel<T, D, false, W, MB, MT>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max);
  kernel<<<grid, 32 * W, smem, stream>>>(p);
  return cudaGetLastError();
}

// Launch the shipped configuration on `stream`: the short-sequence kernel where it applies
// (plan_short_fwd), else the streaming kernel with FwdConfig.
template <typename T, int D>
cudaError_t launch_flash_fwd(const FwdParams& p, bool causal, cudaStream_t stream) {
  if constexpr (D == 64) {
    ShortPlan plan;
    if (plan_short_fwd<D>(p, &plan)) return launch_flash_fwd_short<T, D>(p, plan, causal, stream);
  }
  using C = FwdConfig<D>;
  return launch_flash_fwd_cfg<T, D, C::kWarps, C::kMinBlocks, C::kTiles>(p, causal, stream);
}

}  // namespace flashduo
