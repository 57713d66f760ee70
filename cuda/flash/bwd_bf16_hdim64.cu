// Backward instantiation: bf16, head dim 64.
#include "bwd_kernel.cuh"

namespace flashduo {
template cudaError_t launch_flash_bwd<__nv_bfloat16, 64>(const BwdParams&, bool, cudaStream_t);
}  // namespace flashduo
