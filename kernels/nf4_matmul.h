// 4-bit (NF4 / FP4) matmul: y[m, n] = x[m, k] @ W^T + bias, W [n, k] a
// quant::WeightView of format kNf4 or kFp4 as bitsandbytes packs it, with a
// blocksize quant_rules accepts and, with double quantization, the standard
// nested blocksize (256). The code tables are the standard ones of
// quant_rules.h (a file's quant_map / nested_quant_map hold the same values
// and are not read).
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
#include "quant/weight_view.h"

namespace stowage::kernels {

// The weight's parts in device memory (on a sim stream, host memory); n and k
// are its [out, in].
struct FourBitMatmulArgs {
  int64_t m = 0;
  DType dtype = DType::kF16;  // x, bias and y: kF16, kBF16 or kF32
  const void* x = nullptr;    // [m, k]
  quant::WeightView weight;
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
