#include "offload/trace.h"

#include "core/error.h"

namespace stowage {}  // namespace stowage
