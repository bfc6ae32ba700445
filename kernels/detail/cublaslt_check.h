// check_status() for cuBLAS / cuBLASLt statuses, so STOWAGE_CUDA_TRY wraps
// cuBLASLt calls too. Only built where the CUDA toolkit is found.
#pragma once

#include <cublasLt.h>

#include <string>

#include "core/error.h"

namespace stowage::detail {

inline void check_status(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw_status_error(
      call, file, line,
      std::string(cublasLtGetStatusName(status)) + ": " + cublasLtGetStatusString(status),
      status == CUBLAS_STATUS_ALLOC_FAILED);
}

}  // namespace stowage::detail
