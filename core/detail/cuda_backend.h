// The CUDA backend. Only compiled where the toolkit is found
// (STOWAGE_WITH_CUDA); elsewhere these throw DeviceError.
#pragma once

#include <memory>

#include "core/platform.h"

namespace stowage::detail {

// Visible CUDA devices; 0 when there is no driver or no device.
int cuda_device_count();
std::unique_ptr<Accelerator> make_cuda_accelerator(int index);
std::unique_ptr<MemoryResource> make_cuda_pinned_host_memory();

}  // namespace stowage::detail
