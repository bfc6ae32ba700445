// Accelerator slots that keep mixture-of-experts experts between steps
// (issue #20): routed experts whose home is off the accelerator are copied
// into a slot on demand and stay there while the replacement policy
// (offload/replacement_policy.h) keeps them, so a popular expert crosses the
// link once instead of at every token.
//
//   ExpertCache cache(manager, acc, {slots, slot_bytes, ReplacementPolicyKind::kLfuAging});
//   auto state = cache.fetch({"model.layers.3...experts.5", ...}, /*layer=*/3);  // copies start
//   ModuleForward f = cache.acquire(module, compute);  // compute waits for its copy only
//   ... enqueue the expert's forward with f.tensors ...
//   cache.release(module, compute);                    // the slot may be reused after it
//
// The slots are allocated once, in the constructor, from the manager's
// budgeted memory of `accelerator` (a budget too small for them fails there
// with OutOfBudgetError); the hot path never allocates. A copy reads the
// expert's host copy (pinned RAM, pageable RAM, or the disk tier's mapping)
// and runs on the manager's copy stream; compute waits on an event, never
// the host. An expert is overwritten only after the compute stream passed
// its last release. Experts resident on the accelerator or computed on the
// host (OffloadManager::set_host_compute) are not cacheable: the caller runs
// them as before.
//
// Thread safety: every member may be called from several threads; one
// model's forwards use a cache at a time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/buffer.h"
#include "core/stream.h"
#include "offload/offload_manager.h"
#include "offload/replacement_policy.h"

namespace stowage {

struct ExpertCacheOptions {
  int64_t slots = 0;
  uint64_t slot_bytes = 0;  // ExpertCache::slot_bytes_for(the experts)
  ReplacementPolicyKind policy = ReplacementPolicyKind::kLfuAging;
  uint64_t aging_period = 1024;
};

// Per layer.
struct ExpertCacheCounters {
  uint64_t hits = 0;        // routed and already in a slot (or on its way, predicted)
  uint64_t misses = 0;      // routed and copied now
  uint64_t uncached = 0;    // routed, but no slot could be freed: run another way
  uint64_t host = 0;        // routed, absent, and computed on the host where its weights are
  uint64_t split = 0;       // routed, absent, computed partly on the host, partly from a part copy
  uint64_t predicted = 0;   // copies started by prefetch()
  uint64_t predicted_used = 0;  // of those, experts routed before being evicted
  uint64_t bytes_copied = 0;    // host -> accelerator, misses and predictions
  ExpertCacheCounters& operator+=(const ExpertCacheCounters& o);
  ExpertCacheCounters& operator-=(const ExpertCacheCounters& o);
  double hit_rate() const {
    const uint64_t n = hits + misses + uncached + host + split;
    return n == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(n);
  }
};

class ExpertCache {
 public:
  enum class Fetch { kHit, kMiss, kUncached };

  // `manager` must outlive the cache. Throws OutOfBudgetError /
  // OutOfMemoryError when the slots do not fit.
  ExpertCache(OffloadManager& manager, Tier accelerator, ExpertCacheOptions options);
  // Waits for the copies in flight.
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  // The bytes of a slot that holds any of `modules` (their records at
  // 256-byte aligned offsets, as the fetch slots).
  static uint64_t slot_bytes_for(const ResidencyTable& table,
                                 const std::vector<std::string>& modules);

  OffloadManager& manager() { return manager_; }
  int64_t slots() const { return static_cast<int64_t>(slots_.size()); }
  uint64_t bytes() const { return options_.slot_bytes * slots_.size(); }
  const char* policy_name() const { return replacement_policy_name(options_.policy); }

  // Whether `module` goes through the cache: every record has a host
  // copy and none is on the accelerator, and it is not computed on the host.
  bool cacheable(const std::string& module) const;

