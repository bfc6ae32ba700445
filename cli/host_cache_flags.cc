#include "cli/host_cache_flags.h"

#include <cstdlib>

#include "core/error.h"
#include "core/memory_resource.h"

namespace stowage::cli {

std::vector<std::string> with_host_cache_flags(std::vector<std::string> value_flags) {
  value_flags.push_back("host-cache-budget");
  return value_flags;
}

std::string host_cache_prefix() {
  const char* env = std::getenv("STOWAGE_HOST_CACHE_PREFIX");
  const std::string prefix = env != nullptr && *env != '\0' ? env : "stowage-hc";
  try {
    hostcache::check_prefix(prefix);
  } catch (const InvalidInputError& e) {
    throw UsageError(std::string("STOWAGE_HOST_CACHE_PREFIX: ") + e.what());
  }
  return prefix;
}

std::optional<hostcache::SharedWeightCacheOptions> host_cache_options(const ArgParser& p,
                                                                      const std::string& family) {
  const auto value = p.get("host-cache");
  if (!value) {
    if (p.has("host-cache-budget")) throw UsageError("--host-cache-budget needs --host-cache");
    return std::nullopt;
  }
  if (!value->empty() && *value != "keep") {
    throw UsageError(fmt::format("--host-cache takes no value or =keep, found '{}'", *value));
  }
  hostcache::SharedWeightCacheOptions options;
  options.prefix = host_cache_prefix();
  options.family = family;
  options.keep = *value == "keep";
  if (auto budget = p.get("host-cache-budget")) {
    try {
      options.pinned_budget_bytes = parse_byte_size(*budget);
    } catch (const InvalidInputError& e) {
      throw UsageError(std::string("--host-cache-budget: ") + e.what());
    }
  }
  return options;
}

std::unique_ptr<hostcache::SharedWeightCache> make_host_cache(Platform& platform,
                                                              const ArgParser& p,
                                                              const std::string& family) {
  auto options = host_cache_options(p, family);
  if (!options) return nullptr;
  return std::make_unique<hostcache::SharedWeightCache>(platform, std::move(*options));
}

boost::json::object host_cache_report(const hostcache::SharedWeightCache& cache) {
  const auto last = cache.last_load();
  return {{"action", last.action},
          {"segment", last.segment},
          {"host_bytes", last.host_bytes},
          {"registration_error", last.registration_error}};
}

}  // namespace stowage::cli
