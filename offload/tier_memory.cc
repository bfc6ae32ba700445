#include "offload/tier_memory.h"

#include <algorithm>

#include "core/error.h"

namespace stowage {

double link_busy_share(const OffloadCounters& counters, double seconds) {
  return seconds > 0 ? counters.fetch_ms / (1e3 * seconds) : 0.0;
}

OffloadCounters counters_since(const OffloadCounters& now, const OffloadCounters& then) {
  OffloadCounters d = now;
  d.bytes_h2d -= then.bytes_h2d;
  d.bytes_d2h -= then.bytes_d2h;
  d.bytes_d2d -= then.bytes_d2d;
  d.bytes_disk_read -= then.bytes_disk_read;
  d.bytes_disk_written -= then.bytes_disk_written;
  d.fetches -= then.fetches;
  d.prefetch_hits -= then.prefetch_hits;
  d.prefetch_misses -= then.prefetch_misses;
  d.sync_fallbacks -= then.sync_fallbacks;
  d.slot_allocation_failures -= then.slot_allocation_failures;
  d.stall_ms -= then.stall_ms;
  d.fetch_ms -= then.fetch_ms;
  return d;
}

void count_copy(OffloadCounters& counters, Tier to, Tier from, uint64_t bytes) {
  if (from == Tier::disk()) counters.bytes_disk_read += bytes;
  if (to.is_accelerator() && from.is_accelerator()) {
    counters.bytes_d2d += bytes;
  } else if (to.is_accelerator()) {
    counters.bytes_h2d += bytes;
  } else if (from.is_accelerator()) {
    counters.bytes_d2h += bytes;
  }
}

TierMemory::TierMemory(Platform& platform, const MemoryBudget& budget,
                       const std::map<Tier, MemoryResource*>& overrides)
    : budget_(budget) {
  for (int i = 0; i < platform.accelerator_count(); ++i) {
    Accelerator& a = platform.accelerator(i);
    add(a.tier(), a.memory(), overrides);
  }
  add(Tier::pinned_host(), platform.pinned_host_memory(), overrides);
  add(Tier::pageable_host(), platform.pageable_host_memory(), overrides);
}

void TierMemory::add(Tier tier, MemoryResource& platform_memory,
                     const std::map<Tier, MemoryResource*>& overrides) {
  MemoryResource* upstream = &platform_memory;
  auto override_it = overrides.find(tier);
  if (override_it != overrides.end() && override_it->second != nullptr) {
    upstream = override_it->second;
  }
  Stack stack;
  if (const std::optional<uint64_t> bytes = budget(tier)) {
    stack.budget = std::make_unique<BudgetAdaptor>(*upstream, *bytes, tier.to_string() + " budget");
    upstream = stack.budget.get();
  }
  stack.stats = std::make_unique<StatisticsAdaptor>(*upstream);
  stacks_[tier] = std::move(stack);
}

const TierMemory::Stack& TierMemory::stack(Tier tier) const {
  auto it = stacks_.find(tier);
  STOWAGE_EXPECTS(it != stacks_.end(), InvalidInputError,
                  "offload manager: no memory for tier {} on this platform{}", tier.to_string(),
                  tier == Tier::disk() ? " (the disk tier is written through a DiskStore)" : "");
  return it->second;
}

MemoryResource& TierMemory::memory(Tier tier) { return *stack(tier).stats; }

const BudgetAdaptor* TierMemory::budget_adaptor(Tier tier) const {
  auto it = stacks_.find(tier);
  return it == stacks_.end() ? nullptr : it->second.budget.get();
}

std::optional<uint64_t> TierMemory::budget(Tier tier) const {
  return budget_.budget_of(tier);
}

TierUsage TierMemory::usage(Tier tier, uint64_t disk_bytes) const {
  TierUsage u;
  if (tier == Tier::disk()) {
    u.bytes_in_use = disk_bytes;
    u.peak_bytes = std::max(disk_peak_, disk_bytes);
  } else {
    const StatisticsAdaptor& stats = *stack(tier).stats;
    u.bytes_in_use = stats.bytes_in_use();
    u.peak_bytes = stats.peak_bytes();
  }
  u.budget = budget(tier);
  return u;
}

void TierMemory::check_disk_budget(uint64_t bytes, uint64_t disk_bytes,
                                   const std::string& key) const {
  const std::optional<uint64_t> limit = budget(Tier::disk());
  if (!limit) return;
  STOWAGE_EXPECTS(bytes <= *limit && disk_bytes <= *limit - bytes, OutOfBudgetError,
                  "disk tier: writing {} ({} bytes) would exceed its budget of {} bytes ({} "
                  "bytes in use)",
                  key, bytes, *limit, disk_bytes);
}

void TierMemory::note_disk_bytes(uint64_t disk_bytes) {
  disk_peak_ = std::max(disk_peak_, disk_bytes);
}

}  // namespace stowage
