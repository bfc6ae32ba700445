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
  const quant::WeightView& w = a.weight;
  expect_float_dtype(call, "dtype", a.dtype);
  expect_non_negative(call, "m", a.m);
  STOWAGE_EXPECTS(quant::is_four_bit(w.format), InvalidInputError,
                  "kernels::four_bit_matmul: expected an nf4 or fp4 weight, found {}", w.name());
  w.validate("kernels::four_bit_matmul");
  expect_blocksize(call, w.blocksize);
  STOWAGE_EXPECTS(!w.double_quant() || w.nested_blocksize == quant_rules::kNestedBlocksize,
                  InvalidInputError,
                  "kernels::four_bit_matmul: nested blocksize must be {}, found {}",
                  quant_rules::kNestedBlocksize, w.nested_blocksize);
  expect_pointer(call, "x", a.x, a.m * w.in > 0);
  expect_pointer(call, "y", a.y, a.m * w.out > 0);
  dispatch(
      stream, [a] { cpu::four_bit_matmul(a); },
      [&](void*) { detail::cuda_four_bit_matmul(context, a, stream); });
}

bool four_bit_matmul_uses_fused_gemv(const FourBitMatmulArgs& a) {
  // Mirrors plan_four_bit_gemv's shape conditions, with the H100's shared
  // memory limit.
  const int64_t k = a.weight.in;
  if (a.m < 1 || k % 32 != 0 || k == 0 || a.weight.out == 0) return false;
  if (a.dtype == DType::kF32) {
    // The float32 GEMV (the alignment of packed and x permitting).
    return a.m <= detail::kFourBitF32GemvMaxRows && a.weight.blocksize % 32 == 0;
  }
  if (a.m > detail::kGemvMaxRows) return false;
  if (a.dtype != DType::kF16 && a.dtype != DType::kBF16) return false;
  return detail::gemv_shared_bytes(a.m, k, a.dtype == DType::kBF16, /*nested=*/true) <=
         detail::kGemvSharedLimitH100;
}

uint64_t four_bit_matmul_scratch_bytes(int64_t m, int64_t n, int64_t k, DType dtype,
                                       int64_t blocksize, bool double_quant) {
  FourBitMatmulArgs shape;
  shape.m = m;
  shape.weight.out = n;
  shape.weight.in = k;
  shape.dtype = dtype;
  shape.weight.blocksize = blocksize;
  if (four_bit_matmul_uses_fused_gemv(shape)) return 0;
  return detail::four_bit_scratch(n, k, blocksize, double_quant, dtype_size(dtype)).bytes;
}

}  // namespace stowage::kernels
