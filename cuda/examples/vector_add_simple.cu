// c = a + b with one thread per element: the smallest complete CUDA program.
#include <cmath>
#include <vector>

#include "cuda_common.cuh"

__global__ void vector_add(const float* a, const float* b, float* c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

int main() {
  const int n = (1 << 20) + 7;  // not a multiple of the block: the bounds check matters
  std::vector<float> a(n), b(n), c(n);
  fill_random(a.data(), n, 1);
  fill_random(b.data(), n, 2);

  float *da, *db, *dc;
  CUDA_CHECK(cudaMalloc(&da, n * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&db, n * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dc, n * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(da, a.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(db, b.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(dc, 0xff, n * sizeof(float)));  // NaN poison: unwritten elements fail

  const int block = 256;
  vector_add<<<ceil_div(n, block), block>>>(da, db, dc, n);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpy(c.data(), dc, n * sizeof(float), cudaMemcpyDeviceToHost));

  int bad = 0;
  for (int i = 0; i < n; ++i)
    if (!(std::fabs(c[i] - (a[i] + b[i])) == 0.0f)) ++bad;
  std::printf("vector_add_simple: n=%d, %d mismatches\n", n, bad);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  return bad == 0 ? 0 : 1;
}
