// pybind11 bindings of the CUDA FlashAttention kernels for torch tensors.
//
// fwd(q, k, v, causal, scale) -> (out, lse): q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D), fp16 or bf16,
// last-dim stride 1, Hq % Hkv == 0; out (B, Hq, Nq, D) contiguous, lse fp32 (B, Hq, Nq). On an
// sm_90 GPU it runs the Hopper forward (cuda/flash/sm90/, D in {64, 96, 128, 256}) unless
// FLASHDUO_CUDA_ARCH=sm80; elsewhere the mma.sync forward (D in {64, 128}).
// bwd(dout, q, k, v, out, lse, causal, scale) -> (dq, dk, dv), contiguous, shaped like q, k, v;
// on sm_90 the Hopper backward (D in {64, 96, 128, 256}), elsewhere mma.sync (D in {64, 128}).
// deterministic=False runs the Hopper backward's atomic mode at D = 64 and 128; every other
// path is deterministic either way.
// Both take optional 2D RoPE tables (rope_cos, rope_sin: float32 (N_pos, D / 2), num_prefix):
// q and k are rotated inside the kernels, and dq, dk come back unrotated.
// Both launch on the current CUDA stream of the tensors' device.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <tuple>

#include "../cuda/flash/api.h"

// Argument guards: a second line of defence for callers that skip flashduo's front door, which
// refuses bad input first with a ValueError. `fwd` / `bwd` throw std::runtime_error (RuntimeError
// in Python) naming the bad argument. The messages are concatenated from std::string pieces by
// `cat` instead of TORCH_CHECK / c10::str because, under the torch 2.11 CUDA 13 wheels, formatting
// a number through std::ostringstream inside a JIT-built extension ended the interpreter with
// SIGSEGV (a one-line load_inline extension whose TORCH_CHECK fails shows it).
#define FLASHDUO_REQUIRE(cond, ...)              \
  do {                                           \
    if (!(cond)) return cat(__VA_ARGS__);        \
  } while (0)
#define FLASHDUO_PROPAGATE(expr)                 \
  do {                                           \
    std::string why_ = (expr);                   \
    if (!why_.empty()) return why_;              \
  } while (0)

namespace {

std::string piece(const char* x) { return x; }
std::string piece(const std::string& x) { return x; }
std::string piece(int64_t x) { return std::to_string(x); }
std::string piece(double x) { return std::to_string(x); }
std::string piece(const c10::Device& x) { return x.str(); }
std::string piece(at::ScalarType x) { return c10::toString(x); }
std::string piece(at::IntArrayRef x) {
  std::string out = "(";
  for (size_t i = 0; i < x.size(); ++i) out += (i ? ", " : "") + std::to_string(x[i]);
  return out + ")";
}

template <typename... Args>
std::string cat(const Args&... args) {
  std::string out;
  ((out += piece(args)), ...);
  return out;
}

void check_launch(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + " launch failed: " + cudaGetErrorString(err));
  }
}

void require(const std::string& why) {
  if (!why.empty()) throw std::runtime_error(why);
}

std::string input_problem(const at::Tensor& t, const char* name, const at::Tensor& q) {
  FLASHDUO_REQUIRE(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
  FLASHDUO_REQUIRE(t.dim() == 4, name, " must be 4-D (B, H, N, D), got ", t.dim(), "-D");
  FLASHDUO_REQUIRE(t.scalar_type() == q.scalar_type(), name, " dtype ", t.scalar_type(),
                   " differs from q dtype ", q.scalar_type());
  FLASHDUO_REQUIRE(t.device() == q.device(), name, " is on ", t.device(), ", q on ", q.device());
  FLASHDUO_REQUIRE(t.stride(-1) == 1, name, " must have last-dim stride 1, got ", t.stride(-1));
  FLASHDUO_REQUIRE(t.size(-1) == q.size(-1), name, " head dim ", t.size(-1), " != q head dim ",
                   q.size(-1));
  return "";
}

// The Hopper forward serves this call: an sm_90 device with sm_90a code in this build, not forced
// off by FLASHDUO_CUDA_ARCH=sm80 (read on every call, so one process can
// time both forwards). At D = 64 the persistent short-sequence kernel keeps ViT-sized problems
// (Nq <= 256, many heads): with RoPE the Hopper forward rotates each K tile once per query tile,
// 1.6x slower there; without RoPE neither wins at every ViT shape (docs/perf-notes.md).
bool use_sm90(cudaStream_t stream) {
  const char* force = std::getenv("FLASHDUO_CUDA_ARCH");
  if (force != nullptr && std::string(force) == "sm80") return false;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    return false;
  }
  return major == 9 && flashduo::sm90::forward_built(stream);
}

