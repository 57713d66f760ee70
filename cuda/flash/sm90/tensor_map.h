// Host side of TMA: encode a tiled tensor map (cuTensorMapEncodeTiled) for 16-bit tensors. The
// driver function is looked up once through the runtime (cudaGetDriverEntryPointByVersion), so
// nothing links against libcuda.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstdint>

namespace flashduo::sm90 {

inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &status) != cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// A map over a rank-`rank` tensor of 16-bit elements at `base`: dims[0] is the contiguous
// dimension, strides[i] the byte stride of dims[i + 1] (multiples of 16), box the tile copied per
// TMA load (box[0] * 2 bytes at most the swizzle span). Out-of-bounds elements read as zero.
// Returns false when the driver refuses the map (alignment, sizes) or cannot be reached.
inline bool encode_tiled_16bit(CUtensorMap* map, bool bf16, int rank, const void* base,
                               const uint64_t* dims, const uint64_t* strides,
                               const uint32_t* box, CUtensorMapSwizzle swizzle) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return false;
  const uint32_t elem_strides[5] = {1, 1, 1, 1, 1};
  const CUresult r =
      encode(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
             static_cast<cuuint32_t>(rank), const_cast<void*>(base), dims, strides, box,
             elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace flashduo::sm90
