#include "offload/disk_io.h"

#include "core/error.h"

namespace stowage {}  // namespace stowage
