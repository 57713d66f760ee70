// Hopper backward instantiation: fp16, head dim 256 (sm_90a code; empty kernels for other targets).
#include "bwd_kernel.cuh"

namespace flashduo::sm90 {
template cudaError_t launch_flash_bwd_sm90<__half, 256>(const BwdParams&, bool, cudaStream_t);
}  // namespace flashduo::sm90
