// Argument checks on the calling thread, then the CPU counterpart (null stream:
// now; sim stream: enqueued with host_task) or the CUDA implementation.
#include "kernels/int8_matmul.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cpu_reference.h"
#include "kernels/detail/arg_checks.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/detail/dispatch.h"
#include "kernels/detail/scratch_layout.h"

namespace stowage::kernels {

using detail::dispatch;
using detail::expect_float_dtype;
using detail::expect_non_negative;
using detail::expect_pointer;

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

uint64_t int8_matmul_scratch_bytes(int64_t m, int64_t n, int64_t k, float threshold) {
  const bool outliers = threshold > 0.0f;
  const int64_t cap = outliers ? std::min<int64_t>(k, detail::kInt8OutlierColumnCap) : 0;
  return detail::int8_scratch(m, n, k, outliers, cap).bytes;
}

}  // namespace stowage::kernels
