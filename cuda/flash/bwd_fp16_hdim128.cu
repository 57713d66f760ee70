// Backward instantiation: fp16, head dim 128.
#include "bwd_kernel.cuh"

namespace flashduo {
template cudaError_t launch_flash_bwd<__half, 128>(const BwdParams&, bool, cudaStream_t);
}  // namespace flashduo
