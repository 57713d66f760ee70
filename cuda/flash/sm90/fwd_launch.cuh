// Host side of the Hopper forward: tensor maps of q, k, v (cached per tensor), launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <algorithm>
#include <cstring>

#include "fwd_kernel.cuh"
#include "tensor_map.h"

namespace flashduo::sm90 {

// What a (B, H, N, D) map depends on (no padding bytes: compared with memcmp).
struct MapKey {
  const void* base;
  int64_t b, h, n, sb, sh, sn, d, rows, bf16;
  bool operator==(const MapKey& o) const { return std::memcmp(this, &o, sizeof(MapKey)) == 0; }
};
static_assert(sizeof(MapKey) == 10 * 8, "MapKey must have no padding");

// A (B, H, N, D) tensor of 16-bit elements with element strides sb, sh, sn (last dim contiguous)
// as a 4-D map {D, N, H, B} with boxes of `rows` rows and one column block. The last 64 maps are
// kept per host thread, so a training loop that reuses its buffers encodes none. False when TMA
// cannot address the tensor (base or a row stride not 16-byte aligned).
inline bool bhnd_map(CUtensorMap* map, const MapKey& key, int chunk, CUtensorMapSwizzle sw) {
  struct Entry {
    MapKey key;
    CUtensorMap map;
    bool used;
  };
  constexpr int kEntries = 64;
  thread_local Entry cache[kEntries] = {};
  thread_local int next = 0;
  for (const Entry& e : cache) {
    if (e.used && e.key == key) {
      *map = e.map;
      return true;
    }
  }
  if (reinterpret_cast<uintptr_t>(key.base) % 16 != 0) return false;
  // Strides of size-1 dimensions are never followed; give them a valid value.
  const int64_t sh = key.h == 1 ? key.sn * key.n : key.sh;
  const int64_t sb = key.b == 1 ? sh * key.h : key.sb;
  for (int64_t s : {key.sn, sh, sb}) {
    if (s <= 0 || (s * 2) % 16 != 0) return false;
  }
  const uint64_t dims[4] = {uint64_t(key.d), uint64_t(key.n), uint64_t(key.h), uint64_t(key.b)};
  const uint64_t strides[3] = {uint64_t(key.sn) * 2, uint64_t(sh) * 2, uint64_t(sb) * 2};
  const uint32_t box[4] = {uint32_t(chunk), uint32_t(key.rows), 1, 1};
  if (!encode_tiled_16bit(map, key.bf16 != 0, 4, key.base, dims, strides, box, sw)) return false;
  Entry& e = cache[next];
  next = (next + 1) % kEntries;
  e.key = key;
  e.map = *map;
  e.used = true;
  return true;
}

// Launch the Hopper forward with tile shape S (FwdTiles) on `stream`. Requires an sm_90 device,
// nq, nk >= 1, hq % hkv == 0, and RoPE tables (when p.rope.cos is set) starting on 16-byte
// boundaries. Returns
// cudaErrorNotSupported, launching nothing, when q, k or v cannot be mapped for TMA.
// persistent: one block per SM, each walking query tiles: the next one nobody has taken when
// p.tile_counter is set (the launch zeroes it on `stream` first), else every gridDim.x-th. Not
// persistent: one block per tile (p.tile_counter is not used).
template <typename T, int D, class S>
cudaError_t launch_flash_fwd_sm90_cfg(const FwdParams& p, bool causal, cudaStream_t stream,
                                      bool persistent = false) {
  constexpr int64_t bf16 = std::is_same_v<T, __nv_bfloat16> ? 1 : 0;
  const CUtensorMapSwizzle sw =
      S::kChunk == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
  CUtensorMap tq, tk, tv;
  const bool ok =
      bhnd_map(&tq, {p.q, p.b, p.hq, p.nq, p.q_sb, p.q_sh, p.q_sn, D, S::kBM, bf16}, S::kChunk,
               sw) &&
      bhnd_map(&tk, {p.k, p.b, p.hkv, p.nk, p.k_sb, p.k_sh, p.k_sn, D, S::kBN, bf16}, S::kChunk,
               sw) &&
      bhnd_map(&tv, {p.v, p.b, p.hkv, p.nk, p.v_sb, p.v_sh, p.v_sn, D, S::kBN, bf16}, S::kChunk,
               sw);
  if (!ok) return cudaErrorNotSupported;
  using Kernel = void (*)(CUtensorMap, CUtensorMap, CUtensorMap, FwdParams);
  static const Kernel kernels[4] = {
      flash_fwd_sm90_kernel<T, D, false, false, S>, flash_fwd_sm90_kernel<T, D, true, false, S>,
      flash_fwd_sm90_kernel<T, D, false, true, S>, flash_fwd_sm90_kernel<T, D, true, true, S>};
  static const bool configured = [] {
    for (Kernel k : kernels) {
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmem);
    }
    return true;
  }();
  (void)configured;
  const int num_m = (p.nq + S::kBM - 1) / S::kBM;
  int blocks = num_m * p.b * p.hq;
  FwdParams kp = p;
  if (persistent) {
    int dev = 0, sms = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    blocks = std::min(blocks, std::max(sms, 1));
    if (kp.tile_counter != nullptr) {
      const cudaError_t err = cudaMemsetAsync(kp.tile_counter, 0, sizeof(int), stream);
      if (err != cudaSuccess) return err;
    }
  } else {
    kp.tile_counter = nullptr;
  }
  const dim3 grid(static_cast<unsigned>(blocks));
  const Kernel kernel = kernels[(causal ? 1 : 0) + (p.rope.cos != nullptr ? 2 : 0)];
  kernel<<<grid, S::kThreads, S::kSmem, stream>>>(tq, tk, tv, kp);
  return cudaGetLastError();
}

// The shipped configuration: FwdShape<D> (FwdShapeWide64 for long non-causal D = 64 without RoPE:
// with it, three consumers' registers are too few and ptxas serializes their wgmmas). Persistent
// while the keys are few (Nk <= 4096 non-causal, < 4096 causal): there a block's short walk of
// key tiles would leave its pipeline idle between query tiles. Causal persistent launches take
// tiles from the dynamic scheduler (p.tile_counter, when set), which evens out the blocks' work;
// non-causal tiles are equal, and the static walk needs no atomic. Longer keys: a block per
// tile, which measured faster there (docs/perf-notes.md).
template <typename T, int D>
cudaError_t launch_flash_fwd_sm90(const FwdParams& p, bool causal, cudaStream_t stream) {
  const bool persistent = causal ? p.nk < 4096 : p.nk <= 4096;
  FwdParams sp = p;
  if (!causal) sp.tile_counter = nullptr;
  if constexpr (D == 64) {
    if (!causal && p.nq >= 1024 && p.rope.cos == nullptr) {
      return launch_flash_fwd_sm90_cfg<T, D, FwdShapeWide64>(sp, causal, stream, persistent);
    }
  }
  return launch_flash_fwd_sm90_cfg<T, D, FwdShape<D>>(sp, causal, stream, persistent);
}

}  // namespace flashduo::sm90
