// Launchers of the CUDA kernels in kernels/cuda/*.cu. Internal: only
// kernels/detail/cuda_ops.cc calls them (checking each returned status).
// Included by nvcc, so it includes no fmt: only CUDA, std and fmt-free
// project headers. Every pointer is device memory; every launch is
// asynchronous on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/detail/gemv_layout.h"
#include "quant/quant_rules.h"

namespace stowage::kernels::detail {

// The element types the kernels take (core/dtype.h is not visible to nvcc
// here; cuda_ops.cc maps DType to this).
enum class FloatType { kF16, kBF16, kF32 };

// ---- Quantization (bit-identical to the host loops over quant_rules.h). ----

// input: `numel` elements of dtype (kF16, kBF16, kF32); packed: (numel + 1) / 2
// bytes; absmax: ceil(numel / blocksize) floats.
cudaError_t launch_quantize_4bit(const void* input, FloatType dtype, int64_t numel, int blocksize,
                                 quant::WeightFormat type, uint8_t* packed, float* absmax,
                                 cudaStream_t stream);

// output: numel elements of out_dtype. absmax: plain float32 per block.
cudaError_t launch_dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t numel,
                                   int blocksize, quant::WeightFormat type, void* output,
                                   FloatType out_dtype, cudaStream_t stream);

// Double quantization of `count` absmax values. partials: workspace of
// ceil(count / 256) doubles; offset: one float (written); codes: count bytes;
// nested_absmax: ceil(count / 256) floats.
cudaError_t launch_double_quantize(const float* absmax, int64_t count, double* partials,
                                   float* offset, uint8_t* codes, float* nested_absmax,
                                   cudaStream_t stream);

// absmax[i] = map[codes[i]] * nested_absmax[i / 256] + offset.
cudaError_t launch_dequantize_absmax(const uint8_t* codes, const float* nested_absmax, float offset,
                                     int64_t count, float* absmax, cudaStream_t stream);

// Row-wise int8: scb[r] = max |input[r, :]|, cb = int8_rowwise_code.
cudaError_t launch_quantize_int8_rowwise(const void* input, FloatType dtype, int64_t rows,
                                         int64_t cols, int8_t* cb, float* scb, cudaStream_t stream);

cudaError_t launch_dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows,
                                           int64_t cols, void* output, FloatType out_dtype,
                                           cudaStream_t stream);

// ---- LLM.int8 pieces. ----

// Finds the outlier columns of x [m, k] (any |x| >= threshold): col_flags (k
// ints, zeroed here first), then the sorted list outlier_cols (k ints) and
// its length *outlier_count.
cudaError_t launch_find_outlier_columns(const void* x, FloatType dtype, int64_t m, int64_t k,
                                        float threshold, int* col_flags, int* outlier_cols,
                                        int* outlier_count, cudaStream_t stream);

// Row-wise int8 of x [m, k] skipping the flagged columns (their codes are 0
// and they do not count toward sca). col_flags may be null (no outliers).
cudaError_t launch_quantize_activations(const void* x, FloatType dtype, int64_t m, int64_t k,
                                        const int* col_flags, int8_t* xq, float* sca,
                                        cudaStream_t stream);

// w_outlier[j * n + r] = int8_rowwise_value(cb[r, cols[j]], scb[r]) for
// j < min(*outlier_count, cap).
cudaError_t launch_gather_outlier_weights(const int8_t* cb, const float* scb, int64_t n, int64_t k,
                                          const int* outlier_cols, const int* outlier_count,
                                          int cap, float* w_outlier, cudaStream_t stream);

struct Int8EpilogueArgs {
  const int32_t* acc;  // [m, n] int32 (row-major)
  const float* sca;    // [m]
  const float* scb;    // [n]
  const void* bias;    // [n] of dtype, or null
  const void* x;       // [m, k] of dtype (outlier columns are read from it)
  const int8_t* cb;    // [n, k]
  const int* outlier_cols;
  const int* outlier_count;  // null: no outlier part
  const float* w_outlier;    // [cap, n]
  int cap;
  int64_t m, n, k;
  FloatType dtype;
  void* y;  // [m, n] of dtype
};
cudaError_t launch_int8_epilogue(const Int8EpilogueArgs& args, cudaStream_t stream);

