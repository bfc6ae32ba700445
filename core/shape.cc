#include "core/shape.h"

#include <fmt/format.h>

namespace stowage {

uint64_t Shape::numel() const {
  uint64_t n = 1;
  for (int64_t d : dims_) n *= static_cast<uint64_t>(d);
  return n;
}

std::optional<uint64_t> Shape::checked_numel() const {
  uint64_t n = 1;
  for (int64_t d : dims_) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > (uint64_t{1} << 63) / static_cast<uint64_t>(d)) return std::nullopt;
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

std::string Shape::to_string() const { return fmt::format("[{}]", fmt::join(dims_, ", ")); }

}  // namespace stowage
