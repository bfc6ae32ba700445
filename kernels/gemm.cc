// Argument checks on the calling thread, then the CPU counterpart (null stream:
// now; sim stream: enqueued with host_task) or the CUDA implementation.
#include "kernels/gemm.h"

#include "core/error.h"
#include "kernels/cpu_reference.h"
#include "kernels/detail/arg_checks.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/detail/dispatch.h"

namespace stowage::kernels {

using detail::dispatch;
using detail::expect_float_dtype;
using detail::expect_non_negative;
using detail::expect_pointer;

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

void dense_gemv(const DenseGemvArgs& a, StreamRef stream) {
  const char* call = "dense_gemv";
  STOWAGE_EXPECTS(a.weight_dtype == DType::kF16 || a.weight_dtype == DType::kBF16,
                  InvalidInputError, "kernels::dense_gemv: weight dtype must be f16 or bf16, found {}",
                  short_name(a.weight_dtype));
  STOWAGE_EXPECTS(a.bias == nullptr || a.bias_dtype == DType::kF32 || a.bias_dtype == a.weight_dtype,
                  InvalidInputError,
                  "kernels::dense_gemv: bias dtype must be f32 or the weight's {}, found {}",
                  short_name(a.weight_dtype), short_name(a.bias_dtype));
  STOWAGE_EXPECTS(a.m >= 1 && a.m <= kDenseGemvMaxRows, InvalidInputError,
                  "kernels::dense_gemv: m must be in 1..{}, found {}", kDenseGemvMaxRows, a.m);
  expect_non_negative(call, "n", a.n);
  expect_non_negative(call, "k", a.k);
  expect_pointer(call, "x", a.x, a.k > 0);
  expect_pointer(call, "w", a.w, a.n * a.k > 0);
  expect_pointer(call, "y", a.y, a.n > 0);
  if (a.n == 0) return;
  dispatch(
      stream, [a] { cpu::dense_gemv(a); }, [&](void* s) { detail::cuda_dense_gemv(a, s); });
}

}  // namespace stowage::kernels
