// cuBLAS / cuBLASLt statuses for STOWAGE_CUDA_TRY (core/device_status.h).
// Only built where the CUDA toolkit is found.
#pragma once

#include <cublasLt.h>

#include "core/device_status.h"

namespace stowage {

template <>
struct DeviceStatusTraits<cublasStatus_t> {
  static bool ok(cublasStatus_t status) { return status == CUBLAS_STATUS_SUCCESS; }
  static DeviceStatus describe(cublasStatus_t status) {
    return DeviceStatus{static_cast<int>(status), cublasLtGetStatusName(status),
                        cublasLtGetStatusString(status), status == CUBLAS_STATUS_ALLOC_FAILED};
  }
};

}  // namespace stowage
