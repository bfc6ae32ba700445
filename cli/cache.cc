// `stowage cache list [--json]` and `stowage cache drop (KEY | --all |
// --stale)` (CLI.md): the host's shared weight segments that --host-cache
// builds (hostcache/catalog.h), under the prefix STOWAGE_HOST_CACHE_PREFIX.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/host_cache_flags.h"
#include "core/memory_resource.h"
#include "hostcache/catalog.h"

namespace stowage::cli {
namespace {

int list(const ArgParser& p, const std::string& prefix) {
  const std::vector<hostcache::SegmentListing> segments = hostcache::list_segments(prefix);
  if (p.has("json")) {
    boost::json::array list;
    for (const auto& s : segments) {
      boost::json::array pids;
      for (const auto& a : s.attached) pids.push_back(a.pid);
      list.push_back(boost::json::object{{"key", s.id},
                                         {"name", s.name},
                                         {"model", s.model},
                                         {"recipe", s.recipe},
                                         {"bytes", s.bytes},
                                         {"resident_bytes", s.resident_bytes},
                                         {"state", s.state},
                                         {"keep", s.keep},
                                         {"stale", s.stale},
                                         {"attached", std::move(pids)}});
    }
    std::printf("%s\n", boost::json::serialize(boost::json::object{{"segments", list}}).c_str());
    return 0;
  }
  std::printf("%-16s  %-13s %12s  %-9s %s\n", "KEY", "STATE", "BYTES", "ATTACHED", "MODEL");
  for (const auto& s : segments) {
    std::string pids;
    for (const auto& a : s.attached) pids += (pids.empty() ? "" : ",") + std::to_string(a.pid);
    std::string state = s.state + (s.keep ? " keep" : "") + (s.stale ? " stale" : "");
    std::printf("%-16s  %-13s %12s  %-9s %s\n", s.id.c_str(), state.c_str(),
                format_bytes(s.bytes).c_str(), pids.empty() ? "-" : pids.c_str(),
                escape_control(s.model).c_str());
  }
  if (segments.empty()) std::printf("(no segments with prefix %s)\n", prefix.c_str());
  return 0;
}

int drop(const ArgParser& p, const std::string& prefix) {
  const size_t ways = (p.positional().size() == 2) + p.has("all") + p.has("stale");
  if (ways != 1 || p.positional().size() > 2) {
    throw UsageError("cache drop takes exactly one of KEY, --all and --stale");
  }
  std::vector<std::string> dropped;
  if (p.has("all")) {
    dropped = hostcache::drop_segments(prefix, hostcache::DropSelection::kAll);
  } else if (p.has("stale")) {
    dropped = hostcache::drop_segments(prefix, hostcache::DropSelection::kStale);
  } else {
    dropped = hostcache::drop_segments(prefix, hostcache::DropSelection::kOne, p.positional()[1]);
  }
  for (const std::string& name : dropped) std::printf("dropped %s\n", name.c_str());
  return 0;
}

int cache(const std::vector<std::string>& args) {
  ArgParser p("cache", {}, {"json", "all", "stale"});
  p.parse(args);
  if (p.positional().empty()) throw UsageError("expected a subcommand: cache list | cache drop");
  const std::string& sub = p.positional()[0];
  const std::string prefix = host_cache_prefix();
  if (sub == "list") {
    p.expect_positional(1, "cache list takes no arguments");
    if (p.has("all") || p.has("stale")) throw UsageError("--all and --stale go with cache drop");
    return list(p, prefix);
  }
  if (sub == "drop") {
    if (p.has("json")) throw UsageError("--json goes with cache list");
    return drop(p, prefix);
  }
  throw UsageError(fmt::format("unknown cache subcommand '{}': expected list or drop",
                               escape_control(sub)));
}

}  // namespace

int run_cache(const std::vector<std::string>& args) { return cache(args); }

}  // namespace stowage::cli
