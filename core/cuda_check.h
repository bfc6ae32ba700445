// The CUDA runtime's statuses for STOWAGE_CUDA_TRY (core/device_status.h):
// include where a cudaError_t call is checked. Only built where the CUDA
// toolkit is found.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "core/device_status.h"

namespace stowage {

template <>
struct DeviceStatusTraits<cudaError_t> {
  static bool ok(cudaError_t status) { return status == cudaSuccess; }
  // Also clears the runtime's last error, so that a failure that is not
  // sticky is not reported again by the next launch's check.
  static DeviceStatus describe(cudaError_t status) {
    cudaGetLastError();
    return DeviceStatus{static_cast<int>(status), cudaGetErrorName(status),
                        cudaGetErrorString(status), status == cudaErrorMemoryAllocation};
  }
};

namespace detail {

// "cuda:N" for the calling thread's current device, or "cuda:?" when the
// runtime cannot say (no driver): for describing a failed call on the device
// a kernel or library call ran on, without asking on the success path.
inline std::string current_cuda_device() {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return "cuda:?";
  }
  return "cuda:" + std::to_string(device);
}

}  // namespace detail
}  // namespace stowage
