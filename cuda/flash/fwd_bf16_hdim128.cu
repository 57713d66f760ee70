// Forward instantiation: bf16, head dim 128.
#include "fwd_kernel.cuh"

namespace flashduo {
template cudaError_t launch_flash_fwd<__nv_bfloat16, 128>(const FwdParams&, bool, cudaStream_t);
}  // namespace flashduo
