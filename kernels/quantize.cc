// Argument checks on the calling thread, then the CPU counterpart (null stream:
// now; sim stream: enqueued with host_task) or the CUDA implementation.
#include "kernels/quantize.h"

#include "core/error.h"
#include "kernels/cpu_reference.h"
#include "kernels/detail/arg_checks.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/detail/dispatch.h"

namespace stowage::kernels {

using detail::dispatch;
using detail::expect_blocksize;
using detail::expect_float_dtype;
using detail::expect_non_negative;
using detail::expect_pointer;

void quantize_4bit(const void* input, DType dtype, int64_t numel, int64_t blocksize,
                   quant::WeightFormat type, uint8_t* packed, float* absmax, StreamRef stream) {
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
                     quant::WeightFormat type, void* output, DType out_dtype, StreamRef stream) {
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

}  // namespace stowage::kernels
