// Host-side helpers of the CUDA implementations (cuda_ops.cc,
// cuda_transformer_ops.cc): the stream handle, the kernels' element type and
// the dense GEMV's launch arguments.
// Not seen by nvcc (launch.h is, and must stay free of core/ and fmt).
#pragma once

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/detail/launch.h"
#include "kernels/gemm.h"

namespace stowage::kernels::detail {

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// DType -> FloatType; the public calls have checked the dtype already.
inline FloatType float_type(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return FloatType::kF16;
    case DType::kBF16:
      return FloatType::kBF16;
    case DType::kF32:
      return FloatType::kF32;
    default:
      throw InternalError(fmt::format("kernels: {} reached a kernel that takes f16, bf16 or f32",
                                      short_name(dtype)));
  }
}

// gemm.h's dense GEMV arguments as the launcher takes them (checked already).
inline DenseGemvLaunch dense_gemv_launch(const DenseGemvArgs& a) {
  DenseGemvLaunch l;
  l.m = a.m;
  l.n = a.n;
  l.k = a.k;
  l.weight_type = float_type(a.weight_dtype);
  l.x = a.x;
  l.w = a.w;
  l.bias = a.bias;
  l.bias_kind = a.bias == nullptr ? 0 : a.bias_dtype == DType::kF32 ? 1 : 2;
  l.relu = a.relu;
  l.accumulate = a.accumulate;
  l.y = a.y;
  return l;
}

}  // namespace stowage::kernels::detail
