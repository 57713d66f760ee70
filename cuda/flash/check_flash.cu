// Standalone check of the CUDA kernels (no torch): forward (output, lse) and backward (dq, dk, dv)
// on awkward shapes against a float64 host reference, then the forward's speed at large shapes.
// On an sm_90 GPU the Hopper forward (sm90/) runs every case too, at D = 64, 96, 128 and 256 (the
// test suite runs the backward from its output). `check_flash sm90` checks and times the Hopper
// forward only (the nine smaller shapes, and tile-shape variants); `check_flash time` only times;
// `check_flash lateq` checks and times forwards that free the Q tile after its last P V;
// `check_flash atomic` checks and times the Hopper backward's atomic mode and its variants.
// Exits non-zero on a mismatch.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "../examples/cuda_common.cuh"
#include "bwd_kernel.cuh"
#include "fwd_kernel.cuh"
#include "sm90/bwd_kernel.cuh"
#include "sm90/fwd_launch.cuh"

using flashduo::BwdParams;
using flashduo::FwdParams;
using flashduo::kLog2eF;

template <typename T>
float to_float(T x);
template <>
float to_float<__half>(__half x) { return __half2float(x); }
template <>
float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
T from_float(float x);
template <>
__half from_float<__half>(float x) { return __float2half(x); }
template <>
__nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

struct Shape {
  int b, hq, hkv, nq, nk;
  bool causal;
};

// The Hopper forward's tile counter (FwdParams::tile_counter), as the extension passes one; every
// check and timing here runs on the default stream, one launch at a time, so they share it.
int* g_tile_counter = nullptr;
// The Hopper backward's atomic-mode workspace (BwdParams::dq_accum), fp32, kAccumFloats of them:
// enough for every check and timing here.
constexpr size_t kAccumFloats = size_t(16384) * 2048;
float* g_dq_accum = nullptr;

// Backward of one case with a random dO: dq, dk, dv against float64 host formulas
// (P = softmax(S), dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = scale dS K,
// dK = scale dS^T Q, GQA gradients summed over the group), and exact zeros where the gradient is
// zero by structure: the dq of a row that sees one key (softmax over one score is constant) and
// the dk of a key that no row seeing several keys sees. Returns the count of bad elements.
// The backward launcher a check runs: the mma.sync one or the Hopper one.
using BwdLaunch = cudaError_t (*)(const BwdParams&, bool, cudaStream_t);

