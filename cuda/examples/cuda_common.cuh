// Shared helpers for the warm-up examples: error checking, an event timer, ceil_div.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

// Check a CUDA runtime call; print where it failed and exit non-zero.
#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    cudaError_t err_ = (call);                                                             \
    if (err_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,            \
                   cudaGetErrorString(err_));                                              \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

// Check a kernel launch: the launch itself, then (synchronously) its execution.
#define CUDA_CHECK_LAUNCH()                    \
  do {                                         \
    CUDA_CHECK(cudaGetLastError());            \
    CUDA_CHECK(cudaDeviceSynchronize());       \
  } while (0)

inline constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Times GPU work between start() and stop_ms() with CUDA events on the default stream.
struct EventTimer {
  cudaEvent_t begin{}, end{};
  EventTimer() {
    CUDA_CHECK(cudaEventCreate(&begin));
    CUDA_CHECK(cudaEventCreate(&end));
  }
  ~EventTimer() {
    cudaEventDestroy(begin);
    cudaEventDestroy(end);
  }
  void start() { CUDA_CHECK(cudaEventRecord(begin)); }
  float stop_ms() {
    CUDA_CHECK(cudaEventRecord(end));
    CUDA_CHECK(cudaEventSynchronize(end));
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, begin, end));
    return ms;
  }
};

// Deterministic pseudo-random floats in [-1, 1) (never all zeros), so runs are reproducible.
inline void fill_random(float* x, size_t n, unsigned seed) {
  unsigned s = seed * 2654435761u + 12345u;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    x[i] = static_cast<float>(s >> 8) / static_cast<float>(1u << 23) - 1.0f;
  }
}
