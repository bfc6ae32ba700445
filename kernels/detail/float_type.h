// Host-side helpers of the CUDA implementations (cuda_ops.cc,
// cuda_transformer_ops.cc): the stream handle and the kernels' element type.
// Not seen by nvcc (launch.h is, and must stay free of core/ and fmt).
#pragma once

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/detail/launch.h"

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

}  // namespace stowage::kernels::detail
