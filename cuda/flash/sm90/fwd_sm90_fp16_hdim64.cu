// Hopper forward instantiation: fp16, head dim 64 (sm_90a code; empty kernels for other targets).
#include "fwd_launch.cuh"

namespace flashduo::sm90 {
template cudaError_t launch_flash_fwd_sm90<__half, 64>(const FwdParams&, bool, cudaStream_t);
}  // namespace flashduo::sm90
