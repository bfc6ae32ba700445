// The public calls of kernels/: argument checks on the calling thread, then
// the CPU counterpart (null stream: now; sim stream: enqueued with
// host_task) or the CUDA implementation (on the stream's native handle).
#include <algorithm>
#include <string>
#include <utility>

#include "core/error.h"
#include "kernels/cpu_reference.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/detail/dispatch.h"
#include "kernels/detail/gemv_layout.h"
#include "kernels/detail/scratch_layout.h"
#include "kernels/gemm.h"
#include "kernels/int8_matmul.h"
#include "kernels/nf4_matmul.h"
#include "kernels/quantize.h"

namespace stowage::kernels {
namespace {

namespace qr = quant_rules;
using detail::dispatch;

bool is_compute_float(DType d) { return d == DType::kF16 || d == DType::kBF16 || d == DType::kF32; }

void expect_float_dtype(const char* call, const char* what, DType d) {
  STOWAGE_EXPECTS(is_compute_float(d), InvalidInputError,
                  "kernels::{}: {} must be f16, bf16 or f32, found {}", call, what, short_name(d));
}

void expect_non_negative(const char* call, const char* what, int64_t v) {
  STOWAGE_EXPECTS(v >= 0, InvalidInputError, "kernels::{}: {} must be >= 0, found {}", call, what,
                  v);
}

void expect_pointer(const char* call, const char* what, const void* p, bool needed) {
  STOWAGE_EXPECTS(!needed || p != nullptr, InvalidInputError,
                  "kernels::{}: {} is null but holds data", call, what);
}

void expect_blocksize(const char* call, int64_t blocksize) {
  STOWAGE_EXPECTS(qr::is_valid_blocksize(blocksize), InvalidInputError,
                  "kernels::{}: blocksize must be a power of two in {}..{}, found {}", call,
                  qr::kMinBlocksize, qr::kMaxBlocksize, blocksize);
}

}  // namespace

int64_t four_bit_block_count(int64_t numel, int64_t blocksize) {
  return (numel + blocksize - 1) / blocksize;
}
int64_t four_bit_packed_bytes(int64_t numel) { return (numel + 1) / 2; }
int64_t nested_block_count(int64_t block_count) {
  return (block_count + qr::kNestedBlocksize - 1) / qr::kNestedBlocksize;
}

void quantize_4bit(const void* input, DType dtype, int64_t numel, int64_t blocksize,
                   FourBitType type, uint8_t* packed, float* absmax, StreamRef stream) {
  const char* call = "quantize_4bit";
  expect_float_dtype(call, "the input dtype", dtype);
  expect_non_negative(call, "numel", numel);
  expect_blocksize(call, blocksize);
  expect_pointer(call, "input", input, numel > 0);
  expect_pointer(call, "packed", packed, numel > 0);
  expect_pointer(call, "absmax", absmax, numel > 0);
  dispatch(
      stream, [=] { cpu::quantize_4bit(input, dtype, numel, blocksize, type, packed, absmax); },
      [&](void* s) {
        detail::cuda_quantize_4bit(input, dtype, numel, blocksize, type, packed, absmax, s);
      });
}

void dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t numel, int64_t blocksize,
                     FourBitType type, void* output, DType out_dtype, StreamRef stream) {
  const char* call = "dequantize_4bit";
  expect_float_dtype(call, "the output dtype", out_dtype);
  expect_non_negative(call, "numel", numel);
  expect_blocksize(call, blocksize);
  expect_pointer(call, "packed", packed, numel > 0);
  expect_pointer(call, "absmax", absmax, numel > 0);
  expect_pointer(call, "output", output, numel > 0);
  dispatch(
      stream,
      [=] { cpu::dequantize_4bit(packed, absmax, numel, blocksize, type, output, out_dtype); },
      [&](void* s) {
        detail::cuda_dequantize_4bit(packed, absmax, numel, blocksize, type, output, out_dtype, s);
      });
}

