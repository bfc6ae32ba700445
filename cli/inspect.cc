// PLACEHOLDER until the owning issue lands: 'stowage inspect' is not built yet.
#include <fmt/format.h>

#include "cli/commands.h"
#include "core/error.h"

namespace stowage::cli {

int run_inspect(const std::vector<std::string>&) {
  throw InternalError("'stowage inspect' is not implemented in this build yet");
}

}  // namespace stowage::cli
