#include "parallel/detail/nccl_check.h"

namespace stowage {

DeviceStatus DeviceStatusTraits<ncclResult_t>::describe(ncclResult_t status) {
  DeviceStatus s;
  s.code = static_cast<int>(status);
  switch (status) {
    case ncclUnhandledCudaError:
      s.name = "ncclUnhandledCudaError";
      break;
    case ncclSystemError:
      s.name = "ncclSystemError";
      break;
    case ncclInternalError:
      s.name = "ncclInternalError";
      break;
    case ncclInvalidArgument:
      s.name = "ncclInvalidArgument";
      break;
    case ncclInvalidUsage:
      s.name = "ncclInvalidUsage";
      break;
    case ncclRemoteError:
      s.name = "ncclRemoteError";
      break;
    case ncclInProgress:
      s.name = "ncclInProgress";
      break;
    default:
      s.name = "ncclResult";
      break;
  }
  s.text = ncclGetErrorString(status);
  return s;
}

}  // namespace stowage
