// Whether this build of the extension holds sm_90a code for the current device. The Hopper
// kernels have bodies only in sm_90a code (wgmma, setmaxnreg); a build for plain sm_90, or PTX
// JIT-compiled for the device, leaves them empty. One probe launch per device tells.
#include <cuda_runtime.h>

#include "../api.h"

namespace flashduo::sm90 {

__global__ void probe_kernel(int* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *out = 1;
#else
  *out = 0;
#endif
}

bool forward_built(cudaStream_t stream) {
  constexpr int kDevices = 64;
  static int known[kDevices] = {};  // 0: not probed yet, 1: built, 2: not built
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev >= kDevices) return false;
  if (known[dev] != 0) return known[dev] == 1;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess ||
      capture != cudaStreamCaptureStatusNone) {
    return false;  // no probe inside a graph capture: the mma.sync forward serves this call
  }
  int* flag = nullptr;
  int host = 0;
  if (cudaMalloc(&flag, sizeof(int)) != cudaSuccess) return false;
  probe_kernel<<<1, 1, 0, stream>>>(flag);
  const bool ok = cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream) ==
                      cudaSuccess &&
                  cudaStreamSynchronize(stream) == cudaSuccess;
  cudaFree(flag);
  known[dev] = ok && host == 1 ? 1 : 2;
  return known[dev] == 1;
}

}  // namespace flashduo::sm90
