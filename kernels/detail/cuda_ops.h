// The CUDA side of the public calls in kernels/*.h, behind an interface free
// of CUDA headers (so the public calls compile without a toolkit). Defined
// in cuda_ops.cc where CUDA is found, else in cuda_ops_stub.cc (each throws
// DeviceError). Arguments are already validated; a `void* stream` is a
// cudaStream_t. The matmuls take the StreamRef: a context backed by a
// MemoryResource allocates its workspace and scratch stream-ordered on it.
// Internal to kernels/ (and its tests and benchmarks).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/stream.h"
#include "kernels/cublaslt_context.h"
#include "kernels/gemm.h"
#include "kernels/int8_matmul.h"
#include "kernels/nf4_matmul.h"
#include "quant/quant_rules.h"

namespace stowage::kernels::detail {

void cuda_quantize_4bit(const void* input, DType dtype, int64_t numel, int64_t blocksize,
                        quant::WeightFormat type, uint8_t* packed, float* absmax, void* stream);
void cuda_dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t numel,
                          int64_t blocksize, quant::WeightFormat type, void* output,
                          DType out_dtype, void* stream);
void cuda_double_quantize_absmax(const float* absmax, int64_t count, float* offset, uint8_t* codes,
                                 float* nested_absmax, double* scratch, void* stream);
void cuda_dequantize_absmax(const uint8_t* codes, const float* nested_absmax, float offset,
                            int64_t count, float* absmax, void* stream);
void cuda_quantize_int8_rowwise(const void* input, DType dtype, int64_t rows, int64_t cols,
                                int8_t* cb, float* scb, void* stream);
void cuda_dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows, int64_t cols,
                                  void* output, DType out_dtype, void* stream);

void cuda_gemm(CublasLtContext& context, const GemmArgs& args, StreamRef stream);
void cuda_dense_gemv(const DenseGemvArgs& args, void* stream);
void cuda_dense_gemv_group(const DenseGemvArgs* outputs, int count, void* stream);
void cuda_dense_gemv_swiglu(const DenseGemvArgs& gate, const DenseGemvArgs& up, float* act,
                            void* stream);
void cuda_read_checksum(const void* data, uint64_t bytes, uint64_t* checksum, void* stream);
void cuda_upload_from_pinned(void* dst, const void* src, uint64_t bytes, void* stream);
void cuda_int8_matmul(CublasLtContext& context, const Int8MatmulArgs& args, StreamRef stream);
void cuda_four_bit_matmul(CublasLtContext& context, const FourBitMatmulArgs& args,
                          StreamRef stream);

// The int8 x int8 -> int32 cuBLASLt product alone: c[m, n] = a[m, k] @ b[n, k]^T
// (for benchmarks: the tensor-core part of int8_matmul).
void cuda_int8_gemm_s32(CublasLtContext& context, const int8_t* a, const int8_t* b, int32_t* c,
                        int64_t m, int64_t n, int64_t k, void* stream);

// CublasLtContext's state (cublaslt_context.cc): a new one whose workspace
// and scratch come from `memory` (nullptr: the device directly), and the
// matmul shapes a state has planned.
CublasLtStatePtr make_cublaslt_state(MemoryResource* memory, size_t workspace_bytes);
size_t cached_plan_count(const CublasLtState& state);

// Whether the fused GEMV applies to these arguments on the current device.
bool cuda_four_bit_uses_gemv(CublasLtContext& context, const FourBitMatmulArgs& args);

}  // namespace stowage::kernels::detail
