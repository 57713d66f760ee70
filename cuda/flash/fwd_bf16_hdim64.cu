// Forward instantiation: bf16, head dim 64.
#include "fwd_kernel.cuh"

namespace flashduo {
template cudaError_t launch_flash_fwd<__nv_bfloat16, 64>(const FwdParams&, bool, cudaStream_t);
}  // namespace flashduo