// Whether this backward adds dQ with fp32 atomics (the Hopper backward's atomic mode): when the
// caller allows non-deterministic gradients, at the head dims where that mode is the faster one
// (64 and 128; docs/perf-notes.md, CUDA v2.4).
bool atomic_dq(bool deterministic, int64_t d, cudaStream_t stream) {
  return !deterministic && (d == 64 || d == 128) && use_sm90(stream);
}

template <typename T>
cudaError_t dispatch_head_dim(const flashduo::FwdParams& p, int d, bool causal, cudaStream_t s) {
  namespace sm90 = flashduo::sm90;
  if (use_sm90(s) && !(d == 64 && flashduo::short_fwd_applies(p))) {
    cudaError_t err = cudaErrorNotSupported;
    if (d == 64) err = sm90::launch_flash_fwd_sm90<T, 64>(p, causal, s);
    if (d == 96) err = sm90::launch_flash_fwd_sm90<T, 96>(p, causal, s);
    if (d == 128) err = sm90::launch_flash_fwd_sm90<T, 128>(p, causal, s);
    if (d == 256) err = sm90::launch_flash_fwd_sm90<T, 256>(p, causal, s);
    if (err != cudaErrorNotSupported) return err;  // else: not mappable by TMA, mma.sync below
  }
  if (d == 64) return flashduo::launch_flash_fwd<T, 64>(p, causal, s);
  if (d == 128) return flashduo::launch_flash_fwd<T, 128>(p, causal, s);
  return cudaErrorNotSupported;
}

template <typename T>
cudaError_t dispatch_head_dim(const flashduo::BwdParams& p, int d, bool causal, cudaStream_t s) {
  namespace sm90 = flashduo::sm90;
  if (use_sm90(s)) {
    cudaError_t err = cudaErrorNotSupported;
    if (d == 64) err = sm90::launch_flash_bwd_sm90<T, 64>(p, causal, s);
    if (d == 96) err = sm90::launch_flash_bwd_sm90<T, 96>(p, causal, s);
    if (d == 128) err = sm90::launch_flash_bwd_sm90<T, 128>(p, causal, s);
    if (d == 256) err = sm90::launch_flash_bwd_sm90<T, 256>(p, causal, s);
    if (err != cudaErrorNotSupported) return err;
  }
  if (d == 64) return flashduo::launch_flash_bwd<T, 64>(p, causal, s);
  if (d == 128) return flashduo::launch_flash_bwd<T, 128>(p, causal, s);
  return cudaErrorNotSupported;
}

// Why fwd cannot take these inputs; "" when it can.
std::string fwd_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        double scale) {
  FLASHDUO_PROPAGATE(input_problem(q, "q", q));
  FLASHDUO_PROPAGATE(input_problem(k, "k", q));
  FLASHDUO_PROPAGATE(input_problem(v, "v", q));
  const auto dtype = q.scalar_type();
  FLASHDUO_REQUIRE(dtype == at::kHalf || dtype == at::kBFloat16,
                   "q dtype must be float16 or bfloat16, got ", dtype);
  const int64_t d = q.size(3);
  FLASHDUO_REQUIRE(d == 64 || d == 96 || d == 128 || d == 256,
                   "head dim must be 64, 96, 128 or 256, got ", d);
  FLASHDUO_REQUIRE(k.sizes() == v.sizes(), "k and v must have the same shape, got ", k.sizes(),
                   " and ", v.sizes());
  FLASHDUO_REQUIRE(k.size(0) == q.size(0), "k batch ", k.size(0), " != q batch ", q.size(0));
  FLASHDUO_REQUIRE(k.size(1) > 0 && q.size(1) % k.size(1) == 0, "q heads (", q.size(1),
                   ") must be a multiple of k heads (", k.size(1), ")");
  FLASHDUO_REQUIRE(q.size(0) > 0 && q.size(2) > 0 && k.size(2) > 0,
                   "empty inputs are handled before the kernel");
  FLASHDUO_REQUIRE(std::isfinite(scale) && scale > 0, "scale must be positive and finite, got ",
                   scale);
  return "";
}