// ---- Fused 4-bit GEMV (batch 1..4). ----

struct FourBitGemvArgs {
  const uint8_t* packed;        // [n * k] codes
  const float* absmax;          // plain absmax, or null when nested
  const uint8_t* absmax_codes;  // double quantization
  const float* nested_absmax;
  float nested_offset;
  const void* x;     // [m, k]
  const void* bias;  // [n] or null
  void* y;           // [m, n]
  int64_t m, n, k;
  int blocksize;
  quant::WeightFormat type;
  FloatType dtype;  // kF16 or kBF16
};

// How a fused GEMV is launched; computed once per shape and cached.
struct FourBitGemvPlan {
  int variant = -1;  // -1: the fused kernel does not apply
  int grid = 0;
  int block = 0;
  int smem_bytes = 0;
  // Batch 1 on sm_90 and later: the bulk-copy ring kernel, used when
  // ring_rows > 0 and the weight's arrays are 16-byte aligned (else the
  // kernel above).
  int ring_rows = 0;           // weight rows per tile
  int ring_rows_per_warp = 2;  // rows a warp decodes together (4, or 2)
  int ring_stages = 0;         // tiles in flight
  int ring_grid = 0;
  int ring_smem_bytes = 0;
};

// The plan for these arguments' shape, types and blocksize, or variant -1
// when the fused kernel does not apply (m > 4, k % 32 != 0, x too large for
// shared memory, f32). Sets the kernel's shared-memory attribute as needed.
cudaError_t plan_four_bit_gemv(const FourBitGemvArgs& args, int device, FourBitGemvPlan* plan);
// tile_counters: two unsigned ints of device memory, zero before the first
// launch, from which the ring kernel's blocks take tiles; each launch leaves
// them zero again. Launches given the same counters must not run
// concurrently. Required when plan.ring_rows > 0, else unused.
cudaError_t launch_four_bit_gemv(const FourBitGemvPlan& plan, const FourBitGemvArgs& args,
                                 unsigned* tile_counters, cudaStream_t stream);

// The dense GEMV of gemm.h: x, y float32; w of weight_type (kF16 or kBF16);
// bias_kind 0: none, 1: float32, 2: weight_type; 1 <= m <= 8; accumulate:
// y += the result.
struct DenseGemvLaunch {
  int64_t m, n, k;
  FloatType weight_type;
  const float* x;
  const void* w;
  const void* bias;
  int bias_kind;
  bool relu;
  bool accumulate;
  float* y;
};
cudaError_t launch_dense_gemv(const DenseGemvLaunch& args, cudaStream_t stream);
// 1..kDenseGemvLaunchMaxGroup dense GEMVs over the same x, m, k and weight type in one launch where
// every weight is whole 16-byte chunks (else one launch each); with `act`,
// count == 2 (gate, up) and act = silu(gate) * up is written instead of y
// (where the GEMVs cannot be fused: both y, then a separate swiglu).
inline constexpr int kDenseGemvLaunchMaxGroup = 4;
cudaError_t launch_dense_gemv_group(const DenseGemvLaunch* outputs, int count, float* act,
                                    cudaStream_t stream);

// XOR of every 16-byte word of data (bytes % 16 == 0), folded to 64 bits.
cudaError_t launch_read_checksum(const void* data, uint64_t bytes, uint64_t* checksum,
                                 cudaStream_t stream);

// Copies `bytes` from pinned, mapped host memory to device memory with a
// kernel's loads (either pointer any alignment; 16-byte words where both are
// 16-byte aligned).
cudaError_t launch_upload_from_pinned(void* dst, const void* src, uint64_t bytes,
                                      cudaStream_t stream);

// The 4-bit matmul with float32 x, y and bias at m <= kFourBitF32GemvMaxRows
// (four_bit_f32_gemv_kernels.cu): applies when k % 32 == 0, blocksize % 32
// == 0 and packed and x are 16-byte aligned.
bool four_bit_f32_gemv_applies(const FourBitGemvArgs& args);
cudaError_t launch_four_bit_f32_gemv(const FourBitGemvArgs& args, cudaStream_t stream);

}  // namespace stowage::kernels::detail
