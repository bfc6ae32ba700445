// The memory a run may use, one value from the command line to enforcement:
// each tier's byte budget and physical size, the working-memory reserve kept
// on an accelerator, the prefetch depth that sizes the streaming reserve, and
// the disk staging size. `stowage` builds it once from --max-memory
// (memory_budget_for); the planner places modules within it (PlanRequest is
// one), the loader plans under it (LoadOptions is one) and the offload
// manager enforces its budgets at allocation time (OffloadOptions is one).
// The formulas both sides apply (slot count, slot alignment, disk staging)
// are written here once.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/platform.h"
#include "core/tier.h"

namespace stowage {

// Slots a fetch pool keeps for prefetch depth d: the module in forward plus d
// prefetched. The planner's reserve and OffloadManager's pool both use this.
inline int slot_count(int prefetch_depth) { return (prefetch_depth < 0 ? 0 : prefetch_depth) + 1; }

// A slot holds a module's tensors one after another, each at an offset
// aligned to this many bytes (kernels' vector loads).
constexpr uint64_t kSlotAlignment = 256;
inline uint64_t slot_offset_align(uint64_t offset) {
  return (offset + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment;
}
// A slot's bytes once a tensor of `bytes` is appended to `packed` bytes.
inline uint64_t slot_append(uint64_t packed, uint64_t bytes) {
  return slot_offset_align(packed) + bytes;
}

// Pinned bytes for staging disk reads, by default.
constexpr uint64_t kDefaultDiskStagingBytes = uint64_t{8} << 20;

// The pinned buffer OffloadManager stages disk reads through: the configured
// staging size, but no more than the largest tensor read from disk (larger
// reads go through it in pieces). The planner keeps these bytes on cpu when
// anything lands on disk, so a cpu budget that cannot hold them fails the
// plan, as it would fail the run.
inline uint64_t disk_staging_buffer_bytes(uint64_t configured, uint64_t largest_disk_tensor) {
  return configured < largest_disk_tensor ? configured : largest_disk_tensor;
}

// One tier's capacity. limit() = min(budget, physical_bytes).
struct TierCapacity {
  Tier tier = Tier::pinned_host();
  std::optional<uint64_t> budget;  // nullopt: only the physical size limits
  uint64_t physical_bytes = UINT64_MAX;
  uint64_t limit() const;
};

struct MemoryBudget {
  // Accelerators, filled by the planner in this order.
  std::vector<TierCapacity> accelerators;
  std::optional<TierCapacity> cpu;   // pinned host; nullopt: not used
  std::optional<TierCapacity> disk;  // nullopt: no disk tier
  // Working memory (activations and kernel scratch) the forwards allocate on
  // an accelerator: the planner places nothing in it and the manager's fetch
  // slots never take the part not in use yet. Absent: none.
  std::map<Tier, uint64_t> working_reserve;
  // Modules fetched ahead of the one computing: slot_count(prefetch_depth)
  // slots of the largest streamed module are the streaming reserve.
  int prefetch_depth = 1;
  // Pinned staging for disk reads (disk_staging_buffer_bytes): allocated by
  // the manager, kept on cpu by the planner when anything lands on disk.
  uint64_t disk_staging_bytes = kDefaultDiskStagingBytes;

  // The byte budget of `tier` (nullopt: none; pageable host never has one).
  // The manager enforces exactly these.
  std::optional<uint64_t> budget_of(Tier tier) const;
  // Sets the byte budget of `tier`, adding the tier (physical size
  // unlimited) when absent.
  void set_budget(Tier tier, uint64_t bytes);
  // The capacity of `tier`, nullopt when the budget does not use it.
  std::optional<TierCapacity> capacity_of(Tier tier) const;
  uint64_t working_reserve_of(Tier tier) const;
  // "sim:0=1.0 MiB (1048576 bytes), cpu=unlimited, disk=not used (no offload
  // folder)", for error messages.
  std::string describe() const;
};

// The one capacity builder: every accelerator of `platform` (budget
// `accelerator_budgets[index]` where given, its physical size), pinned host
// (budget `cpu` where given, physical size `cpu_physical`), disk only when
// `with_disk`. Throws InvalidInputError for a budget naming an accelerator
// the platform lacks.
MemoryBudget memory_budget_for(Platform& platform, const std::map<int, uint64_t>& accelerator_budgets,
                               std::optional<uint64_t> cpu = std::nullopt,
                               uint64_t cpu_physical = UINT64_MAX, bool with_disk = false,
                               std::optional<uint64_t> disk = std::nullopt);

}  // namespace stowage
