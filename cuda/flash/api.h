// Host-side declarations of the kernel launchers, for code compiled without nvcc (the bindings).
// Each (dtype, head dim) instantiation lives in its own .cu file so nvcc builds them in parallel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "params.h"

namespace flashduo {

template <typename T, int D>
cudaError_t launch_flash_fwd(const FwdParams& p, bool causal, cudaStream_t stream);

extern template cudaError_t launch_flash_fwd<__half, 64>(const FwdParams&, bool, cudaStream_t);
extern template cudaError_t launch_flash_fwd<__half, 128>(const FwdParams&, bool, cudaStream_t);
extern template cudaError_t launch_flash_fwd<__nv_bfloat16, 64>(const FwdParams&, bool,
                                                                cudaStream_t);
extern template cudaError_t launch_flash_fwd<__nv_bfloat16, 128>(const FwdParams&, bool,
                                                                 cudaStream_t);

template <typename T, int D>
cudaError_t launch_flash_bwd(const BwdParams& p, bool causal, cudaStream_t stream);

extern template cudaError_t launch_flash_bwd<__half, 64>(const BwdParams&, bool, cudaStream_t);
extern template cudaError_t launch_flash_bwd<__half, 128>(const BwdParams&, bool, cudaStream_t);
extern template cudaError_t launch_flash_bwd<__nv_bfloat16, 64>(const BwdParams&, bool,
                                                                cudaStream_t);
extern template cudaError_t launch_flash_bwd<__nv_bfloat16, 128>(const BwdParams&, bool,
                                                                 cudaStream_t);

}  // namespace flashduo
