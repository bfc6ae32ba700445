// Fetch scheduling: the accelerators' compute and copy streams, their slot
// pools (offload/slot_pool.h, which owns each slot's state) and disk staging
// buffers; the execution orders; fetching streamed modules into slots around
// their forwards and prefetching the next ones; the working-memory guard on
// slot growth; stall accounting (fetch tickets resolved into hits, misses and
// stall time) and trace spans; graph capture. The forward protocol and its
// contracts are OffloadManager's (offload_manager.h), which calls this.
//
// Modules are kept in a table indexed by ModuleHandle: what a forward needs
// (its records, where they are, the slot bytes) is resolved once and cached
// until the module is placed into or moved, so the per-forward path does no
// lookup by name.
//
// Thread safety: REQUIRES external synchronization (the manager's mutex);
// begin_forward may release and retake the caller's lock while it waits for a
// slot another thread's forward holds.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/platform.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "offload/disk_io.h"
#include "offload/offload_options.h"
#include "offload/residency_table.h"
#include "offload/slot_pool.h"
#include "offload/tier_memory.h"

namespace stowage {

// A module of one manager, resolved once by name
// (OffloadManager::module_handle). Cheap to copy; valid for the life of the
// manager that gave it and meaningless to another.
struct ModuleHandle {
  int id = -1;
  bool valid() const { return id >= 0; }
};

// The tensors of a module for one forward. Views stay valid until
// end_forward of the module.
struct ModuleForward {
  std::string module;
  Tier accelerator = Tier::pinned_host();                   // where the views live
  StreamRef compute_stream;                                 // enqueue the forward here
  bool streamed = false;                                    // views are in a fetch slot
  std::vector<std::pair<std::string, TensorView>> tensors;  // record name -> view
  // nullptr when the module has no tensor of that name.
  const TensorView* find(const std::string& name) const;
};

class FetchScheduler {
 public:
  // Creates a compute and a copy stream per accelerator of `platform`. All
  // arguments must outlive the scheduler; `counters` receives fetch bytes,
  // hits, misses and stalls.
  FetchScheduler(Platform& platform, const OffloadOptions& options, ResidencyTable& table,
                 TierMemory& memory, OffloadCounters& counters);
  ~FetchScheduler();
  FetchScheduler(const FetchScheduler&) = delete;
  FetchScheduler& operator=(const FetchScheduler&) = delete;

  // Throw InvalidInputError for a tier that is not an accelerator here.
  StreamRef compute_stream(Tier accelerator);
  StreamRef copy_stream(Tier accelerator);
  // Every accelerator's copy stream, by index.
  std::vector<StreamRef> copy_streams() const;
  // Every copy and compute stream (to wait for all queued work).
  std::vector<StreamRef> all_streams() const;

  // The handle of `module`, created at first use (a name with no records
  // yet may be named in an execution order).
  ModuleHandle handle(const std::string& module);
  // The handle of a module with records; throws InvalidInputError naming an
  // unknown one.
  ModuleHandle placed_module(const std::string& module);
  // A record of `module` was placed: what its forward needs is resolved again.
  void records_changed(const std::string& module);
  // Before moving `module` to `tier`: refuses a module in a forward or a
  // tier that is not an accelerator here, drops its prefetch and waits for
  // its resident copies' last use.
  void prepare_move(ModuleHandle module, Tier tier);
  // After moving it: resolved again, the layout version changes.
  void moved(ModuleHandle module);

  void declare_execution_order(const std::vector<std::string>& modules);
  void set_execution_accelerator(const std::string& module, Tier accelerator);
  void set_host_compute(const std::string& module, bool on);
  bool host_compute(const std::string& module) const;
  uint64_t layout_version() const { return layout_version_; }
  void dispatch();
  // The slots `accelerator`'s pool holds (dispatching first); 0 where
  // nothing streams to it.
  int fetch_slots(Tier accelerator);

  // `lock` holds the manager's mutex; it is released while waiting for a slot.
  ModuleForward begin_forward(ModuleHandle module, StreamRef compute,
                              std::unique_lock<std::mutex>& lock);
  void end_forward(ModuleHandle module, StreamRef compute);

  void begin_capture(StreamRef compute);
  OffloadCounters end_capture(StreamRef compute);
  void abandon_capture();
  void note_launch(StreamRef compute, const OffloadCounters& per_launch);

  // Turns completed fetch tickets into hits, misses and stall time; with
  // `block`, waits for all of them.
  void resolve_pending(bool block);
  // Bytes the slot pools could not allocate, summed over accelerators.
  uint64_t slot_allocation_failures() const;
  // Frees the slot pools, staging buffers and cached views. REQUIRES: all
  // queued work finished.
  void release_all();

 private:
  struct AcceleratorState;
  struct ModuleInfo;
  struct Module;
  struct PendingTicket {
    int accelerator = 0;
    std::shared_ptr<FetchTicket> ticket;
  };

  AcceleratorState& state(Tier tier);
  Module& module(ModuleHandle handle);
  const ModuleInfo& info(Module& m);
  AcceleratorState& runs_on(const Module& m);
  const Module* first_in_forward(bool in_slot_only) const;
  void drop_prefetch(const Module& m);
  // Where a module runs is about to change / has changed.
  Module& not_in_forward(const std::string& name);
  void runs_elsewhere(const Module& m);
  Event take_event(AcceleratorState& a, std::vector<Event>& spares);
  int trace_tid(AcceleratorState& a, StreamRef stream);
  SlotPool::GrowthCheck working_memory_guard(AcceleratorState& a);
  [[noreturn]] void throw_no_slot(AcceleratorState& a, Module& m);
  void issue_fetch(AcceleratorState& a, int index, Module& m, const ModuleInfo& info);
  void prefetch_after(const Module& m);
  int slot_for_on_demand(AcceleratorState& a, Module& m, std::unique_lock<std::mutex>& lock);
  ModuleForward begin_streamed(Module& m, StreamRef compute, std::unique_lock<std::mutex>& lock);

  Platform& platform_;
  const OffloadOptions& options_;
  ResidencyTable& table_;
  TierMemory& memory_;
  OffloadCounters& counters_;
  std::shared_ptr<DiskStager> stager_;
  std::vector<std::unique_ptr<AcceleratorState>> accelerators_;
  std::vector<std::unique_ptr<Module>> modules_;  // by ModuleHandle::id
  std::unordered_map<std::string, int> ids_;
  std::vector<std::vector<int>> orders_;  // module ids
  std::condition_variable slot_freed_;
  std::deque<PendingTicket> pending_;
  // Graph capture (begin_capture .. end_capture).
  bool capturing_ = false;
  StreamRef capture_stream_;
  OffloadCounters capture_start_;
  std::set<int> forked_;  // accelerators whose copy stream joined the capture
  uint64_t layout_version_ = 0;
  bool dispatched_ = false;  // the slot pools match what is streamed
  uint64_t fetch_serial_ = 0;
};

}  // namespace stowage
