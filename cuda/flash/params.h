// Kernel parameters, shared by the CUDA kernels and the host code that fills them.
#pragma once

#include <cstdint>

namespace flashduo {

// log2(e): the kernels run the softmax in base 2, scaling scores by scale * log2(e) and turning
// the natural-log lse into base 2 with it.
constexpr double kLog2e = 1.4426950408889634;
constexpr float kLog2eF = static_cast<float>(kLog2e);  // for fp32 arithmetic in the kernels

// Optional 2D RoPE (reference/rope.py): per-pair float32 tables cos, sin of shape (n_pos, D / 2);
// token t of q and k rotates by row t - prefix when 0 <= t - prefix < n_pos. cos == nullptr: none.
struct RopeParams {
  const float* cos;
  const float* sin;
  int n_pos, prefix;
};

// Forward problem: q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D), o like q, lse fp32 (B, Hq, Nq).
// Strides are in elements; the last dimension is contiguous.
struct FwdParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;
  int64_t q_sb, q_sh, q_sn;
  int64_t k_sb, k_sh, k_sn;
  int64_t v_sb, v_sh, v_sn;
  int64_t o_sb, o_sh, o_sn;
  int b, hq, hkv, nq, nk;
  float scale_log2;  // softmax scale * log2(e): scores go through exp2
  RopeParams rope;   // zero-initialized (no rotation) unless set
  // The Hopper forward's dynamic tile scheduler: one int of device scratch the launch zeroes and
  // its blocks count taken query tiles on. nullptr: a static schedule.
  int* tile_counter;
};

}  // namespace flashduo

namespace flashduo {

// Backward problem: the forward's tensors plus dout (like q), delta fp32 (B, Hq, Nq) scratch, and
// dq (like q), dk/dv (like k/v) outputs. Strides in elements, last dimension contiguous.
struct BwdParams {
  const void* q;
  const void* k;
  const void* v;
  const void* o;
  const void* dout;
  const float* lse;
  float* delta;
  void* dq;
  void* dk;
  void* dv;
  int64_t q_sb, q_sh, q_sn;
  int64_t k_sb, k_sh, k_sn;
  int64_t v_sb, v_sh, v_sn;
  int64_t o_sb, o_sh, o_sn;
  int64_t do_sb, do_sh, do_sn;
  int64_t dq_sb, dq_sh, dq_sn;
  int64_t dk_sb, dk_sh, dk_sn;  // dv shares dk's strides
  int b, hq, hkv, nq, nk;
  float scale;       // softmax scale
  float scale_log2;  // scale * log2(e)
  RopeParams rope;   // zero-initialized (no rotation) unless set; dq, dk come back unrotated
  // The Hopper backward's atomic mode (launch_flash_bwd_sm90 at D = 64, 128): fp32 scratch of
  // B * Hq * dq_accum_rows(Nq) * D floats the dK/dV kernel adds dQ into. nullptr: the
  // deterministic dQ kernel.
  float* dq_accum;
};

// Rows per (batch, query head) of BwdParams::dq_accum: Nq rounded up to whole 64-row tiles.
inline constexpr int64_t dq_accum_rows(int64_t nq) { return (nq + 63) / 64 * 64; }

}  // namespace flashduo
