// The offload manager: places every tensor of every module on a tier, moves
// modules between tiers as byte copies, and fetches streamed modules into a
// per-accelerator slot pool around their forwards, prefetching the next ones
// on a copy stream. Written against core's StreamRef / Event / MemoryResource
// only, so it runs unchanged on the sim and CUDA backends.
//
// Invariants (DESIGN.md's seed lessons):
//  - a move is a byte copy of every record of the module, quant-state parts
//    included; nothing is ever re-quantized (lessons 1, 2);
//  - an offloaded tensor is a real tensor on pinned host or mapped from disk,
//    readable from the host at any time (lesson 3);
//  - every tier's bytes come from a budgeted, counted resource: usage(tier)
//    gives bytes in use and the peak, and the budget is never exceeded.
//
// The forward protocol (the offload hook calls these):
//   auto fwd = manager.begin_forward("layers.3");  // compute waits for fetch
//   ... enqueue the forward on fwd.compute_stream using fwd.find("weight") ...
//   manager.end_forward("layers.3");               // slot reusable after it
// begin_forward makes the compute stream wait on the module's fetch event
// (stream-ordered, the host does not wait) and queues fetches of the next
// `prefetch_depth` modules of the execution order while slots are free.
// end_forward records an event on the compute stream; the copy stream waits
// on it before overwriting that slot. No host synchronization in the steady
// state.
//
// Slot pool: on each accelerator that runs streamed modules, slot_count(d) =
// d + 1 slots (planner.h) of the largest streamed module's bytes (its records
// packed at 256-byte alignment), allocated once by dispatch() (or lazily, one
// slot at first need, with OffloadOptions::lazy_slots). If a slot cannot be
// allocated (accelerator out of memory or budget), the pool keeps the slots
// it has: prefetching stops early and a module with no free slot is fetched
// synchronously into the next released slot. With no slot at all the forward
// fails with OutOfMemoryError / OutOfBudgetError naming the module and bytes.
// Slots never take the part of OffloadOptions::working_reserve not in use yet.
// Output is never wrong.
//
// A module whose records are on several tiers (tensor overrides, planner.h
// step 6) is streamed: for its forward the records that have a copy on the
// accelerator running it are used in place and only the others are copied
// into the slot (its slot bytes count those only).
//
// Thread safety: every member may be called from several threads at once. Two
// threads may run forwards of their own modules concurrently through one
// manager (each declares its own execution order); the forwards of one module
// must not overlap.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/memory_resource.h"
#include "core/platform.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "offload/disk_io.h"
#include "offload/planner.h"
#include "offload/residency_table.h"
#include "offload/trace.h"

