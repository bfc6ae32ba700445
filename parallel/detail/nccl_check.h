// ncclResult_t as a DeviceStatus (core/device_status.h): NCCL calls are
// checked with STOWAGE_CUDA_TRY_FOR like the CUDA runtime's, and fail as
// DeviceError naming the call, its name and NCCL's text. Included only
// where NCCL is found (STOWAGE_WITH_NCCL).
#pragma once

#include <nccl.h>

#include "core/device_status.h"

namespace stowage {

template <>
struct DeviceStatusTraits<ncclResult_t> {
  static bool ok(ncclResult_t status) { return status == ncclSuccess; }
  static DeviceStatus describe(ncclResult_t status);
};

}  // namespace stowage
