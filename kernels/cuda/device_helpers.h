// Helpers shared by the .cu files of kernels/ (nvcc only: this header is
// not part of the C++ library's interface).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace stowage::kernels::detail {

// Element i of a 16- or 32-bit float array as float32, and back (rounding to
// nearest even).
__device__ __forceinline__ float load_float(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
__device__ __forceinline__ float load_float(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ float load_float(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ void store_float(__half* p, int64_t i, float v) {
  p[i] = __float2half_rn(v);
}
__device__ __forceinline__ void store_float(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void store_float(float* p, int64_t i, float v) { p[i] = v; }

// 16 bytes from global memory read once (no L1 allocation, read-only path).
__device__ __forceinline__ uint4 load_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

inline unsigned grid_for(int64_t work, int per_block, int64_t cap = 65535LL * 32) {
  int64_t blocks = (work + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

// Blocks along rows for a 2-D grid whose x dimension has `x_blocks` blocks:
// about 4096 blocks in all (rows beyond are grid-strided), so a tall, narrow
// problem does not become a flood of tiny blocks.
inline unsigned row_blocks(int64_t rows, unsigned x_blocks) {
  int64_t y = 4096 / static_cast<int64_t>(x_blocks);
  if (y < 1) y = 1;
  if (y > rows) y = rows;
  if (y > 65535) y = 65535;
  return static_cast<unsigned>(y < 1 ? 1 : y);
}

}  // namespace stowage::kernels::detail
