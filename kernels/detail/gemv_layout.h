// The shared memory of the fused 4-bit GEMV (kernels/cuda/matmul_kernels.cu):
// the decode table, x, and the nested map. The kernel's launch plan and the
// public four_bit_matmul_uses_fused_gemv() both size it here, so they cannot
// disagree on when the fused kernel applies. Internal to kernels/; needs no
// CUDA headers (nvcc also compiles the ring's tile layout for the device).
#pragma once

#include <cstdint>

// The ring kernel's tile layout is computed on both sides.
#ifdef __CUDACC__
#define STOWAGE_LAYOUT_FN constexpr __host__ __device__
#else
#define STOWAGE_LAYOUT_FN constexpr
#endif

namespace stowage::kernels::detail {

// Batch rows the fused GEMV takes at most.
constexpr int64_t kGemvMaxRows = 4;
// Batch rows the float32-activation 4-bit GEMV takes at most
// (four_bit_f32_gemv_kernels.cu).
constexpr int64_t kFourBitF32GemvMaxRows = 8;
// Shared memory one block may use on an H100 (cudaDevAttrMaxSharedMemoryPerBlockOptin),
// less the kernel's static shared memory.
constexpr int64_t kGemvSharedLimitH100 = 227 * 1024 - 256;

// 16-byte chunks per lane and weight row in one step of the kernel.
constexpr int64_t gemv_unroll(int64_t m) { return m == 1 ? 4 : 2; }

// Elements per batch row of x in shared memory: whole steps of 32 lanes x
// gemv_unroll(m) chunks of 32 elements, so a row's last step reads zeros,
// never the next row.
constexpr int64_t gemv_x_row_stride(int64_t m, int64_t k) {
  const int64_t step = 1024 * gemv_unroll(m);
  return (k + step - 1) / step * step;
}

// Bytes of dynamic shared memory the kernel needs: the table (256 byte values
// x 32 lanes x a pair of f16, or of f32 for bf16), m rows of x, the nested map.
constexpr int64_t gemv_shared_bytes(int64_t m, int64_t k, bool bf16, bool nested) {
  return int64_t{256} * 32 * (bf16 ? 8 : 4) + m * gemv_x_row_stride(m, k) * 2 +
         (nested ? 256 * 4 : 0);
}

// ---- The batch-1 ring kernel (sm_90) ----
// Block layout: 16 consumer warps and one producer warp.
constexpr int kRingConsumerWarps = 16;
constexpr int kRingThreads = (kRingConsumerWarps + 1) * 32;
// Bytes before the ring: the full and empty mbarriers of up to 16 stages and
// each stage's tile index.
constexpr int64_t kRingHeaderBytes = 512;
constexpr int kRingMaxStages = 16;
// Partial sums of one tile: its rows x the warps sharing each row set (16
// warps over tile_rows / R sets of R rows): 16 R, so at most 64 (R = 4).
constexpr int kRingPartials = 64;

// Bytes of absmax (float32) or absmax codes (double quantization) per weight
// row; the ring needs whole blocks per row (k % blocksize == 0).
STOWAGE_LAYOUT_FN int64_t ring_absmax_row_bytes(int64_t k, int64_t blocksize, bool nested) {
  return k / blocksize * (nested ? 1 : 4);
}

// With double quantization, a tile also holds the nested absmax its blocks
// use: a 16-byte aligned run of floats (from a multiple of 4), at most this
// many bytes.
STOWAGE_LAYOUT_FN int64_t ring_nested_slot_bytes(int64_t rows, int64_t k, int64_t blocksize) {
  return (rows * (k / blocksize) / 256 + 8) / 4 * 16;
}

// One tile: `rows` rows of packed codes, then their absmax bytes, then
// (double quantization) the nested absmax slot.
STOWAGE_LAYOUT_FN int64_t ring_tile_bytes(int64_t rows, int64_t k, int64_t blocksize, bool nested) {
  return rows * (k / 2 + ring_absmax_row_bytes(k, blocksize, nested)) +
         (nested ? ring_nested_slot_bytes(rows, k, blocksize) : 0);
}

// Dynamic shared memory of the ring kernel: barriers, `stages` tiles, the
// decode table (256 B per byte value), x (whole groups of 1024 elements), two
// tiles' partial sums and, nested, the 256-value map.
constexpr int64_t ring_shared_bytes(int64_t rows, int64_t stages, int64_t k, int64_t blocksize,
                                    bool nested) {
  return kRingHeaderBytes + stages * ring_tile_bytes(rows, k, blocksize, nested) +
         int64_t{256} * 256 + (k + 1023) / 1024 * 1024 * 2 + stages * kRingPartials * 4 +
         (nested ? 256 * 4 : 0);
}

}  // namespace stowage::kernels::detail
