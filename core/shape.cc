#include "core/shape.h"

#include <fmt/format.h>

namespace stowage {

std::optional<uint64_t> checked_product(std::initializer_list<uint64_t> factors) {
  uint64_t n = 1;
  for (uint64_t f : factors) {
    if (f == 0) return 0;  // a zero factor: nothing to size, whatever the others
  }
  for (uint64_t f : factors) {
    if (n > kMaxCheckedSize / f) return std::nullopt;
    n *= f;
  }
  return n;
}

std::optional<uint64_t> checked_sum(std::initializer_list<uint64_t> terms) {
  uint64_t n = 0;
  for (uint64_t t : terms) {
    if (t > kMaxCheckedSize - n) return std::nullopt;
    n += t;
  }
  return n;
}

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