// Why bwd cannot take these inputs; "" when it can.
std::string bwd_problem(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                        double scale) {
  FLASHDUO_PROPAGATE(fwd_problem(q, k, v, scale));
  FLASHDUO_PROPAGATE(input_problem(dout, "dout", q));
  FLASHDUO_PROPAGATE(input_problem(out, "out", q));
  FLASHDUO_REQUIRE(dout.sizes() == q.sizes() && out.sizes() == q.sizes(),
                   "dout and out must have q's shape ", q.sizes());
  FLASHDUO_REQUIRE(lse.is_cuda() && lse.scalar_type() == at::kFloat && lse.is_contiguous() &&
                       lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(1) &&
                       lse.size(2) == q.size(2),
                   "lse must be a contiguous float32 CUDA tensor of shape (B, Hq, Nq)");
  return "";
}

using OptTensor = c10::optional<at::Tensor>;

// Why the 2D RoPE tables cannot serve q (B, Hq, Nq, D) and k (B, Hkv, Nk, D); "" when they can
// (or when there are none).
std::string rope_problem(const at::Tensor& q, const at::Tensor& k, const OptTensor& cos,
                         const OptTensor& sin, int64_t prefix) {
  FLASHDUO_REQUIRE(cos.has_value() == sin.has_value(), "rope_cos and rope_sin go together");
  if (!cos.has_value()) return "";
  for (const auto* t : {&*cos, &*sin}) {
    FLASHDUO_REQUIRE(t->is_cuda() && t->device() == q.device(), "rope tables must be on ",
                     q.device(), ", got ", t->device());
    FLASHDUO_REQUIRE(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 2 &&
                         t->size(1) == q.size(3) / 2,
                     "rope tables must be contiguous float32 (N_pos, D / 2 = ", q.size(3) / 2,
                     "), got ", t->scalar_type(), " ", t->sizes());
  }
  FLASHDUO_REQUIRE(cos->sizes() == sin->sizes(), "rope_cos and rope_sin shapes differ");
  FLASHDUO_REQUIRE(reinterpret_cast<uintptr_t>(cos->data_ptr()) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(sin->data_ptr()) % 16 == 0,
                   "rope tables must start on a 16-byte boundary");
  const int64_t n_pos = cos->size(0);
  FLASHDUO_REQUIRE(prefix >= 0 && q.size(2) == prefix + n_pos && k.size(2) == prefix + n_pos,
                   "rope covers ", prefix, " prefix + ", n_pos, " tokens, but Nq = ", q.size(2),
                   " and Nk = ", k.size(2));
  return "";
}

flashduo::RopeParams rope_params(const OptTensor& cos, const OptTensor& sin, int64_t prefix) {
  if (!cos.has_value()) return {nullptr, nullptr, 0, 0};
  return {cos->data_ptr<float>(), sin->data_ptr<float>(), static_cast<int>(cos->size(0)),
          static_cast<int>(prefix)};
}

