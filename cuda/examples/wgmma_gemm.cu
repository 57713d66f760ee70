// C = A B^T in bf16 with fp32 accumulation, the Hopper way: TMA tile loads into a ring of
// shared-memory stages, wgmma on the tensor cores, and warp specialization. It is the building
// block of the sm_90 attention forward (cuda/flash/sm90/).
//
// A block has three warpgroups. Warpgroup 0 is the producer: it gives most of its registers away
// (setmaxnreg) and one of its threads issues the TMA loads of A (128 x 64) and B (256 x 64) tiles
// into STAGES shared-memory stages. Each stage has a "full" mbarrier (the loads landed: TMA counts
// the bytes) and an "empty" one (both consumers are done with it). Warpgroups 1 and 2 are the
// consumers: each owns 64 rows of the 128 x 256 block of C, runs four wgmma m64n256k16 per stage
// straight from shared memory, keeps one stage's wgmma in flight while waiting for the next, and
// writes its fp32 accumulators to C as bf16 at the end.
//
// Requires an sm_90 GPU (wgmma and setmaxnreg exist only in sm_90a code) and M % 128 == 0,
// N % 256 == 0, K % 64 == 0. Checks a small product in full and the large one at sampled
// entries against a double-precision host reference, then prints TFLOPS.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "../flash/sm90/ptx.cuh"
#include "../flash/sm90/tensor_map.h"
#include "../flash/sm90/wgmma.cuh"
#include "cuda_common.cuh"

namespace sm90 = flashduo::sm90;

constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4;
constexpr int kTileA = BM * BK, kTileB = BN * BK;  // elements per stage
constexpr int kSmem = STAGES * (kTileA + kTileB) * 2 + 1024 + 2 * STAGES * 8;

__global__ void __launch_bounds__(384, 1)
    wgmma_gemm(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
               __nv_bfloat16* C, int M, int N, int K) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  // TMA's 128-byte swizzle repeats every 1024 bytes: start the tiles on such a boundary.
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  auto* sA = reinterpret_cast<__nv_bfloat16*>(smem);
  auto* sB = sA + STAGES * kTileA;
  auto* full = reinterpret_cast<uint64_t*>(sB + STAGES * kTileB);
  uint64_t* empty = full + STAGES;

  const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
  const int m_tiles = M / BM;
  const int m0 = (blockIdx.x % m_tiles) * BM, n0 = (blockIdx.x / m_tiles) * BN;
  const int k_tiles = K / BK;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      sm90::mbar_init(&full[s], 1);
      sm90::mbar_init(&empty[s], 8);  // one arrival per consumer warp
    }
    sm90::mbar_fence_init();
  }
  __syncthreads();

  if (wg == 0) {  // producer
    sm90::regs_dealloc<24>();
    if (tid == 0) {
      for (int kt = 0; kt < k_tiles; ++kt) {
        const int s = kt % STAGES;
        if (kt >= STAGES) sm90::mbar_wait(&empty[s], ((kt / STAGES) - 1) & 1);
        sm90::mbar_expect_tx(&full[s], (kTileA + kTileB) * 2);
        sm90::tma_load_2d(sA + s * kTileA, &map_a, &full[s], kt * BK, m0);
        sm90::tma_load_2d(sB + s * kTileB, &map_b, &full[s], kt * BK, n0);
      }
    }
    return;
  }

  sm90::regs_alloc<240>();
  const int c = wg - 1;  // this consumer's 64 rows: [64 c, 64 c + 64) of the block
  float acc[BN / 2];  // the first product overwrites it (scale_d = 0)
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int s = kt % STAGES;
    sm90::mbar_wait(&full[s], (kt / STAGES) & 1);
    const __nv_bfloat16* a = sA + s * kTileA + c * 64 * BK;
    const __nv_bfloat16* b = sB + s * kTileB;
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {  // 16 columns = 32 bytes further into the 128-byte rows
      sm90::wgmma_ss<__nv_bfloat16, 0>(acc, sm90::smem_desc(a + kk * 16, 16, 1024, 1),
                                       sm90::smem_desc(b + kk * 16, 16, 1024, 1), kt > 0 || kk > 0);
    }
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();  // the previous stage's products are done: hand its buffers back
    if (kt > 0 && tid % 32 == 0) sm90::mbar_arrive(&empty[(kt - 1) % STAGES]);
  }
  sm90::wgmma_wait<0>();

  const int warp = tid / 32, lane = tid % 32;
  const int row = m0 + c * 64 + warp * 16 + lane / 4;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int col = n0 + j * 8 + (lane % 4) * 2;
    *reinterpret_cast<__nv_bfloat162*>(C + size_t(row) * N + col) =
        __floats2bfloat162_rn(acc[4 * j], acc[4 * j + 1]);
    *reinterpret_cast<__nv_bfloat162*>(C + size_t(row + 8) * N + col) =
        __floats2bfloat162_rn(acc[4 * j + 2], acc[4 * j + 3]);
  }
