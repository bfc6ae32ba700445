#include "offload/offload_manager.h"

#include "core/error.h"

namespace stowage {}  // namespace stowage
