// 4-bit (NF4 / FP4) matmul: y[m, n] = x[m, k] @ W^T + bias, W [n, k] given as
// bitsandbytes packs it (FORMATS.md): codes of the flattened row-major weight,
// two per byte, in blocks of `blocksize` with a float32 absmax per block, or
// with double quantization (absmax as 8-bit codes of the signed dynamic map,
// nested_absmax per 256 blocks, nested_offset). The code tables are the
// standard ones of quant_rules.h (a file's quant_map / nested_quant_map hold
// the same values).
//
// On CUDA, batches m <= 4 with dtype kF16 or kBF16 and k % 32 == 0 run a fused
// dequantize-GEMV that reads each packed byte once (memory-bound; batch 1 on
// sm_90 streams whole-row tiles into shared memory with bulk copies where each
// row holds whole blocks and the weight's arrays are 16-byte aligned); anything
// else dequantizes W into scratch and runs a cuBLASLt GEMM. Float32
// activations with m <= 8, k % 32 == 0 and a blocksize multiple of 32 run a
// warp-per-row GEMV that reads x as it is (no scratch, as dense_gemv). The CPU
// counterpart dequantizes and accumulates in float32.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/stream.h"
#include "kernels/cublaslt_context.h"
#include "quant/quant_rules.h"

namespace stowage::kernels {

struct FourBitWeight {
  const uint8_t* packed = nullptr;  // (n * k + 1) / 2 bytes
  quant::WeightFormat type = quant::WeightFormat::kNf4;
  int64_t blocksize = 64;
  const float* absmax = nullptr;  // ceil(n * k / blocksize) floats; null with double quant
  // Double quantization (used when absmax is null):
  const uint8_t* absmax_codes = nullptr;  // one code per block
  const float* nested_absmax = nullptr;   // one per 256 blocks
  float nested_offset = 0.0f;
};

struct FourBitMatmulArgs {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  DType dtype = DType::kF16;  // x, bias and y: kF16, kBF16 or kF32
  const void* x = nullptr;    // [m, k]
  FourBitWeight weight;
  const void* bias = nullptr;  // [n] or null
  void* y = nullptr;           // [m, n]
};

void four_bit_matmul(CublasLtContext& context, const FourBitMatmulArgs& args, StreamRef stream);

// Scratch bytes four_bit_matmul takes from the context on CUDA for x [m, k]
// in `dtype` and W [n, k] of `blocksize` (double quantization when
// `double_quant`): 0 where the fused GEMV applies
// (four_bit_matmul_uses_fused_gemv), else the weight dequantized to `dtype`
// plus, with double quantization, the dequantized absmax. The CPU
// counterpart takes none.
uint64_t four_bit_matmul_scratch_bytes(int64_t m, int64_t n, int64_t k, DType dtype,
                                       int64_t blocksize, bool double_quant);

// True when four_bit_matmul on CUDA takes the fused GEMV for these arguments'
// shape and dtype (alignment permitting). For benchmarks and tests.
bool four_bit_matmul_uses_fused_gemv(const FourBitMatmulArgs& args);

}  // namespace stowage::kernels
