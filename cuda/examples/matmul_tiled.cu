// C = A @ B (fp32, row-major) with shared-memory tiles: each block loads a TILE x TILE tile of A
// and of B per step, and each thread accumulates a 4 x 1 strip of C from shared memory. The
// stepping stone to attention: attention's two products are this loop with a softmax between.
#include <cmath>
#include <vector>

#include "cuda_common.cuh"

constexpr int TILE = 32;
constexpr int ROWS_PER_THREAD = 4;  // block is TILE x (TILE / ROWS_PER_THREAD) threads

__global__ void matmul_tiled(const float* __restrict__ A, const float* __restrict__ B,
                             float* __restrict__ C, int M, int N, int K) {
  __shared__ float As[TILE][TILE + 1];  // +1: column reads of As avoid bank conflicts
  __shared__ float Bs[TILE][TILE];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int col = blockIdx.x * TILE + tx;
  const int row0 = blockIdx.y * TILE + ty * ROWS_PER_THREAD;
  float acc[ROWS_PER_THREAD] = {};
  for (int k0 = 0; k0 < K; k0 += TILE) {
    for (int r = 0; r < ROWS_PER_THREAD; ++r) {
      const int ar = blockIdx.y * TILE + ty * ROWS_PER_THREAD + r, ac = k0 + tx;
      As[ty * ROWS_PER_THREAD + r][tx] = (ar < M && ac < K) ? A[size_t(ar) * K + ac] : 0.f;
      const int br = k0 + ty * ROWS_PER_THREAD + r;
      Bs[ty * ROWS_PER_THREAD + r][tx] = (br < K && col < N) ? B[size_t(br) * N + col] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TILE; ++k) {
      const float b = Bs[k][tx];
#pragma unroll
      for (int r = 0; r < ROWS_PER_THREAD; ++r) acc[r] += As[ty * ROWS_PER_THREAD + r][k] * b;
    }
    __syncthreads();
  }
  for (int r = 0; r < ROWS_PER_THREAD; ++r)
    if (row0 + r < M && col < N) C[size_t(row0 + r) * N + col] = acc[r];
}

int main() {
  const int M = 2048 + 5, N = 2048 + 3, K = 2048 + 1;  // awkward sizes: edge tiles matter
  std::vector<float> A(size_t(M) * K), B(size_t(K) * N), C(size_t(M) * N);
  fill_random(A.data(), A.size(), 7);
  fill_random(B.data(), B.size(), 8);
  float *dA, *dB, *dC;
  CUDA_CHECK(cudaMalloc(&dA, A.size() * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dB, B.size() * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dC, C.size() * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(dA, A.data(), A.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dB, B.data(), B.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(dC, 0xff, C.size() * sizeof(float)));

  const dim3 block(TILE, TILE / ROWS_PER_THREAD), grid(ceil_div(N, TILE), ceil_div(M, TILE));
  matmul_tiled<<<grid, block>>>(dA, dB, dC, M, N, K);
  CUDA_CHECK_LAUNCH();
  EventTimer timer;
  const int reps = 5;
  timer.start();
  for (int r = 0; r < reps; ++r) matmul_tiled<<<grid, block>>>(dA, dB, dC, M, N, K);
  const float ms = timer.stop_ms() / reps;
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpy(C.data(), dC, C.size() * sizeof(float), cudaMemcpyDeviceToHost));

  // Check every 61st row in double precision (a full host product would take seconds).
  int bad = 0;
  double worst = 0;
  for (int i = 0; i < M; i += 61) {
    for (int j = 0; j < N; ++j) {
      double ref = 0;
      for (int k = 0; k < K; ++k) ref += double(A[size_t(i) * K + k]) * B[size_t(k) * N + j];
      const double err = std::fabs(C[size_t(i) * N + j] - ref);
      worst = err > worst ? err : worst;
      if (!(err <= 1e-3 * std::sqrt(double(K)))) ++bad;
    }
  }
  const double tflops = 2.0 * M * N * K / (ms * 1e-3) / 1e12;
  std::printf("matmul_tiled: %dx%dx%d, %.3f ms, %.2f TFLOPS, max err %.2e, %d mismatches\n", M,
              N, K, ms, tflops, worst, bad);
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dC);
  return bad == 0 ? 0 : 1;
}