std::tuple<at::Tensor, at::Tensor> fwd(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, bool causal, double scale,
                                       const OptTensor& rope_cos, const OptTensor& rope_sin,
                                       int64_t num_prefix) {
  require(fwd_problem(q, k, v, scale));
  require(rope_problem(q, k, rope_cos, rope_sin, num_prefix));
  const int64_t d = q.size(3);
  const auto dtype = q.scalar_type();
  const int64_t b = q.size(0), hq = q.size(1), nq = q.size(2), hkv = k.size(1), nk = k.size(2);

  const c10::cuda::CUDAGuard guard(q.device());
  auto out = at::empty({b, hq, nq, d}, q.options());
  auto lse = at::empty({b, hq, nq}, q.options().dtype(at::kFloat));
  flashduo::FwdParams p{q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                        lse.data_ptr<float>(),
                        q.stride(0), q.stride(1), q.stride(2),
                        k.stride(0), k.stride(1), k.stride(2),
                        v.stride(0), v.stride(1), v.stride(2),
                        out.stride(0), out.stride(1), out.stride(2),
                        static_cast<int>(b), static_cast<int>(hq), static_cast<int>(hkv),
                        static_cast<int>(nq), static_cast<int>(nk),
                        static_cast<float>(scale * flashduo::kLog2e),
                        rope_params(rope_cos, rope_sin, num_prefix)};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  // The Hopper forward's tile counter: stream-ordered scratch, zeroed by the launch.
  const at::Tensor tile_counter = at::empty({1}, q.options().dtype(at::kInt));
  p.tile_counter = tile_counter.data_ptr<int>();
  const cudaError_t err = dtype == at::kHalf
                              ? dispatch_head_dim<__half>(p, static_cast<int>(d), causal, stream)
                              : dispatch_head_dim<__nv_bfloat16>(p, static_cast<int>(d), causal,
                                                                 stream);
  if (err == cudaErrorNotSupported) {
    throw std::runtime_error(cat("head dim ", d, " needs the Hopper forward: an sm_90 GPU and "
                                 "FLASHDUO_CUDA_ARCH not sm80"));
  }
  check_launch(err, "flash forward");
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bwd(const at::Tensor& dout, const at::Tensor& q,
                                                   const at::Tensor& k, const at::Tensor& v,
                                                   const at::Tensor& out, const at::Tensor& lse,
                                                   bool causal, double scale,
                                                   const OptTensor& rope_cos,
                                                   const OptTensor& rope_sin, int64_t num_prefix,
                                                   bool deterministic) {
  require(bwd_problem(dout, q, k, v, out, lse, scale));
  require(rope_problem(q, k, rope_cos, rope_sin, num_prefix));
  const int64_t d = q.size(3);
  const int64_t b = q.size(0), hq = q.size(1), nq = q.size(2), hkv = k.size(1), nk = k.size(2);

  const c10::cuda::CUDAGuard guard(q.device());
  auto dq = at::empty_like(q, at::MemoryFormat::Contiguous);
  auto dk = at::empty_like(k, at::MemoryFormat::Contiguous);
  auto dv = at::empty_like(v, at::MemoryFormat::Contiguous);
  auto delta = at::empty({b, hq, nq}, q.options().dtype(at::kFloat));
  flashduo::BwdParams p{q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), dout.data_ptr(),
                        lse.data_ptr<float>(), delta.data_ptr<float>(),
                        dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                        q.stride(0), q.stride(1), q.stride(2),
                        k.stride(0), k.stride(1), k.stride(2),
                        v.stride(0), v.stride(1), v.stride(2),
                        out.stride(0), out.stride(1), out.stride(2),
                        dout.stride(0), dout.stride(1), dout.stride(2),
                        dq.stride(0), dq.stride(1), dq.stride(2),
                        dk.stride(0), dk.stride(1), dk.stride(2),
                        static_cast<int>(b), static_cast<int>(hq), static_cast<int>(hkv),
                        static_cast<int>(nq), static_cast<int>(nk), static_cast<float>(scale),
                        static_cast<float>(scale * flashduo::kLog2e),
                        rope_params(rope_cos, rope_sin, num_prefix)};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  at::Tensor dq_accum;  // the atomic mode's fp32 scratch (BwdParams::dq_accum)
  if (atomic_dq(deterministic, d, stream)) {
    dq_accum = at::empty({b, hq, flashduo::dq_accum_rows(nq), d}, q.options().dtype(at::kFloat));
    p.dq_accum = dq_accum.data_ptr<float>();
  }
  const cudaError_t err =
      q.scalar_type() == at::kHalf
          ? dispatch_head_dim<__half>(p, static_cast<int>(d), causal, stream)
          : dispatch_head_dim<__nv_bfloat16>(p, static_cast<int>(d), causal, stream);
  if (err == cudaErrorNotSupported) {
    throw std::runtime_error(cat("the backward at head dim ", d, " needs the Hopper backward: an "
                                 "sm_90 GPU and FLASHDUO_CUDA_ARCH not sm80"));
  }
  check_launch(err, "flash backward");
  return {dq, dk, dv};
}

// Whether a forward on the current device would run the Hopper kernels now (short D = 64 problems
// aside: they keep the short-sequence kernel).
bool hopper_forward() {
  return use_sm90(c10::cuda::getCurrentCUDAStream().stream());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flashduo CUDA FlashAttention kernels";
  m.def("fwd", &fwd,
        "FlashAttention forward: (q, k, v, causal, scale, rope_cos=None, rope_sin=None, "
        "num_prefix=0) -> (out, lse)",
        pybind11::arg("q"), pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("causal"),
        pybind11::arg("scale"), pybind11::arg("rope_cos") = pybind11::none(),
        pybind11::arg("rope_sin") = pybind11::none(), pybind11::arg("num_prefix") = 0);
  m.def("hopper_forward", &hopper_forward,
        "whether fwd runs the Hopper (sm_90a) kernels on the current device now");
  m.def("bwd", &bwd,
        "FlashAttention backward: (dout, q, k, v, out, lse, causal, scale, rope_cos=None, "
        "rope_sin=None, num_prefix=0, deterministic=True) -> (dq, dk, dv)",
        pybind11::arg("dout"), pybind11::arg("q"), pybind11::arg("k"), pybind11::arg("v"),
        pybind11::arg("out"), pybind11::arg("lse"), pybind11::arg("causal"),
        pybind11::arg("scale"), pybind11::arg("rope_cos") = pybind11::none(),
        pybind11::arg("rope_sin") = pybind11::none(), pybind11::arg("num_prefix") = 0,
        pybind11::arg("deterministic") = true);
}
