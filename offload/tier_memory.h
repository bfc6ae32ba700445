// Each tier's memory as RMM-style adaptors, and the manager's accounting: the
// platform's resource (or a test's override) wrapped in a budget when one is
// set, then in statistics; the disk tier's budget and peak (its bytes live in
// a DiskStore, counted by the residency table); the byte counters of copies.
//
// Thread safety: memory() and usage() of host and accelerator tiers may be
// called from any thread (the adaptors count atomically); the disk peak and
// the counters REQUIRE external synchronization (the manager's mutex).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/memory_resource.h"
#include "core/platform.h"
#include "offload/memory_budget.h"

namespace stowage {

struct OffloadCounters {
  uint64_t bytes_h2d = 0;        // host (pinned, pageable, staged disk) -> accelerator
  uint64_t bytes_d2h = 0;        // accelerator -> host or disk
  uint64_t bytes_d2d = 0;        // accelerator i -> accelerator j
  uint64_t bytes_disk_read = 0;  // read from the disk tier
  uint64_t bytes_disk_written = 0;
  uint64_t fetches = 0;  // module fetches into a slot
  // Each streamed forward records an event on the compute stream just before
  // it waits for the module's fetch; comparing it with the fetch's completion
  // event (Event::elapsed_ms, resolved later without blocking) says whether
  // the copy was complete when compute needed it (a hit) or how long compute
  // waited (a miss, adding to stall_ms). On sim an event's time is the host
  // timestamp its stream's worker took; on CUDA, the GPU's.
  uint64_t prefetch_hits = 0;
  uint64_t prefetch_misses = 0;
  double stall_ms = 0;  // resolved so far; synchronize() resolves all
  // Milliseconds the copy streams spent on those fetches, from each one's
  // first copy to its last (the copy engine's busy time; a disk source's
  // staged reads included), resolved with stall_ms: against a phase's
  // wall time, whether the link was kept fed.
  double fetch_ms = 0;
  // Fetches issued at begin_forward because the module was not prefetched
  // (no free slot, or not in a declared order): compute waits for all of it.
  uint64_t sync_fallbacks = 0;
  uint64_t slot_allocation_failures = 0;  // slots the pools could not allocate
};

// The counters accumulated between two readings (`now` taken after `then`).
OffloadCounters counters_since(const OffloadCounters& now, const OffloadCounters& then);

// The share of `seconds` of wall time the copy streams spent on the
// counted fetches (fetch_ms): near 1 when a phase kept the link fed, low
// when the link waited for compute or for slots. 0 for no time.
double link_busy_share(const OffloadCounters& counters, double seconds);

// Adds a copy of `bytes` from tier `from` to tier `to` to the byte counters
// (h2d, d2h or d2d by where the accelerators are; a disk source also counts
// as a disk read). A copy between two host tiers adds nothing.
void count_copy(OffloadCounters& counters, Tier to, Tier from, uint64_t bytes);

struct TierUsage {
  uint64_t bytes_in_use = 0;
  uint64_t peak_bytes = 0;
  std::optional<uint64_t> budget;
};

class TierMemory {
 public:
  // Wraps the memory of every accelerator of `platform` and of both host
  // tiers, under `budget`'s byte budgets. `overrides` as OffloadOptions;
  // they must outlive this object.
  TierMemory(Platform& platform, const MemoryBudget& budget,
             const std::map<Tier, MemoryResource*>& overrides);
  TierMemory(const TierMemory&) = delete;
  TierMemory& operator=(const TierMemory&) = delete;

  // The budgeted, counted resource of a host or accelerator tier. Throws
  // InvalidInputError for disk or a tier the platform does not have.
  MemoryResource& memory(Tier tier);
  // The budget adaptor of a tier, nullptr when the tier has no budget.
  const BudgetAdaptor* budget_adaptor(Tier tier) const;
  std::optional<uint64_t> budget(Tier tier) const;

  // Usage of a tier; for disk, `disk_bytes` is what the disk holds now.
  TierUsage usage(Tier tier, uint64_t disk_bytes) const;
  // Throws OutOfBudgetError naming `key` when writing `bytes` more to a disk
  // holding `disk_bytes` would exceed the disk budget.
  void check_disk_budget(uint64_t bytes, uint64_t disk_bytes, const std::string& key) const;
  // Notes what the disk holds now, for its peak.
  void note_disk_bytes(uint64_t disk_bytes);

 private:
  struct Stack {
    std::unique_ptr<BudgetAdaptor> budget;
    std::unique_ptr<StatisticsAdaptor> stats;
  };
  const Stack& stack(Tier tier) const;  // throws for a tier without memory
  void add(Tier tier, MemoryResource& platform_memory,
           const std::map<Tier, MemoryResource*>& overrides);

  MemoryBudget budget_;
  std::map<Tier, Stack> stacks_;
  uint64_t disk_peak_ = 0;
};

}  // namespace stowage
