// PLACEHOLDER until the owning issue lands: 'stowage run' is not built yet.
#include <fmt/format.h>

#include "cli/commands.h"
#include "core/error.h"

namespace stowage::cli {

int run_run(const std::vector<std::string>&) {
  throw InternalError("'stowage run' is not implemented in this build yet");
}

}  // namespace stowage::cli