namespace stowage {

struct OffloadOptions {
  int prefetch_depth = 1;
  // Byte budgets per tier (accelerators, Tier::pinned_host(),
  // Tier::pageable_host()); a tier absent here is limited only by its memory.
  std::map<Tier, uint64_t> budgets;
  // Upstream memory for a tier instead of the platform's (a test seam, e.g. a
  // FaultInjectionAdaptor over accelerator(0).memory()). Must outlive the
  // manager. The manager wraps it in its budget and statistics adaptors.
  std::map<Tier, MemoryResource*> memory_overrides;
  // The accelerator that runs streamed modules (those homed off the
  // accelerators) unless set_execution_accelerator says otherwise, as
  // accelerate runs offloaded modules on its main device;
  // accelerator-resident modules run on their own.
  int compute_accelerator = 0;
  // When the last module of an execution order begins, prefetch the first
  // ones again (the next forward of the model).
  bool wrap_around = true;
  // Allocate each slot at its first use instead of all in dispatch().
  bool lazy_slots = false;
  // Bytes of an accelerator's budget the fetch slots leave to the forwards'
  // working memory (activations, kernel scratch), as the plan kept them
  // (PlanRequest::working_reserve): a slot that would cut into what is not
  // yet used of it is not allocated, so under a budget tighter than the plan
  // prefetching shrinks (fetches fall back to synchronous) instead of a
  // kernel running out of memory. Working memory in use is the tier's bytes
  // in use less resident records and slots.
  std::map<Tier, uint64_t> working_reserve;
  // Needed to place or move anything on Tier::disk(); nullptr: no disk tier.
  std::shared_ptr<DiskStore> disk_store;
  // Pinned staging buffer for disk reads (allocated by dispatch() from the
  // pinned tier's budget when a streamed module has bytes on disk); large
  // records are staged in chunks of this size.
  uint64_t disk_staging_bytes = kDefaultDiskStagingBytes;
  // Disk -> pinned staging; nullptr: make_disk_stager(disk_stager_kind).
  std::shared_ptr<DiskStager> disk_stager;
  // The memcpy from the mapping (with madvise readahead) by default: on the
  // H100 host's disk it streamed cold at 1.50 GiB/s against 1.21 GiB/s for
  // the file reads (bench/offload_fetch_bench --device cuda --module-mib 64
  // --modules 16 --disk-stagers memcpy,file_read --cold 1, same run), though
  // on the 2-core build host (sim, 16 x 16 MiB) the file reads were
  // 1.13-1.30x faster cold. kFileRead: mmap_store's FileHandle preads,
  // falling back to the memcpy for tensors with no file.
  DiskStagerKind disk_stager_kind = DiskStagerKind::kMemcpy;
  // Records copy, compute and stall spans when set. Must outlive the manager.
  TraceRecorder* trace = nullptr;
};

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
  // Fetches issued at begin_forward because the module was not prefetched
  // (no free slot, or not in a declared order): compute waits for all of it.
  uint64_t sync_fallbacks = 0;
  uint64_t slot_allocation_failures = 0;  // slots the pools could not allocate
};

// The counters accumulated between two readings (`now` taken after `then`).
OffloadCounters counters_since(const OffloadCounters& now, const OffloadCounters& then);

struct TierUsage {
  uint64_t bytes_in_use = 0;
  uint64_t peak_bytes = 0;
  std::optional<uint64_t> budget;
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

class OffloadManager {
 public:
  // `platform` must outlive the manager. Creates a compute and a copy stream
  // per accelerator.
  OffloadManager(Platform& platform, OffloadOptions options);
  // Waits for all queued work, then frees slots, staging and every copy.
  ~OffloadManager();
  OffloadManager(const OffloadManager&) = delete;
  OffloadManager& operator=(const OffloadManager&) = delete;

  ResidencyTable& table() { return table_; }
  const ResidencyTable& table() const { return table_; }
  Platform& platform() { return platform_; }
  const OffloadOptions& options() const { return options_; }

  // The budgeted, counted resource of a host or accelerator tier. A tensor
  // allocated from it and given to place() on that tier is adopted, not
  // copied (the streaming loader's path). Throws InvalidInputError for disk.
  MemoryResource& memory(Tier tier);
  TierUsage usage(Tier tier) const;
  // Bytes on the disk tier now (records with a disk copy made or adopted).
  uint64_t disk_bytes() const;
  StreamRef compute_stream(Tier accelerator);
  StreamRef copy_stream(Tier accelerator);

  // --- Placement. Registers record (module, name) and puts its bytes on
  // `tier`: adopted when `source` already lives there in memory(tier), is a
  // disk-tier mapping and tier is disk, or is host memory of `tier` adopted
  // from elsewhere (Buffer::adopt, no resource: e.g. a segment shared across
  // processes, whose bytes its owner accounts, not this tier's budget);
  // otherwise copied (synchronously).
  // Throws InvalidInputError for a duplicate name or a dtype/shape that does
  // not match the source's bytes; OutOfBudgetError when the tier is full.
  RecordId place(const std::string& module, const std::string& name, TensorRole role,
                 const Tensor& source, Tier tier);
  // A quant-state part of weight record `weight` (quant/ gives parts as
  // (suffix, Tensor) pairs), placed with the weight on its home tier.
  RecordId place_quant_part(RecordId weight, const std::string& suffix, const Tensor& source,
                            const std::string& name = "");

