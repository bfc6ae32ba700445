// PLACEHOLDER until the owning issue lands: 'stowage quantize' is not built yet.
#include <fmt/format.h>

#include "cli/commands.h"
#include "core/error.h"

namespace stowage::cli {

int run_quantize(const std::vector<std::string>&) {
  throw InternalError("'stowage quantize' is not implemented in this build yet");
}

}  // namespace stowage::cli
