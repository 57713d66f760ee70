// Whether the short-sequence forward (fwd_short_kernel.cuh) takes a D = 64 problem, for host code
// compiled without nvcc (the bindings choose between it and the Hopper forward).
#include "api.h"
#include "fwd_short_kernel.cuh"

namespace flashduo {

bool short_fwd_applies(const FwdParams& p) {
  ShortPlan plan;
  return plan_short_fwd<64>(p, &plan);
}

}  // namespace flashduo
