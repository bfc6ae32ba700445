#include "offload/planner.h"

#include "core/error.h"

namespace stowage {}  // namespace stowage
