// check_status() for the CUDA runtime: include where STOWAGE_CUDA_TRY wraps a
// cudaError_t call. Only built where the CUDA toolkit is found.
#pragma once

#include <cuda_runtime_api.h>

#include "core/error.h"

namespace stowage::detail {

inline void check_status(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear the sticky-free error so the next call starts clean
  throw_status_error(call, file, line,
                     std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status),
                     status == cudaErrorMemoryAllocation);
}

}  // namespace stowage::detail
