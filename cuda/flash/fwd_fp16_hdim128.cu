// Forward instantiation: fp16, head dim 128.
#include "fwd_kernel.cuh"

namespace flashduo {
template cudaError_t launch_flash_fwd<__half, 128>(const FwdParams&, bool, cudaStream_t);
}  // namespace flashduo
