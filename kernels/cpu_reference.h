// The CPU counterparts of every kernel in kernels/: plain C++ on host
// memory, float32 accumulation. They run on sim streams (enqueued with
// host_task) and serve as the reference in tests. The quantizers follow
// quant/quant_rules.h exactly, so their bytes equal the CUDA kernels'.
// Arguments are assumed valid (the public calls check them).
//
// Thread safety: all functions are reentrant.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "kernels/gemm.h"
#include "kernels/int8_matmul.h"
#include "kernels/nf4_matmul.h"
#include "quant/quant_rules.h"

namespace stowage::kernels::cpu {

void quantize_4bit(const void* input, DType dtype, int64_t numel, int64_t blocksize,
                   quant::WeightFormat type, uint8_t* packed, float* absmax);
void dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t numel, int64_t blocksize,
                     quant::WeightFormat type, void* output, DType out_dtype);
void double_quantize_absmax(const float* absmax, int64_t count, float* offset, uint8_t* codes,
                            float* nested_absmax);
void dequantize_absmax(const uint8_t* codes, const float* nested_absmax, float offset,
                       int64_t count, float* absmax);
// col_flags (may be null): columns to skip (code 0, not counted in scb).
void quantize_int8_rowwise(const void* input, DType dtype, int64_t rows, int64_t cols, int8_t* cb,
                           float* scb, const uint8_t* col_flags = nullptr);
void dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows, int64_t cols,
                             void* output, DType out_dtype);

void gemm(const GemmArgs& args);
void dense_gemv(const DenseGemvArgs& args);
void int8_matmul(const Int8MatmulArgs& args);
void four_bit_matmul(const FourBitMatmulArgs& args);

}  // namespace stowage::kernels::cpu