#endif
}

// Row-major (rows x K) bf16 matrix as a 2D tensor map with (BK x box_rows) boxes, 128-byte swizzle.
static CUtensorMap make_map(const __nv_bfloat16* p, int rows, int K, int box_rows) {
  CUtensorMap map{};
  const uint64_t dims[2] = {uint64_t(K), uint64_t(rows)};
  const uint64_t strides[1] = {uint64_t(K) * 2};
  const uint32_t box[2] = {BK, uint32_t(box_rows)};
  if (!sm90::encode_tiled_16bit(&map, true, 2, p, dims, strides, box,
                                CU_TENSOR_MAP_SWIZZLE_128B)) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled failed\n");
    std::exit(2);
  }
  return map;
}

struct Problem {
  int M, N, K;
  std::vector<__nv_bfloat16> a, b;
  __nv_bfloat16 *dA = nullptr, *dB = nullptr, *dC = nullptr;
  Problem(int m, int n, int k) : M(m), N(n), K(k), a(size_t(m) * k), b(size_t(n) * k) {
    std::vector<float> f(std::max(a.size(), b.size()));
    fill_random(f.data(), a.size(), 1);
    for (size_t i = 0; i < a.size(); ++i) a[i] = __float2bfloat16(f[i]);
    fill_random(f.data(), b.size(), 2);
    for (size_t i = 0; i < b.size(); ++i) b[i] = __float2bfloat16(f[i]);
    CUDA_CHECK(cudaMalloc(&dA, a.size() * 2));
    CUDA_CHECK(cudaMalloc(&dB, b.size() * 2));
    CUDA_CHECK(cudaMalloc(&dC, size_t(m) * n * 2));
    CUDA_CHECK(cudaMemcpy(dA, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dB, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  }
  ~Problem() {
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
  }
  void run() const {
    const CUtensorMap ma = make_map(dA, M, K, BM), mb = make_map(dB, N, K, BN);
    wgmma_gemm<<<(M / BM) * (N / BN), 384, kSmem>>>(ma, mb, dC, M, N, K);
  }
  double ref(int i, int j) const {
    double s = 0;
    for (int k = 0; k < K; ++k)
      s += double(__bfloat162float(a[size_t(i) * K + k])) * __bfloat162float(b[size_t(j) * K + k]);
    return s;
  }
  // Largest |C - ref| / (1 + |ref|) over every entry (full) or 4096 sampled ones.
  double check(bool full) const {
    std::vector<__nv_bfloat16> c(size_t(M) * N);
    CUDA_CHECK(cudaMemcpy(c.data(), dC, c.size() * 2, cudaMemcpyDeviceToHost));
    double worst = 0;
    unsigned s = 7;
    const size_t count = full ? c.size() : 4096;
    for (size_t t = 0; t < count; ++t) {
      size_t idx = t;
      if (!full) {
        s = s * 1664525u + 1013904223u;
        idx = size_t(s) % c.size();
      }
      const int i = int(idx / N), j = int(idx % N);
      const double r = ref(i, j);
      worst = std::max(worst, std::fabs(double(__bfloat162float(c[idx])) - r) / (1 + std::fabs(r)));
    }
    return worst;
  }
};

int main(int argc, char** argv) {
  int dev = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (major != 9) {
    std::printf("wgmma_gemm: skipped, it needs an sm_90 GPU (wgmma, TMA); this one is sm_%d\n",
                major * 10);
    return 0;
  }
  CUDA_CHECK(cudaFuncSetAttribute(wgmma_gemm, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const int size = argc > 1 ? std::atoi(argv[1]) : 8192;
  // bf16 output: allow its rounding (2^-8 relative) on top of fp32 accumulation.
  const double tol = 1e-2;
  {
    Problem small(256, 512, 320);
    small.run();
    CUDA_CHECK_LAUNCH();
    const double err = small.check(true);
    std::printf("wgmma_gemm 256x512x320: max rel err %.2e (every entry)\n", err);
    if (!(err < tol)) return 1;
  }
  Problem big(size, size, size);
  big.run();
  CUDA_CHECK_LAUNCH();
  const double err = big.check(false);
  std::printf("wgmma_gemm %dx%dx%d: max rel err %.2e (4096 sampled entries)\n", size, size, size,
              err);
  if (!(err < tol)) return 1;
  EventTimer timer;
  const int reps = 20;
  timer.start();
  for (int r = 0; r < reps; ++r) big.run();
  const float ms = timer.stop_ms() / reps;
  CUDA_CHECK(cudaGetLastError());
  std::printf("wgmma_gemm %dx%dx%d: %.3f ms, %.0f TFLOPS\n", size, size, size, ms,
              2.0 * size * size * double(size) / (ms * 1e9));
  return 0;
}
