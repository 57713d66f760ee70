// Backward instantiation: fp16, head dim 64.
#include "bwd_kernel.cuh"

namespace flashduo {
template cudaError_t launch_flash_bwd<__half, 64>(const BwdParams&, bool, cudaStream_t);
}  // namespace flashduo