  // One layer's routed experts (cacheable, distinct): each cached one is a
  // hit; the copies of the others start now, evicting the policy's victims
  // among the slots not in use and not routed here; kUncached where no slot
  // could be freed. Counts each in `layer`'s counters.
  std::vector<Fetch> fetch(const std::vector<std::string>& modules, int layer);
  // Whether `module` is in a slot (copied or on its way); counts nothing.
  bool holds(const std::string& module) const;
  // `modules` (cacheable, absent) are computed on the host this step instead
  // of copied: counted as `host` in `layer`'s counters, and as a use by the
  // replacement policy (their popularity still decides what stays later).
  void note_host_computed(const std::vector<std::string>& modules, int layer);
  // The views of cacheable `module`'s host copies (pinned RAM, pageable RAM,
  // or the disk tier's mapping, as a copy would read them), for a forward
  // computed on the host; the weights' bytes in `bytes`.
  ModuleForward host_forward(const std::string& module, uint64_t* bytes) const;

  // A byte range of one of a module's records (by tensor name).
  struct RecordPart {
    std::string tensor;
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };
  // Part of cacheable, absent `module` for one forward (an expert computed
  // partly on the host): of the records named in `parts` only their byte
  // ranges, the others whole, copied into a slot (free, or the policy's
  // victim among those not in use and not holding one of `keep`) that is not
  // the module's cached copy: fetch() never finds it, and release_part()
  // frees it. Counted as `split` in `layer`'s counters and as a use by the
  // policy, its bytes as copied. Returns the part's handle, or -1 where no
  // slot could be freed.
  int fetch_part(const std::string& module, const std::vector<RecordPart>& parts,
                 const std::vector<std::string>& keep, int layer);
  // The part's views for a forward on `compute` (which waits for its copy):
  // a ranged record's view starts at its range's first byte, 1-D of the
  // range's elements. REQUIRES: `part` from fetch_part, not yet released.
  ModuleForward acquire_part(int part, StreamRef compute);
  void release_part(int part, StreamRef compute);

  // The predicted experts of a later layer: copies start where a slot is
  // free or evictable (never one in use or predicted in this call); no use
  // is counted until they are routed.
  void prefetch(const std::vector<std::string>& modules, int layer);

  // The views of fetched `module` for a forward on `compute` (which waits
  // for its copy). REQUIRES: fetch() returned kHit or kMiss for it since its
  // last release.
  ModuleForward acquire(const std::string& module, StreamRef compute);
  void release(const std::string& module, StreamRef compute);

  std::vector<ExpertCacheCounters> counters() const;

 private:
  struct Slot {
    Buffer buffer;
    std::string module;  // empty: free
    Event copied;        // the copy into the slot
    Event released;      // the compute stream's last release of it
    bool released_recorded = false;
    bool in_use = false;
    bool predicted = false;  // filled by prefetch, not routed since
    bool part = false;       // holds a fetch_part() copy (module empty) until release_part()
    std::vector<std::pair<std::string, TensorView>> part_views;
  };
  uint64_t key_of(const std::string& module);
  ExpertCacheCounters& counters_of(int layer);
  // A slot for `module` (free, or the policy's victim among those not in
  // use and not in `keep`); -1 when none.
  int choose_slot(const std::vector<std::string>& keep);
  // Starts the copy of `module` into `slot`; returns its bytes.
  uint64_t copy_into(int slot, const std::string& module);
  // A forward's start on `compute` (waiting for the slot's copy; the views
  // left to the caller) and its end (the slot reusable after it).
  ModuleForward start_forward(Slot& s, StreamRef compute);
  void end_forward(Slot& s, StreamRef compute);
  // The slot of part handle `part`; InvalidInputError when it holds none.
  Slot& part_slot(int part, const char* what);
  // The slot holding `module`; InvalidInputError when none (`what`: the call).
  Slot& slot_holding(const std::string& module, const char* what);

  OffloadManager& manager_;
  Tier accelerator_;
  ExpertCacheOptions options_;
  std::unique_ptr<ReplacementPolicy> policy_;
  mutable std::mutex mutex_;
  std::vector<Slot> slots_;
  std::unordered_map<std::string, int> slot_of_;  // module -> slot
  std::unordered_map<std::string, uint64_t> keys_;
  std::map<uint64_t, int> slot_of_key_;
  std::vector<ExpertCacheCounters> counters_;
};

}  // namespace stowage