template <typename T, int D>
int check_backward(const Shape& s, const char* tname, const std::vector<float>& qf,
                   const std::vector<float>& kf, const std::vector<float>& vf, const T* dq_in,
                   const T* dk_in, const T* dv_in, const T* out, const float* lse,
                   BwdLaunch launch) {
  const size_t nq_el = size_t(s.b) * s.hq * s.nq * D, nk_el = size_t(s.b) * s.hkv * s.nk * D;
  std::vector<float> dof(nq_el);
  fill_random(dof.data(), nq_el, 29 + s.nq);
  std::vector<T> doh(nq_el);
  for (size_t i = 0; i < nq_el; ++i) doh[i] = from_float<T>(dof[i]), dof[i] = to_float(doh[i]);
  T *ddo, *ddq, *ddk, *ddv;
  float* delta;
  CUDA_CHECK(cudaMalloc(&ddo, nq_el * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&ddq, nq_el * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&ddk, nk_el * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&ddv, nk_el * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&delta, size_t(s.b) * s.hq * s.nq * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(ddo, doh.data(), nq_el * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(ddq, 0xff, nq_el * sizeof(T)));
  CUDA_CHECK(cudaMemset(ddk, 0xff, nk_el * sizeof(T)));
  CUDA_CHECK(cudaMemset(ddv, 0xff, nk_el * sizeof(T)));
  const float scale = 1.f / std::sqrt(float(D));
  const int64_t qsb = int64_t(s.hq) * s.nq * D, qsh = int64_t(s.nq) * D;
  const int64_t ksb = int64_t(s.hkv) * s.nk * D, ksh = int64_t(s.nk) * D;
  BwdParams p{dq_in, dk_in, dv_in, out, ddo, lse, delta, ddq, ddk, ddv,
              qsb, qsh, D, ksb, ksh, D, ksb, ksh, D, qsb, qsh, D, qsb, qsh, D, qsb, qsh, D,
              ksb, ksh, D, s.b, s.hq, s.hkv, s.nq, s.nk, scale, scale * kLog2eF};
  CUDA_CHECK(launch(p, s.causal, 0));
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> gq(nq_el), gk(nk_el), gv(nk_el);
  CUDA_CHECK(cudaMemcpy(gq.data(), ddq, nq_el * sizeof(T), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(gk.data(), ddk, nk_el * sizeof(T), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(gv.data(), ddv, nk_el * sizeof(T), cudaMemcpyDeviceToHost));

  std::vector<double> rq(nq_el, 0.0), rk(nk_el, 0.0), rv(nk_el, 0.0);
  std::vector<double> prow(s.nk), dprow(s.nk);
  for (int b = 0; b < s.b; ++b)
    for (int h = 0; h < s.hq; ++h) {
      const int hk = h / (s.hq / s.hkv);
      const size_t qh = (size_t(b) * s.hq + h) * s.nq, kh = (size_t(b) * s.hkv + hk) * s.nk;
      for (int i = 0; i < s.nq; ++i) {
        const int jend = s.causal ? std::min(s.nk, i + 1) : s.nk;
        const float* qi = &qf[(qh + i) * D];
        const float* doi = &dof[(qh + i) * D];
        double mx = -1e300, sum = 0;
        for (int j = 0; j < jend; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(qi[d]) * kf[(kh + j) * D + d];
          prow[j] = dot * scale;
          mx = std::max(mx, prow[j]);
        }
        for (int j = 0; j < jend; ++j) sum += (prow[j] = std::exp(prow[j] - mx));
        double delta_i = 0;
        for (int j = 0; j < jend; ++j) {
          prow[j] /= sum;
          double dp = 0;
          for (int d = 0; d < D; ++d) dp += double(doi[d]) * vf[(kh + j) * D + d];
          dprow[j] = dp;
          delta_i += prow[j] * dp;  // rowsum(dO * O) = sum_j P_ij (dO_i . V_j)
        }
        for (int j = 0; j < jend; ++j) {
          const double ds = prow[j] * (dprow[j] - delta_i) * scale;
          for (int d = 0; d < D; ++d) {
            rq[(qh + i) * D + d] += ds * kf[(kh + j) * D + d];
            rk[(kh + j) * D + d] += ds * qi[d];
            rv[(kh + j) * D + d] += prow[j] * doi[d];
          }
        }
      }
    }
  auto compare = [&](const char* name, const std::vector<T>& got, const std::vector<double>& ref) {
    // The peak is floored at 1e-2: a gradient that is zero everywhere (every row sees one key)
    // has no scale of its own. Its exact zeros are checked below.
    double peak = 1e-2, worst = 0;
    for (double r : ref) peak = std::max(peak, std::fabs(r));
    int n_bad = 0;
    const double tol = (std::is_same<T, __half>::value ? 5e-3 : 2e-2) * peak;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(to_float(got[i]) - ref[i]);
      worst = std::max(worst, err);
      if (!(err <= tol)) ++n_bad;
    }
    std::printf("  %s max err %.2e (peak %.2e)%s", name, worst, peak, n_bad ? " FAIL" : "");
    return n_bad;
  };
  int bad = compare("dq", gq, rq) + compare("dk", gk, rk) + compare("dv", gv, rv);
  // Row i sees keys [0, seen(i)); keys from `multi_end` on are seen by one-key rows alone (or by
  // none), so their dk is exactly zero too.
  auto seen = [&](int i) { return s.causal ? std::min(s.nk, i + 1) : s.nk; };
  int multi_end = 0, n_nonzero = 0;
  for (int i = 0; i < s.nq; ++i)
    if (seen(i) > 1) multi_end = std::max(multi_end, seen(i));
  for (size_t row = 0; row < size_t(s.b) * s.hq * s.nq; ++row) {
    if (seen(static_cast<int>(row % s.nq)) > 1) continue;
    for (int d = 0; d < D; ++d) n_nonzero += to_float(gq[row * D + d]) != 0.f;
  }
  for (size_t key = 0; key < size_t(s.b) * s.hkv * s.nk; ++key) {
    if (static_cast<int>(key % s.nk) < multi_end) continue;
    for (int d = 0; d < D; ++d) n_nonzero += to_float(gk[key * D + d]) != 0.f;
  }
  if (n_nonzero) std::printf("  one-key rows: %d nonzero dq / dk FAIL", n_nonzero);
  bad += n_nonzero;
  std::printf("  <- %s backward\n", tname);
  cudaFree(ddo);
  cudaFree(ddq);
  cudaFree(ddk);
  cudaFree(ddv);
  cudaFree(delta);
  return bad;
}

// A forward launcher: the mma.sync one, the Hopper one, or a Hopper tile-shape variant.
using FwdLaunch = cudaError_t (*)(const FwdParams&, bool, cudaStream_t);

template <typename T, int D>
FwdLaunch sm80_fwd() {
  if constexpr (D == 64 || D == 128) return flashduo::launch_flash_fwd<T, D>;
  return nullptr;
}
template <typename T, int D>
BwdLaunch sm80_bwd() {
  if constexpr (D == 64 || D == 128) return flashduo::launch_flash_bwd<T, D>;
  return nullptr;
}
template <typename T, int D>
BwdLaunch sm90_bwd() {
  return flashduo::sm90::launch_flash_bwd_sm90<T, D>;
}

// Runs one case through one forward, then (when bwd is given) that backward from its output;
// returns the number of elements outside tolerance.
template <typename T, int D>
int check_case(const Shape& s, const char* tname, FwdLaunch launch = sm80_fwd<T, D>(),
               const char* label = "sm80", BwdLaunch bwd = sm80_bwd<T, D>()) {
  const size_t nq_el = size_t(s.b) * s.hq * s.nq * D, nk_el = size_t(s.b) * s.hkv * s.nk * D;
  std::vector<float> qf(nq_el), kf(nk_el), vf(nk_el);
  fill_random(qf.data(), nq_el, 11 + s.nq);
  fill_random(kf.data(), nk_el, 13 + s.nk);
  fill_random(vf.data(), nk_el, 17 + s.nk);
  std::vector<T> qh(nq_el), kh(nk_el), vh(nk_el), oh(nq_el);
  for (size_t i = 0; i < nq_el; ++i) qh[i] = from_float<T>(qf[i] * 2.f), qf[i] = to_float(qh[i]);
  for (size_t i = 0; i < nk_el; ++i) kh[i] = from_float<T>(kf[i] * 2.f), kf[i] = to_float(kh[i]);
  for (size_t i = 0; i < nk_el; ++i) vh[i] = from_float<T>(vf[i]), vf[i] = to_float(vh[i]);

  T *dq, *dk, *dv, *dout;
  float* dlse;
  CUDA_CHECK(cudaMalloc(&dq, nq_el * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&dk, nk_el * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&dv, nk_el * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&dout, nq_el * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&dlse, size_t(s.b) * s.hq * s.nq * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(dq, qh.data(), nq_el * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dk, kh.data(), nk_el * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dv, vh.data(), nk_el * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(dout, 0xff, nq_el * sizeof(T)));  // NaN poison
  CUDA_CHECK(cudaMemset(dlse, 0xff, size_t(s.b) * s.hq * s.nq * sizeof(float)));

  const float scale = 1.f / std::sqrt(float(D));
  FwdParams p{dq, dk, dv, dout, dlse,
              int64_t(s.hq) * s.nq * D, int64_t(s.nq) * D, D,
              int64_t(s.hkv) * s.nk * D, int64_t(s.nk) * D, D,
              int64_t(s.hkv) * s.nk * D, int64_t(s.nk) * D, D,
              int64_t(s.hq) * s.nq * D, int64_t(s.nq) * D, D,
              s.b, s.hq, s.hkv, s.nq, s.nk, scale * kLog2eF};
  p.tile_counter = g_tile_counter;
  CUDA_CHECK(launch(p, s.causal, 0));
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> lse(size_t(s.b) * s.hq * s.nq);
  CUDA_CHECK(cudaMemcpy(oh.data(), dout, nq_el * sizeof(T), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(lse.data(), dlse, lse.size() * sizeof(float), cudaMemcpyDeviceToHost));

  int bad = 0;
  double worst_o = 0, worst_l = 0;
  const double tol_o = sizeof(T) == 2 && std::is_same<T, __half>::value ? 2e-3 : 1.6e-2;
  std::vector<double> srow(s.nk);
  for (int b = 0; b < s.b; ++b)
    for (int h = 0; h < s.hq; ++h) {
      const int hk = h / (s.hq / s.hkv);
      for (int i = 0; i < s.nq; ++i) {
        const float* qi = &qf[((size_t(b) * s.hq + h) * s.nq + i) * D];
        double mx = -1e300;
        const int jend = s.causal ? std::min(s.nk, i + 1) : s.nk;
        for (int j = 0; j < jend; ++j) {
          const float* kj = &kf[((size_t(b) * s.hkv + hk) * s.nk + j) * D];
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(qi[d]) * kj[d];
          srow[j] = dot * scale;
          mx = std::max(mx, srow[j]);
        }
        double sum = 0;
        for (int j = 0; j < jend; ++j) sum += std::exp(srow[j] - mx);
        const size_t orow = ((size_t(b) * s.hq + h) * s.nq + i);
        const double lerr = std::fabs(lse[orow] - (mx + std::log(sum)));
        worst_l = std::max(worst_l, lerr);
        if (!(lerr <= 1e-3)) ++bad;
        for (int d = 0; d < D; ++d) {
          double ref = 0;
          for (int j = 0; j < jend; ++j)
            ref += std::exp(srow[j] - mx) / sum * vf[((size_t(b) * s.hkv + hk) * s.nk + j) * D + d];
          const double err = std::fabs(to_float(oh[orow * D + d]) - ref);
          worst_o = std::max(worst_o, err);
          if (!(err <= tol_o)) ++bad;
        }
      }
    }
  std::printf("%s %-5s D=%-3d b%d h%dx%d nq=%-4d nk=%-4d causal=%d  max err out %.2e lse %.2e  %s\n",
              label, tname, D, s.b, s.hq, s.hkv, s.nq, s.nk,
              int(s.causal), worst_o, worst_l, bad ? "FAIL" : "ok");
  if (bwd != nullptr) {
    bad += check_backward<T, D>(s, tname, qf, kf, vf, dq, dk, dv, dout, dlse, bwd);
  }
  cudaFree(dq);
  cudaFree(dk);
  cudaFree(dv);
  cudaFree(dout);
  cudaFree(dlse);
  return bad;
}

template <typename F>
float time_ms(F launch) {
  CUDA_CHECK(launch());
  CUDA_CHECK(cudaDeviceSynchronize());
  EventTimer timer;
  const int reps = 20;
  timer.start();
  for (int r = 0; r < reps; ++r) CUDA_CHECK(launch());
  return timer.stop_ms() / reps;
}

// Fill `count` device elements with uniform values in [-1, 1) (fill_random's, from `seed`).
template <typename T>
void upload_random(T* dst, size_t count, unsigned seed) {
  std::vector<float> f(count);
  fill_random(f.data(), count, seed);
  std::vector<T> host(count);
  for (size_t i = 0; i < count; ++i) host[i] = from_float<T>(f[i]);
  CUDA_CHECK(cudaMemcpy(dst, host.data(), count * sizeof(T), cudaMemcpyHostToDevice));
}

// Independent random q, k, v (B, H, N, D), contiguous, on the device with an output and an lse
// buffer, and the FwdParams over them; freed when it goes.
template <typename T, int D>
struct DeviceInputs {
  T *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float* lse = nullptr;
  FwdParams p{};
  DeviceInputs(int b, int h, int n, unsigned seed, float scale_log2) {
    const size_t el = size_t(b) * h * n * D;
    for (T** ptr : {&q, &k, &v, &o}) CUDA_CHECK(cudaMalloc(ptr, el * sizeof(T)));
    CUDA_CHECK(cudaMalloc(&lse, size_t(b) * h * n * sizeof(float)));
    unsigned s = seed;
    for (T* ptr : {q, k, v}) upload_random(ptr, el, s++);
    const int64_t sb = int64_t(h) * n * D, sh = int64_t(n) * D;
    p = FwdParams{q, k, v, o, lse, sb, sh, D, sb, sh, D, sb, sh, D, sb, sh, D,
                  b, h, h, n, n, scale_log2};
    p.tile_counter = g_tile_counter;
  }
  ~DeviceInputs() {
    for (T* ptr : {q, k, v, o}) cudaFree(ptr);
    cudaFree(lse);
  }
};

// Gradient buffers for DeviceInputs of the same (B, H, N), a random dO of its own, and the
// BwdParams of the backward from the inputs' output; freed when it goes.
template <typename T, int D>
struct DeviceGrads {
  T *dout = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
  float* delta = nullptr;
  BwdParams p{};
  DeviceGrads(const DeviceInputs<T, D>& in, int b, int h, int n) {
    const size_t el = size_t(b) * h * n * D;
    for (T** ptr : {&dout, &dq, &dk, &dv}) CUDA_CHECK(cudaMalloc(ptr, el * sizeof(T)));
    CUDA_CHECK(cudaMalloc(&delta, size_t(b) * h * n * sizeof(float)));
    upload_random(dout, el, 41);
    const int64_t sb = int64_t(h) * n * D, sh = int64_t(n) * D;
    p = BwdParams{in.q, in.k, in.v, in.o, dout, in.lse, delta, dq, dk, dv,
                  sb, sh, D, sb, sh, D, sb, sh, D, sb, sh, D, sb, sh, D, sb, sh, D, sb, sh, D,
                  b, h, h, n, n, 1.f / std::sqrt(float(D)), kLog2eF / std::sqrt(float(D))};
  }
  ~DeviceGrads() {
    for (T* ptr : {dout, dq, dk, dv}) cudaFree(ptr);
    cudaFree(delta);
  }
};

// TFLOPS at B*N = 16384, H*D = 2048 (the benchmark's shape family), non-causal and causal, for
// the forward with 4 warps of 16 and of 32 query rows and the backward with (dK/dV, dQ) warps (4, 4) and (8, 8).
// The backward counts 2.5x the forward's FLOPs.
template <typename T, int D>
void time_case(int n) {
  const int b = 16384 / n, h = 2048 / D;
  const DeviceInputs<T, D> in(b, h, n, 23, kLog2eF / std::sqrt(float(D)));
  const DeviceGrads<T, D> grads(in, b, h, n);
  const FwdParams& p = in.p;
  const BwdParams& pb = grads.p;
  for (int causal = 0; causal < 2; ++causal) {
    const double flops = 4.0 * b * h * double(n) * n * D / (causal ? 2 : 1);
    const float f4 =
        time_ms([&] { return flashduo::launch_flash_fwd_cfg<T, D, 4, 1, 1>(p, causal, 0); });
    const float f8 =
        time_ms([&] { return flashduo::launch_flash_fwd_cfg<T, D, 4, 2, 2>(p, causal, 0); });
    const float b4 = time_ms([&] { return flashduo::launch_flash_bwd_cfg<T, D, 4, 4>(pb, causal, 0); });
    const float b8 = time_ms([&] { return flashduo::launch_flash_bwd_cfg<T, D, 8, 8>(pb, causal, 0); });
    auto tf = [&](float ms, double mult) { return mult * flops / (ms * 1e-3) / 1e12; };
    std::printf("time  D=%-3d N=%-5d causal=%d  fwd 16r %.3f ms %.0f TF | 32r %.3f ms %.0f TF"
                "  ||  bwd W4 %.3f ms %.0f TF | W8 %.3f ms %.0f TF\n",
                D, n, causal, f4, tf(f4, 1), f8, tf(f8, 1), b4, tf(b4, 2.5), b8, tf(b8, 2.5));
  }
}

// One launch of the Hopper forward with tile shape S under schedule `sched`: 0 a block per query
// tile, 1 persistent walking every gridDim.x-th tile, 2 persistent taking tiles from the counter.
template <typename T, int D, class S>
cudaError_t scheduled_fwd(const FwdParams& p, bool causal, int sched) {
  FwdParams sp = p;
  sp.tile_counter = sched == 2 ? g_tile_counter : nullptr;
  return flashduo::sm90::launch_flash_fwd_sm90_cfg<T, D, S>(sp, causal, 0, sched > 0);
}

// The Hopper forward's TFLOPS (shape S) at B*N = 16384, H*D = 2048, non-causal and causal, and for
// the shipped shape the Hopper backward's (2.5x the forward's FLOPs) from its output.
template <typename T, int D, class S = flashduo::sm90::FwdShape<D>>
void time_sm90(int n) {
  const int b = 16384 / n, h = std::max(1, 2048 / D);
  const DeviceInputs<T, D> in(b, h, n, 23, kLog2eF / std::sqrt(float(D)));
  const DeviceGrads<T, D> grads(in, b, h, n);
  for (int causal = 0; causal < 2; ++causal) {
    const double flops = 4.0 * b * h * double(n) * n * D / (causal ? 2 : 1);
    float ms[3];
    for (int sched = 0; sched < 3; ++sched) {
      ms[sched] = time_ms([&] { return scheduled_fwd<T, D, S>(in.p, causal, sched); });
    }
    auto tf = [&](float t) { return flops / (t * 1e-3) / 1e12; };
    const char* q = S::kEarlyQ ? "" : " late Q";
    std::printf("time  sm90 fwd %dx%dx%d%s D=%-3d N=%-5d causal=%d  TFLOPS: a block per tile %.0f |"
                " static persistent %.0f | dynamic persistent %.0f\n", S::kBM, S::kBN, S::kStages,
                q, D, n, causal, tf(ms[0]), tf(ms[1]), tf(ms[2]));
    if constexpr (std::is_same_v<S, flashduo::sm90::FwdShape<D>>) {
      const float mb = time_ms(
          [&] { return flashduo::sm90::launch_flash_bwd_sm90<T, D>(grads.p, causal, 0); });
      std::printf("time  sm90 bwd D=%-3d N=%-5d causal=%d  %.3f ms %.0f TFLOPS\n", D, n, causal,
                  mb, 2.5 * flops / (mb * 1e-3) / 1e12);
    }
  }
}

// ViT-S forward (B = 256, H = 6, N = 197, D = 64): the streaming kernel against the short one.
template <typename T>
void time_vit() {
  constexpr int D = 64;
  const int b = 256, h = 6, n = 197;
  const DeviceInputs<T, D> in(b, h, n, 31, kLog2eF / 8.f);
  const FwdParams& p = in.p;
  flashduo::ShortPlan plan1, plan2;
  const bool fits = flashduo::plan_short_fwd<D, 1>(p, &plan1) &&
                    flashduo::plan_short_fwd<D, 2>(p, &plan2);
  const float s1 =
      time_ms([&] { return flashduo::launch_flash_fwd_cfg<T, D, 4, 4, 1>(p, false, 0); });
  const float s2 =
      time_ms([&] { return flashduo::launch_flash_fwd_cfg<T, D, 4, 2, 2>(p, false, 0); });
  const float r1 = fits ? time_ms([&] {
    return flashduo::launch_flash_fwd_short<T, D, 1>(p, plan1, false, 0);
  }) : NAN;
  const float r2 = fits ? time_ms([&] {
    return flashduo::launch_flash_fwd_short<T, D, 2>(p, plan2, false, 0);
  }) : NAN;
  std::printf("time  ViT-S fwd B=%d H=%d N=%d D=%d (us): streaming 16 rows/warp %.1f, 32 rows/warp"
              " %.1f | short 16 rows/warp %.1f, 32 rows/warp %.1f\n",
              b, h, n, D, 1e3f * s1, 1e3f * s2, 1e3f * r1, 1e3f * r2);
}

bool is_sm90() {
  int dev = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major == 9;
}

template <typename T, int D>
int check_sm90_case(const Shape& s, const char* tname, bool with_bwd) {
  return check_case<T, D>(s, tname, flashduo::sm90::launch_flash_fwd_sm90<T, D>, "sm90",
                          with_bwd ? sm90_bwd<T, D>() : nullptr);
}

// The Hopper forward on every shape and head dim (and, when with_bwd, the Hopper backward from
// its output).
int check_sm90(const Shape* shapes, int count, bool with_bwd) {
  int bad = 0;
  for (int i = 0; i < count; ++i) {
    const Shape& s = shapes[i];
    bad += check_sm90_case<__half, 64>(s, "fp16", with_bwd);
    bad += check_sm90_case<__nv_bfloat16, 64>(s, "bf16", with_bwd);
    bad += check_sm90_case<__half, 96>(s, "fp16", with_bwd);
    bad += check_sm90_case<__nv_bfloat16, 96>(s, "bf16", with_bwd);
    bad += check_sm90_case<__half, 128>(s, "fp16", with_bwd);
    bad += check_sm90_case<__nv_bfloat16, 128>(s, "bf16", with_bwd);
    bad += check_sm90_case<__half, 256>(s, "fp16", with_bwd);
    bad += check_sm90_case<__nv_bfloat16, 256>(s, "bf16", with_bwd);
  }
  return bad;
}

// The Hopper backward's atomic mode under DqMode Q (sm90/bwd_kernel.cuh), adding into
// g_dq_accum: DqOwnKeys at every head dim; the product's (AtomicMode), DqSplitBulk,
// DqSplitBulkStsm, DqSplitBulkPingPong, DqStsmDeferred and DqStsmPingPong at D = 64 and 128;
// the 128-row query tiles (DqTall, DqTallDeferred) at D = 64.
template <typename T, int D, class Q = flashduo::sm90::DqOwnKeys>
cudaError_t atomic_bwd(const BwdParams& p, bool causal, cudaStream_t stream) {
  BwdParams pa = p;
  pa.dq_accum = g_dq_accum;
  return flashduo::sm90::launch_bwd_sm90_atomic<T, D, Q>(pa, causal, stream);
}

template <typename T, int D>
int check_atomic_case(const Shape& s, const char* tname) {
  return check_case<T, D>(s, tname, flashduo::sm90::launch_flash_fwd_sm90<T, D>, "sm90 atomic",
                          atomic_bwd<T, D>);
}

template <typename T, int D>
int check_split_cases(const Shape& s, const char* tname) {
  const auto fwd = flashduo::sm90::launch_flash_fwd_sm90<T, D>;
  namespace sm90 = flashduo::sm90;
  int bad =
      check_case<T, D>(s, tname, fwd, "sm90 split bulk", atomic_bwd<T, D, sm90::DqSplitBulk>) +
      check_case<T, D>(s, tname, fwd, "sm90 split bulk stmatrix",
                       atomic_bwd<T, D, sm90::DqSplitBulkStsm>) +
      check_case<T, D>(s, tname, fwd, "sm90 split bulk ping-pong",
                       atomic_bwd<T, D, sm90::DqSplitBulkPingPong>) +
      check_case<T, D>(s, tname, fwd, "sm90 stmatrix deferred",
                       atomic_bwd<T, D, sm90::DqStsmDeferred>) +
      check_case<T, D>(s, tname, fwd, "sm90 stmatrix ping-pong",
                       atomic_bwd<T, D, sm90::DqStsmPingPong>);
  if constexpr (D == 64) {
    bad += check_case<T, D>(s, tname, fwd, "sm90 tall", atomic_bwd<T, D, sm90::DqTall>) +
           check_case<T, D>(s, tname, fwd, "sm90 tall deferred",
                            atomic_bwd<T, D, sm90::DqTallDeferred>) +
           check_case<T, D>(s, tname, fwd, "sm90 64-row deterministic",
                            sm90::launch_bwd_sm90_deterministic<T, D, sm90::DqKernel>);
  }
  return bad;
}

// The atomic mode on the first `count` shapes, every head dim, from the Hopper forward's output.
int check_atomic(const Shape* shapes, int count) {
  int bad = 0;
  for (int i = 0; i < count; ++i) {
    const Shape& s = shapes[i];
    bad += check_atomic_case<__half, 64>(s, "fp16");
    bad += check_atomic_case<__nv_bfloat16, 64>(s, "bf16");
    bad += check_atomic_case<__nv_bfloat16, 96>(s, "bf16");
    bad += check_atomic_case<__half, 128>(s, "fp16");
    bad += check_atomic_case<__nv_bfloat16, 128>(s, "bf16");
    bad += check_atomic_case<__nv_bfloat16, 256>(s, "bf16");
    bad += check_split_cases<__half, 64>(s, "fp16");
    bad += check_split_cases<__nv_bfloat16, 64>(s, "bf16");
    bad += check_split_cases<__half, 128>(s, "fp16");
    bad += check_split_cases<__nv_bfloat16, 128>(s, "bf16");
  }
  return bad;
}

// Backward TFLOPS (2.5x the forward's FLOPs), deterministic against atomic, at B*N = 16384,
// H*D = 2048, bf16, from the Hopper forward's output.
template <int D>
void time_atomic(int n) {
  using T = __nv_bfloat16;
  const int b = 16384 / n, h = std::max(1, 2048 / D);
  const DeviceInputs<T, D> in(b, h, n, 37, kLog2eF / std::sqrt(float(D)));
  const DeviceGrads<T, D> grads(in, b, h, n);
  const BwdParams& pb = grads.p;
  for (int causal = 0; causal < 2; ++causal) {
    const cudaError_t fwd = flashduo::sm90::launch_flash_fwd_sm90<T, D>(in.p, causal, 0);
    CUDA_CHECK(fwd);
    const double flops = 2.5 * 4.0 * b * h * double(n) * n * D / (causal ? 2 : 1);
    const float det = time_ms(
        [&] { return flashduo::sm90::launch_flash_bwd_sm90<T, D>(pb, causal, 0); });
    const float atom = time_ms([&] { return atomic_bwd<T, D>(pb, causal, 0); });
    auto tf = [&](float ms) { return flops / (ms * 1e-3) / 1e12; };
    std::printf("time  sm90 bwd D=%-3d N=%-5d causal=%d  TFLOPS: deterministic %.0f | own keys "
                "%.0f", D, n, causal, tf(det), tf(atom));
    if constexpr (D == 64 || D == 128) {
      namespace sm90 = flashduo::sm90;
      const float prod =
          time_ms([&] { return atomic_bwd<T, D, sm90::AtomicMode<D>>(pb, causal, 0); });
      const float bulk =
          time_ms([&] { return atomic_bwd<T, D, sm90::DqSplitBulk>(pb, causal, 0); });
      std::printf(" | product %.0f | split bulk %.0f", tf(prod), tf(bulk));
      const float stsm =
          time_ms([&] { return atomic_bwd<T, D, sm90::DqSplitBulkStsm>(pb, causal, 0); });
      const float pp =
          time_ms([&] { return atomic_bwd<T, D, sm90::DqSplitBulkPingPong>(pb, causal, 0); });
      const float sdef =
          time_ms([&] { return atomic_bwd<T, D, sm90::DqStsmDeferred>(pb, causal, 0); });
      const float spp =
          time_ms([&] { return atomic_bwd<T, D, sm90::DqStsmPingPong>(pb, causal, 0); });
      std::printf(" | stmatrix %.0f | ping-pong %.0f | stmatrix deferred %.0f | stmatrix "
                  "ping-pong %.0f", tf(stsm), tf(pp), tf(sdef), tf(spp));
    }
    if constexpr (D == 64) {
      namespace sm90 = flashduo::sm90;
      const float tall = time_ms([&] { return atomic_bwd<T, D, sm90::DqTall>(pb, causal, 0); });
      const float tdef =
          time_ms([&] { return atomic_bwd<T, D, sm90::DqTallDeferred>(pb, causal, 0); });
      const float det64 = time_ms([&] {
        return sm90::launch_bwd_sm90_deterministic<T, D, sm90::DqKernel>(pb, causal, 0);
      });
      std::printf(" | tall %.0f | tall deferred %.0f | 64-row deterministic %.0f", tf(tall),
                  tf(tdef), tf(det64));
    }
    std::printf("\n");
  }
}

// One Hopper backward variant at B*N = 16384, H*D = 2048, bf16, launched three times, for a
// profiler: 0 deterministic, 1 the product's atomic mode (AtomicMode), 2 stmatrix, 3 stmatrix
// deferred, 4 stmatrix ping-pong, 5 tall (D = 64), 6 tall deferred (D = 64).
template <int D>
void profile_bwd(int n, bool causal, int variant) {
  namespace sm90 = flashduo::sm90;
  using T = __nv_bfloat16;
  const int b = std::max(1, 16384 / n), h = std::max(1, 2048 / D);
  const DeviceInputs<T, D> in(b, h, n, 37, kLog2eF / std::sqrt(float(D)));
  const DeviceGrads<T, D> grads(in, b, h, n);
  const cudaError_t fwd = sm90::launch_flash_fwd_sm90<T, D>(in.p, causal, 0);
  CUDA_CHECK(fwd);
  const BwdParams& pb = grads.p;
  auto launch = [&]() -> cudaError_t {
    if constexpr (D == 64) {
      if (variant == 5) return atomic_bwd<T, D, sm90::DqTall>(pb, causal, 0);
      if (variant == 6) return atomic_bwd<T, D, sm90::DqTallDeferred>(pb, causal, 0);
    }
    return variant == 0   ? sm90::launch_flash_bwd_sm90<T, D>(pb, causal, 0)
           : variant == 1 ? atomic_bwd<T, D, sm90::AtomicMode<D>>(pb, causal, 0)
           : variant == 2 ? atomic_bwd<T, D, sm90::DqSplitBulkStsm>(pb, causal, 0)
           : variant == 3 ? atomic_bwd<T, D, sm90::DqStsmDeferred>(pb, causal, 0)
                          : atomic_bwd<T, D, sm90::DqStsmPingPong>(pb, causal, 0);
  };
  for (int i = 0; i < 3; ++i) {
    const cudaError_t e = launch();
    CUDA_CHECK(e);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
}

// Tile-shape variants of the Hopper forward, beside the shipped FwdShape, to choose from by
// measurement: checked on the first `count` shapes, then timed.
template <int D, int BM, int BN, int STAGES>
using Tiles = flashduo::sm90::FwdTiles<D, BM, BN, STAGES>;

template <typename T, int D, class S>
cudaError_t variant_fwd(const FwdParams& p, bool causal, cudaStream_t stream) {
  return flashduo::sm90::launch_flash_fwd_sm90_cfg<T, D, S>(p, causal, stream);
}

template <int D, class S>
int check_variant(const Shape* shapes, int count) {
  int bad = 0;
  char label[32];
  std::snprintf(label, sizeof(label), "%dx%dx%d", S::kBM, S::kBN, S::kStages);
  for (int i = 0; i < count; ++i) {
    bad += check_case<__nv_bfloat16, D>(
        shapes[i], "bf16", variant_fwd<__nv_bfloat16, D, S>, label, nullptr);
  }
  return bad;
}

// The shipped shape launched persistent (a block per SM walking the query tiles), under schedule
// SCHED of scheduled_fwd.
template <typename T, int D, int SCHED>
cudaError_t persistent_fwd(const FwdParams& p, bool causal, cudaStream_t) {
  return scheduled_fwd<T, D, flashduo::sm90::FwdShape<D>>(p, causal, SCHED);
}

// Both persistent schedules on every shape (most give a block several query tiles), bf16.
int check_persistent(const Shape* shapes, int count) {
  using T = __nv_bfloat16;
  int bad = 0;
  for (int i = 0; i < count; ++i) {
    bad += check_case<T, 64>(shapes[i], "bf16", persistent_fwd<T, 64, 1>, "static", nullptr);
    bad += check_case<T, 64>(shapes[i], "bf16", persistent_fwd<T, 64, 2>, "dynamic", nullptr);
    bad += check_case<T, 128>(shapes[i], "bf16", persistent_fwd<T, 128, 1>, "static", nullptr);
    bad += check_case<T, 128>(shapes[i], "bf16", persistent_fwd<T, 128, 2>, "dynamic", nullptr);
  }
  return bad;
}

// When the consumers free the Q tile (FwdTiles' EARLY_Q): the shipped shapes free it after the
// tile's last S, these after its last P V. Checked on every shape under both persistent
// schedules, then timed beside the shipped shapes.
using LateQ64 = flashduo::sm90::FwdTiles<64, 128, 128, 3, false>;
using LateQWide64 = flashduo::sm90::FwdTiles<64, 192, 128, 3, false>;
using LateQ128 = flashduo::sm90::FwdTiles<128, 128, 128, 3, false>;

template <typename T, int D, class S, int SCHED>
cudaError_t q_variant_fwd(const FwdParams& p, bool causal, cudaStream_t) {
  return scheduled_fwd<T, D, S>(p, causal, SCHED);
}

template <int D, class S>
int check_q_variant(const Shape* shapes, int count) {
  using T = __nv_bfloat16;
  char label[48];
  std::snprintf(label, sizeof(label), "%dx%d early Q %d", S::kBM, S::kBN, int(S::kEarlyQ));
  int bad = 0;
  for (int i = 0; i < count; ++i) {
    bad += check_case<T, D>(shapes[i], "bf16", q_variant_fwd<T, D, S, 1>, label, nullptr);
    bad += check_case<T, D>(shapes[i], "bf16", q_variant_fwd<T, D, S, 2>, label, nullptr);
  }
  return bad;
}

int check_q_variants(const Shape* shapes, int count) {
  return check_q_variant<64, LateQ64>(shapes, count) +
         check_q_variant<64, flashduo::sm90::FwdShapeWide64>(shapes, count) +
         check_q_variant<128, LateQ128>(shapes, count);
}

void time_q_variants() {
  using T = __nv_bfloat16;
  for (int n : {1024, 2048, 4096, 16384}) {
    time_sm90<T, 64>(n);
    time_sm90<T, 64, LateQ64>(n);
    time_sm90<T, 64, flashduo::sm90::FwdShapeWide64>(n);
    time_sm90<T, 64, LateQWide64>(n);
    time_sm90<T, 128>(n);
    time_sm90<T, 128, LateQ128>(n);
  }
}

int check_variants(const Shape* shapes, int count) {
  return check_variant<64, flashduo::sm90::FwdShapeWide64>(shapes, count) +
         check_variant<96, Tiles<96, 128, 128, 2>>(shapes, count) +
         check_variant<128, Tiles<128, 128, 128, 2>>(shapes, count) +
         check_variant<128, Tiles<128, 128, 176, 2>>(shapes, count);
}

// The ViT-S forward (B = 256, H = 6, N = 197, D = 64) on the Hopper kernel under each schedule.
void time_vit_sm90() {
  using T = __nv_bfloat16;
  const DeviceInputs<T, 64> in(256, 6, 197, 31, kLog2eF / 8.f);
  float us[3];
  for (int sched = 0; sched < 3; ++sched) {
    us[sched] = 1e3f * time_ms([&] {
      return scheduled_fwd<T, 64, flashduo::sm90::FwdShape<64>>(in.p, false, sched);
    });
  }
  std::printf("time  ViT-S sm90 fwd (us): a block per tile %.1f, static persistent %.1f, dynamic"
              " persistent %.1f\n", us[0], us[1], us[2]);
}

void time_all_sm90() {
  using T = __nv_bfloat16;
  time_vit_sm90();
  for (int n : {1024, 4096, 16384}) {
    time_sm90<T, 64>(n);
    time_sm90<T, 64, flashduo::sm90::FwdShapeWide64>(n);
    time_sm90<T, 96>(n);
    time_sm90<T, 96, Tiles<96, 128, 128, 2>>(n);
    time_sm90<T, 128>(n);
    time_sm90<T, 128, Tiles<128, 128, 176, 2>>(n);
    time_sm90<T, 256>(n);
  }
}

// One configuration of the shipped Hopper forward (bf16, B*N = 16384, H*D = 2048), timed, for a
// profiler to pick out: `check_flash one D N causal SCHED` (SCHED as in scheduled_fwd).
template <int D>
void time_one(int n, bool causal, int sched) {
  using T = __nv_bfloat16;
  const int b = 16384 / n, h = std::max(1, 2048 / D);
  const DeviceInputs<T, D> in(b, h, n, 29, kLog2eF / std::sqrt(float(D)));
  const float ms = time_ms(
      [&] { return scheduled_fwd<T, D, flashduo::sm90::FwdShape<D>>(in.p, causal, sched); });
  const double flops = 4.0 * b * h * double(n) * n * D / (causal ? 2 : 1);
  std::printf("time  sm90 fwd D=%d N=%d causal=%d schedule=%d  %.3f ms %.0f TFLOPS\n", D, n,
              int(causal), sched, ms, flops / (ms * 1e-3) / 1e12);
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const bool sm90 = is_sm90();
  if (sm90) {
    CUDA_CHECK(cudaMalloc(&g_tile_counter, sizeof(int)));
    CUDA_CHECK(cudaMalloc(&g_dq_accum, kAccumFloats * sizeof(float)));
  }
  if (mode == "one" && argc == 6) {
    const int d = std::atoi(argv[2]), n = std::atoi(argv[3]);
    const bool causal = std::atoi(argv[4]) != 0;
    const int sched = std::atoi(argv[5]);
    if (d == 64) time_one<64>(n, causal, sched);
    if (d == 96) time_one<96>(n, causal, sched);
    if (d == 128) time_one<128>(n, causal, sched);
    if (d == 256) time_one<256>(n, causal, sched);
    return 0;
  }
  if (mode == "profile-bwd" && argc == 6 && sm90) {  // D N causal variant, for a profiler
    const int d = std::atoi(argv[2]), n = std::atoi(argv[3]);
    const bool causal = std::atoi(argv[4]) != 0;
    const int variant = std::atoi(argv[5]);
    if (d == 64) profile_bwd<64>(n, causal, variant);
    if (d == 128) profile_bwd<128>(n, causal, variant);
    return 0;
  }
  const bool only_sm90 = mode == "sm90";

  if (mode == "time") {  // timings only: both forwards side by side
    time_vit<__nv_bfloat16>();
    for (int n : {1024, 4096, 16384}) {
      time_case<__nv_bfloat16, 64>(n);
      time_case<__nv_bfloat16, 128>(n);
    }
    if (sm90) time_all_sm90();
    return 0;
  }
  // The first ten run the streaming forward; the rest have enough heads (>= 2 per SM on an H100 or
  // H200) for the short-sequence forward at D = 64 where Nq <= 256. One-key rows: all rows where
  // Nk = 1, row 0 of every causal case; {1, 4, 2, 1, 40, true} is a single causal query.
  const Shape shapes[] = {{1, 2, 2, 1, 1, false},     {2, 4, 2, 17, 203, false},
                          {2, 4, 2, 203, 17, true},   {1, 8, 2, 197, 197, true},
                          {1, 4, 1, 113, 1025, false}, {1, 2, 2, 1025, 1023, true},
                          {1, 4, 2, 70, 1, false},    {1, 2, 2, 3, 1, true},
                          {1, 4, 2, 1, 40, true},     {1, 3, 1, 1100, 777, false},
                          {300, 1, 1, 1, 1, false},   {40, 8, 2, 17, 203, false},
                          {40, 8, 8, 203, 17, true},  {48, 6, 3, 197, 197, true},
                          {48, 6, 6, 197, 197, false}, {34, 8, 4, 290, 290, true}};
  const int count = sizeof(shapes) / sizeof(shapes[0]);
  if (mode == "atomic" || mode == "atomic-time") {  // the atomic modes: checked, then timed
    if (!sm90) return 0;
    const int bad = mode == "atomic" ? check_atomic(shapes, 10) : 0;
    for (int n : {1024, 2048, 4096, 16384}) {
      time_atomic<64>(n);
      time_atomic<96>(n);
      time_atomic<128>(n);
      time_atomic<256>(n);
    }
    const char* verdict = bad ? "FAILED" : mode == "atomic" ? "all cases passed" : "timed only";
    std::printf("check_bwd atomic: %s\n", verdict);
    return bad ? 1 : 0;
  }
  if (mode == "lateq") {  // the late-Q variants alone: checked, then timed
    if (!sm90) return 0;
    const int bad = check_q_variants(shapes, count);
    time_q_variants();
    std::printf("check_fwd lateq: %s\n", bad ? "FAILED" : "all cases passed");
    return bad ? 1 : 0;
  }
  if (only_sm90) {
    if (!sm90) {
      std::printf("check_flash sm90: skipped, this GPU is not sm_90\n");
      return 0;
    }
    const int bad = check_sm90(shapes, 10, true) + check_variants(shapes, 10) +
                    check_persistent(shapes, count);
    time_all_sm90();
    std::printf("check_fwd sm90: %s\n", bad ? "FAILED" : "all cases passed");
    return bad ? 1 : 0;
  }
  // The Hopper backward on the first ten shapes: the host reference of the many-head ones' gradients
  // takes minutes.
  int bad = sm90 ? check_sm90(shapes, 10, true) + check_sm90(shapes + 10, count - 10, false) +
                       check_variants(shapes, 10) +
                       check_persistent(shapes, count)
                 : 0;
  for (const Shape& s : shapes) {
    bad += check_case<__half, 64>(s, "fp16");
    bad += check_case<__nv_bfloat16, 64>(s, "bf16");
    bad += check_case<__half, 128>(s, "fp16");
    bad += check_case<__nv_bfloat16, 128>(s, "bf16");
  }
  time_vit<__nv_bfloat16>();
  for (int n : {1024, 4096, 16384}) {
    time_case<__nv_bfloat16, 64>(n);
    time_case<__nv_bfloat16, 128>(n);
  }
  if (sm90) time_all_sm90();
  std::printf("check_fwd: %s\n", bad ? "FAILED" : "all cases passed");
  return bad ? 1 : 0;
}
