// The fetch slots of one accelerator: fixed-size buffers allocated once (at
// dispatch, or each at its first use) and reused for the whole run, so the
// hot path never allocates device memory and memory does not fragment.
// Reuse is stream-ordered: a slot remembers the event its last forward
// recorded on the compute stream, and a fetch into it first makes the copy
// stream wait on that event.
//
// Used by OffloadManager; exposed for its tests and benchmarks.
//
// Thread safety: none; REQUIRES external synchronization (the manager's
// mutex).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "core/platform.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "offload/memory_budget.h"

namespace stowage {

// One fetch's events: `done` on the copy stream after the copies; `reached`
// on the compute stream just before it waits on `done`. Resolved later:
// elapsed(reached, done) <= 0 means the copy was complete when compute needed
// it (a prefetch hit); otherwise that time is a stall.
struct FetchTicket {
  Event started;  // on the copy stream before the fetch's first copy
  Event done;
  Event reached;
  bool reached_recorded = false;
};

struct Slot {
  enum class State { kFree, kFetched, kInUse };
  Buffer memory;
  State state = State::kFree;
  // The module whose bytes it holds (kFetched, kInUse): its id in the
  // manager (ModuleHandle::id), -1 when free.
  int module = -1;
  std::shared_ptr<FetchTicket> ticket;
  // Recorded on the compute stream when the slot's last forward ended.
  Event released;
  bool released_recorded = false;
  std::thread::id owner;  // the thread whose forward uses it (kInUse)
  std::vector<std::pair<std::string, TensorView>> views;
  uint64_t fetch_serial = 0;  // order of fetches, for picking a slot to steal

  // Frees the slot: no module, views or ticket. Whatever ordered its reuse
  // (`released`) is kept.
  void clear();
};

class SlotPool {
 public:
  // Says why one more slot of `slot_bytes` must not be allocated (an
  // out-of-budget message), or "" to go ahead.
  using GrowthCheck = std::function<std::string(uint64_t slot_bytes)>;

  // Slots of `slot_bytes` each, up to `target_slots`, from `memory` on
  // `accelerator` (whose events mark reuse). Allocates nothing yet. A slot
  // `check` refuses counts as an allocation failure.
  SlotPool(Accelerator& accelerator, MemoryResource& memory, uint64_t slot_bytes, int target_slots,
           GrowthCheck check = {});
  SlotPool(const SlotPool&) = delete;
  SlotPool& operator=(const SlotPool&) = delete;
  // Waits for the last fetch into and the last forward from each slot.
  ~SlotPool();

  // Allocates slots up to the target, stopping at the first failure (an
  // out-of-memory or out-of-budget error), after which the pool keeps the
  // slots it has and never tries again. Returns the number of slots.
  int fill();
  // Allocates one more slot when below the target and no allocation failed
  // yet; returns its index, or -1.
  int try_grow();

  int size() const { return static_cast<int>(slots_.size()); }
  int target() const { return target_; }
  uint64_t slot_bytes() const { return slot_bytes_; }
  Slot& slot(int i) { return *slots_[i]; }
  uint64_t allocation_failures() const { return failures_; }
  // The message of the allocation failure, empty if none.
  const std::string& failure() const { return failure_; }

  // Index of a slot holding module id `module` (kFetched or kInUse), or -1.
  int find(int module) const;
  // Index of a free slot (allocating one when allowed), or -1.
  int acquire_free(bool allow_grow);
  // Frees the slot prefetched (kFetched, not in a forward) for `module`, if
  // any, once its copies have finished.
  void drop_prefetch(int module);
  // Frees the prefetched slot fetched last (furthest ahead) and returns its
  // index, or -1 when no slot is kFetched.
  int steal_newest_prefetch();
  // Frees every slot, with nothing ordering its reuse (a graph capture
  // starts from this state).
  void empty();
  // Marks every slot reusable only after the work queued on `compute` so far.
  void release_all_after(StreamRef compute);
  // True when some slot is not used by a forward on thread `me`.
  bool has_slot_not_owned_by(std::thread::id me) const;
  // Bytes of the slots allocated so far.
  uint64_t bytes() const { return slot_bytes_ * slots_.size(); }

 private:
  Accelerator& accelerator_;
  MemoryResource& memory_;
  uint64_t slot_bytes_;
  int target_;
  GrowthCheck check_;
  std::vector<std::unique_ptr<Slot>> slots_;
  uint64_t failures_ = 0;
  std::string failure_;
};

}  // namespace stowage
