// c = a + b with a grid-stride loop and 16-byte (float4) accesses; reports achieved bandwidth.
#include <cmath>
#include <vector>

#include "cuda_common.cuh"

// Each thread handles float4 chunks spaced a whole grid apart; the scalar tail is done by the
// first threads. n need not be a multiple of 4 (the pointers come from cudaMalloc: 256-byte aligned).
__global__ void vector_add_vec4(const float* __restrict__ a, const float* __restrict__ b,
                                float* __restrict__ c, int n) {
  const int n4 = n / 4;
  const int stride = gridDim.x * blockDim.x;
  const int tid = blockIdx.x * blockDim.x + threadIdx.x;
  const float4* a4 = reinterpret_cast<const float4*>(a);
  const float4* b4 = reinterpret_cast<const float4*>(b);
  float4* c4 = reinterpret_cast<float4*>(c);
  for (int i = tid; i < n4; i += stride) {
    float4 x = a4[i], y = b4[i];
    c4[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
  for (int i = 4 * n4 + tid; i < n; i += stride) c[i] = a[i] + b[i];
}

int main() {
  const int n = (1 << 26) + 3;  // 256 MB per array: far larger than L2
  std::vector<float> a(n), b(n), c(n);
  fill_random(a.data(), n, 3);
  fill_random(b.data(), n, 4);
  float *da, *db, *dc;
  const size_t bytes = size_t(n) * sizeof(float);
  CUDA_CHECK(cudaMalloc(&da, bytes));
  CUDA_CHECK(cudaMalloc(&db, bytes));
  CUDA_CHECK(cudaMalloc(&dc, bytes));
  CUDA_CHECK(cudaMemcpy(da, a.data(), bytes, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(db, b.data(), bytes, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(dc, 0xff, bytes));

  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int block = 256, grid = sms * 8;
  vector_add_vec4<<<grid, block>>>(da, db, dc, n);  // warm-up
  CUDA_CHECK_LAUNCH();

  EventTimer timer;
  const int reps = 20;
  timer.start();
  for (int r = 0; r < reps; ++r) vector_add_vec4<<<grid, block>>>(da, db, dc, n);
  const float ms = timer.stop_ms() / reps;
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost));

  int bad = 0;
  for (int i = 0; i < n; ++i)
    if (!(c[i] == a[i] + b[i])) ++bad;
  const double gbs = 3.0 * bytes / (ms * 1e-3) / 1e9;  // two reads + one write
  std::printf("vector_add: n=%d, %.3f ms, %.0f GB/s, %d mismatches\n", n, ms, gbs, bad);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  return bad == 0 ? 0 : 1;
}
