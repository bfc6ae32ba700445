// `--host-cache[=keep]` and `--host-cache-budget SIZE` of run, bench and
// generate (issue #21), and the segment prefix every command shares: the
// environment variable STOWAGE_HOST_CACHE_PREFIX (default "stowage-hc"),
// read here and nowhere else, so tests and separate deployments keep their
// segments apart.
#pragma once

#include <boost/json.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "core/platform.h"
#include "hostcache/shared_weight_cache.h"

namespace stowage::cli {

// `value_flags` and --host-cache-budget: the value flags to declare.
std::vector<std::string> with_host_cache_flags(std::vector<std::string> value_flags);
// The optional-value flag to declare (ArgParser's fourth argument).
inline const std::vector<std::string> kHostCacheOptionalFlags = {"host-cache"};

// The segment prefix (STOWAGE_HOST_CACHE_PREFIX or "stowage-hc"). Throws
// UsageError for a prefix outside [A-Za-z0-9_.-]{1,64}.
std::string host_cache_prefix();

// Options for --host-cache as given to `p`; nullopt without it. UsageError
// for a value other than "keep", or --host-cache-budget without --host-cache.
std::optional<hostcache::SharedWeightCacheOptions> host_cache_options(const ArgParser& p,
                                                                      const std::string& family);

// A cache for the command's loads, or nullptr without --host-cache.
std::unique_ptr<hostcache::SharedWeightCache> make_host_cache(Platform& platform,
                                                              const ArgParser& p,
                                                              const std::string& family);

// The --json report of the cache's last load: action, segment, host bytes and
// any pinning (registration) error.
boost::json::object host_cache_report(const hostcache::SharedWeightCache& cache);

}  // namespace stowage::cli
