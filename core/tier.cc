#include "core/tier.h"

#include <fmt/format.h>

#include <charconv>
#include <tuple>

namespace stowage {

std::string Tier::to_string() const {
  switch (kind_) {
    case TierKind::kAccelerator:
      return fmt::format("{}:{}", backend_ == Backend::kCuda ? "cuda" : "sim", index_);
    case TierKind::kPinnedHost:
      return "cpu";
    case TierKind::kPageableHost:
      return "host";
    case TierKind::kDisk:
      return "disk";
  }
  return "?";
}

std::optional<Tier> Tier::parse(std::string_view text) {
  if (text == "cpu") return pinned_host();
  if (text == "host") return pageable_host();
  if (text == "disk") return disk();
  for (auto [prefix, backend] : {std::pair{std::string_view("cuda:"), Backend::kCuda},
                                 std::pair{std::string_view("sim:"), Backend::kSim}}) {
    if (text.substr(0, prefix.size()) != prefix) continue;
    std::string_view digits = text.substr(prefix.size());
    int index = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec != std::errc() || end != digits.data() + digits.size() || index < 0) return std::nullopt;
    return accelerator(backend, index);
  }
  return std::nullopt;
}

bool Tier::operator<(const Tier& o) const {
  auto key = [](const Tier& t) {
    return std::make_tuple(static_cast<int>(t.kind_),
                           t.is_accelerator() ? static_cast<int>(t.backend_) : 0,
                           t.is_accelerator() ? t.index_ : 0);
  };
  return key(*this) < key(o);
}

}  // namespace stowage
