// The arithmetic of transformer_ops.h's RMSNorm, written once for the two
// kernels that compute it: rms_norm_kernel (transformer_kernels.cu), one
// block of rms_norm_threads(cols) threads per row, and the dense GEMV's
// fused input norm (dense_gemv_kernels.cu), whose blocks replay that block's
// reduction tree with fewer threads. Both take every step from here, so the
// fused GEMV reads the very bits rms_norm writes. nvcc only.
#pragma once

#include <cstdint>

namespace stowage::kernels::detail {

// The threads of rms_norm_kernel's block for a row of `cols`: about 4
// elements a thread, a whole number of warps from 1 to 32 (a decode step's
// row of 4096 takes four loads a thread in flight, not sixteen in turn).
__host__ __device__ constexpr int rms_norm_threads(int64_t cols) {
  const int64_t warps = (cols + 127) / 128;
  return 32 * static_cast<int>(warps < 1 ? 1 : warps > 32 ? 32 : warps);
}

// Thread t's share of the sum of squares of xr[0, cols) in a block of
// `threads`: the elements t, t + threads, ... in that order.
__device__ __forceinline__ float rms_partial_sum(const float* xr, int64_t cols, int t,
                                                 int threads) {
  float ss = 0.0f;
#pragma unroll 4
  for (int64_t c = t; c < cols; c += threads) ss = fmaf(xr[c], xr[c], ss);
  return ss;
}

// The sum over a warp's 32 lanes in a butterfly: every lane gets the same bits.
__device__ __forceinline__ float rms_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The block's total: lane `lane` of the second level holds warp `lane`'s sum
// (0 past the last warp), and the butterfly adds them.
__device__ __forceinline__ float rms_block_total(const float* warp_sums, int warps, int lane) {
  return rms_warp_sum(lane < warps ? warp_sums[lane] : 0.0f);
}

// 1 / sqrt(mean of squares + eps).
__device__ __forceinline__ float rms_inverse(float total, int64_t cols, float eps) {
  const float mean = total / static_cast<float>(cols);
  return 1.0f / sqrtf(mean + eps);
}

// One normalized element: the normalization first, then the weight.
__device__ __forceinline__ float rms_scale(float x, float inv, float weight) {
  return (x * inv) * weight;
}

}  // namespace stowage::kernels::detail
