// LLM.int8 matmul (FORMATS.md): y[m, n] = x[m, k] @ W^T + bias with W given as
// row-wise int8 codes cb[n, k] and scales scb[n].
//
// With threshold t > 0 the outlier columns of x (any |x| >= t) are kept in
// floating point: y += x[:, cols] @ (cb[:, cols] * scb / 127)^T in float32.
// The other columns are quantized row-wise (sca[r] = max |x[r, c]| over the
// non-outlier columns, codes by quant_rules::int8_rowwise_code), multiplied
// int8 x int8 -> int32 (cuBLASLt, tensor cores, on CUDA), and dequantized as
// acc * sca[r] * scb[c] / (127 * 127). t = 0: plain int8, no outliers.
// The CPU counterpart computes the same (exact int32 accumulation).
//
// CUDA requires k % 4 == 0 and n % 4 == 0 (cuBLASLt int8 tensor-core layouts);
// x, y and bias share one dtype (kF16, kBF16 or kF32).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/stream.h"
#include "kernels/cublaslt_context.h"

namespace stowage::kernels {

struct Int8MatmulArgs {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  DType dtype = DType::kF16;   // x, bias and y
  const void* x = nullptr;     // [m, k]
  const int8_t* cb = nullptr;  // [n, k]
  const float* scb = nullptr;  // [n]
  const void* bias = nullptr;  // [n] or null
  float threshold = 6.0f;      // 0: plain int8
  void* y = nullptr;           // [m, n]
};

void int8_matmul(CublasLtContext& context, const Int8MatmulArgs& args, StreamRef stream);

// Scratch bytes int8_matmul takes from the context on CUDA for x [m, k], W
// [n, k] and `threshold` (an upper bound: all rows in one product); the CPU
// counterpart takes none.
uint64_t int8_matmul_scratch_bytes(int64_t m, int64_t n, int64_t k, float threshold);

}  // namespace stowage::kernels
