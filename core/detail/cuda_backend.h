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
// cudaHostRegister (portable; read-only where `read_only`), undone by the
// returned object's destructor.
HostRegistration cuda_host_register(const void* data, size_t bytes, bool read_only);

}  // namespace stowage::detail
