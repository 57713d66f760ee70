// C = A + B on a row-major rows x cols matrix with a 2-D grid, timing two thread mappings:
// coalesced (threadIdx.x walks along a row: a warp reads 32 consecutive floats) and strided
// (threadIdx.x walks down a column: a warp touches 32 different rows).
#include <vector>

#include "cuda_common.cuh"

__global__ void add_coalesced(const float* a, const float* b, float* c, int rows, int cols) {
  int col = blockIdx.x * blockDim.x + threadIdx.x;
  int row = blockIdx.y * blockDim.y + threadIdx.y;
  if (row < rows && col < cols) c[size_t(row) * cols + col] = a[size_t(row) * cols + col] + b[size_t(row) * cols + col];
}

__global__ void add_strided(const float* a, const float* b, float* c, int rows, int cols) {
  int row = blockIdx.x * blockDim.x + threadIdx.x;
  int col = blockIdx.y * blockDim.y + threadIdx.y;
  if (row < rows && col < cols) c[size_t(row) * cols + col] = a[size_t(row) * cols + col] + b[size_t(row) * cols + col];
}

static int check(const std::vector<float>& a, const std::vector<float>& b,
                 const std::vector<float>& c) {
  int bad = 0;
  for (size_t i = 0; i < c.size(); ++i)
    if (!(c[i] == a[i] + b[i])) ++bad;
  return bad;
}

int main() {
  const int rows = 4099, cols = 4101;  // odd sizes: partial blocks on both axes
  const size_t n = size_t(rows) * cols, bytes = n * sizeof(float);
  std::vector<float> a(n), b(n), c(n);
  fill_random(a.data(), n, 5);
  fill_random(b.data(), n, 6);
  float *da, *db, *dc;
  CUDA_CHECK(cudaMalloc(&da, bytes));
  CUDA_CHECK(cudaMalloc(&db, bytes));
  CUDA_CHECK(cudaMalloc(&dc, bytes));
  CUDA_CHECK(cudaMemcpy(da, a.data(), bytes, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(db, b.data(), bytes, cudaMemcpyHostToDevice));

  const dim3 block(32, 8);
  const dim3 grid_c(ceil_div(cols, block.x), ceil_div(rows, block.y));
  const dim3 grid_s(ceil_div(rows, block.x), ceil_div(cols, block.y));
  EventTimer timer;
  int bad_total = 0;
  float ms[2];
  for (int variant = 0; variant < 2; ++variant) {
    CUDA_CHECK(cudaMemset(dc, 0xff, bytes));
    auto launch = [&] {
      if (variant == 0) add_coalesced<<<grid_c, block>>>(da, db, dc, rows, cols);
      else add_strided<<<grid_s, block>>>(da, db, dc, rows, cols);
    };
    launch();
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost));
    bad_total += check(a, b, c);
    const int reps = 10;
    timer.start();
    for (int r = 0; r < reps; ++r) launch();
    ms[variant] = timer.stop_ms() / reps;
    CUDA_CHECK_LAUNCH();
  }
  std::printf("matrix_add: %dx%d, coalesced %.3f ms (%.0f GB/s), strided %.3f ms (%.0f GB/s), "
              "%d mismatches\n",
              rows, cols, ms[0], 3.0 * bytes / (ms[0] * 1e6), ms[1], 3.0 * bytes / (ms[1] * 1e6),
              bad_total);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  return bad_total == 0 ? 0 : 1;
}
