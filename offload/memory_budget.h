// The memory a run may use, one value from --max-memory to enforcement: each
// tier's budget and physical size, the working reserve, the prefetch depth
// and the disk staging size. The planner places within it (PlanRequest is
// one), the loader plans under it (LoadOptions) and the offload manager
// enforces its budgets at allocation time (OffloadOptions). The formulas
// both sides apply are written here once.
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
// aligned to kSlotAlignment bytes; slot_append is the slot's bytes once a
// tensor of `bytes` follows `packed` bytes.
constexpr uint64_t kSlotAlignment = 256;
inline uint64_t slot_offset_align(uint64_t offset) {
  return (offset + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment;
}
inline uint64_t slot_append(uint64_t packed, uint64_t bytes) {
  return slot_offset_align(packed) + bytes;
}

// The streaming reserve: slot_count(prefetch_depth) fetch slots of
// `largest_slot_bytes`, the largest streamed module as a slot holds it
// (offsets aligned by slot_append). The planner keeps it on the streaming
// accelerator; a caller sizing a budget for streaming asks here.
inline uint64_t streaming_reserve_bytes(int prefetch_depth, uint64_t largest_slot_bytes) {
  return static_cast<uint64_t>(slot_count(prefetch_depth)) * largest_slot_bytes;
}

constexpr uint64_t kDefaultDiskStagingBytes = uint64_t{8} << 20;

// The pinned buffer OffloadManager stages disk reads through: the configured
// size, but no more than the largest tensor read from disk (larger reads go
// through it in pieces). The planner keeps it on cpu when anything lands on
// disk, so a cpu budget that cannot hold it fails the plan, as the run would.
inline uint64_t disk_staging_buffer_bytes(uint64_t configured, uint64_t largest_disk_tensor) {
  return configured < largest_disk_tensor ? configured : largest_disk_tensor;
}

// The host's physical memory in bytes (UINT64_MAX where unknown): the
// pinned tier's physical limit.
uint64_t host_physical_bytes();

// One tier's capacity. limit() = min(budget, physical_bytes).
struct TierCapacity {
  Tier tier = Tier::pinned_host();
  std::optional<uint64_t> budget;  // nullopt: only the physical size limits
  uint64_t physical_bytes = UINT64_MAX;
  uint64_t limit() const { return budget && *budget < physical_bytes ? *budget : physical_bytes; }
};

struct MemoryBudget {
  std::vector<TierCapacity> accelerators;  // filled by the planner in this order
  std::optional<TierCapacity> cpu;         // pinned host; nullopt: not used
  std::optional<TierCapacity> disk;        // nullopt: no disk tier
  // Working memory (activations, kernel scratch) the forwards allocate on an
  // accelerator: the planner places nothing in it, the manager's fetch slots
  // never take the part not in use yet.
  std::map<Tier, uint64_t> working_reserve;
  // slot_count(prefetch_depth) slots of the largest streamed module are the
  // streaming reserve.
  int prefetch_depth = 1;
  uint64_t disk_staging_bytes = kDefaultDiskStagingBytes;

  // The capacity of `tier`, nullopt where the budget does not use it.
  std::optional<TierCapacity> capacity_of(Tier tier) const;
  // The byte budget of `tier` the manager enforces (nullopt: none).
  std::optional<uint64_t> budget_of(Tier tier) const;
  // Sets it, adding the tier (physical size unlimited) where absent.
  void set_budget(Tier tier, uint64_t bytes);
  uint64_t working_reserve_of(Tier tier) const;
  // "sim:0=1.0 MiB (1048576 bytes), cpu=unlimited, disk=not used (no offload
  // folder)", for error messages.
  std::string describe() const;
};

// The one capacity builder: every accelerator of `platform` with its
// physical size and its budget where `accelerator_budgets` (by index) gives
// one, pinned host, disk only `with_disk`. Throws InvalidInputError for a
// budget naming an accelerator the platform lacks.
MemoryBudget memory_budget_for(Platform& platform, const std::map<int, uint64_t>& accelerator_budgets,
                               std::optional<uint64_t> cpu = std::nullopt,
                               uint64_t cpu_physical = UINT64_MAX, bool with_disk = false,
                               std::optional<uint64_t> disk = std::nullopt);

}  // namespace stowage
