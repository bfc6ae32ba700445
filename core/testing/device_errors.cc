#include "core/testing/device_errors.h"

#include "core/detail/cuda_backend.h"

namespace stowage::testing_support {

bool cuda_device_visible() { return detail::cuda_device_count() > 0; }

}  // namespace stowage::testing_support
