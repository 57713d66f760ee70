// Row softmax in one pass over the input: a running max m and a running sum l of exp(x - m),
// rescaled by exp(m_old - m_new) whenever the max grows. This is the trick that lets
// FlashAttention normalize scores it never stores. One warp per row; the per-lane (m, l) pairs
// are merged with shuffles, then a second sweep writes exp(x - m) / l.
#include <cfloat>
#include <cmath>
#include <vector>

#include "cuda_common.cuh"

__device__ inline void merge(float& m, float& l, float m2, float l2) {
  const float mn = fmaxf(m, m2);
  l = (m == -FLT_MAX ? 0.f : l * __expf(m - mn)) + (m2 == -FLT_MAX ? 0.f : l2 * __expf(m2 - mn));
  m = mn;
}

__global__ void online_softmax(const float* __restrict__ x, float* __restrict__ y, int rows,
                               int cols) {
  const int warps = blockDim.x / 32;
  const int row = blockIdx.x * warps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* xr = x + size_t(row) * cols;
  float m = -FLT_MAX, l = 0.f;
  for (int j = lane; j < cols; j += 32) merge(m, l, xr[j], 1.f);  // the single statistics pass
  for (int off = 16; off > 0; off /= 2)
    merge(m, l, __shfl_xor_sync(0xffffffff, m, off), __shfl_xor_sync(0xffffffff, l, off));
  const float inv = 1.f / l;
  for (int j = lane; j < cols; j += 32) y[size_t(row) * cols + j] = __expf(xr[j] - m) * inv;
}

int main() {
  const int rows = 4096 + 3, cols = 1000 + 7;
  std::vector<float> x(size_t(rows) * cols), y(x.size());
  fill_random(x.data(), x.size(), 9);
  for (auto& v : x) v *= 20.f;  // wide range: without the max subtraction exp would overflow
  float *dx, *dy;
  CUDA_CHECK(cudaMalloc(&dx, x.size() * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dy, y.size() * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(dy, 0xff, y.size() * sizeof(float)));

  const int block = 256, grid = ceil_div(rows, block / 32);
  online_softmax<<<grid, block>>>(dx, dy, rows, cols);
  CUDA_CHECK_LAUNCH();
  EventTimer timer;
  timer.start();
  online_softmax<<<grid, block>>>(dx, dy, rows, cols);
  const float ms = timer.stop_ms();
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpy(y.data(), dy, y.size() * sizeof(float), cudaMemcpyDeviceToHost));

  // Reference: the classic three passes (max, sum, normalize) in double precision.
  int bad = 0;
  double worst = 0;
  for (int i = 0; i < rows; ++i) {
    const float* xr = &x[size_t(i) * cols];
    double m = -1e300, s = 0;
    for (int j = 0; j < cols; ++j) m = xr[j] > m ? xr[j] : m;
    for (int j = 0; j < cols; ++j) s += std::exp(xr[j] - m);
    for (int j = 0; j < cols; ++j) {
      const double err = std::fabs(y[size_t(i) * cols + j] - std::exp(xr[j] - m) / s);
      worst = err > worst ? err : worst;
      if (!(err <= 1e-5)) ++bad;
    }
  }
  const double gbs = 2.0 * x.size() * sizeof(float) / (ms * 1e-3) / 1e9;
  std::printf("online_softmax: %dx%d, %.3f ms (%.0f GB/s), max err %.2e, %d mismatches\n", rows,
              cols, ms, gbs, worst, bad);
  cudaFree(dx);
  cudaFree(dy);
  return bad == 0 ? 0 : 1;
}
