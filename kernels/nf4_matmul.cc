// Argument checks on the calling thread, then the CPU counterpart (null stream:
// now; sim stream: enqueued with host_task) or the CUDA implementation.
#include "kernels/nf4_matmul.h"

#include "core/error.h"
#include "kernels/cpu_reference.h"
#include "kernels/detail/arg_checks.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/detail/dispatch.h"
#include "kernels/detail/gemv_layout.h"
#include "kernels/detail/scratch_layout.h"

namespace stowage::kernels {

using detail::dispatch;
using detail::expect_blocksize;
using detail::expect_float_dtype;
using detail::expect_non_negative;
using detail::expect_pointer;

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
  if (a.m < 1 || a.k % 32 != 0 || a.k == 0 || a.n == 0) return false;
  if (a.dtype == DType::kF32) {
    // The float32 GEMV (the alignment of packed and x permitting).
    return a.m <= detail::kFourBitF32GemvMaxRows && a.weight.blocksize % 32 == 0;
  }
  if (a.m > detail::kGemvMaxRows) return false;
  if (a.dtype != DType::kF16 && a.dtype != DType::kBF16) return false;
  return detail::gemv_shared_bytes(a.m, a.k, a.dtype == DType::kBF16, /*nested=*/true) <=
         detail::kGemvSharedLimitH100;
}

uint64_t four_bit_matmul_scratch_bytes(int64_t m, int64_t n, int64_t k, DType dtype,
                                       int64_t blocksize, bool double_quant) {
  FourBitMatmulArgs shape;
  shape.m = m;
  shape.n = n;
  shape.k = k;
  shape.dtype = dtype;
  shape.weight.blocksize = blocksize;
  if (four_bit_matmul_uses_fused_gemv(shape)) return 0;
  return detail::four_bit_scratch(n, k, blocksize, double_quant, dtype_size(dtype)).bytes;
}

}  // namespace stowage::kernels
