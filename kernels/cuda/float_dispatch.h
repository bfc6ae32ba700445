// Turns a run-time FloatType into the element type of a kernel launch, for
// the .cu files of kernels/ (nvcc only). Launch is a class template over the
// element type with a static `cudaError_t run(args...)`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "kernels/detail/launch.h"

namespace stowage::kernels::detail {

// Launch<__half>, Launch<__nv_bfloat16> or Launch<float>::run(args...) for
// `type`; cudaErrorInvalidValue for any other value.
template <template <typename> class Launch, typename... Args>
cudaError_t dispatch_float_type(FloatType type, Args&&... args) {
  switch (type) {
    case FloatType::kF16:
      return Launch<__half>::run(args...);
    case FloatType::kBF16:
      return Launch<__nv_bfloat16>::run(args...);
    case FloatType::kF32:
      return Launch<float>::run(args...);
  }
  return cudaErrorInvalidValue;
}

}  // namespace stowage::kernels::detail