  // Moves every record of `module` (quant-state parts included) to `tier` by
  // byte copies, then frees the copies on other tiers: bytes in use on the
  // source tier go back to what they were before the module was placed.
  // Synchronous. Throws InvalidInputError for an unknown module or one in a
  // forward, OutOfBudgetError when the target tier is full (nothing moved).
  void move_module(const std::string& module, Tier tier);

  // A host copy (pageable) of the record's current bytes, from whichever tier
  // holds it. Throws InvalidInputError for an unknown record.
  Tensor read_to_host(const std::string& module, const std::string& name);

  // --- Streaming. Declares one execution order (module paths). May be
  // called once per independent model (e.g. one per host thread); a module
  // belongs to at most one order. Modules not declared are fetched on demand
  // and never prefetched.
  void declare_execution_order(const std::vector<std::string>& modules);
  // Runs streamed module `module` on `accelerator` (fetching it into that
  // accelerator's slot pool) instead of OffloadOptions::compute_accelerator.
  // The pools are sized again at the next forward. REQUIRES: no forward of a
  // streamed module in flight. Throws InvalidInputError for a tier that is
  // not an accelerator here.
  void set_execution_accelerator(const std::string& module, Tier accelerator);
  // Runs `module` where its bytes are (host RAM or the disk mapping) instead
  // of fetching it (on = true), or fetches it again (false): begin_forward
  // then gives views of its host copies on no accelerator (the forward
  // computes on the host), and prefetching passes over it. A module resident
  // on an accelerator is not affected. REQUIRES: no forward of it in flight.
  // Throws InvalidInputError for an unknown module or one with a record
  // that has no host-readable copy.
  void set_host_compute(const std::string& module, bool on);
  bool host_compute(const std::string& module) const;
  // Changes whenever what a forward does may have changed: slot pools
  // allocated again, a module moved, or where a module runs changed. A
  // captured graph taken at another version is stale.
  uint64_t layout_version() const;

  // Allocates the slot pools (one per accelerator running streamed modules,
  // and pinned staging where they have bytes on disk)
  // for the modules streamed now. Called by the first begin_forward if not
  // called before; call again after moves that change what is streamed (it
  // waits for in-flight work first). REQUIRES: no forward in flight.
  void dispatch();

  // See the protocol above. Throws InvalidInputError for an unknown module
  // or one already in a forward. `compute` overrides the manager's compute
  // stream of the module's accelerator (same accelerator).
  ModuleForward begin_forward(const std::string& module, StreamRef compute = {});
  void end_forward(const std::string& module, StreamRef compute = {});

  // --- Graph capture (core/stream_graph.h). A captured step replays the
  // same copies into the same slots at every launch, so its capture starts
  // from a known state and the manager is told of each launch:
  //   manager.begin_capture(compute);  // then GraphCapture capture(compute)
  //   ... the step's forwards (captured) ...
  //   OffloadCounters per_launch = manager.end_capture(compute);  // then capture.finish()
  //   graph.launch(compute); manager.note_launch(compute, per_launch);
  // begin_capture waits for all queued work, allocates the slot pools and
  // empties every slot. Until end_capture, forwards fork the copy streams
  // from `compute` (so their copies join the capture), record no timing or
  // trace events, and prefetch within the step only (no wrap-around into
  // the next one). end_capture joins the copy streams back into `compute`
  // and returns the counters one launch adds (the capture itself moved
  // nothing). note_launch orders later fetches and moves after the launch.
  // abandon_capture() restores a usable state after a failed capture
  // (nothing captured ran). REQUIRES: no forward in flight at begin and
  // end; one capture at a time.
  void begin_capture(StreamRef compute);
  OffloadCounters end_capture(StreamRef compute);
  void abandon_capture();
  void note_launch(StreamRef compute, const OffloadCounters& per_launch);

  // Waits for every copy and compute stream, then resolves pending stall
  // measurements into counters().
  void synchronize();
  // Counters so far (stall time: measurements already complete).
  OffloadCounters counters() const;

 private:
  class Impl;
  Platform& platform_;
  OffloadOptions options_;
  ResidencyTable table_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stowage
