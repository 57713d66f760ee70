// FlashAttention forward for short sequences (ViT sizes: Nq <= 256 at D = 64): a persistent block
// holds a whole (batch, head) in shared memory, Q, K and V, and works through heads gridDim.x
// apart, double-buffered: the next head's tiles load with cp.async while this one is computed.
// Its gain is RoPE: K (and Q) are rotated once per head, not once per query block, with the
// cos / sin table copied to shared memory once per block when it fits (else read from L2).
// Warps take MT = 2 tiles of 16 query rows each, in one pass, and run the shared per-warp step
// (fwd_tile.cuh) over 64-key tiles straight from the resident K and V.
#pragma once

#include <algorithm>

#include "fwd_tile.cuh"

namespace flashduo {

constexpr int kShortBlockN = 64;
constexpr int kShortTiles = 2;  // 16-row query tiles per warp
constexpr int kShortMaxRows = 16 * 16;  // query rows per pass over the block's warps

// Rows of the per-head tiles (Nq rounded up to 16 MT, Nk to 16) and where the RoPE table lives.
struct ShortPlan {
  int rows_q, rows_k;
  bool table_smem;
};

// Two head buffers of Q, K, V (16-bit elements).
template <int D>
constexpr int short_head_bytes(int rows_q, int rows_k) {
  return 2 * (rows_q + 2 * rows_k) * D * 2;
}

// Rows [0, rows) of a (N, D) matrix into a swizzled tile, rows >= n zero-filled; any block size.
template <typename T, int D>
__device__ __forceinline__ void load_head_async(T* tile, const T* g, int64_t stride, int rows,
                                                int n) {
  constexpr int kChunks = D / 8;
  for (int idx = threadIdx.x; idx < rows * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks, col = (idx % kChunks) * 8;
    const bool ok = r < n;
    cp_async_16(smem_addr(tile + swizzle<D>(r, col)), ok ? g + r * stride + col : g, ok);
  }
}

// 2D RoPE of rows [0, n) of a swizzled tile in place; cos / sin: (n_pos, D / 2) tables in shared
// or global memory. Four chunks per thread are fetched before any is turned, so that global reads
// overlap.
template <typename T, int D>
__device__ __forceinline__ void rope_rows(T* tile, int n, const float* cos, const float* sin,
                                          const RopeParams& r) {
  constexpr int kChunks = D / 8, kBatch = 4;
  const int total = n * kChunks;
  for (int base = threadIdx.x; base < total; base += kBatch * blockDim.x) {
    float4 c[kBatch], s[kBatch];
    int at[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int idx = base + u * blockDim.x, row = idx / kChunks, ch = idx % kChunks;
      const int t = row - r.prefix;
      const bool ok = idx < total && t >= 0 && t < r.n_pos;
      const int off = ok ? t * (D / 2) + ch * 4 : 0;
      at[u] = ok ? swizzle<D>(row, ch * 8) : -1;
      c[u] = ok ? *reinterpret_cast<const float4*>(cos + off) : make_float4(1, 1, 1, 1);
      s[u] = ok ? *reinterpret_cast<const float4*>(sin + off) : make_float4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      if (at[u] >= 0) rope_chunk(tile + at[u], c[u], s[u]);
    }
  }
}

// MT: 16-row query tiles per warp; a launch uses at most 16 / MT warps.
template <typename T, int D, bool kCausal, int MT>
__global__ void __launch_bounds__(32 * kShortMaxRows / (16 * MT), 1)
    flash_fwd_short_kernel(const FwdParams p, const ShortPlan plan) {
  constexpr int BN = kShortBlockN;
  extern __shared__ __align__(128) unsigned char smem[];
  T* const buf0 = reinterpret_cast<T*>(smem);
  const int buf_elems = (plan.rows_q + 2 * plan.rows_k) * D;
  float* const table = reinterpret_cast<float*>(buf0 + 2 * buf_elems);
  const bool rope = p.rope.cos != nullptr;
  const int table_floats = p.rope.n_pos * (D / 2);
  const float* cos_t = plan.table_smem ? table : p.rope.cos;
  const float* sin_t = plan.table_smem ? table + table_floats : p.rope.sin;

  const int n_heads = p.b * p.hq, group = p.hq / p.hkv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  const int m_tiles = (p.nq + 15) / 16;

  auto load_head = [&](int bh, T* buf) {
    const int b = bh / p.hq, h = bh % p.hq, hk = h / group;
    T* sQ = buf;
    T* sK = sQ + plan.rows_q * D;
    T* sV = sK + plan.rows_k * D;
    load_head_async<T, D>(sQ, static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh, p.q_sn,
                          plan.rows_q, p.nq);
    load_head_async<T, D>(sK, static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh, p.k_sn,
                          plan.rows_k, p.nk);
    load_head_async<T, D>(sV, static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh, p.v_sn,
                          plan.rows_k, p.nk);
  };

  load_head(blockIdx.x, buf0);
  if (rope && plan.table_smem) {  // cos then sin, once per block
    for (int i = threadIdx.x; i < table_floats / 2; i += blockDim.x) {
      const int half = table_floats / 4, which = i / half, at = (i % half) * 4;
      cp_async_16(smem_addr(table + which * table_floats + at),
                  (which ? p.rope.sin : p.rope.cos) + at, true);
    }
  }
  cp_async_commit();

  int it = 0;
  for (int bh = blockIdx.x; bh < n_heads; bh += gridDim.x, ++it) {
    T* const sQ = buf0 + (it & 1) * buf_elems;
    T* const sK = sQ + plan.rows_q * D;
    T* const sV = sK + plan.rows_k * D;
    if (bh + gridDim.x < n_heads) {  // the other buffer was released at the end of the last head
      load_head(bh + gridDim.x, buf0 + ((it + 1) & 1) * buf_elems);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (rope) {
      rope_rows<T, D>(sQ, p.nq, cos_t, sin_t, p.rope);
      rope_rows<T, D>(sK, p.nk, cos_t, sin_t, p.rope);
      __syncthreads();
    }

    const int b = bh / p.hq, h = bh % p.hq;
    T* const o = static_cast<T*>(p.o) + b * p.o_sb + h * p.o_sh;
    float* const lse = p.lse + static_cast<int64_t>(bh) * p.nq;
    for (int mt = warp * MT; mt < m_tiles; mt += n_warps * MT) {
      const int row_first = mt * 16, row_lo = row_first + lane / 4;
      const int n_end = kCausal ? min(p.nk, row_first + 16 * MT) : p.nk;
      RowState<D> st[MT];
      uint32_t q_frag[MT][D / 16][4];
      load_q_frag<T, D, MT>(q_frag, sQ, row_first);
      for (int n0 = 0; n0 < n_end; n0 += BN) {
        attend_tile<T, D, BN, MT, kCausal>(st, q_frag, sK + n0 * D, sV + n0 * D, n0, p.nk, n_end,
                                           row_lo, row_first, p.scale_log2);
      }
      store_rows<T, D, MT>(st, o, p.o_sn, lse, row_lo, p.nq);
    }
    __syncthreads();  // this buffer is refilled by the next head's prefetch
  }
}

// Device facts the plan needs, read once per device.
struct DeviceLimits {
  int sms, smem_block, smem_sm;
};

inline DeviceLimits device_limits() {
  static DeviceLimits cache[64] = {};
  int dev = 0;
  cudaGetDevice(&dev);
  DeviceLimits& l = cache[dev & 63];
  if (l.sms == 0) {
    cudaDeviceGetAttribute(&l.smem_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    cudaDeviceGetAttribute(&l.smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
    cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, dev);
  }
  return l;
}

// Whether the short kernel takes this problem (called for D = 64): its warps cover the query rows
// in one pass, both heads' tiles fit in shared memory, and there are at least two heads per SM,
// so that every block has a next head to prefetch.
template <int D, int MT = kShortTiles>
bool plan_short_fwd(const FwdParams& p, ShortPlan* plan) {
  const DeviceLimits lim = device_limits();
  const int rows_q = (p.nq + 16 * MT - 1) / (16 * MT) * (16 * MT), rows_k = (p.nk + 15) / 16 * 16;
  const int heads = short_head_bytes<D>(rows_q, rows_k);
  if (p.b * p.hq < 2 * lim.sms || heads > lim.smem_block || rows_q > kShortMaxRows) return false;
  const int table = p.rope.cos ? 2 * p.rope.n_pos * (D / 2) * 4 : 0;
  *plan = {rows_q, rows_k, table > 0 && heads + table <= lim.smem_block};
  return true;
}

// Warps per block: at most 16 / MT, and as few as give every warp the same number of passes.
template <int MT>
int short_fwd_warps(int nq) {
  constexpr int kMaxWarps = kShortMaxRows / (16 * MT);
  const int units = (nq + 16 * MT - 1) / (16 * MT);  // MT-tile units of query rows
  const int passes = (units + kMaxWarps - 1) / kMaxWarps;
  return (units + passes - 1) / passes;
}

// Launch on `stream` with a plan from plan_short_fwd<D, MT>.
template <typename T, int D, int MT = kShortTiles>
cudaError_t launch_flash_fwd_short(const FwdParams& p, const ShortPlan& plan, bool causal,
                                   cudaStream_t stream) {
  const DeviceLimits lim = device_limits();
  const int warps = short_fwd_warps<MT>(p.nq);
  const int smem = short_head_bytes<D>(plan.rows_q, plan.rows_k) +
                   (plan.table_smem ? 2 * p.rope.n_pos * (D / 2) * 4 : 0);
  // Resident blocks per SM: registers (up to what __launch_bounds__ allows), shared memory
  // (1 KiB per block reserved by the driver) and warps.
  const int max_regs = 65536 / kShortMaxRows * 16 * MT / 32;
  const int by_regs = 65536 / (warps * 32 * max_regs), by_smem = lim.smem_sm / (smem + 1024);
  const int per_sm = std::max(1, std::min({by_regs, by_smem, 64 / warps}));
  const int heads = p.b * p.hq;
  const dim3 grid(static_cast<unsigned>(std::min(heads, lim.sms * per_sm)));
  auto kernel = causal ? flash_fwd_short_kernel<T, D, true, MT>
                       : flash_fwd_short_kernel<T, D, false, MT>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  kernel<<<grid, 32 * warps, smem, stream>>>(p, plan);
  return cudaGetLastError();
}

}  // namespace flashduo
