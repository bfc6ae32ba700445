// Which cached entry to evict: the replacement policies of the accelerator
// expert cache (offload/expert_cache.h), over opaque keys.
//
// kLru evicts the entry used longest ago. kLfuAging evicts the entry used
// least often, counting uses over the whole run (an evicted key keeps its
// count, so a popular expert that was pushed out comes back with its
// history), with every count halved each `aging_period` uses so that
// popularity that shifts is followed; ties go to the least recently used.
// On skewed (Zipf) routing it keeps the popular experts that a burst of
// rare ones would push out of an LRU cache
// (ReplacementPolicyTest.LfuWithAgingBeatsLruOnAZipfTrace).
//
// Thread safety: none; the cache that owns a policy serializes its calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace stowage {

enum class ReplacementPolicyKind { kLru, kLfuAging };

// "lru", "lfu" (with aging). InvalidInputError naming the others.
ReplacementPolicyKind parse_replacement_policy(const std::string& name);
const char* replacement_policy_name(ReplacementPolicyKind kind);

class ReplacementPolicy {
 public:
  virtual ~ReplacementPolicy() = default;
  // `key` was used: a hit, or an entry just filled.
  virtual void touch(uint64_t key) = 0;
  // The key to evict among `resident` (not empty).
  virtual uint64_t victim(const std::vector<uint64_t>& resident) const = 0;
};

// aging_period: uses between halvings of every count (kLfuAging only).
std::unique_ptr<ReplacementPolicy> make_replacement_policy(ReplacementPolicyKind kind,
                                                           uint64_t aging_period = 1024);

// The hit rate of a cache of `capacity` entries under `policy` over `trace`
// (one key per use; a miss fills an entry, evicting the policy's victim when
// full): what the benchmark's routing traces and the tests replay.
double replay_hit_rate(ReplacementPolicy& policy, size_t capacity,
                       const std::vector<uint64_t>& trace);

}  // namespace stowage
