// The CUDA backend of a build without the CUDA toolkit: no devices.
#include "core/detail/cuda_backend.h"
#include "core/error.h"

namespace stowage::detail {

int cuda_device_count() { return 0; }

std::unique_ptr<Accelerator> make_cuda_accelerator(int index) {
  throw DeviceError(
      fmt::format("cuda:{} requested, but this build of Stowage has no CUDA support", index));
}

std::unique_ptr<MemoryResource> make_cuda_pinned_host_memory() {
  throw DeviceError(
      "pinned CUDA host memory requested, but this build of Stowage has no CUDA support");
}

HostRegistration cuda_host_register(const void*, size_t bytes, bool) {
  throw DeviceError(fmt::format(
      "registering {} bytes of host memory with CUDA requested, but this build of Stowage has "
      "no CUDA support",
      bytes));
}

}  // namespace stowage::detail
