// Quantize and dequantize: LLM.int8 row-wise, 4-bit NF4/FP4 blockwise, and
// double quantization of 4-bit absmax values (FORMATS.md). The results are
// byte-identical on CUDA and on the CPU (sim and null streams), both following
// quant/quant_rules.h.
//
// Every pointer is memory the stream's device can address: device memory on
// a CUDA stream, host memory on a sim stream or a null StreamRef (which runs
// the CPU counterpart synchronously on the calling thread). Work is enqueued
// on `stream`; outputs are valid once the stream reaches it. Arguments are
// checked on the calling thread: a bad dtype, blocksize or size throws
// InvalidInputError saying what was expected and what was found.
//
// Thread safety: every call is reentrant (the matmul calls of gemm.h,
// int8_matmul.h and nf4_matmul.h too, given one CublasLtContext per thread).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/stream.h"
#include "quant/quant_rules.h"

namespace stowage::kernels {

// input: numel elements of dtype (kF16, kBF16, kF32), any shape flattened.
// packed: quant_rules::packed_code_bytes(numel) bytes; absmax:
// quant_rules::block_count(numel, blocksize) float32 values. blocksize: a power of two in 32..4096.
void quantize_4bit(const void* input, DType dtype, int64_t numel, int64_t blocksize,
                   quant::WeightFormat type, uint8_t* packed, float* absmax, StreamRef stream);

// output: numel elements of out_dtype (kF16, kBF16, kF32):
// code[q] * absmax[block], rounded once to out_dtype.
void dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t numel, int64_t blocksize,
                     quant::WeightFormat type, void* output, DType out_dtype, StreamRef stream);

// Double quantization of `count` absmax values: *offset = nested_offset
// (quant_rules::double_quant_offset; one float in stream memory), codes:
// count bytes, nested_absmax: quant_rules::nested_block_count(count) floats. On CUDA,
// `scratch` must hold quant_rules::nested_block_count(count) doubles (device memory); on
// the CPU it is unused and may be null.
void double_quantize_absmax(const float* absmax, int64_t count, float* offset, uint8_t* codes,
                            float* nested_absmax, double* scratch, StreamRef stream);

// absmax[i] = dynamic_map[codes[i]] * nested_absmax[i / 256] + offset.
void dequantize_absmax(const uint8_t* codes, const float* nested_absmax, float offset,
                       int64_t count, float* absmax, StreamRef stream);

// LLM.int8 weights: input [rows, cols] of dtype; scb[r] = max |input[r, :]|,
// cb[r, c] = quant_rules::int8_rowwise_code(input[r, c], scb[r]).
void quantize_int8_rowwise(const void* input, DType dtype, int64_t rows, int64_t cols, int8_t* cb,
                           float* scb, StreamRef stream);

// output[r, c] = cb[r, c] * (scb[r] / 127), rounded once to out_dtype.
void dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows, int64_t cols,
                             void* output, DType out_dtype, StreamRef stream);

}  // namespace stowage::kernels
