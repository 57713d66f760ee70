// Forward instantiation: fp16, head dim 64.
#include "fwd_kernel.cuh"

namespace flashduo {
template cudaError_t launch_flash_fwd<__half, 64>(const FwdParams&, bool, cudaStream_t);
}  // namespace flashduo