void double_quantize_absmax(const float* absmax, int64_t count, float* offset, uint8_t* codes,
                            float* nested_absmax, double* scratch, StreamRef stream) {
  const char* call = "double_quantize_absmax";
  expect_non_negative(call, "count", count);
  expect_pointer(call, "absmax", absmax, count > 0);
  expect_pointer(call, "offset", offset, true);
  expect_pointer(call, "codes", codes, count > 0);
  expect_pointer(call, "nested_absmax", nested_absmax, count > 0);
  dispatch(
      stream, [=] { cpu::double_quantize_absmax(absmax, count, offset, codes, nested_absmax); },
      [&](void* s) {
        expect_pointer(call, "scratch (needed on CUDA)", scratch, count > 0);
        detail::cuda_double_quantize_absmax(absmax, count, offset, codes, nested_absmax, scratch,
                                            s);
      });
}

void dequantize_absmax(const uint8_t* codes, const float* nested_absmax, float offset,
                       int64_t count, float* absmax, StreamRef stream) {
  const char* call = "dequantize_absmax";
  expect_non_negative(call, "count", count);
  expect_pointer(call, "codes", codes, count > 0);
  expect_pointer(call, "nested_absmax", nested_absmax, count > 0);
  expect_pointer(call, "absmax", absmax, count > 0);
  dispatch(
      stream, [=] { cpu::dequantize_absmax(codes, nested_absmax, offset, count, absmax); },
      [&](void* s) {
        detail::cuda_dequantize_absmax(codes, nested_absmax, offset, count, absmax, s);
      });
}

void quantize_int8_rowwise(const void* input, DType dtype, int64_t rows, int64_t cols, int8_t* cb,
                           float* scb, StreamRef stream) {
  const char* call = "quantize_int8_rowwise";
  expect_float_dtype(call, "the input dtype", dtype);
  expect_non_negative(call, "rows", rows);
  expect_non_negative(call, "cols", cols);
  expect_pointer(call, "input", input, rows * cols > 0);
  expect_pointer(call, "cb", cb, rows * cols > 0);
  expect_pointer(call, "scb", scb, rows > 0);
  dispatch(
      stream, [=] { cpu::quantize_int8_rowwise(input, dtype, rows, cols, cb, scb); },
      [&](void* s) { detail::cuda_quantize_int8_rowwise(input, dtype, rows, cols, cb, scb, s); });
}

void dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows, int64_t cols,
                             void* output, DType out_dtype, StreamRef stream) {
  const char* call = "dequantize_int8_rowwise";
  expect_float_dtype(call, "the output dtype", out_dtype);
  expect_non_negative(call, "rows", rows);
  expect_non_negative(call, "cols", cols);
  expect_pointer(call, "cb", cb, rows * cols > 0);
  expect_pointer(call, "scb", scb, rows > 0);
  expect_pointer(call, "output", output, rows * cols > 0);
  dispatch(
      stream, [=] { cpu::dequantize_int8_rowwise(cb, scb, rows, cols, output, out_dtype); },
      [&](void* s) {
        detail::cuda_dequantize_int8_rowwise(cb, scb, rows, cols, output, out_dtype, s);
      });
}

void gemm(CublasLtContext& context, const GemmArgs& a, StreamRef stream) {
  const char* call = "gemm";
  expect_float_dtype(call, "dtype", a.dtype);
  STOWAGE_EXPECTS(a.out_dtype == DType::kF32 || a.out_dtype == a.dtype, InvalidInputError,
                  "kernels::gemm: out_dtype must be f32 or the input dtype {}, found {}",
                  short_name(a.dtype), short_name(a.out_dtype));
  expect_non_negative(call, "m", a.m);
  expect_non_negative(call, "n", a.n);
  expect_non_negative(call, "k", a.k);
  expect_pointer(call, "x", a.x, a.m * a.k > 0);
  expect_pointer(call, "w", a.w, a.n * a.k > 0);
  expect_pointer(call, "y", a.y, a.m * a.n > 0);
  dispatch(
      stream, [a] { cpu::gemm(a); }, [&](void*) { detail::cuda_gemm(context, a, stream); });
}

