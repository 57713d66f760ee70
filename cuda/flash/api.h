// Host-side declarations of the kernel launchers, for code compiled without nvcc (the bindings).
// Each (dtype, head dim) instantiation lives in its own .cu file so nvcc builds them in parallel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "params.h"

namespace flashduo {

template <typename T, int D>
cudaError_t launch_flash_fwd(const FwdParams& p, bool causal, cudaStream_t stream);

extern template cudaError_t launch_flash_fwd<__half, 64>(const FwdParams&, bool, cudaStream_t);
extern template cudaError_t launch_flash_fwd<__half, 128>(const FwdParams&, bool, cudaStream_t);
extern template cudaError_t launch_flash_fwd<__nv_bfloat16, 64>(const FwdParams&, bool,
                                                                cudaStream_t);
extern template cudaError_t launch_flash_fwd<__nv_bfloat16, 128>(const FwdParams&, bool,
                                                                 cudaStream_t);

template <typename T, int D>
cudaError_t launch_flash_bwd(const BwdParams& p, bool causal, cudaStream_t stream);

extern template cudaError_t launch_flash_bwd<__half, 64>(const BwdParams&, bool, cudaStream_t);
extern template cudaError_t launch_flash_bwd<__half, 128>(const BwdParams&, bool, cudaStream_t);
extern template cudaError_t launch_flash_bwd<__nv_bfloat16, 64>(const BwdParams&, bool,
                                                                cudaStream_t);
extern template cudaError_t launch_flash_bwd<__nv_bfloat16, 128>(const BwdParams&, bool,
                                                                 cudaStream_t);

// Whether launch_flash_fwd<T, 64> hands p to the short-sequence kernel (Nq <= 256, many heads).
bool short_fwd_applies(const FwdParams& p);

}  // namespace flashduo

// The Hopper forward (sm90/): sm_90 devices only. It launches nothing when q, k
// or v cannot be described by a TMA tensor map (base or row strides not 16-byte aligned):
// cudaErrorNotSupported.
namespace flashduo::sm90 {

template <typename T, int D>
cudaError_t launch_flash_fwd_sm90(const FwdParams& p, bool causal, cudaStream_t stream);

#define FLASHDUO_SM90_FWD(T, D) \
  extern template cudaError_t launch_flash_fwd_sm90<T, D>(const FwdParams&, bool, cudaStream_t);
FLASHDUO_SM90_FWD(__half, 64)
FLASHDUO_SM90_FWD(__half, 96)
FLASHDUO_SM90_FWD(__half, 128)
FLASHDUO_SM90_FWD(__half, 256)
FLASHDUO_SM90_FWD(__nv_bfloat16, 64)
FLASHDUO_SM90_FWD(__nv_bfloat16, 96)
FLASHDUO_SM90_FWD(__nv_bfloat16, 128)
FLASHDUO_SM90_FWD(__nv_bfloat16, 256)
#undef FLASHDUO_SM90_FWD

// The Hopper backward (sm90/bwd_kernel.cuh), D in {64, 96, 128, 256}, with or without RoPE
// tables; like the forward it launches nothing (cudaErrorNotSupported) when an input cannot be
// mapped for TMA. Deterministic unless p.dq_accum points at fp32 (B, Hq, Nq, D) scratch: then dQ
// is added into it with fp32 atomics by the dK/dV kernel (its order, and so its last bits, vary
// from run to run) and scaled into dq by a last pass.
template <typename T, int D>
cudaError_t launch_flash_bwd_sm90(const BwdParams& p, bool causal, cudaStream_t stream);

#define FLASHDUO_SM90_BWD(T, D) \
  extern template cudaError_t launch_flash_bwd_sm90<T, D>(const BwdParams&, bool, cudaStream_t);
FLASHDUO_SM90_BWD(__half, 64)
FLASHDUO_SM90_BWD(__half, 96)
FLASHDUO_SM90_BWD(__half, 128)
FLASHDUO_SM90_BWD(__half, 256)
FLASHDUO_SM90_BWD(__nv_bfloat16, 64)
FLASHDUO_SM90_BWD(__nv_bfloat16, 96)
FLASHDUO_SM90_BWD(__nv_bfloat16, 128)
FLASHDUO_SM90_BWD(__nv_bfloat16, 256)
#undef FLASHDUO_SM90_BWD

// Whether the Hopper kernels were compiled for the current device (sm_90a code in this build);
// probes once per device on `stream`, never while the stream is being captured (false then).
bool forward_built(cudaStream_t stream);

}  // namespace flashduo::sm90