void int8_matmul(CublasLtContext& context, const Int8MatmulArgs& a, StreamRef stream) {
  const char* call = "int8_matmul";
  expect_float_dtype(call, "dtype", a.dtype);
  expect_non_negative(call, "m", a.m);
  expect_non_negative(call, "n", a.n);
  expect_non_negative(call, "k", a.k);
  STOWAGE_EXPECTS(a.threshold >= 0.0f, InvalidInputError,
                  "kernels::int8_matmul: threshold must be >= 0 (0 = no outliers), found {}",
                  a.threshold);
  expect_pointer(call, "x", a.x, a.m * a.k > 0);
  expect_pointer(call, "cb", a.cb, a.n * a.k > 0);
  expect_pointer(call, "scb", a.scb, a.n > 0);
  expect_pointer(call, "y", a.y, a.m * a.n > 0);
  dispatch(
      stream, [a] { cpu::int8_matmul(a); },
      [&](void*) {
        STOWAGE_EXPECTS(a.k % 4 == 0 && a.n % 4 == 0, InvalidInputError,
                        "kernels::int8_matmul: on CUDA k and n must be multiples of 4 (cuBLASLt "
                        "int8 tensor-core layouts), found k={} n={}",
                        a.k, a.n);
        detail::cuda_int8_matmul(context, a, stream);
      });
}

void four_bit_matmul(CublasLtContext& context, const FourBitMatmulArgs& a, StreamRef stream) {
  const char* call = "four_bit_matmul";
  expect_float_dtype(call, "dtype", a.dtype);
  expect_non_negative(call, "m", a.m);
  expect_non_negative(call, "n", a.n);
  expect_non_negative(call, "k", a.k);
  expect_blocksize(call, a.weight.blocksize);
  expect_pointer(call, "x", a.x, a.m * a.k > 0);
  expect_pointer(call, "weight.packed", a.weight.packed, a.n * a.k > 0);
  if (a.weight.absmax == nullptr) {
    STOWAGE_EXPECTS(
        a.n * a.k == 0 || (a.weight.absmax_codes != nullptr && a.weight.nested_absmax != nullptr),
        InvalidInputError,
        "kernels::four_bit_matmul: the weight has neither absmax nor the double "
        "quantization state (absmax_codes and nested_absmax)");
  }
  expect_pointer(call, "y", a.y, a.m * a.n > 0);
  dispatch(
      stream, [a] { cpu::four_bit_matmul(a); },
      [&](void*) { detail::cuda_four_bit_matmul(context, a, stream); });
}

bool four_bit_matmul_uses_fused_gemv(const FourBitMatmulArgs& a) {
  // Mirrors plan_four_bit_gemv's shape conditions, with the H100's shared
  // memory limit.
  if (a.m < 1 || a.m > detail::kGemvMaxRows || a.k % 32 != 0 || a.k == 0 || a.n == 0) {
    return false;
  }
  if (a.dtype != DType::kF16 && a.dtype != DType::kBF16) return false;
  return detail::gemv_shared_bytes(a.m, a.k, a.dtype == DType::kBF16, /*nested=*/true) <=
         detail::kGemvSharedLimitH100;
}

uint64_t int8_matmul_scratch_bytes(int64_t m, int64_t n, int64_t k, float threshold) {
  const bool outliers = threshold > 0.0f;
  const int64_t cap = outliers ? std::min<int64_t>(k, detail::kInt8OutlierColumnCap) : 0;
  return detail::int8_scratch(m, n, k, outliers, cap).bytes;
}

uint64_t four_bit_matmul_scratch_bytes(int64_t m, int64_t n, int64_t k, DType dtype,
                                       int64_t blocksize, bool double_quant) {
  FourBitMatmulArgs shape;
  shape.m = m;
  shape.n = n;
  shape.k = k;
  shape.dtype = dtype;
  if (four_bit_matmul_uses_fused_gemv(shape)) return 0;
  return detail::four_bit_scratch(n, k, blocksize, double_quant, dtype_size(dtype)).bytes;
}

}  // namespace stowage::kernels
